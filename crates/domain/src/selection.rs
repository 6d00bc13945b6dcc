//! Key selection and failover (SPEC §3): round-robin over a config's usable keys with an atomic
//! counter from the rotation state, an ordered plan of distinct keys for the retries, and the
//! reporting of each attempt's outcome back into key health and usage.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::{
    classify::{Classifier, KeyEffect, Outcome, Verdict},
    clock::Clock,
    error::{Error, Result},
    model::{ApiKey, ApiKeyId, ConfigSnapshot, KeyHealth, UsageEvent},
    ports::{RotationState, Turn, UsageCounters},
};

/// How many times a request may be retried with another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Retries after the first attempt (`PROXY_MAX_RETRIES`, 2 by default).
    pub max_retries: u32,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy { max_retries: 2 }
    }
}

impl FailoverPolicy {
    /// First attempt plus retries.
    pub fn max_attempts(self) -> usize {
        usize::try_from(self.max_retries)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }
}

/// The keys one request may try, in order: the round-robin pick first, then the next usable keys
/// after it, each at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPlan {
    /// Positions in the snapshot's `keys`.
    positions: Vec<usize>,
}

impl AttemptPlan {
    /// Positions of the keys to try, in the snapshot's `keys`.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// The keys to try, in order.
    pub fn keys<'a>(
        &'a self,
        snapshot: &'a ConfigSnapshot,
    ) -> impl Iterator<Item = &'a Arc<ApiKey>> + 'a {
        self.positions.iter().filter_map(|&p| snapshot.keys.get(p))
    }
}

/// Plans the attempts of one request.
///
/// `candidates` are positions of the enabled keys, `turn.states` their health (aligned), and
/// `turn.counter` the drawn counter value.
///
/// # Errors
/// [`Error::NoUsableKey`] with the earliest end of a cooldown when no candidate is usable.
pub fn plan_attempts(
    candidates: &[usize],
    turn: &Turn,
    now: DateTime<Utc>,
    policy: FailoverPolicy,
) -> Result<AttemptPlan> {
    let usable: Vec<usize> = candidates
        .iter()
        .zip(&turn.states)
        .filter(|(_, health)| health.is_usable_at(now))
        .map(|(&position, _)| position)
        .collect();
    if usable.is_empty() {
        let retry_at = turn
            .states
            .iter()
            .filter_map(|h| h.at(now).cooldown_until())
            .min();
        return Err(Error::NoUsableKey { retry_at });
    }
    let start = usize::try_from(turn.counter % usable.len() as u64).unwrap_or(0);
    let attempts = policy.max_attempts().min(usable.len());
    let positions = (0..attempts)
        .map(|k| usable[(start + k) % usable.len()])
        .collect();
    Ok(AttemptPlan { positions })
}

/// Selects keys and applies the consequences of each attempt.
#[derive(Clone)]
pub struct Rotator {
    state: Arc<dyn RotationState>,
    usage: Arc<dyn UsageCounters>,
    clock: Arc<dyn Clock>,
    classifier: Classifier,
    policy: FailoverPolicy,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Rotator {
    /// A rotator over these ports.
    pub fn new(
        state: Arc<dyn RotationState>,
        usage: Arc<dyn UsageCounters>,
        clock: Arc<dyn Clock>,
        classifier: Classifier,
        policy: FailoverPolicy,
    ) -> Self {
        Rotator {
            state,
            usage,
            clock,
            classifier,
            policy,
        }
    }

    /// The failover policy in force.
    pub fn policy(&self) -> FailoverPolicy {
        self.policy
    }

    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Draws the next turn for the snapshot's config and plans the request's attempts.
    ///
    /// # Errors
    /// [`Error::NoUsableKey`] when every key is disabled, cooling or failed; an unavailable
    /// rotation state.
    pub async fn plan(&self, snapshot: &ConfigSnapshot) -> Result<AttemptPlan> {
        let candidates: Vec<usize> = (0..snapshot.keys.len())
            .filter(|&i| snapshot.keys[i].is_active)
            .collect();
        if candidates.is_empty() {
            return Err(Error::NoUsableKey { retry_at: None });
        }
        let ids: Vec<ApiKeyId> = candidates.iter().map(|&i| snapshot.keys[i].id).collect();
        let turn = self.state.next_turn(snapshot.config.id, &ids).await?;
        if turn.states.len() != ids.len() {
            return Err(Error::Internal(
                "rotation state answered for the wrong number of keys".into(),
            ));
        }
        plan_attempts(&candidates, &turn, self.clock.now(), self.policy)
    }

    /// Classifies an attempt's outcome, records it in the key's usage and applies its effect on
    /// the key's health.
    ///
    /// # Errors
    /// An unavailable rotation state. Callers that must go on regardless call
    /// [`Rotator::classify`] and [`Rotator::apply`] separately.
    pub async fn report(&self, key: ApiKeyId, outcome: &Outcome<'_>) -> Result<Verdict> {
        let verdict = self.classify(key, outcome);
        self.apply(key, verdict).await?;
        Ok(verdict)
    }

    /// Classifies an attempt's outcome and records it in the key's usage (no I/O).
    pub fn classify(&self, key: ApiKeyId, outcome: &Outcome<'_>) -> Verdict {
        let now = self.clock.now();
        let verdict = self.classifier.classify(outcome, now);
        let status = match outcome {
            Outcome::Response(response) => Some(response.status),
            Outcome::ConnectFailed | Outcome::HeadTimeout => None,
        };
        self.usage.record(
            key,
            UsageEvent {
                status,
                failed: verdict.is_failure(),
                at: now,
            },
        );
        verdict
    }

    /// Applies a verdict's effect on the key's health.
    ///
    /// # Errors
    /// An unavailable rotation state.
    pub async fn apply(&self, key: ApiKeyId, verdict: Verdict) -> Result<Option<KeyHealth>> {
        match verdict.key_effect() {
            KeyEffect::Unchanged => Ok(None),
            KeyEffect::CoolDown(until) => {
                let until = self.state.cool_down(key, until).await?;
                Ok(Some(KeyHealth::Cooling { until }))
            }
            KeyEffect::Fail => {
                self.state.mark_failed(key).await?;
                Ok(Some(KeyHealth::Failed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::{
        collections::HashMap,
        sync::{
            Mutex,
            atomic::{AtomicU64, Ordering},
        },
    };

    use chrono::TimeDelta;
    use mockall::predicate::eq;

    use super::*;
    use crate::{
        classify::UpstreamResponse,
        clock::ManualClock,
        model::{
            ConfigKind, HttpUrl, KeySecret, KeyUsage, LlmTarget, OutputFormat, ProxyConfig,
            ProxyConfigId,
        },
        ports::{MockRotationState, MockUsageCounters},
    };

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn snapshot(key_count: i64) -> ConfigSnapshot {
        let config = ProxyConfig {
            id: ProxyConfigId(7),
            name: "OpenAI".parse().unwrap(),
            slug: "openai".parse().unwrap(),
            is_active: true,
            kind: ConfigKind::Llm(LlmTarget {
                target_base_url: "https://api.example.com/v1".parse::<HttpUrl>().unwrap(),
                api_format: crate::ApiFormat::OpenaiCompatible,
                output_format: OutputFormat::None,
                key_placement: None,
            }),
            created_at: start(),
            updated_at: start(),
        };
        let keys = (1..=key_count)
            .map(|id| {
                Arc::new(ApiKey {
                    id: ApiKeyId(id),
                    proxy_config_id: config.id,
                    key_value: KeySecret::parse(&format!("sk-key-{id}")).unwrap(),
                    is_active: true,
                    health: KeyHealth::Ok,
                    usage: KeyUsage::default(),
                    created_at: start(),
                    updated_at: start(),
                })
            })
            .collect();
        ConfigSnapshot { config, keys }
    }

    /// A rotation state mock backed by a real counter and a health table.
    fn stateful_rotation(health: Arc<Mutex<HashMap<ApiKeyId, KeyHealth>>>) -> MockRotationState {
        let counter = Arc::new(AtomicU64::new(0));
        let mut state = MockRotationState::new();
        state.expect_next_turn().returning(move |_, keys| {
            let table = health.lock().unwrap();
            Ok(Turn {
                counter: counter.fetch_add(1, Ordering::SeqCst),
                states: keys
                    .iter()
                    .map(|k| table.get(k).copied().unwrap_or_default())
                    .collect(),
            })
        });
        state
    }

    fn rotator(state: MockRotationState, clock: Arc<ManualClock>) -> Rotator {
        let mut usage = MockUsageCounters::new();
        usage.expect_record().return_const(());
        Rotator::new(
            Arc::new(state),
            Arc::new(usage),
            clock,
            Classifier::new(TimeDelta::seconds(60)),
            FailoverPolicy::default(),
        )
    }

    fn first_key(plan: &AttemptPlan, snapshot: &ConfigSnapshot) -> i64 {
        plan.keys(snapshot).next().unwrap().id.0
    }

    #[tokio::test]
    async fn round_robin_uses_each_of_three_keys_exactly_a_thousand_times() {
        let rotator = rotator(
            stateful_rotation(Arc::default()),
            Arc::new(ManualClock::new(start())),
        );
        let snapshot = snapshot(3);
        let mut counts = HashMap::new();
        for _ in 0..3_000 {
            let plan = rotator.plan(&snapshot).await.unwrap();
            *counts.entry(first_key(&plan, &snapshot)).or_insert(0) += 1;
        }
        assert_eq!(counts, HashMap::from([(1, 1_000), (2, 1_000), (3, 1_000)]));
    }

    #[tokio::test]
    async fn round_robin_skips_cooling_and_failed_keys() {
        let clock = Arc::new(ManualClock::new(start()));
        let health = Arc::new(Mutex::new(HashMap::from([
            (
                ApiKeyId(1),
                KeyHealth::Cooling {
                    until: start() + TimeDelta::seconds(30),
                },
            ),
            (ApiKeyId(3), KeyHealth::Failed),
        ])));
        let rotator = rotator(stateful_rotation(health), clock.clone());
        let snapshot = snapshot(4);
        for _ in 0..10 {
            let picked = first_key(&rotator.plan(&snapshot).await.unwrap(), &snapshot);
            assert!(picked == 2 || picked == 4, "picked {picked}");
        }
        clock.advance(TimeDelta::seconds(30));
        let mut picked = std::collections::HashSet::new();
        for _ in 0..3 {
            picked.insert(first_key(
                &rotator.plan(&snapshot).await.unwrap(),
                &snapshot,
            ));
        }
        assert_eq!(
            picked,
            [1, 2, 4].into_iter().collect(),
            "cooled key comes back by itself"
        );
    }

    #[tokio::test]
    async fn all_keys_cooling_reports_the_earliest_return() {
        let soon = start() + TimeDelta::seconds(10);
        let health = Arc::new(Mutex::new(HashMap::from([
            (
                ApiKeyId(1),
                KeyHealth::Cooling {
                    until: start() + TimeDelta::seconds(40),
                },
            ),
            (ApiKeyId(2), KeyHealth::Cooling { until: soon }),
            (ApiKeyId(3), KeyHealth::Failed),
        ])));
        let rotator = rotator(
            stateful_rotation(health),
            Arc::new(ManualClock::new(start())),
        );
        let err = rotator.plan(&snapshot(3)).await.unwrap_err();
        assert!(
            matches!(err, Error::NoUsableKey { retry_at: Some(at) } if at == soon),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn all_keys_disabled_fails_without_touching_the_rotation_state() {
        let mut state = MockRotationState::new();
        state.expect_next_turn().never();
        let rotator = rotator(state, Arc::new(ManualClock::new(start())));
        let mut snapshot = snapshot(2);
        for key in &mut snapshot.keys {
            Arc::make_mut(key).is_active = false;
        }
        let err = rotator.plan(&snapshot).await.unwrap_err();
        assert!(matches!(err, Error::NoUsableKey { retry_at: None }));
    }

    #[tokio::test]
    async fn a_key_disabled_between_two_selections_is_never_chosen_again() {
        let rotator = rotator(
            stateful_rotation(Arc::default()),
            Arc::new(ManualClock::new(start())),
        );
        let mut snapshot = snapshot(3);
        assert_eq!(
            first_key(&rotator.plan(&snapshot).await.unwrap(), &snapshot),
            1
        );
        Arc::make_mut(&mut snapshot.keys[1]).is_active = false;
        for _ in 0..20 {
            let plan = rotator.plan(&snapshot).await.unwrap();
            assert!(plan.keys(&snapshot).all(|k| k.id.0 != 2));
        }
    }

    #[test]
    fn failover_over_five_keys_with_two_failing_tries_each_key_once_in_order() {
        let failed = KeyHealth::Failed;
        let turn = Turn {
            counter: 3,
            states: vec![KeyHealth::Ok, failed, KeyHealth::Ok, failed, KeyHealth::Ok],
        };
        let candidates = [0, 1, 2, 3, 4];
        let wide = FailoverPolicy { max_retries: 10 };
        let plan = plan_attempts(&candidates, &turn, start(), wide).unwrap();
        // Usable: positions 0, 2, 4; counter 3 starts at usable[0].
        assert_eq!(plan.positions(), [0, 2, 4]);
        let plan = plan_attempts(
            &Vec::from(candidates),
            &Turn {
                counter: 4,
                ..turn.clone()
            },
            start(),
            wide,
        )
        .unwrap();
        assert_eq!(plan.positions(), [2, 4, 0]);
        let narrow = FailoverPolicy { max_retries: 1 };
        let plan = plan_attempts(&candidates, &turn, start(), narrow).unwrap();
        assert_eq!(plan.positions(), [0, 2], "at most max_retries + 1 attempts");
    }

    #[tokio::test]
    async fn report_cools_rate_limited_keys_and_fails_rejected_ones() {
        let mut state = MockRotationState::new();
        let until = start() + TimeDelta::seconds(5);
        state
            .expect_cool_down()
            .with(eq(ApiKeyId(1)), eq(until))
            .times(1)
            .returning(|_, until| Ok(until));
        state
            .expect_mark_failed()
            .with(eq(ApiKeyId(2)))
            .times(1)
            .returning(|_| Ok(()));
        let rotator = rotator(state, Arc::new(ManualClock::new(start())));
        let limited = Outcome::Response(UpstreamResponse {
            status: 429,
            retry_after: Some("5"),
            ..Default::default()
        });
        let verdict = rotator.report(ApiKeyId(1), &limited).await.unwrap();
        assert_eq!(verdict, Verdict::RateLimited { until });
        let rejected = Outcome::Response(UpstreamResponse {
            status: 401,
            ..Default::default()
        });
        assert_eq!(
            rotator.report(ApiKeyId(2), &rejected).await.unwrap(),
            Verdict::KeyRejected
        );
        let fault = Outcome::ConnectFailed;
        assert_eq!(
            rotator.report(ApiKeyId(3), &fault).await.unwrap(),
            Verdict::UpstreamFault
        );
    }

    #[test]
    fn report_records_usage_with_status_and_failure() {
        let mut usage = MockUsageCounters::new();
        usage
            .expect_record()
            .withf(|key, event| *key == ApiKeyId(9) && event.status == Some(503) && event.failed)
            .times(1)
            .return_const(());
        let rotator = Rotator::new(
            Arc::new(MockRotationState::new()),
            Arc::new(usage),
            Arc::new(ManualClock::new(start())),
            Classifier::new(TimeDelta::seconds(60)),
            FailoverPolicy::default(),
        );
        let outcome = Outcome::Response(UpstreamResponse {
            status: 503,
            ..Default::default()
        });
        assert_eq!(
            rotator.classify(ApiKeyId(9), &outcome),
            Verdict::UpstreamFault
        );
    }
}
