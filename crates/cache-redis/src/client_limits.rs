//! `ClientLimiter` on Redis: the rules of `domain::client_limits`, applied by one Lua script per
//! admission, so every instance of a fleet enforces one limit. Each client key's state lives
//! under one hash tag, `{<namespace>:ck:<id>}`, so a script touches keys of one cluster slot:
//! `…:state`, a hash of the GCRA arrival times and the budget count of its period, and
//! `…:slots`, a sorted set of the concurrency slots in flight scored by their lease's end, so a
//! slot an instance never gives back (it crashed) stops counting when its lease ends.
//!
//! A live instance renews the lease of every slot it holds, every third of a lease, for as long
//! as it holds it (`crate::slot_renewal`): an exchange longer than the lease (a long stream) keeps
//! its slot, and the fleet never admits past `max_concurrency` because of it. `admit` records the
//! slot it hands out before answering, `release` forgets it before its `ZREM`, so only slots a
//! caller holds are renewed; when the cache is dropped or quits, its slots end with their lease.
//!
//! A key whose only limit is an `rpm` of 12 000 or more is admitted from *request leases*
//! (`domain::client_limits::request_lease_size`): the script grants up to a lease's worth of
//! requests at once (the mirror of `LiveLimits::grant_requests`), the first is admitted and the
//! rest are kept in this cache (`crate::request_leases`) for the following requests, for at
//! most `REQUEST_LEASE_TTL`; unused ones are discarded, never given back. Every other key takes
//! one script per admission, exactly as the domain's `admit`. An admission cancelled after its
//! script ran loses what the script granted: the fleet may refuse early, never admit more.
//!
//! The scripts run with `EVALSHA` (fred's `Script`, loaded again by fred when a server answers
//! `NOSCRIPT`, after a restart or a failover to a node that never saw it), so a call carries the
//! script's digest rather than its text.
//!
//! Times travel as Unix microseconds (exact in Lua's doubles until the year 2255).

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    Admission, ClientKeyId, ClientLimiter, ClientLimits, Error, LimitKind, Refusal, Result, SlotId,
    client_limits::{RequestLease, TOTAL_BUDGET_RETRY_SECONDS, request_lease_size, retry_seconds},
};
use fred::{prelude::*, types::scripts::Script};

use crate::{RedisCache, convert::cache_error};

/// Admission: budget, tokens, concurrency, requests, in the domain's order; a refusal changes
/// nothing. `ARGV[11]` is the number of requests wanted (`wanted`, more than 1 only for a key
/// whose only limit is `rpm`): the `rpm` branch is `LiveLimits::grant_requests`. Returns
/// `{0, granted}` or `{kind, wait in microseconds (-1: never by itself)}`.
const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local maxc = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local pstart = ARGV[6]
local pend = tonumber(ARGV[7])
local seed = tonumber(ARGV[8])
local slot = ARGV[9]
local lease = tonumber(ARGV[10])
local wanted = math.max(tonumber(ARGV[11]) or 1, 1)
local granted = 1
local now_ms = math.floor(now / 1000)
local MINUTE = 60000000
local s = redis.call('HMGET', KEYS[1], 'rtat', 'ttat', 'bperiod', 'bused')
local rtat = tonumber(s[1]) or 0
local ttat = tonumber(s[2]) or 0
local bused = tonumber(s[4]) or 0
if budget > 0 then
  if s[3] ~= pstart then bused = 0 end
  if bused < seed then bused = seed end
  if bused >= budget then
    if pend > 0 then return {3, pend - now} end
    return {3, -1}
  end
end
if tpm > 0 and ttat > now + MINUTE then return {2, ttat - MINUTE - now} end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) >= maxc then return {4, 1000000} end
end
if rpm > 0 then
  local interval = math.floor(MINUTE / rpm)
  local tolerance = MINUTE - interval
  local tat = math.max(rtat, now)
  if tat - now > tolerance then return {1, tat - tolerance - now} end
  granted = wanted
  if interval > 0 then
    granted = math.min(wanted, math.floor((tolerance - (tat - now)) / interval) + 1)
  end
  redis.call('HSET', KEYS[1], 'rtat', string.format('%d', tat + granted * interval))
end
if budget > 0 then
  redis.call('HSET', KEYS[1], 'bperiod', pstart, 'bused', string.format('%d', bused))
end
redis.call('PEXPIRE', KEYS[1], 172800000)
if maxc > 0 then
  redis.call('ZADD', KEYS[2], now_ms + lease, slot)
  redis.call('PEXPIRE', KEYS[2], lease * 2)
end
return {0, granted}
"#;

/// Charges tokens: the token GCRA and the budget of the current period.
const RECORD: &str = r#"
local now = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local has_budget = tonumber(ARGV[4])
local pstart = ARGV[5]
local seed = tonumber(ARGV[6])
if tpm > 0 then
  local per = math.max(math.floor(60000000 / tpm), 1)
  local ttat = tonumber(redis.call('HGET', KEYS[1], 'ttat')) or 0
  redis.call('HSET', KEYS[1], 'ttat', string.format('%d', math.max(ttat, now) + per * tokens))
end
if has_budget > 0 then
  local s = redis.call('HMGET', KEYS[1], 'bperiod', 'bused')
  local used = tonumber(s[2]) or 0
  if s[1] ~= pstart then used = 0 end
  if used < seed then used = seed end
  redis.call('HSET', KEYS[1], 'bperiod', pstart, 'bused', string.format('%d', used + tokens))
end
redis.call('PEXPIRE', KEYS[1], 172800000)
return 1
"#;

/// [`ADMIT`] and [`RECORD`] with their digests, computed once.
static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(ADMIT));
static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RECORD));

/// This process's name in slot members, so two instances never hand out the same member.
fn instance() -> u64 {
    static INSTANCE: OnceLock<u64> = OnceLock::new();
    // `RandomState` is seeded from the OS per process.
    *INSTANCE.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

fn next_slot() -> SlotId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    SlotId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A slot's member in its client key's sorted set.
pub(crate) fn member(slot: SlotId) -> String {
    format!("{:x}:{}", instance(), slot.0)
}

/// A limit as a script argument: `0` for none.
fn number<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "0".to_owned(), |v| v.to_string())
}

/// What the admission script answered: the requests granted, or the refusal.
type Granted = std::result::Result<u32, Refusal>;

/// One run of the admission script for a client key.
struct AdmitRun<'a> {
    limits: &'a ClientLimits,
    /// The budget the store counted in the current period.
    seed: u64,
    now: DateTime<Utc>,
    /// The slot to take, when `max_concurrency` is set.
    slot: Option<SlotId>,
    /// Requests wanted: 1, or a lease's size for a key whose only limit is `rpm`.
    wanted: u32,
}

impl RedisCache {
    fn client_key_names(&self, key: ClientKeyId) -> Vec<String> {
        let names = self.names();
        vec![names.client_key_state(key), names.client_key_slots(key)]
    }

    /// Runs the admission script for `key`.
    async fn run_admit(&self, key: ClientKeyId, run: AdmitRun<'_>) -> Result<Granted> {
        let AdmitRun {
            limits,
            seed,
            now,
            slot,
            wanted,
        } = run;
        let (period_start, period_end) = match limits.budget {
            Some(budget) => (
                budget.period.start(now).timestamp().to_string(),
                budget
                    .period
                    .end(now)
                    .map_or(0, |end| end.timestamp_micros()),
            ),
            None => (String::new(), 0),
        };
        let lease_ms = i64::try_from(self.slot_lease().as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let args = vec![
            now.timestamp_micros().to_string(),
            number(limits.rpm),
            number(limits.tpm),
            number(limits.max_concurrency),
            number(limits.budget.map(|b| b.tokens)),
            period_start,
            period_end.to_string(),
            seed.to_string(),
            slot.map(member).unwrap_or_default(),
            lease_ms.to_string(),
            wanted.to_string(),
        ];
        let reply: Vec<i64> = ADMIT_SCRIPT
            .evalsha_with_reload(&self.command_client(), self.client_key_names(key), args)
            .await
            .map_err(|e| cache_error(&e))?;
        let (&code, &value) = match reply.as_slice() {
            [code, value] => (code, value),
            _ => {
                return Err(Error::Internal(
                    "unexpected reply of the admission script".to_owned(),
                ));
            }
        };
        if code == 0 {
            // At least 1, at most what was asked for: the script's own bounds, kept here too.
            let granted = u32::try_from(value).unwrap_or(1).clamp(1, wanted.max(1));
            return Ok(Ok(granted));
        }
        let kind = LimitKind::from_number(code).ok_or_else(|| {
            Error::Internal("unexpected limit of the admission script".to_owned())
        })?;
        let retry_after_seconds = if value < 0 {
            TOTAL_BUDGET_RETRY_SECONDS
        } else {
            retry_seconds(value)
        };
        Ok(Err(Refusal {
            kind,
            retry_after_seconds,
        }))
    }

    /// Admits one request of a key whose only limit is `rpm`, leased `size` requests at a time:
    /// from the lease this cache holds, else from a new one the script grants.
    async fn admit_leased(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        rpm: u32,
        size: u32,
        now: DateTime<Utc>,
    ) -> Result<Admission> {
        if self.request_leases().take(key, rpm, now) {
            return Ok(Admission::Admitted(None));
        }
        let run = AdmitRun {
            limits,
            // No budget: only `rpm` is set.
            seed: 0,
            now,
            slot: None,
            wanted: size,
        };
        match self.run_admit(key, run).await? {
            Ok(granted) => {
                // The first is this request's; the rest wait for the next ones.
                let lease = RequestLease::new(granted.saturating_sub(1), rpm, now);
                self.request_leases().keep(key, lease, now);
                Ok(Admission::Admitted(None))
            }
            Err(refusal) => Ok(Admission::Refused(refusal)),
        }
    }
}

#[async_trait]
impl ClientLimiter for RedisCache {
    #[tracing::instrument(level = "debug", skip(self, limits))]
    async fn admit(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<Admission> {
        if limits.is_unlimited() {
            return Ok(Admission::Admitted(None));
        }
        match (limits.rpm, request_lease_size(limits)) {
            (Some(rpm), size) if size > 1 => {
                return self.admit_leased(key, limits, rpm, size, now).await;
            }
            _ => {}
        }
        let slot = limits.max_concurrency.map(|_| next_slot());
        let run = AdmitRun {
            limits,
            seed,
            now,
            slot,
            wanted: 1,
        };
        match self.run_admit(key, run).await? {
            Ok(_) => {
                // Recorded only now, with no await left before the caller gets it: a cancelled
                // admission leaves no slot renewed forever, only one that ends with its lease.
                if let Some(slot) = slot {
                    self.held_slots().hold(key, slot);
                }
                Ok(Admission::Admitted(slot))
            }
            Err(refusal) => Ok(Admission::Refused(refusal)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn release(&self, key: ClientKeyId, slot: SlotId) -> Result<()> {
        // Forgotten first, so a slot whose `ZREM` fails is no longer renewed and ends with its
        // lease rather than counting for as long as this process lives.
        self.held_slots().give_back(key, slot);
        let slots = self.names().client_key_slots(key);
        let _: i64 = self
            .command_client()
            .zrem(slots, member(slot))
            .await
            .map_err(|e| cache_error(&e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self, limits))]
    async fn record_tokens(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if tokens == 0 || (limits.tpm.is_none() && limits.budget.is_none()) {
            return Ok(());
        }
        let args = vec![
            now.timestamp_micros().to_string(),
            number(limits.tpm),
            tokens.to_string(),
            if limits.budget.is_some() { "1" } else { "0" }.to_owned(),
            limits
                .budget
                .map(|b| b.period.start(now).timestamp().to_string())
                .unwrap_or_default(),
            seed.to_string(),
        ];
        let keys = vec![self.names().client_key_state(key)];
        let _: i64 = RECORD_SCRIPT
            .evalsha_with_reload(&self.command_client(), keys, args)
            .await
            .map_err(|e| cache_error(&e))?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        domain::RotationState::ping(self).await
    }
}
