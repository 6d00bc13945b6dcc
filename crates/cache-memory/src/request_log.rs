//! [`MemoryRequestLog`]: the `RequestLog` port in process memory, for tests and for downstream
//! teams that want the log without a database. Records live in one ordered map under a mutex;
//! nothing here is on the proxy hot path (the server pushes records into a bounded queue and a
//! background writer appends them in batches).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use domain::{
    LogCursor, LogPage, LogQuery, LoggedRequest, RequestLog, RequestRecord, RequestRecordId,
    Result, Retention, StatsQuery, TopEntry, TopLists, UsageStats,
    request_log::{SeriesBuilder, rank_top},
};

/// Ordering key of the log: time in milliseconds, then id.
type Position = (i64, i64);

#[derive(Debug, Default)]
struct Inner {
    next_id: i64,
    records: BTreeMap<Position, RequestRecord>,
}

/// The request log in memory. Records are kept as `RequestRecord::normalized` makes them.
#[derive(Debug, Default)]
pub struct MemoryRequestLog {
    inner: Mutex<Inner>,
}

impl MemoryRequestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many records the log holds.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn add_top<Id: std::hash::Hash + Eq + Copy>(
    totals: &mut HashMap<Id, TopEntry<Id>>,
    id: Id,
    record: &RequestRecord,
) {
    let entry = totals.entry(id).or_insert(TopEntry {
        id,
        requests: 0,
        errors: 0,
        tokens: 0,
    });
    entry.requests += 1;
    entry.errors += u64::from(record.status >= 400 && record.status < 600);
    entry.tokens += record.tokens_in.unwrap_or(0) + record.tokens_out.unwrap_or(0);
}

#[async_trait]
impl RequestLog for MemoryRequestLog {
    async fn append(&self, records: &[RequestRecord]) -> Result<()> {
        let mut inner = self.lock();
        for record in records {
            inner.next_id += 1;
            let record = record.clone().normalized();
            let position = (record.created_at.timestamp_millis(), inner.next_id);
            inner.records.insert(position, record);
        }
        Ok(())
    }

    async fn query(&self, query: &LogQuery) -> Result<LogPage> {
        let inner = self.lock();
        let fetched = inner
            .records
            .iter()
            .rev()
            .filter(|((at, id), _)| {
                query
                    .before
                    .is_none_or(|cursor| cursor.precedes(*at, RequestRecordId(*id)))
            })
            .filter(|(_, record)| query.filter.matches(record))
            .take(query.limit + 1)
            .map(|((_, id), record)| LoggedRequest {
                id: RequestRecordId(*id),
                record: record.clone(),
            })
            .collect();
        Ok(LogPage::from_fetched(fetched, query.limit))
    }

    async fn stats(&self, query: &StatsQuery) -> Result<UsageStats> {
        let inner = self.lock();
        let mut series = SeriesBuilder::new(query);
        let mut configs = HashMap::new();
        let mut api_keys = HashMap::new();
        let mut client_keys = HashMap::new();
        for record in inner.records.values() {
            if !query.filter.matches(record) {
                continue;
            }
            series.add_record(record);
            add_top(&mut configs, record.proxy_config_id, record);
            if let Some(key) = record.api_key_id {
                add_top(&mut api_keys, key, record);
            }
            add_top(&mut client_keys, record.client_key_id, record);
        }
        Ok(UsageStats {
            series: series.build(),
            top: TopLists {
                configs: rank_top(configs.into_values().collect()),
                api_keys: rank_top(api_keys.into_values().collect()),
                client_keys: rank_top(client_keys.into_values().collect()),
            },
        })
    }

    async fn cap_edge(&self, max_rows: u64) -> Result<Option<LogCursor>> {
        let inner = self.lock();
        let beyond = usize::try_from(max_rows).unwrap_or(usize::MAX);
        Ok(inner
            .records
            .keys()
            .rev()
            .nth(beyond)
            .map(|&(created_at_ms, id)| LogCursor {
                created_at_ms,
                id: RequestRecordId(id),
            }))
    }

    async fn prune(&self, retention: &Retention) -> Result<u64> {
        let mut inner = self.lock();
        let doomed: Vec<Position> = inner
            .records
            .keys()
            .take_while(|&&(at, id)| retention.dooms(at, RequestRecordId(id)))
            .take(retention.batch)
            .copied()
            .collect();
        for position in &doomed {
            inner.records.remove(position);
        }
        Ok(doomed.len() as u64)
    }
}
