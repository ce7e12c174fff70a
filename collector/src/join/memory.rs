//! An in-process join store: agents (correlators) that share one [`MemoryJoin::shared`] map
//! join as agents sharing a Redis do. For tests and replays; records live as long as the map.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Answer, JoinKey, JoinRecord, JoinStore, StoreStats};

/// Records by key, shared by the stores made from it.
pub type SharedRecords = Arc<Mutex<HashMap<JoinKey, JoinRecord>>>;

/// A join store over a map in this process.
pub struct MemoryJoin {
    records: SharedRecords,
    wait: Duration,
    asks: Vec<(JoinKey, Instant)>,
    stats: StoreStats,
}

impl MemoryJoin {
    /// A store over `records`, answering NotFound for a key not published within `wait`.
    #[must_use]
    pub fn new(records: SharedRecords, wait: Duration) -> Self {
        Self {
            records,
            wait,
            asks: Vec::new(),
            stats: StoreStats::default(),
        }
    }

    /// An empty map to share between stores.
    #[must_use]
    pub fn shared() -> SharedRecords {
        Arc::default()
    }
}

impl JoinStore for MemoryJoin {
    fn publish(&mut self, key: JoinKey, record: JoinRecord) {
        self.stats.published += 1;
        // A poisoned map only means another thread panicked mid-insert: the map is still whole.
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        records.insert(key, record);
    }

    fn ask(&mut self, key: JoinKey) {
        self.stats.asked += 1;
        self.asks.push((key, Instant::now()));
    }

    fn answers(&mut self, out: &mut Vec<(JoinKey, Answer)>) {
        let records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wait = self.wait;
        self.asks.retain(|&(key, asked)| {
            if let Some(record) = records.get(&key) {
                out.push((key, Answer::Found(*record)));
                false
            } else if asked.elapsed() >= wait {
                out.push((key, Answer::NotFound));
                false
            } else {
                true
            }
        });
    }

    fn stats(&self) -> StoreStats {
        self.stats
    }
}
