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

use chrono::{DateTime, Utc};

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
            let interval = MINUTE_MICROS / i64::from(rpm.max(1));
            let tolerance = MINUTE_MICROS - interval;
            let tat = self.request_tat.max(now_micros);
            if tat - now_micros > tolerance {
                return Err(Refusal {
                    kind: LimitKind::Requests,
                    retry_after_seconds: retry_seconds(tat - tolerance - now_micros),
                });
            }
            self.request_tat = tat + interval;
        }
        if limits.max_concurrency.is_some() {
            self.in_flight += 1;
        }
        Ok(())
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
    fn no_limits_admit_everything_and_hold_no_slot() {
        let mut live = LiveLimits::default();
        for _ in 0..1000 {
            live.admit(&ClientLimits::default(), 0, t0()).unwrap();
        }
        assert_eq!(live.in_flight, 0);
    }
}
