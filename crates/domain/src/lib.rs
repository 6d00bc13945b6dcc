//! The rules of API Key Rotator, free of any I/O: proxy configs and their key pools, validation
//! of admin commands, round-robin key selection, classification of upstream outcomes, the failover
//! state machine, key health, masking and redaction of secrets, and the ports (async traits) that storage,
//! cache and notification adapters implement, and the request log of SPEC §10 (records, queries,
//! stats arithmetic).
//!
//! This crate may depend only on pure, runtime-free crates (serde, chrono, url, subtle, ...).
//! It never depends on a database driver, an HTTP framework, a Redis client or an async runtime,
//! so a downstream team can build its own adapters against it alone. The `mocks` feature exports
//! mockall mocks of every port; the `contract-tests` feature exports the test suite that every
//! port implementation must pass.

pub mod admin;
pub mod classify;
pub mod client_limits;
pub mod clock;
pub mod command;
#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod error;
pub mod failover;
pub mod key_page;
pub mod model;
pub mod original;
pub mod ports;
pub mod request_log;
pub mod security;
pub mod selection;

pub use admin::AdminService;
pub use classify::{Classifier, KeyEffect, Outcome, UpstreamResponse, Verdict};
pub use client_limits::{LimitKind, LiveLimits, Refusal};
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{
    BatchImportReport, BatchKeysInput, ClientKeyInput, FieldError, NewKeyInput, ProxyConfigInput,
    ValidationErrors,
};
pub use error::{Dependency, Entity, Error, Result};
pub use failover::{
    AttemptClass, AttemptFailure, AttemptList, BodyReplay, ConfigPolicy, Decision, Failover,
    FailoverPolicy, FailoverRules, Next, RetryClass, RetryOn, probe_decision,
};
pub use key_page::{
    HealthState, KeyCount, KeyCursor, KeyListInput, KeyPage, KeyPageQuery, KeyQueryError, KeyRange,
    MalformedCursor, PageLimit,
};
pub use model::{
    ApiFormat, ApiKey, ApiKeyId, BudgetPeriod, ClientKey, ClientKeyId, ClientKeySpec,
    ClientKeyUsage, ClientLimits, ClientUsageDelta, ConfigChange, ConfigKind, ConfigName,
    ConfigSnapshot, ConfigType, GenericTarget, HttpMethod, HttpUrl, IssuedSecret, KeyHealth,
    KeyLocation, KeyPlacement, KeySecret, KeyUsage, LlmTarget, OutputFormat, ProxyConfig,
    ProxyConfigId, ProxyConfigSpec, SecretDigest, Slug, TokenBudget, UsageDelta, UsageEvent,
};
pub use original::{
    ImportPlan, ImportReport, OriginalConfigRow, OriginalData, OriginalKeyRow, OriginalTable,
    OriginalTables, PlannedConfig, PlannedKey, RefusedRow, plan_import,
};
pub use ports::{
    Admission, ChangeStream, ClientKeyStore, ClientLimiter, ConfigEvents, ConfigNotice, Draw,
    HealthRead, InsertedKeys, Leases, ProxyStore, RequestLog, RotationState, SlotId, Turn,
    UsageCounters,
};
pub use request_log::{
    LogCursor, LogFilter, LogPage, LogQuery, LogQueryError, LogQueryInput, LoggedRequest,
    RequestRecord, RequestRecordId, Retention, StatsInput, StatsInterval, StatsPoint, StatsQuery,
    StatusClass, TopEntry, TopLists, UsageStats,
};
pub use security::{BodyRedactor, ProxyKeySet, Redactor, mask_secret};
pub use selection::{AttemptPlan, Rotator, Settled, plan_attempts};
