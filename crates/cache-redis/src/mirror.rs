//! The local health mirror of block mode: this instance's copy of the failed hash and the
//! cooldowns, exact enough to select keys with no Redis round trip.
//!
//! How it stays exact:
//! - In block mode every health change (cooldown, failure, recovery, forget) runs as one Lua
//!   script that changes Redis, bumps `{namespace}:health-version` and publishes the change with
//!   that version on `{namespace}:health-changes`. So the versions order the changes exactly as
//!   Redis applied them, and the channel delivers them in that order.
//! - Each key keeps, per field (failed, cooling), the version of the change that set it. A change
//!   is applied only when its version is newer, so an instance's own change, applied at once and
//!   again when its message comes back, is a no-op the second time, and an older message never
//!   undoes a newer local change.
//! - Every reservation of a counter block also reads the health of the config's keys together
//!   with the current version `S` (read before them on the same connection, so the read reflects
//!   every change up to `S`). A field is overwritten by such a read only when its version is at
//!   most `S`, so a change that arrived while the read was in flight is never undone.
//! - A key is *known* once a read filled it in during the current epoch. The epoch moves when the
//!   subscription may have missed messages (reconnect, lag, an unreadable message), so every key
//!   becomes unknown and the next selection of each config reads its keys again. While the
//!   subscription is down the mirror is *detached*: selections read health from Redis every
//!   time, as with block size 1.
//! - Cooldowns are kept as their end time and compared with the clock on every read, so they end
//!   by themselves, like the expiring keys in Redis.
//! - A generation moves whenever an answer of the mirror may change: a field changed by a change
//!   or a read (not a change applied twice, nor a key becoming known), an epoch move, a detach or
//!   an attach. It is block mode's health version, so a selection can tell in O(1) that the usable
//!   keys it knows are still the ones the mirror would answer.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use chrono::{DateTime, Utc};
use domain::{ApiKeyId, KeyHealth};

use crate::convert::FAILED;

/// One key's health fields as Redis holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KeyMark {
    /// Whether the key is in the failed hash.
    pub(crate) failed: bool,
    /// The end of its cooldown in Unix milliseconds, while the cooldown key exists.
    pub(crate) cooling_until_ms: Option<i64>,
}

impl KeyMark {
    /// The mark from the key's `HMGET` and `MGET` replies; an unreadable cooldown reads as none,
    /// as in `convert::key_health`.
    pub(crate) fn from_replies(failed: Option<&str>, cooling_until_ms: Option<&str>) -> KeyMark {
        KeyMark {
            failed: failed == Some(FAILED),
            cooling_until_ms: cooling_until_ms.and_then(|ms| ms.parse().ok()),
        }
    }

    /// The health as of `now`: failure outranks a cooldown, and an ended cooldown reads ok.
    pub(crate) fn health(self, now: DateTime<Utc>) -> KeyHealth {
        if self.failed {
            return KeyHealth::Failed;
        }
        self.cooling_until_ms
            .and_then(DateTime::from_timestamp_millis)
            .filter(|&until| until > now)
            .map_or(KeyHealth::Ok, |until| KeyHealth::Cooling { until })
    }
}

/// One health change, as announced on the health channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthChange {
    /// The key cools down until this time (Unix ms): the cooldown in force after the change,
    /// which only ever extended the previous one.
    Cooling {
        /// The key.
        key: ApiKeyId,
        /// The cooldown's end in Unix milliseconds.
        until_ms: i64,
    },
    /// The key failed.
    Failed {
        /// The key.
        key: ApiKeyId,
    },
    /// The keys are back in rotation: neither failed nor cooling (`mark_ok`, `forget`).
    Ok {
        /// The keys.
        keys: Vec<ApiKeyId>,
    },
}

/// A health change and its place in Redis' order of changes.
///
/// On the wire (built by the Lua scripts in `cache.rs`): `cooling {version} {key} {until_ms}`,
/// `failed {version} {key}`, or `ok {version} {key} [{key} ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthNotice {
    /// The value of `{namespace}:health-version` the change's script set.
    pub(crate) version: u64,
    /// What changed.
    pub(crate) change: HealthChange,
}

impl HealthNotice {
    /// Reads a message of the health channel; `None` when it is not one.
    pub(crate) fn parse(text: &str) -> Option<HealthNotice> {
        let mut words = text.split_ascii_whitespace();
        let kind = words.next()?;
        let version = words.next()?.parse().ok()?;
        let mut key = || words.next().and_then(|w| w.parse().ok()).map(ApiKeyId);
        let change = match kind {
            "cooling" => {
                let key = key()?;
                let until_ms = words.next()?.parse().ok()?;
                HealthChange::Cooling { key, until_ms }
            }
            "failed" => HealthChange::Failed { key: key()? },
            "ok" => {
                let keys = words
                    .by_ref()
                    .map(|w| w.parse().ok().map(ApiKeyId))
                    .collect::<Option<Vec<_>>>()?;
                if keys.is_empty() {
                    return None;
                }
                HealthChange::Ok { keys }
            }
            _ => return None,
        };
        words
            .next()
            .is_none()
            .then_some(HealthNotice { version, change })
    }
}

/// What the mirror looked like when a read of Redis was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadTicket {
    epoch: u64,
    max_version: u64,
}

/// A key as mirrored: each field with the version of the change or read that set it.
#[derive(Debug, Clone, Copy, Default)]
struct Mirrored {
    mark: KeyMark,
    failed_version: u64,
    cooling_version: u64,
    /// The epoch of the last read that filled this key in; 0 when none did.
    read_epoch: u64,
}

#[derive(Debug)]
struct MirrorState {
    /// Moves whenever messages may have been missed; keys read in an older epoch are unknown.
    epoch: u64,
    /// Whether the subscription is up, so that every change reaches the mirror.
    attached: bool,
    /// The newest version seen, to notice a version counter that went back (Redis lost data).
    max_version: u64,
    /// Moves whenever an answer of the mirror may have changed (a field changed, the epoch
    /// moved, the subscription went down): the local health version of block mode.
    generation: u64,
    keys: HashMap<ApiKeyId, Mirrored>,
}

/// This instance's copy of every key health it has read or been told about.
///
/// Every operation holds the lock for a few map look-ups, never across an await.
#[derive(Debug)]
pub(crate) struct HealthMirror {
    state: RwLock<MirrorState>,
}

impl Default for HealthMirror {
    fn default() -> Self {
        HealthMirror {
            state: RwLock::new(MirrorState {
                epoch: 1,
                attached: true,
                max_version: 0,
                generation: 0,
                keys: HashMap::new(),
            }),
        }
    }
}

impl HealthMirror {
    fn read(&self) -> RwLockReadGuard<'_, MirrorState> {
        // Every critical section leaves the map consistent, so a poisoned lock is used as is.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, MirrorState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The health of `keys` as of `now`, when the mirror is attached and knows every one of them;
    /// `None` when Redis must be read first. No keys need no health: always `Some`.
    pub(crate) fn fresh_states(
        &self,
        keys: &[ApiKeyId],
        now: DateTime<Utc>,
    ) -> Option<Vec<KeyHealth>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let state = self.read();
        if !state.attached {
            return None;
        }
        keys.iter()
            .map(|key| {
                state
                    .keys
                    .get(key)
                    .filter(|mirrored| mirrored.read_epoch == state.epoch)
                    .map(|mirrored| mirrored.mark.health(now))
            })
            .collect()
    }

    /// The mirror's generation, while the subscription is up (`None` while it is down, when the
    /// mirror may be missing changes). The generation moves whenever an answer of the mirror may
    /// have changed, so two equal generations mean equal answers, cooldowns that ended by
    /// themselves aside: block mode's health version (see `RotationState::draw`).
    pub(crate) fn generation(&self) -> Option<u64> {
        let state = self.read();
        state.attached.then_some(state.generation)
    }

    /// [`HealthMirror::fresh_states`] with the generation they were read at, under one lock;
    /// `None` while the subscription is down, even for no keys.
    pub(crate) fn versioned_states(
        &self,
        keys: &[ApiKeyId],
        now: DateTime<Utc>,
    ) -> Option<(u64, Vec<KeyHealth>)> {
        let state = self.read();
        if !state.attached {
            return None;
        }
        let states = keys
            .iter()
            .map(|key| {
                state
                    .keys
                    .get(key)
                    .filter(|mirrored| mirrored.read_epoch == state.epoch)
                    .map(|mirrored| mirrored.mark.health(now))
            })
            .collect::<Option<Vec<_>>>()?;
        Some((state.generation, states))
    }

    /// The health of `keys` as of `now` as mirrored, known or not (a key never seen reads ok).
    /// For the answer of a request that has just read them.
    pub(crate) fn states(&self, keys: &[ApiKeyId], now: DateTime<Utc>) -> Vec<KeyHealth> {
        let state = self.read();
        keys.iter()
            .map(|key| {
                state
                    .keys
                    .get(key)
                    .map_or(KeyHealth::Ok, |mirrored| mirrored.mark.health(now))
            })
            .collect()
    }

    /// To take just before sending a read of Redis, and to hand to [`HealthMirror::apply_read`].
    pub(crate) fn ticket(&self) -> ReadTicket {
        let state = self.read();
        ReadTicket {
            epoch: state.epoch,
            max_version: state.max_version,
        }
    }

    /// Applies a read of Redis: `marks` of `keys`, read after the version counter answered
    /// `version`, sent after `ticket` was taken.
    pub(crate) fn apply_read(
        &self,
        ticket: ReadTicket,
        version: u64,
        keys: &[ApiKeyId],
        marks: &[KeyMark],
    ) {
        let mut state = self.write();
        if version < ticket.max_version {
            // Every version seen before the read was sent was set in Redis before the read ran,
            // so a smaller one means Redis lost its data (a restart without persistence, a
            // flush): forget every version and read everything again.
            tracing::warn!(
                version,
                seen = ticket.max_version,
                "the redis health version went back; re-reading key health"
            );
            state.keys.clear();
            state.max_version = 0;
            state.epoch += 1;
            state.generation += 1;
        }
        state.max_version = state.max_version.max(version);
        let mut changed = false;
        for (&key, &mark) in keys.iter().zip(marks) {
            let mirrored = state.keys.entry(key).or_default();
            if mirrored.failed_version <= version {
                changed |= mirrored.mark.failed != mark.failed;
                mirrored.mark.failed = mark.failed;
                mirrored.failed_version = version;
            }
            if mirrored.cooling_version <= version {
                changed |= mirrored.mark.cooling_until_ms != mark.cooling_until_ms;
                mirrored.mark.cooling_until_ms = mark.cooling_until_ms;
                mirrored.cooling_version = version;
            }
            mirrored.read_epoch = mirrored.read_epoch.max(ticket.epoch);
        }
        // A key becoming known changes no answer: only a changed field moves the generation.
        if changed {
            state.generation += 1;
        }
    }

    /// Applies a change made by this instance or announced by another; a change not newer than
    /// what the mirror holds is ignored.
    pub(crate) fn apply(&self, notice: &HealthNotice) {
        let mut state = self.write();
        let version = notice.version;
        state.max_version = state.max_version.max(version);
        let mut changed = false;
        match &notice.change {
            HealthChange::Cooling { key, until_ms } => {
                let mirrored = state.keys.entry(*key).or_default();
                if mirrored.cooling_version < version {
                    changed |= mirrored.mark.cooling_until_ms != Some(*until_ms);
                    mirrored.mark.cooling_until_ms = Some(*until_ms);
                    mirrored.cooling_version = version;
                }
            }
            HealthChange::Failed { key } => {
                let mirrored = state.keys.entry(*key).or_default();
                if mirrored.failed_version < version {
                    changed |= !mirrored.mark.failed;
                    mirrored.mark.failed = true;
                    mirrored.failed_version = version;
                }
            }
            HealthChange::Ok { keys } => {
                for key in keys {
                    let mirrored = state.keys.entry(*key).or_default();
                    if mirrored.failed_version < version {
                        changed |= mirrored.mark.failed;
                        mirrored.mark.failed = false;
                        mirrored.failed_version = version;
                    }
                    if mirrored.cooling_version < version {
                        changed |= mirrored.mark.cooling_until_ms.is_some();
                        mirrored.mark.cooling_until_ms = None;
                        mirrored.cooling_version = version;
                    }
                }
            }
        }
        // An instance's own change comes back over the channel: applied twice, counted once.
        if changed {
            state.generation += 1;
        }
    }

    /// Whether the subscription is up.
    pub(crate) fn is_attached(&self) -> bool {
        self.read().attached
    }

    /// The subscription is down: until [`HealthMirror::attach`], changes may be missed, so
    /// selections read health from Redis.
    pub(crate) fn detach(&self) {
        let mut state = self.write();
        state.attached = false;
        state.generation += 1;
    }

    /// The subscription is up again: every key is read again before it is trusted.
    pub(crate) fn attach(&self) {
        let mut state = self.write();
        state.attached = true;
        state.epoch += 1;
        state.generation += 1;
    }

    /// Messages may have been missed (lag, an unreadable message): every key is read again
    /// before it is trusted.
    pub(crate) fn invalidate(&self) {
        let mut state = self.write();
        state.epoch += 1;
        state.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    const A: ApiKeyId = ApiKeyId(1);
    const B: ApiKeyId = ApiKeyId(2);

    fn notice(version: u64, change: HealthChange) -> HealthNotice {
        HealthNotice { version, change }
    }

    fn ms(time: DateTime<Utc>) -> i64 {
        time.timestamp_millis()
    }

    /// A mirror that has read `keys` as healthy at `version`.
    fn read_ok(keys: &[ApiKeyId], version: u64) -> HealthMirror {
        let mirror = HealthMirror::default();
        let ticket = mirror.ticket();
        mirror.apply_read(ticket, version, keys, &vec![KeyMark::default(); keys.len()]);
        mirror
    }

    #[test]
    fn messages_parse_and_garbage_does_not() {
        assert_eq!(
            HealthNotice::parse("cooling 7 12 1790000000000"),
            Some(notice(
                7,
                HealthChange::Cooling {
                    key: ApiKeyId(12),
                    until_ms: 1_790_000_000_000
                }
            ))
        );
        assert_eq!(
            HealthNotice::parse("failed 8 12"),
            Some(notice(8, HealthChange::Failed { key: ApiKeyId(12) }))
        );
        assert_eq!(
            HealthNotice::parse("ok 9 1 2 3"),
            Some(notice(
                9,
                HealthChange::Ok {
                    keys: vec![ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)]
                }
            ))
        );
        for garbage in [
            "",
            "ok 9",
            "ok x 1",
            "failed 8",
            "failed 8 12 13",
            "cooling 7 12",
            "cooling 7 12 soon",
            "paused 1 2",
        ] {
            assert_eq!(HealthNotice::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn keys_are_unknown_until_read_and_again_after_invalidation() {
        let now = Utc::now();
        let mirror = HealthMirror::default();
        assert_eq!(mirror.fresh_states(&[A], now), None);
        assert_eq!(mirror.fresh_states(&[], now), Some(Vec::new()));
        mirror.apply(&notice(1, HealthChange::Failed { key: A }));
        assert_eq!(
            mirror.fresh_states(&[A], now),
            None,
            "a message alone does not tell the whole health of a key"
        );

        let mirror = read_ok(&[A, B], 3);
        assert_eq!(
            mirror.fresh_states(&[B, A], now),
            Some(vec![KeyHealth::Ok; 2])
        );
        mirror.invalidate();
        assert_eq!(mirror.fresh_states(&[A], now), None);
        assert_eq!(mirror.states(&[A], now), [KeyHealth::Ok]);
    }

    #[test]
    fn a_detached_mirror_answers_nothing_until_reattached_and_reread() {
        let now = Utc::now();
        let mirror = read_ok(&[A], 1);
        mirror.detach();
        assert!(!mirror.is_attached());
        assert_eq!(mirror.fresh_states(&[A], now), None);
        mirror.attach();
        assert_eq!(
            mirror.fresh_states(&[A], now),
            None,
            "changes made while detached may have been missed"
        );
        let ticket = mirror.ticket();
        mirror.apply_read(ticket, 1, &[A], &[KeyMark::default()]);
        assert_eq!(mirror.fresh_states(&[A], now), Some(vec![KeyHealth::Ok]));
    }

    #[test]
    fn own_changes_applied_twice_are_harmless() {
        let now = Utc::now();
        let mirror = read_ok(&[A], 1);
        let until = now + TimeDelta::seconds(30);
        let cooled = notice(
            2,
            HealthChange::Cooling {
                key: A,
                until_ms: ms(until),
            },
        );
        let recovered = notice(3, HealthChange::Ok { keys: vec![A] });
        // Applied locally at once...
        mirror.apply(&cooled);
        mirror.apply(&recovered);
        // ...then again as the messages come back.
        mirror.apply(&cooled);
        assert_eq!(
            mirror.fresh_states(&[A], now),
            Some(vec![KeyHealth::Ok]),
            "an older change never undoes a newer one"
        );
        mirror.apply(&recovered);
        assert_eq!(mirror.fresh_states(&[A], now), Some(vec![KeyHealth::Ok]));
    }

    #[test]
    fn changes_set_each_field_and_cooldowns_end_by_themselves() {
        let now = Utc::now();
        let mirror = read_ok(&[A, B], 1);
        let until = now + TimeDelta::seconds(30);
        mirror.apply(&notice(
            2,
            HealthChange::Cooling {
                key: A,
                until_ms: ms(until),
            },
        ));
        mirror.apply(&notice(3, HealthChange::Failed { key: B }));
        let cooling_until = DateTime::from_timestamp_millis(ms(until));
        assert_eq!(
            mirror.fresh_states(&[A, B], now),
            cooling_until.map(|until| vec![KeyHealth::Cooling { until }, KeyHealth::Failed])
        );
        assert_eq!(
            mirror.fresh_states(&[A], until),
            Some(vec![KeyHealth::Ok]),
            "an ended cooldown reads ok"
        );
        mirror.apply(&notice(4, HealthChange::Failed { key: A }));
        assert_eq!(
            mirror.fresh_states(&[A], now),
            Some(vec![KeyHealth::Failed]),
            "failure outranks a cooldown"
        );
        mirror.apply(&notice(5, HealthChange::Ok { keys: vec![A, B] }));
        assert_eq!(
            mirror.fresh_states(&[A, B], now),
            Some(vec![KeyHealth::Ok; 2])
        );
    }

    #[test]
    fn a_read_never_undoes_a_change_that_arrived_while_it_was_in_flight() {
        let now = Utc::now();
        let mirror = read_ok(&[A, B], 1);
        let ticket = mirror.ticket();
        // The read answered version 4 and saw both keys healthy, but the change with version 5
        // (after the read ran in Redis) arrived before the answer did.
        mirror.apply(&notice(5, HealthChange::Failed { key: A }));
        mirror.apply_read(ticket, 4, &[A, B], &[KeyMark::default(); 2]);
        assert_eq!(
            mirror.fresh_states(&[A, B], now),
            Some(vec![KeyHealth::Failed, KeyHealth::Ok])
        );
        // A change the read already reflects, arriving late, is applied again harmlessly.
        mirror.apply(&notice(4, HealthChange::Failed { key: B }));
        assert_eq!(
            mirror.fresh_states(&[B], now),
            Some(vec![KeyHealth::Ok]),
            "version 4 is not newer than the read of version 4"
        );
    }

    #[test]
    fn a_change_to_an_unknown_key_survives_the_read_in_flight() {
        let now = Utc::now();
        let mirror = HealthMirror::default();
        let ticket = mirror.ticket();
        mirror.apply(&notice(8, HealthChange::Failed { key: A }));
        mirror.apply_read(ticket, 7, &[A], &[KeyMark::default()]);
        assert_eq!(
            mirror.fresh_states(&[A], now),
            Some(vec![KeyHealth::Failed])
        );
    }

    #[test]
    fn a_version_that_went_back_resets_the_mirror() {
        let now = Utc::now();
        let mirror = read_ok(&[A], 50);
        mirror.apply(&notice(60, HealthChange::Failed { key: A }));
        // Redis restarted empty: the next read answers version 0 and a healthy key.
        let ticket = mirror.ticket();
        mirror.apply_read(ticket, 0, &[A], &[KeyMark::default()]);
        assert_eq!(mirror.states(&[A], now), [KeyHealth::Ok]);
        assert_eq!(mirror.fresh_states(&[A], now), None, "read again first");
        let ticket = mirror.ticket();
        mirror.apply_read(ticket, 0, &[A], &[KeyMark::default()]);
        assert_eq!(mirror.fresh_states(&[A], now), Some(vec![KeyHealth::Ok]));
        mirror.apply(&notice(1, HealthChange::Failed { key: A }));
        assert_eq!(
            mirror.fresh_states(&[A], now),
            Some(vec![KeyHealth::Failed]),
            "new versions count again"
        );
    }

    #[test]
    fn the_generation_moves_with_every_answer_that_may_change_and_only_then() {
        let now = Utc::now();
        let mirror = read_ok(&[A, B], 1);
        let generation = |mirror: &HealthMirror| mirror.versioned_states(&[A, B], now).map(|v| v.0);
        let first = generation(&mirror);
        assert!(first.is_some());
        mirror.apply_read(mirror.ticket(), 1, &[A, B], &[KeyMark::default(); 2]);
        assert_eq!(generation(&mirror), first, "a read that changes nothing");

        let failed = notice(2, HealthChange::Failed { key: A });
        mirror.apply(&failed);
        let second = generation(&mirror);
        assert_ne!(second, first, "a change");
        mirror.apply(&failed);
        assert_eq!(generation(&mirror), second, "the same change, echoed back");
        assert_eq!(
            mirror.versioned_states(&[A, B], now).map(|v| v.1),
            Some(vec![KeyHealth::Failed, KeyHealth::Ok])
        );

        mirror.detach();
        assert_eq!(mirror.generation(), None, "no local version while detached");
        assert_eq!(mirror.versioned_states(&[], now), None);
        mirror.attach();
        assert_eq!(generation(&mirror), None, "every key is read again first");
        let ticket = mirror.ticket();
        mirror.apply_read(ticket, 2, &[A, B], &[KeyMark::default(); 2]);
        let third = generation(&mirror);
        assert!(third.is_some_and(|g| Some(g) != second));
        assert_eq!(mirror.generation(), third);
        mirror.invalidate();
        assert_ne!(mirror.generation(), third, "changes may have been missed");
    }

    #[test]
    fn marks_read_like_the_health_hash_and_cooldown_keys() {
        let now = DateTime::from_timestamp_millis(1_790_000_000_000).unwrap_or_default();
        let later = (now + TimeDelta::seconds(9)).timestamp_millis().to_string();
        assert_eq!(
            KeyMark::from_replies(Some(FAILED), Some(&later)).health(now),
            KeyHealth::Failed
        );
        assert_eq!(
            KeyMark::from_replies(None, Some(&later)).health(now),
            KeyHealth::Cooling {
                until: now + TimeDelta::seconds(9)
            }
        );
        assert_eq!(
            KeyMark::from_replies(None, Some("garbage")).health(now),
            KeyHealth::Ok
        );
        assert_eq!(KeyMark::from_replies(None, None).health(now), KeyHealth::Ok);
    }
}
