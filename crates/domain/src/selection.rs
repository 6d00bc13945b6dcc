//! Key selection (SPEC §3): round-robin over a config's usable keys with an atomic counter from
//! the rotation state and an ordered plan of distinct keys for the retries; and the [`Rotator`],
//! which starts a request's [`Failover`] and applies each decision's key effect and usage
//! through the ports.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::{
    classify::{Classifier, KeyEffect, Outcome},
    clock::Clock,
    error::{Error, Result},
    failover::{BodyReplay, Decision, Failover, FailoverPolicy, probe_decision},
    model::{ApiKey, ApiKeyId, ConfigSnapshot, KeyHealth, UsageEvent},
    ports::{RotationState, Turn, UsageCounters},
};

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
/// `turn.counter` the drawn counter value; at most `max_attempts` keys are planned.
///
/// # Errors
/// [`Error::NoUsableKey`] with the earliest end of a cooldown when no candidate is usable.
pub fn plan_attempts(
    candidates: &[usize],
    turn: &Turn,
    now: DateTime<Utc>,
    max_attempts: usize,
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
    let attempts = max_attempts.min(usable.len());
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

    /// The environment's failover defaults.
    pub fn policy(&self) -> FailoverPolicy {
        self.policy
    }

    /// The classifier in use.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Starts the failover of one request to the snapshot's config: resolves the config's rules,
    /// draws the next turn and plans the keys to try.
    ///
    /// # Errors
    /// [`Error::NoUsableKey`] when every key is disabled, cooling or failed; an unavailable
    /// rotation state.
    pub async fn begin(&self, snapshot: &ConfigSnapshot, body: BodyReplay) -> Result<Failover> {
        let rules = self.policy.rules_for(&snapshot.config);
        let plan = self.plan(snapshot, rules.max_attempts()).await?;
        Ok(Failover::new(rules, self.classifier, plan, body))
    }

    /// Draws the next turn for the snapshot's config and plans up to `max_attempts` keys.
    ///
    /// # Errors
    /// [`Error::NoUsableKey`] when every key is disabled, cooling or failed; an unavailable
    /// rotation state.
    pub async fn plan(
        &self,
        snapshot: &ConfigSnapshot,
        max_attempts: usize,
    ) -> Result<AttemptPlan> {
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
        plan_attempts(&candidates, &turn, self.clock.now(), max_attempts)
    }

    /// Feeds the attempt just sent with `key` to the request's failover, records it in the key's
    /// usage and applies the decision's key effect.
    pub async fn settle(
        &self,
        failover: &mut Failover,
        key: ApiKeyId,
        outcome: &Outcome<'_>,
    ) -> Settled {
        let now = self.clock.now();
        let decision = failover.judge(key, outcome, now);
        self.record(key, outcome, &decision, now);
        self.enact(key, decision).await
    }

    /// Feeds the probe that confirms an ambiguous 403 ([`crate::Next::Confirm`]) of `key`.
    pub async fn settle_confirmation(
        &self,
        failover: &mut Failover,
        key: ApiKeyId,
        probe: &Outcome<'_>,
    ) -> Settled {
        let decision = failover.confirm(probe, self.clock.now());
        self.enact(key, decision).await
    }

    /// Judges a key probe on its own (admin test, background recovery) and applies it.
    pub async fn settle_probe(&self, key: ApiKeyId, probe: &Outcome<'_>) -> Settled {
        let now = self.clock.now();
        let decision = probe_decision(&self.classifier, probe, now);
        self.record(key, probe, &decision, now);
        self.enact(key, decision).await
    }

    fn record(
        &self,
        key: ApiKeyId,
        outcome: &Outcome<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) {
        let status = match outcome {
            Outcome::Response(response) => Some(response.status),
            Outcome::ConnectFailed | Outcome::HeadTimeout => None,
        };
        self.usage.record(
            key,
            UsageEvent {
                status,
                failed: decision.verdict.is_failure(),
                at: now,
            },
        );
    }

    async fn enact(&self, key: ApiKeyId, decision: Decision) -> Settled {
        Settled {
            decision,
            health: self.apply(key, decision.effect).await,
        }
    }

    /// Applies a key effect through the rotation state; the key's new health when it changed.
    ///
    /// # Errors
    /// An unavailable rotation state.
    pub async fn apply(&self, key: ApiKeyId, effect: KeyEffect) -> Result<Option<KeyHealth>> {
        match effect {
            KeyEffect::Unchanged => Ok(None),
            KeyEffect::CoolDown(until) => {
                let until = self.state.cool_down(key, until).await?;
                Ok(Some(KeyHealth::Cooling { until }))
            }
            KeyEffect::Fail => {
                self.state.mark_failed(key).await?;
                Ok(Some(KeyHealth::Failed))
            }
            KeyEffect::Restore => {
                self.state.mark_ok(key).await?;
                Ok(Some(KeyHealth::Ok))
            }
        }
    }
}

/// A decision, applied.
#[derive(Debug)]
pub struct Settled {
    /// What the machine decided.
    pub decision: Decision,
    /// The key's new health when the decision changed it (to be persisted off the request
    /// path), or why the rotation state could not apply it: a down rotation state never fails
    /// the request.
    pub health: Result<Option<KeyHealth>>,
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
        classify::{UpstreamResponse, Verdict},
        clock::ManualClock,
        failover::Next,
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
            policy: Default::default(),
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
            let plan = rotator.plan(&snapshot, 3).await.unwrap();
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
            let picked = first_key(&rotator.plan(&snapshot, 3).await.unwrap(), &snapshot);
            assert!(picked == 2 || picked == 4, "picked {picked}");
        }
        clock.advance(TimeDelta::seconds(30));
        let mut picked = std::collections::HashSet::new();
        for _ in 0..3 {
            picked.insert(first_key(
                &rotator.plan(&snapshot, 3).await.unwrap(),
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
        let err = rotator.plan(&snapshot(3), 3).await.unwrap_err();
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
        let err = rotator.plan(&snapshot, 3).await.unwrap_err();
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
            first_key(&rotator.plan(&snapshot, 3).await.unwrap(), &snapshot),
            1
        );
        Arc::make_mut(&mut snapshot.keys[1]).is_active = false;
        for _ in 0..20 {
            let plan = rotator.plan(&snapshot, 3).await.unwrap();
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
        let wide = 11;
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
        let narrow = 2;
        let plan = plan_attempts(&candidates, &turn, start(), narrow).unwrap();
        assert_eq!(plan.positions(), [0, 2], "at most max_retries + 1 attempts");
    }

    #[tokio::test]
    async fn settle_cools_rate_limited_keys_fails_rejected_ones_and_restores_probed_ones() {
        let mut state = stateful_rotation(Arc::default());
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
        state
            .expect_mark_ok()
            .with(eq(ApiKeyId(3)))
            .times(1)
            .returning(|_| Ok(()));
        let rotator = rotator(state, Arc::new(ManualClock::new(start())));
        let snapshot = snapshot(3);
        let mut failover = rotator
            .begin(&snapshot, BodyReplay::Replayable)
            .await
            .unwrap_or_else(|_| panic!("plan"));
        let limited = Outcome::Response(UpstreamResponse {
            status: 429,
            retry_after: Some("5"),
            ..Default::default()
        });
        let settled = rotator.settle(&mut failover, ApiKeyId(1), &limited).await;
        assert_eq!(settled.decision.verdict, Verdict::RateLimited { until });
        assert_eq!(settled.decision.next, Next::Retry);
        assert_eq!(settled.health.unwrap(), Some(KeyHealth::Cooling { until }));
        let rejected = Outcome::Response(UpstreamResponse {
            status: 401,
            ..Default::default()
        });
        let settled = rotator.settle(&mut failover, ApiKeyId(2), &rejected).await;
        assert_eq!(settled.health.unwrap(), Some(KeyHealth::Failed));
        let healthy = Outcome::Response(UpstreamResponse {
            status: 200,
            ..Default::default()
        });
        let settled = rotator.settle_probe(ApiKeyId(3), &healthy).await;
        assert_eq!(settled.health.unwrap(), Some(KeyHealth::Ok));
    }

    #[tokio::test]
    async fn settle_records_usage_with_status_and_failure() {
        let mut usage = MockUsageCounters::new();
        usage
            .expect_record()
            .withf(|key, event| *key == ApiKeyId(1) && event.status == Some(503) && event.failed)
            .times(1)
            .return_const(());
        let rotator = Rotator::new(
            Arc::new(stateful_rotation(Arc::default())),
            Arc::new(usage),
            Arc::new(ManualClock::new(start())),
            Classifier::new(TimeDelta::seconds(60)),
            FailoverPolicy::default(),
        );
        let snapshot = snapshot(2);
        let mut failover = rotator
            .begin(&snapshot, BodyReplay::Replayable)
            .await
            .unwrap_or_else(|_| panic!("plan"));
        let outcome = Outcome::Response(UpstreamResponse {
            status: 503,
            ..Default::default()
        });
        let settled = rotator.settle(&mut failover, ApiKeyId(1), &outcome).await;
        assert_eq!(settled.decision.verdict, Verdict::UpstreamFault);
        assert_eq!(settled.health.unwrap(), None);
    }
}
