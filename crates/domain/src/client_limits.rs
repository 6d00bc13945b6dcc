//! The limits of a client key (SPEC §7), as a pure state machine over explicit times so every
//! limiter adapter (in process, or a Redis script) applies the same rules and the rules are
//! tested case by case with a manual clock.
//!
//! - `rpm`: GCRA (the generic cell rate algorithm) with a burst of `rpm`: one theoretical arrival
//!   time per key; a burst of any size at one instant admits exactly `rpm` requests, then one
//!   every `60 s / rpm`.
//! - `tpm`: the same algorithm over tokens, charged after the fact (usage is known only when
//!   the exchange ends): a key that has drawn more than a minute's worth of tokens waits until
//!   the bucket is back under `tpm`; a request is never cut for tokens it is about to use.
//! - `token_budget` per `budget_period`: tokens counted in the current UTC period; the live
//!   count starts from the stored one (`seed`) and never goes below it.
//! - `max_concurrency`: requests in flight; a slot is taken at admission and given back when
//!   the exchange ends.
//!
//! A refused request changes nothing: it uses no rate, no slot and no budget.
//!
//! **Request leases.** A shared limiter (one Redis script per admission) costs a round trip and
//! the script's run per request. For a key whose only limit is a large `rpm`, an instance may
//! take a small batch of requests from the shared GCRA at once ([`LiveLimits::grant_requests`],
//! which the Redis script mirrors) and admit the following ones from that batch without asking
//! again ([`RequestLease`]), for at most [`REQUEST_LEASE_TTL`]. [`request_lease_size`] says how
//! many: 1 (no lease, every request asks the shared state) unless `rpm` is the only limit, then
//! `rpm / 6 000` within `[1, 64]`, so a key under 12 000 rpm is always exact. Every leased
//! request was counted by the shared GCRA before it is admitted (at most a TTL before), and
//! unused ones are discarded, never given back: the fleet never admits more than the GCRA grants,
//! and an instance may refuse at most one lease's worth of requests early.

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::{BudgetPeriod, ClientLimits};

const MINUTE_MICROS: i64 = 60_000_000;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `rpm`.
    Requests,
    /// `tpm`.
    Tokens,
    /// `token_budget` in the current `budget_period`.
    Budget,
    /// `max_concurrency`.
    Concurrency,
}

impl LimitKind {
    /// The SPEC §7 error code.
    pub fn code(self) -> &'static str {
        match self {
            LimitKind::Requests | LimitKind::Tokens => "client_rate_limited",
            LimitKind::Budget => "client_budget_exhausted",
            LimitKind::Concurrency => "client_concurrency_limit",
        }
    }

    /// A stable number for adapters that pass the kind through a script.
    pub fn from_number(number: i64) -> Option<Self> {
        match number {
            1 => Some(LimitKind::Requests),
            2 => Some(LimitKind::Tokens),
            3 => Some(LimitKind::Budget),
            4 => Some(LimitKind::Concurrency),
            _ => None,
        }
    }
}

/// A refused admission: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit.
    pub kind: LimitKind,
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after_seconds: u64,
}

/// Seconds a client refused for its whole-lifetime (`total`) budget is told to wait: the
/// budget does not come back by itself, so this only paces retries.
pub const TOTAL_BUDGET_RETRY_SECONDS: u64 = 86_400;

/// `rpm` per leased request: a lease holds `rpm / 6 000` requests, 1 % of what one second of the
/// rate allows (`rpm / 60`), so an instance takes at most 10 ms of the rate ahead of time, and a
/// key under 12 000 rpm (a lease of 1) is never leased: its admissions stay exact fleet-wide.
pub const RPM_PER_LEASED_REQUEST: u32 = 6_000;

/// The most requests one lease holds (reached at 384 000 rpm): one shared admission per 64
/// requests already removes 98 % of the round trips, and a larger lease would only let an
/// instance refuse more requests early (a lease's leftovers are discarded, never given back).
pub const MAX_REQUEST_LEASE: u32 = 64;

/// How long a lease stays usable after it was taken. Leased requests are admitted at most this
/// long after the shared GCRA counted them; one second keeps that shift small next to the rate's
/// minute while a lease is used up long before it ends at the rates that lease (≥ 200 per
/// second). What is left then is discarded.
pub const REQUEST_LEASE_TTL: TimeDelta = TimeDelta::seconds(1);

/// The requests an instance takes from the shared `rpm` at once under `limits`: 1 (no lease:
/// every request is admitted by the shared state, exactly) unless `rpm` is the only limit set,
/// then `rpm / RPM_PER_LEASED_REQUEST` within `[1, MAX_REQUEST_LEASE]`. Keys with `tpm`, a budget
/// or `max_concurrency` are never leased: those limits need the shared state per request.
pub fn request_lease_size(limits: &ClientLimits) -> u32 {
    match *limits {
        ClientLimits {
            rpm: Some(rpm),
            tpm: None,
            max_concurrency: None,
            budget: None,
        } => (rpm / RPM_PER_LEASED_REQUEST).clamp(1, MAX_REQUEST_LEASE),
        _ => 1,
    }
}

/// Requests an instance holds of a client key's `rpm`, granted by the shared GCRA ahead of time
/// ([`LiveLimits::grant_requests`]) and admitted one by one with [`RequestLease::take`] until
/// none is left, the lease expires ([`REQUEST_LEASE_TTL`]) or the key's `rpm` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLease {
    left: u32,
    rpm: u32,
    expires_at: DateTime<Utc>,
}

impl RequestLease {
    /// A lease of `requests` taken at `taken_at` under `rpm`, usable for [`REQUEST_LEASE_TTL`].
    pub fn new(requests: u32, rpm: u32, taken_at: DateTime<Utc>) -> Self {
        RequestLease {
            left: requests,
            rpm,
            expires_at: taken_at + REQUEST_LEASE_TTL,
        }
    }

    /// Whether a request can still be taken at `now` (under the `rpm` it was taken under).
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.left > 0 && now < self.expires_at
    }

    /// Takes one request at `now` for a key whose `rpm` is now `rpm`: `false` when the lease is
    /// used up, expired, or was taken under another `rpm` (the admin changed the limit), and the
    /// caller should then drop it and ask the shared state.
    pub fn take(&mut self, rpm: u32, now: DateTime<Utc>) -> bool {
        if self.rpm != rpm || !self.is_usable(now) {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Adds a lease taken later (another admission that found this one empty while it was
    /// being refilled): a lease under another `rpm`, or one that is no longer usable at `now`,
    /// is replaced by `later`; otherwise the requests add up and the joint lease expires when
    /// the earlier one does, so no request is admitted later than a TTL after it was counted.
    pub fn add(&mut self, later: RequestLease, now: DateTime<Utc>) {
        if self.rpm != later.rpm || !self.is_usable(now) {
            *self = later;
            return;
        }
        self.left = self.left.saturating_add(later.left);
        self.expires_at = self.expires_at.min(later.expires_at);
    }
}

/// The live counters of one client key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveLimits {
    /// GCRA theoretical arrival time of requests, in Unix microseconds.
    pub request_tat: i64,
    /// GCRA theoretical arrival time of tokens, in Unix microseconds.
    pub token_tat: i64,
    /// Requests in flight.
    pub in_flight: u32,
    /// Start of the budget period `budget_used` counts, in Unix seconds.
    pub budget_period: i64,
    /// Tokens used in that period.
    pub budget_used: u64,
}

/// Whole seconds from `micros` of waiting, rounded up, at least 1.
pub fn retry_seconds(micros: i64) -> u64 {
    let seconds = (micros.max(0) + 999_999) / 1_000_000;
    u64::try_from(seconds.max(1)).unwrap_or(1)
}

/// The budget period start of `period` at `now`, in Unix seconds.
pub fn period_start(period: BudgetPeriod, now: DateTime<Utc>) -> i64 {
    period.start(now).timestamp()
}

impl LiveLimits {
    /// Admits one request at `now` under `limits`, or says which limit refuses it. `seed` is the
    /// budget the store has counted in the current period (the live count never drops below it).
    /// An admitted request holds a concurrency slot when `max_concurrency` is set.
    ///
    /// # Errors
    /// The [`Refusal`] of the first limit that refuses, in the order budget, tokens,
    /// concurrency, requests; nothing is changed then.
    pub fn admit(
        &mut self,
        limits: &ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let now_micros = now.timestamp_micros();
        if let Some(budget) = limits.budget {
            self.roll_period(budget.period, seed, now);
            if self.budget_used >= budget.tokens {
                let retry = match budget.period.end(now) {
                    Some(end) => retry_seconds((end - now).num_microseconds().unwrap_or(i64::MAX)),
                    None => TOTAL_BUDGET_RETRY_SECONDS,
                };
                return Err(Refusal {
                    kind: LimitKind::Budget,
                    retry_after_seconds: retry,
                });
            }
        }
        if limits.tpm.is_some() && self.token_tat > now_micros + MINUTE_MICROS {
            return Err(Refusal {
                kind: LimitKind::Tokens,
                retry_after_seconds: retry_seconds(self.token_tat - MINUTE_MICROS - now_micros),
            });
        }
        if limits
            .max_concurrency
            .is_some_and(|max| self.in_flight >= max)
        {
            return Err(Refusal {
                kind: LimitKind::Concurrency,
                retry_after_seconds: 1,
            });
        }
        if let Some(rpm) = limits.rpm {
            self.grant_requests(rpm, 1, now)?;
        }
        if limits.max_concurrency.is_some() {
            self.in_flight += 1;
        }
        Ok(())
    }

    /// Grants up to `wanted` requests (0 counts as 1) of the `rpm` GCRA at `now`: as many as fit
    /// under its tolerance, each moving the theoretical arrival time by one interval, as that
    /// many admissions at `now` would. The Redis admission script is the mirror of this method;
    /// `admit` is its `wanted = 1` case.
    ///
    /// # Errors
    /// The `rpm` [`Refusal`] when not one request fits (the `Retry-After` of a single
    /// admission); nothing is changed then.
    pub fn grant_requests(
        &mut self,
        rpm: u32,
        wanted: u32,
        now: DateTime<Utc>,
    ) -> Result<u32, Refusal> {
        let now_micros = now.timestamp_micros();
        let interval = MINUTE_MICROS / i64::from(rpm.max(1));
        let tolerance = MINUTE_MICROS - interval;
        let tat = self.request_tat.max(now_micros);
        if tat - now_micros > tolerance {
            return Err(Refusal {
                kind: LimitKind::Requests,
                retry_after_seconds: retry_seconds(tat - tolerance - now_micros),
            });
        }
        let wanted = wanted.max(1);
        let granted = if interval == 0 {
            // Over 60 million rpm an interval rounds to nothing: every request fits.
            wanted
        } else {
            let fit = (tolerance - (tat - now_micros)) / interval + 1;
            u32::try_from(fit).map_or(wanted, |fit| fit.min(wanted))
        };
        self.request_tat = tat + i64::from(granted) * interval;
        Ok(granted)
    }

    /// Gives back a concurrency slot.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Charges `tokens` the upstream reported for an exchange that ended at `now`.
    pub fn record_tokens(
        &mut self,
        limits: &ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) {
        if tokens == 0 {
            return;
        }
        let now_micros = now.timestamp_micros();
        if let Some(tpm) = limits.tpm {
            let per_token = MINUTE_MICROS / i64::try_from(tpm.max(1)).unwrap_or(i64::MAX);
            let cost = per_token
                .max(1)
                .saturating_mul(i64::try_from(tokens).unwrap_or(i64::MAX));
            self.token_tat = self.token_tat.max(now_micros).saturating_add(cost);
        }
        if let Some(budget) = limits.budget {
            self.roll_period(budget.period, seed, now);
            self.budget_used = self.budget_used.saturating_add(tokens);
        }
    }

    /// Starts the budget count again in a new period, and lifts it to the stored count.
    fn roll_period(&mut self, period: BudgetPeriod, seed: u64, now: DateTime<Utc>) {
        let start = period_start(period, now);
        if self.budget_period != start {
            self.budget_period = start;
            self.budget_used = 0;
        }
        self.budget_used = self.budget_used.max(seed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeDelta;

    use super::*;
    use crate::model::TokenBudget;

    fn t0() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn rpm(n: u32) -> ClientLimits {
        ClientLimits {
            rpm: Some(n),
            ..ClientLimits::default()
        }
    }

    #[test]
    fn a_burst_admits_exactly_rpm() {
        let mut live = LiveLimits::default();
        let admitted = (0..100)
            .filter(|_| live.admit(&rpm(60), 0, t0()).is_ok())
            .count();
        assert_eq!(admitted, 60);
    }

    #[test]
    fn rpm_refusal_says_when_the_next_request_fits_and_it_does() {
        let mut live = LiveLimits::default();
        for _ in 0..3 {
            live.admit(&rpm(3), 0, t0()).unwrap();
        }
        let refusal = live.admit(&rpm(3), 0, t0()).unwrap_err();
        assert_eq!(refusal.kind, LimitKind::Requests);
        assert_eq!(refusal.kind.code(), "client_rate_limited");
        assert_eq!(refusal.retry_after_seconds, 20);
        let almost = t0() + TimeDelta::milliseconds(19_999);
        assert!(
            live.admit(&rpm(3), 0, almost).is_err(),
            "one microsecond early"
        );
        assert!(
            live.admit(&rpm(3), 0, t0() + TimeDelta::seconds(20))
                .is_ok()
        );
        assert!(
            live.admit(&rpm(3), 0, t0() + TimeDelta::seconds(20))
                .is_err()
        );
    }

    #[test]
    fn a_refused_request_uses_nothing() {
        let limits = ClientLimits {
            rpm: Some(1),
            max_concurrency: Some(5),
            ..ClientLimits::default()
        };
        let mut live = LiveLimits::default();
        live.admit(&limits, 0, t0()).unwrap();
        let before = live.clone();
        assert!(live.admit(&limits, 0, t0()).is_err());
        assert_eq!(live, before);
    }

    #[test]
    fn concurrency_slots_are_taken_and_given_back() {
        let limits = ClientLimits {
            max_concurrency: Some(2),
            ..ClientLimits::default()
        };
        let mut live = LiveLimits::default();
        live.admit(&limits, 0, t0()).unwrap();
        live.admit(&limits, 0, t0()).unwrap();
        let refusal = live.admit(&limits, 0, t0()).unwrap_err();
        assert_eq!(refusal.kind, LimitKind::Concurrency);
        assert_eq!(refusal.retry_after_seconds, 1);
        live.release();
        live.admit(&limits, 0, t0()).unwrap();
    }

    #[test]
    fn tokens_over_a_minutes_worth_refuse_until_the_bucket_drains() {
        let limits = ClientLimits {
            tpm: Some(600),
            ..ClientLimits::default()
        };
        let mut live = LiveLimits::default();
        live.admit(&limits, 0, t0()).unwrap();
        live.record_tokens(&limits, 600, 0, t0());
        // Exactly a minute's worth: the next request still fits.
        live.admit(&limits, 0, t0()).unwrap();
        live.record_tokens(&limits, 60, 0, t0());
        let refusal = live.admit(&limits, 0, t0()).unwrap_err();
        assert_eq!(refusal.kind, LimitKind::Tokens);
        assert_eq!(refusal.retry_after_seconds, 6);
        assert!(live.admit(&limits, 0, t0() + TimeDelta::seconds(6)).is_ok());
    }

    #[test]
    fn the_budget_counts_per_utc_day_from_the_stored_seed() {
        let limits = ClientLimits {
            budget: Some(TokenBudget {
                tokens: 100,
                period: BudgetPeriod::Day,
            }),
            ..ClientLimits::default()
        };
        let mut live = LiveLimits::default();
        live.admit(&limits, 90, t0()).unwrap();
        live.record_tokens(&limits, 10, 90, t0());
        let refusal = live.admit(&limits, 90, t0()).unwrap_err();
        assert_eq!(refusal.kind, LimitKind::Budget);
        assert_eq!(refusal.kind.code(), "client_budget_exhausted");
        assert_eq!(refusal.retry_after_seconds, 12 * 3600);
        let tomorrow = t0() + TimeDelta::hours(12);
        live.admit(&limits, 0, tomorrow).unwrap();
        assert_eq!(live.budget_used, 0);
    }

    #[test]
    fn a_total_budget_never_comes_back() {
        let limits = ClientLimits {
            budget: Some(TokenBudget {
                tokens: 5,
                period: BudgetPeriod::Total,
            }),
            ..ClientLimits::default()
        };
        let mut live = LiveLimits::default();
        live.record_tokens(&limits, 5, 0, t0());
        let later = t0() + TimeDelta::days(400);
        let refusal = live.admit(&limits, 0, later).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, TOTAL_BUDGET_RETRY_SECONDS);
    }

    #[test]
    fn only_a_large_rpm_alone_is_leased() {
        assert_eq!(request_lease_size(&ClientLimits::default()), 1);
        assert_eq!(request_lease_size(&rpm(3)), 1);
        assert_eq!(request_lease_size(&rpm(11_999)), 1, "exact under 12 000");
        assert_eq!(request_lease_size(&rpm(12_000)), 2);
        assert_eq!(request_lease_size(&rpm(60_000)), 10);
        assert_eq!(request_lease_size(&rpm(384_000)), 64);
        assert_eq!(request_lease_size(&rpm(1_000_000)), 64, "at most 64");
        for other in [
            ClientLimits {
                tpm: Some(1_000),
                ..rpm(1_000_000)
            },
            ClientLimits {
                max_concurrency: Some(10),
                ..rpm(1_000_000)
            },
            ClientLimits {
                budget: Some(TokenBudget {
                    tokens: 100,
                    period: BudgetPeriod::Day,
                }),
                ..rpm(1_000_000)
            },
        ] {
            assert_eq!(request_lease_size(&other), 1, "{other:?}");
        }
    }

    #[test]
    fn a_grant_of_many_when_all_fit_moves_the_tat_as_that_many_admissions() {
        let mut granted = LiveLimits::default();
        assert_eq!(granted.grant_requests(60_000, 10, t0()), Ok(10));
        let mut one_by_one = LiveLimits::default();
        for _ in 0..10 {
            one_by_one.admit(&rpm(60_000), 0, t0()).unwrap();
        }
        assert_eq!(granted, one_by_one);
    }

    #[test]
    fn a_grant_gives_only_what_fits_under_the_tolerance() {
        let mut live = LiveLimits::default();
        for _ in 0..57 {
            live.admit(&rpm(60), 0, t0()).unwrap();
        }
        assert_eq!(live.grant_requests(60, 10, t0()), Ok(3), "60 - 57 fit");
        let refusal = live.admit(&rpm(60), 0, t0()).unwrap_err();
        assert_eq!(refusal.kind, LimitKind::Requests);
        assert_eq!(
            live.grant_requests(60, 0, t0() + TimeDelta::seconds(1)),
            Ok(1)
        );
    }

    #[test]
    fn a_grant_when_none_fits_is_the_refusal_of_one_admission_and_changes_nothing() {
        let mut live = LiveLimits::default();
        for _ in 0..3 {
            live.admit(&rpm(3), 0, t0()).unwrap();
        }
        let before = live.clone();
        let refusal = live.grant_requests(3, 10, t0()).unwrap_err();
        assert_eq!(live, before);
        assert_eq!(Err(refusal), live.clone().admit(&rpm(3), 0, t0()));
        assert_eq!(refusal.retry_after_seconds, 20);
    }

    #[test]
    fn a_burst_of_grants_admits_exactly_rpm() {
        let mut live = LiveLimits::default();
        let mut admitted = 0;
        while let Ok(granted) = live.grant_requests(60_000, 64, t0()) {
            admitted += granted;
        }
        assert_eq!(admitted, 60_000);
    }

    #[test]
    fn a_lease_is_taken_until_used_up() {
        let mut lease = RequestLease::new(2, 60_000, t0());
        assert!(lease.take(60_000, t0()));
        assert!(lease.take(60_000, t0() + TimeDelta::milliseconds(10)));
        assert_eq!(lease.left, 0);
        assert!(!lease.take(60_000, t0() + TimeDelta::milliseconds(20)));
    }

    #[test]
    fn a_lease_expires_after_its_ttl() {
        let mut lease = RequestLease::new(5, 60_000, t0());
        let almost = t0() + REQUEST_LEASE_TTL - TimeDelta::microseconds(1);
        assert!(lease.take(60_000, almost));
        assert!(!lease.take(60_000, t0() + REQUEST_LEASE_TTL));
        assert!(!lease.is_usable(t0() + REQUEST_LEASE_TTL));
        assert_eq!(lease.left, 4, "what is left is discarded, never given back");
    }

    #[test]
    fn a_lease_taken_under_another_rpm_is_not_taken() {
        let mut lease = RequestLease::new(5, 60_000, t0());
        assert!(!lease.take(30_000, t0()), "the admin changed the limit");
        assert_eq!(lease.left, 5);
    }

    #[test]
    fn a_later_lease_adds_up_and_ends_with_the_earlier_one() {
        let mut lease = RequestLease::new(3, 60_000, t0());
        let later = t0() + TimeDelta::milliseconds(500);
        lease.add(RequestLease::new(9, 60_000, later), later);
        assert_eq!(lease.left, 12);
        assert_eq!(lease.expires_at, t0() + REQUEST_LEASE_TTL);

        let mut spent = RequestLease::new(0, 60_000, t0());
        spent.add(RequestLease::new(9, 60_000, later), later);
        assert_eq!(spent, RequestLease::new(9, 60_000, later), "replaced");

        let mut other_rpm = RequestLease::new(3, 30_000, t0());
        other_rpm.add(RequestLease::new(9, 60_000, later), later);
        assert_eq!(other_rpm, RequestLease::new(9, 60_000, later), "replaced");
    }

    #[test]
    fn no_limits_admit_everything_and_hold_no_slot() {
        let mut live = LiveLimits::default();
        for _ in 0..1000 {
            live.admit(&ClientLimits::default(), 0, t0()).unwrap();
        }
        assert_eq!(live.in_flight, 0);
    }
}
