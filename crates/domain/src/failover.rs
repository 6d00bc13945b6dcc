//! The failover state machine of SPEC §3 and §8, free of I/O: built from the config's policy, the
//! plan of distinct keys and whether the request body can be sent again; fed the facts of each
//! attempt; answering commit, retry with the next key, confirm an ambiguous 403 with a probe, or
//! give up with every attempt's failure. The effect each attempt has on its key comes with the
//! answer; [`crate::Rotator::settle`] applies it through the ports. The proxy's I/O loop, the LLM
//! proxy and the key probe all go through these rules, so they cannot drift apart.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    classify::{Classifier, KeyEffect, Outcome, Verdict},
    model::{ApiKey, ApiKeyId, ConfigKind, ConfigSnapshot, HttpMethod, ProxyConfig},
    selection::AttemptPlan,
};

/// A class of failed attempt that a config may choose to re-send to another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// 429, or a rate-limit/quota marker.
    RateLimited,
    /// 401, a key marker, or a 403 a probe confirmed to be about the key.
    AuthFailed,
    /// 5xx.
    ServerError,
    /// No connection could be made: the upstream never saw the request.
    ConnectError,
    /// The response head did not arrive in time: the upstream may have acted (and billed).
    Timeout,
}

impl RetryClass {
    /// Every class, in the order they are listed on the wire.
    pub const ALL: [RetryClass; 5] = [
        RetryClass::RateLimited,
        RetryClass::AuthFailed,
        RetryClass::ServerError,
        RetryClass::ConnectError,
        RetryClass::Timeout,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryClass::RateLimited => "rate_limited",
            RetryClass::AuthFailed => "auth_failed",
            RetryClass::ServerError => "server_error",
            RetryClass::ConnectError => "connect_error",
            RetryClass::Timeout => "timeout",
        }
    }

    fn bit(self) -> u8 {
        match self {
            RetryClass::RateLimited => 1,
            RetryClass::AuthFailed => 2,
            RetryClass::ServerError => 4,
            RetryClass::ConnectError => 8,
            RetryClass::Timeout => 16,
        }
    }
}

impl FromStr for RetryClass {
    type Err = &'static str;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        RetryClass::ALL
            .into_iter()
            .find(|class| class.as_str() == input)
            .ok_or(
                "must list only rate_limited, auth_failed, server_error, connect_error or timeout",
            )
    }
}

impl fmt::Display for RetryClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`RetryClass`]es.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RetryOn(u8);

impl RetryOn {
    /// No class: every failure is answered to the client at once.
    pub const NONE: RetryOn = RetryOn(0);

    /// The set of these classes.
    pub fn of(classes: impl IntoIterator<Item = RetryClass>) -> Self {
        classes
            .into_iter()
            .fold(RetryOn::NONE, |set, class| RetryOn(set.0 | class.bit()))
    }

    /// Whether the set holds `class`.
    pub fn contains(self, class: RetryClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// The classes in the set, in wire order.
    pub fn classes(self) -> impl Iterator<Item = RetryClass> {
        RetryClass::ALL
            .into_iter()
            .filter(move |class| self.contains(*class))
    }

    /// What a config re-sends when it does not say: every class but a timeout (which may have
    /// been billed), and for a non-idempotent GENERIC method only what the upstream certainly
    /// did not act on (SPEC §8).
    pub fn default_for(config: &ProxyConfig) -> Self {
        use RetryClass::{AuthFailed, ConnectError, RateLimited, ServerError};
        match &config.kind {
            ConfigKind::Generic(target)
                if matches!(target.method, HttpMethod::Post | HttpMethod::Patch) =>
            {
                RetryOn::of([RateLimited, AuthFailed, ConnectError])
            }
            ConfigKind::Generic(_) | ConfigKind::Llm(_) => {
                RetryOn::of([RateLimited, AuthFailed, ServerError, ConnectError])
            }
        }
    }
}

/// A list of class names on the wire, e.g. `["rate_limited", "connect_error"]`.
impl serde::Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.classes().map(RetryClass::as_str))
    }
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.classes()).finish()
    }
}

/// The failover fields of one config; `None` means the environment's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigPolicy {
    /// Retries with other keys after the first attempt.
    pub max_retries: Option<u32>,
    /// The failure classes re-sent to another key; replaces the default set when given.
    pub retry_on: Option<RetryOn>,
    /// How long to wait for the response head, in seconds; `Some(0)` means no limit.
    pub response_timeout_seconds: Option<u32>,
}

/// Largest `max_retries` a config may set.
pub const MAX_CONFIG_RETRIES: u32 = 10;
/// Largest `response_timeout_seconds` a config may set (one day).
pub const MAX_RESPONSE_TIMEOUT_SECONDS: u32 = 86_400;

/// The environment's failover defaults, for configs that do not set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Retries after the first attempt (`PROXY_MAX_RETRIES`, 2 by default).
    pub max_retries: u32,
    /// Response-head timeout of GENERIC configs (`PROXY_TIMEOUT`); `None` = no limit.
    pub generic_response_timeout: Option<Duration>,
    /// Response-head timeout of LLM configs (`LLM_RESPONSE_TIMEOUT`); `None` = no limit.
    pub llm_response_timeout: Option<Duration>,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            max_retries: 2,
            generic_response_timeout: Some(Duration::from_secs(30)),
            llm_response_timeout: Some(Duration::from_secs(600)),
        }
    }
}

impl FailoverPolicy {
    /// The rules in force for a request to `config`: its own fields, else these defaults.
    pub fn rules_for(&self, config: &ProxyConfig) -> FailoverRules {
        let own = config.policy;
        let max_retries = own.max_retries.unwrap_or(self.max_retries);
        let is_llm = matches!(config.kind, ConfigKind::Llm(_));
        let response_timeout = match own.response_timeout_seconds {
            Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(u64::from(seconds))),
            None if is_llm => self.llm_response_timeout,
            None => self.generic_response_timeout,
        };
        FailoverRules {
            max_attempts: usize::try_from(max_retries)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
            retry_on: own.retry_on.unwrap_or_else(|| RetryOn::default_for(config)),
            response_timeout,
            confirm_ambiguous_403: is_llm,
        }
    }
}

/// The rules of one request, resolved from the config and the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverRules {
    max_attempts: usize,
    retry_on: RetryOn,
    response_timeout: Option<Duration>,
    confirm_ambiguous_403: bool,
}

impl FailoverRules {
    /// First attempt plus retries.
    pub fn max_attempts(&self) -> usize {
        self.max_attempts
    }

    /// The classes re-sent to another key.
    pub fn retry_on(&self) -> RetryOn {
        self.retry_on
    }

    /// How long each attempt waits for the response head; `None` = no limit.
    pub fn response_timeout(&self) -> Option<Duration> {
        self.response_timeout
    }

    /// Whether an ambiguous 403 is checked with a probe of the key (LLM configs, which have a
    /// request known to be harmless) before the key can fail.
    pub fn confirms_ambiguous_403(&self) -> bool {
        self.confirm_ambiguous_403
    }
}

/// Whether the request body can be sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyReplay {
    /// Buffered: any attempt can send it again.
    Replayable,
    /// Streamed through: only the first attempt can send it.
    OneShot,
}

/// What one failed attempt was, as the client is told it: the status, or how it failed to get
/// one. Never a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    /// The upstream answered this status.
    Status(u16),
    /// No connection could be made, or the response could not be read.
    ConnectError,
    /// The response head did not arrive in time.
    Timeout,
}

impl AttemptClass {
    fn of(outcome: &Outcome<'_>) -> Self {
        match outcome {
            Outcome::Response(response) => AttemptClass::Status(response.status),
            Outcome::ConnectFailed => AttemptClass::ConnectError,
            Outcome::HeadTimeout => AttemptClass::Timeout,
        }
    }
}

impl fmt::Display for AttemptClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptClass::Status(status) => status.fmt(f),
            AttemptClass::ConnectError => f.write_str("connect_error"),
            AttemptClass::Timeout => f.write_str("timeout"),
        }
    }
}

/// One attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The key it used (for logs; never shown to clients).
    pub key: ApiKeyId,
    /// What happened.
    pub class: AttemptClass,
}

/// Every failed attempt of a request, rendered `429,503,timeout` (the `x-akr-attempts` header).
#[derive(Debug, Clone, Copy)]
pub struct AttemptList<'a>(pub &'a [AttemptFailure]);

impl fmt::Display for AttemptList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, failure) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            failure.class.fmt(f)?;
        }
        Ok(())
    }
}

/// What the I/O loop does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Answer the client with this attempt's response.
    Commit,
    /// Send the request again with the next key of the plan.
    Retry,
    /// Probe this attempt's key with the config's cheap request and report the probe with
    /// [`Failover::confirm`]; the response is kept until then.
    Confirm,
    /// Stop: answer with this attempt's failure and [`Failover::failures`].
    GiveUp,
}

/// The machine's answer to one attempt: its class, what happens to its key, and what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The attempt's class.
    pub verdict: Verdict,
    /// What happens to the key.
    pub effect: KeyEffect,
    /// What the I/O loop does next.
    pub next: Next,
}

/// The failover of one request.
///
/// Allocation-light: the plan is drawn once, and the failure list allocates only when an attempt
/// fails (at most `max_retries + 1` entries).
#[derive(Debug, Clone)]
pub struct Failover {
    rules: FailoverRules,
    classifier: Classifier,
    plan: AttemptPlan,
    body: BodyReplay,
    sent: usize,
    may_send: bool,
    failures: Vec<AttemptFailure>,
    failed_on_ambiguity: bool,
}

impl Failover {
    /// A failover over `plan` (already cut to the rules' attempts) under `rules`.
    pub fn new(
        rules: FailoverRules,
        classifier: Classifier,
        plan: AttemptPlan,
        body: BodyReplay,
    ) -> Self {
        Failover {
            rules,
            classifier,
            plan,
            body,
            sent: 0,
            may_send: true,
            failures: Vec::new(),
            failed_on_ambiguity: false,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &FailoverRules {
        &self.rules
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> usize {
        self.sent
    }

    /// Every failed attempt so far, in order.
    pub fn failures(&self) -> AttemptList<'_> {
        AttemptList(&self.failures)
    }

    /// The key of the next attempt: the first of the plan, then the next one after each
    /// [`Next::Retry`]; `None` once the machine has committed or given up.
    pub fn next_key<'s>(&mut self, snapshot: &'s ConfigSnapshot) -> Option<&'s Arc<ApiKey>> {
        if !self.may_send {
            return None;
        }
        let position = *self.plan.positions().get(self.sent)?;
        let key = snapshot.keys().get(position)?;
        self.sent += 1;
        self.may_send = false;
        Some(key)
    }

    /// Judges the attempt just sent with `key`.
    pub fn judge(&mut self, key: ApiKeyId, outcome: &Outcome<'_>, now: DateTime<Utc>) -> Decision {
        let verdict = self.classifier.classify(outcome, now);
        if verdict != Verdict::Success {
            self.failures.push(AttemptFailure {
                key,
                class: AttemptClass::of(outcome),
            });
        }
        let next = match verdict {
            Verdict::Success | Verdict::ClientError => Next::Commit,
            Verdict::Forbidden if self.rules.confirm_ambiguous_403 && !self.failed_on_ambiguity => {
                Next::Confirm
            }
            Verdict::Forbidden => Next::Commit,
            Verdict::RateLimited { .. } => self.retry_if(RetryClass::RateLimited),
            Verdict::KeyRejected => self.retry_if(RetryClass::AuthFailed),
            Verdict::UpstreamFault => self.retry_if(match outcome {
                Outcome::ConnectFailed => RetryClass::ConnectError,
                Outcome::HeadTimeout => RetryClass::Timeout,
                Outcome::Response(_) => RetryClass::ServerError,
            }),
        };
        Decision {
            verdict,
            effect: verdict.key_effect(),
            next,
        }
    }

    /// Judges the probe that confirms an ambiguous 403 ([`Next::Confirm`]): a probe the key
    /// fails too (401, 403, key marker) shows the 403 was about the key, which fails and the
    /// request moves on; anything else shows it was about the request, which the client gets.
    /// Only one key per request can fail this way.
    pub fn confirm(&mut self, probe: &Outcome<'_>, now: DateTime<Utc>) -> Decision {
        let probed = self.classifier.classify(probe, now);
        match probed {
            Verdict::KeyRejected | Verdict::Forbidden => {
                self.failed_on_ambiguity = true;
                Decision {
                    verdict: Verdict::KeyRejected,
                    effect: KeyEffect::Fail,
                    next: self.retry_if(RetryClass::AuthFailed),
                }
            }
            other => Decision {
                verdict: Verdict::Forbidden,
                effect: other.key_effect(),
                next: Next::Commit,
            },
        }
    }

    fn retry_if(&mut self, class: RetryClass) -> Next {
        let can_resend = self.body == BodyReplay::Replayable;
        let keys_left = self.sent < self.plan.positions().len();
        if self.rules.retry_on.contains(class) && can_resend && keys_left {
            self.may_send = true;
            Next::Retry
        } else {
            Next::GiveUp
        }
    }
}

/// What a key probe (the admin's test, the background recovery, an LLM 403 confirmation seen on
/// its own) does to the key: success brings it back, a rejection or a 403 on the harmless probe
/// request fails it, a rate limit cools it down, an upstream fault leaves it as it was.
pub fn probe_decision(
    classifier: &Classifier,
    probe: &Outcome<'_>,
    now: DateTime<Utc>,
) -> Decision {
    let verdict = classifier.classify(probe, now);
    let effect = match verdict {
        Verdict::Success => KeyEffect::Restore,
        Verdict::KeyRejected | Verdict::Forbidden => KeyEffect::Fail,
        Verdict::RateLimited { until } => KeyEffect::CoolDown(until),
        Verdict::UpstreamFault | Verdict::ClientError => KeyEffect::Unchanged,
    };
    Decision {
        verdict,
        effect,
        next: Next::Commit,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeDelta;

    use super::*;
    use crate::{
        classify::UpstreamResponse,
        clock::{Clock, ManualClock},
        model::{
            ApiFormat, GenericTarget, KeyHealth, KeyLocation, KeyPlacement, KeySecret, KeyUsage,
            LlmTarget, OutputFormat, ProxyConfigId,
        },
        ports::Turn,
        selection::plan_attempts,
    };

    fn clock() -> ManualClock {
        ManualClock::new(
            DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    fn generic(method: HttpMethod) -> ConfigKind {
        ConfigKind::Generic(GenericTarget {
            method,
            target_url: "https://api.example.com".parse().unwrap(),
            key_placement: KeyPlacement::new(KeyLocation::Header, "X-Api-Key").unwrap(),
        })
    }

    fn llm() -> ConfigKind {
        ConfigKind::Llm(LlmTarget {
            target_base_url: "https://llm.example.com/v1".parse().unwrap(),
            api_format: ApiFormat::OpenaiCompatible,
            output_format: OutputFormat::None,
            key_placement: None,
        })
    }

    fn snapshot(kind: ConfigKind, policy: ConfigPolicy, keys: i64) -> ConfigSnapshot {
        let now = clock().now();
        let config = ProxyConfig {
            id: ProxyConfigId(1),
            name: "Upstream".parse().unwrap(),
            slug: "upstream".parse().unwrap(),
            is_active: true,
            kind,
            policy,
            created_at: now,
            updated_at: now,
        };
        let keys = (1..=keys)
            .map(|id| {
                Arc::new(ApiKey {
                    id: ApiKeyId(id),
                    proxy_config_id: config.id,
                    key_value: KeySecret::parse(&format!("sk-key-{id}")).unwrap(),
                    is_active: true,
                    health: KeyHealth::Ok,
                    usage: KeyUsage::default(),
                    created_at: now,
                    updated_at: now,
                })
            })
            .collect();
        ConfigSnapshot::new(config, keys)
    }

    fn start(snapshot: &ConfigSnapshot, body: BodyReplay) -> Failover {
        let rules = FailoverPolicy::default().rules_for(&snapshot.config);
        let candidates: Vec<usize> = (0..snapshot.keys().len()).collect();
        let turn = Turn {
            counter: 0,
            states: vec![KeyHealth::Ok; snapshot.keys().len()],
        };
        let plan = plan_attempts(&candidates, &turn, clock().now(), rules.max_attempts()).unwrap();
        Failover::new(rules, Classifier::new(TimeDelta::seconds(60)), plan, body)
    }

    fn status(status: u16, body: &'static str) -> Outcome<'static> {
        Outcome::Response(UpstreamResponse {
            status,
            body: body.as_bytes(),
            ..Default::default()
        })
    }

    /// Sends attempts with the given outcomes until the machine stops asking for keys; returns
    /// every decision.
    fn run(
        failover: &mut Failover,
        snapshot: &ConfigSnapshot,
        outcomes: &[Outcome<'_>],
    ) -> Vec<Decision> {
        let now = clock().now();
        let mut decisions = Vec::new();
        let mut outcomes = outcomes.iter();
        while let Some(key) = failover.next_key(snapshot) {
            let Some(outcome) = outcomes.next() else {
                break;
            };
            decisions.push(failover.judge(key.id, outcome, now));
        }
        decisions
    }

    fn nexts(decisions: &[Decision]) -> Vec<Next> {
        decisions.iter().map(|d| d.next).collect()
    }

    #[test]
    fn success_commits_at_once_and_records_no_failure() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(&mut failover, &pool, &[status(200, "")]);
        assert_eq!(nexts(&decisions), [Next::Commit]);
        assert_eq!(decisions[0].effect, KeyEffect::Unchanged);
        assert_eq!(failover.failures().to_string(), "");
        assert!(
            failover.next_key(&pool).is_none(),
            "a committed request sends nothing more"
        );
    }

    #[test]
    fn rate_limit_cools_the_key_and_moves_to_the_next_one() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let limited = Outcome::Response(UpstreamResponse {
            status: 429,
            retry_after: Some("30"),
            ..Default::default()
        });
        let decisions = run(&mut failover, &pool, &[limited, status(200, "")]);
        assert_eq!(nexts(&decisions), [Next::Retry, Next::Commit]);
        assert_eq!(
            decisions[0].effect,
            KeyEffect::CoolDown(clock().now() + TimeDelta::seconds(30))
        );
        assert_eq!(failover.failures().to_string(), "429");
    }

    #[test]
    fn every_attempt_failing_gives_up_with_each_failure_in_order() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(
            &mut failover,
            &pool,
            &[status(429, ""), status(503, ""), Outcome::ConnectFailed],
        );
        assert_eq!(nexts(&decisions), [Next::Retry, Next::Retry, Next::GiveUp]);
        assert_eq!(failover.failures().to_string(), "429,503,connect_error");
        assert_eq!(failover.attempts(), 3);
    }

    #[test]
    fn attempts_never_exceed_the_keys_or_max_retries() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 2);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(&mut failover, &pool, &[status(503, ""), status(503, "")]);
        assert_eq!(nexts(&decisions), [Next::Retry, Next::GiveUp]);
        let narrow = ConfigPolicy {
            max_retries: Some(0),
            ..ConfigPolicy::default()
        };
        let pool = snapshot(generic(HttpMethod::Get), narrow, 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[status(503, "")])),
            [Next::GiveUp]
        );
    }

    #[test]
    fn a_401_fails_the_key_and_retries() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(&mut failover, &pool, &[status(401, ""), status(200, "")]);
        assert_eq!(decisions[0].verdict, Verdict::KeyRejected);
        assert_eq!(decisions[0].effect, KeyEffect::Fail);
        assert_eq!(nexts(&decisions), [Next::Retry, Next::Commit]);
    }

    #[test]
    fn a_403_about_the_request_reaches_the_client_and_changes_no_key() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(
            &mut failover,
            &pool,
            &[status(403, r#"{"message":"no access"}"#)],
        );
        assert_eq!(decisions[0].verdict, Verdict::Forbidden);
        assert_eq!(decisions[0].effect, KeyEffect::Unchanged);
        assert_eq!(nexts(&decisions), [Next::Commit]);
    }

    #[test]
    fn a_403_with_a_key_marker_fails_the_key() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(
            &mut failover,
            &pool,
            &[status(403, "this key has been suspended"), status(200, "")],
        );
        assert_eq!(decisions[0].effect, KeyEffect::Fail);
        assert_eq!(nexts(&decisions), [Next::Retry, Next::Commit]);
    }

    #[test]
    fn an_llm_403_is_confirmed_by_a_probe_before_the_key_fails() {
        let now = clock().now();
        let pool = snapshot(llm(), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(&mut failover, &pool, &[status(403, "forbidden")]);
        assert_eq!(nexts(&decisions), [Next::Confirm]);
        assert_eq!(decisions[0].effect, KeyEffect::Unchanged);

        // The probe is refused too: the key is at fault, and the request moves on.
        let confirmed = failover.confirm(&status(401, ""), now);
        assert_eq!(confirmed.effect, KeyEffect::Fail);
        assert_eq!(confirmed.next, Next::Retry);

        // A second ambiguous 403 in the same request fails no other key.
        let key = failover.next_key(&pool).unwrap().id;
        let second = failover.judge(key, &status(403, "forbidden"), now);
        assert_eq!(second.next, Next::Commit);
        assert_eq!(second.effect, KeyEffect::Unchanged);
        assert_eq!(failover.failures().to_string(), "403,403");
    }

    #[test]
    fn an_llm_403_the_probe_does_not_confirm_reaches_the_client() {
        let pool = snapshot(llm(), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        run(&mut failover, &pool, &[status(403, "model not available")]);
        let confirmed = failover.confirm(&status(200, ""), clock().now());
        assert_eq!(confirmed.verdict, Verdict::Forbidden);
        assert_eq!(confirmed.effect, KeyEffect::Unchanged);
        assert_eq!(confirmed.next, Next::Commit);
        assert!(failover.next_key(&pool).is_none());
    }

    #[test]
    fn a_generic_post_is_re_sent_only_when_the_upstream_did_not_act() {
        let pool = snapshot(generic(HttpMethod::Post), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[status(500, "")])),
            [Next::GiveUp]
        );
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[Outcome::HeadTimeout])),
            [Next::GiveUp]
        );
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(
            &mut failover,
            &pool,
            &[Outcome::ConnectFailed, status(429, ""), status(401, "")],
        );
        assert_eq!(nexts(&decisions), [Next::Retry, Next::Retry, Next::GiveUp]);
    }

    #[test]
    fn retry_on_replaces_the_default_classes() {
        let post_with_5xx = ConfigPolicy {
            retry_on: Some(RetryOn::of([RetryClass::ServerError])),
            ..ConfigPolicy::default()
        };
        let pool = snapshot(generic(HttpMethod::Post), post_with_5xx, 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(
                &mut failover,
                &pool,
                &[status(500, ""), status(200, "")]
            )),
            [Next::Retry, Next::Commit]
        );
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[status(429, "")])),
            [Next::GiveUp],
            "429 is no longer listed"
        );
    }

    #[test]
    fn llm_requests_retry_on_5xx_but_not_after_a_timeout_unless_asked() {
        let pool = snapshot(llm(), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(
                &mut failover,
                &pool,
                &[status(502, ""), status(200, "")]
            )),
            [Next::Retry, Next::Commit]
        );
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[Outcome::HeadTimeout])),
            [Next::GiveUp]
        );
        assert_eq!(failover.failures().to_string(), "timeout");
        let timeouts = ConfigPolicy {
            retry_on: Some(RetryOn::of([RetryClass::Timeout])),
            ..ConfigPolicy::default()
        };
        let pool = snapshot(llm(), timeouts, 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        assert_eq!(
            nexts(&run(
                &mut failover,
                &pool,
                &[Outcome::HeadTimeout, status(200, "")]
            )),
            [Next::Retry, Next::Commit]
        );
    }

    #[test]
    fn a_body_that_cannot_be_replayed_gets_one_attempt() {
        let pool = snapshot(generic(HttpMethod::Put), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::OneShot);
        assert_eq!(
            nexts(&run(&mut failover, &pool, &[status(503, "")])),
            [Next::GiveUp]
        );
        assert_eq!(failover.attempts(), 1);
    }

    #[test]
    fn other_client_errors_commit_without_retry() {
        let pool = snapshot(generic(HttpMethod::Get), ConfigPolicy::default(), 3);
        let mut failover = start(&pool, BodyReplay::Replayable);
        let decisions = run(&mut failover, &pool, &[status(404, "")]);
        assert_eq!(nexts(&decisions), [Next::Commit]);
        assert_eq!(decisions[0].effect, KeyEffect::Unchanged);
    }

    #[test]
    fn response_timeouts_come_from_the_config_then_the_kind_default() {
        let defaults = FailoverPolicy::default();
        let rules = |kind, seconds| {
            let policy = ConfigPolicy {
                response_timeout_seconds: seconds,
                ..ConfigPolicy::default()
            };
            defaults
                .rules_for(&snapshot(kind, policy, 1).config)
                .response_timeout()
        };
        assert_eq!(rules(llm(), None), Some(Duration::from_secs(600)));
        assert_eq!(
            rules(generic(HttpMethod::Get), None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(rules(llm(), Some(2)), Some(Duration::from_secs(2)));
        assert_eq!(
            rules(generic(HttpMethod::Get), Some(0)),
            None,
            "0 = no limit"
        );
        let unlimited = FailoverPolicy {
            llm_response_timeout: None,
            ..defaults
        };
        assert_eq!(
            unlimited
                .rules_for(&snapshot(llm(), ConfigPolicy::default(), 1).config)
                .response_timeout(),
            None
        );
    }

    #[test]
    fn default_retry_classes_depend_on_kind_and_method() {
        let classes = |kind| {
            RetryOn::default_for(&snapshot(kind, ConfigPolicy::default(), 1).config)
                .classes()
                .map(RetryClass::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            classes(llm()),
            "rate_limited,auth_failed,server_error,connect_error"
        );
        assert_eq!(
            classes(generic(HttpMethod::Delete)),
            "rate_limited,auth_failed,server_error,connect_error"
        );
        assert_eq!(
            classes(generic(HttpMethod::Patch)),
            "rate_limited,auth_failed,connect_error"
        );
    }

    #[test]
    fn probes_restore_fail_or_cool_the_key() {
        let now = clock().now();
        let classifier = Classifier::new(TimeDelta::seconds(60));
        let effect = |outcome: Outcome<'_>| probe_decision(&classifier, &outcome, now).effect;
        assert_eq!(effect(status(200, "")), KeyEffect::Restore);
        assert_eq!(effect(status(403, "")), KeyEffect::Fail);
        assert_eq!(effect(status(401, "")), KeyEffect::Fail);
        assert_eq!(
            effect(status(429, "")),
            KeyEffect::CoolDown(now + TimeDelta::seconds(60))
        );
        assert_eq!(effect(status(503, "")), KeyEffect::Unchanged);
        assert_eq!(effect(Outcome::HeadTimeout), KeyEffect::Unchanged);
    }

    #[test]
    fn retry_classes_parse_and_serialize_by_wire_name() {
        assert_eq!("timeout".parse::<RetryClass>(), Ok(RetryClass::Timeout));
        assert!("sometimes".parse::<RetryClass>().is_err());
        let set = RetryOn::of([RetryClass::Timeout, RetryClass::RateLimited]);
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["rate_limited","timeout"]"#
        );
        assert!(!set.contains(RetryClass::ServerError));
    }
}
