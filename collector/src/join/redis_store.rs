//! The join store on Redis (or Valkey, which speaks the same protocol).
//!
//! A thread of its own owns the connection, so the agent never waits on the network:
//! - publishes are written in pipelined batches (`SET key record PX ttl`), so a busy agent
//!   makes one round trip per tick, not one per span;
//! - asks are answered by batched `MGET`s, tried again with a growing pause until the record
//!   appears or the wait is over (the client's agent publishes when its span is emitted, which
//!   can be after the server's agent asks);
//! - when Redis is away (refused, or silent past the I/O timeout), pending and new asks are
//!   answered [`Answer::Away`] at once and publishes are dropped, both counted; the thread tries
//!   to connect again every half second, asks or not, and joining resumes by itself.
//!
//! Queues are bounded: a full one drops the publish (counted) or answers the ask Away.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::{
    Answer, JoinKey, JoinRecord, JoinStore, StoreStats,
    redis_conn::{Conn, Target},
};

/// Commands queued to the thread at most; beyond it publishes are dropped, asks answered Away.
const QUEUE: usize = 65_536;
/// How long the thread gathers commands before a round trip.
const TICK: Duration = Duration::from_millis(10);
/// Connect, read and write timeout: a stopped Redis must not hold the thread longer.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between connection attempts while Redis is away.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// Keys per MGET and commands per pipeline, so one round trip stays small.
const BATCH: usize = 1_000;

/// How to reach the store and what to do there.
#[derive(Debug, Clone)]
pub struct RedisJoinOptions {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; several,
    /// comma-separated, are nodes of one Redis Cluster.
    pub url: String,
    /// Key prefix (`prefix:` + 16 hex digits), so agents of several clusters can share a Redis.
    pub prefix: String,
    /// How long an ask keeps looking for its record.
    pub wait: Duration,
    /// How long a record lives: long enough for the slowest server span to ask.
    pub ttl: Duration,
}

/// The store's address could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisJoinError {
    #[error(
        "join store {url}: {source} (expected redis://[user:password@]host:port[/db] or rediss://...)"
    )]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("join store: could not start its thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[derive(Clone, Copy)]
enum Command {
    Publish(JoinKey, JoinRecord),
    Ask(JoinKey),
}

#[derive(Default)]
struct SharedStats {
    published: AtomicU64,
    publish_dropped: AtomicU64,
    asked: AtomicU64,
    unreadable: AtomicU64,
    store_errors: AtomicU64,
}

/// The agent's handle on the Redis thread.
pub struct RedisJoin {
    commands: SyncSender<Command>,
    answers: Receiver<(JoinKey, Answer)>,
    /// Asks the full queue refused: answered Away at the next `answers`.
    refused: Vec<JoinKey>,
    stats: Arc<SharedStats>,
    wake: Arc<Notify>,
}

impl RedisJoin {
    /// Check the address and start the thread. Redis need not be up: the thread keeps trying.
    pub fn start(options: RedisJoinOptions) -> Result<Self, RedisJoinError> {
        if options.url.starts_with("rediss:") {
            crate::export::tls::install_provider();
        }
        let client =
            Target::parse(&options.url, IO_TIMEOUT).map_err(|source| RedisJoinError::Url {
                url: hide_password(&options.url),
                source,
            })?;
        let (commands, command_rx) = mpsc::sync_channel(QUEUE);
        let (answer_tx, answers) = mpsc::channel();
        let stats = Arc::new(SharedStats::default());
        let wake = Arc::new(Notify::new());
        let worker = Worker {
            wake: Arc::clone(&wake),
            client,
            url: hide_password(&options.url),
            options,
            connection: None,
            connecting: None,
            next_connect: Instant::now(),
            publishes: Vec::new(),
            asks: Vec::new(),
            answers: answer_tx,
            stats: Arc::clone(&stats),
            away_logged: false,
        };
        thread::Builder::new()
            .name("join-store".into())
            .spawn(move || worker.run(&command_rx))
            .map_err(RedisJoinError::Thread)?;
        Ok(Self {
            commands,
            answers,
            refused: Vec::new(),
            stats,
            wake,
        })
    }
}

impl JoinStore for RedisJoin {
    fn publish(&mut self, key: JoinKey, record: JoinRecord) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.commands.try_send(Command::Publish(key, record))
        {
            self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ask(&mut self, key: JoinKey) {
        self.stats.asked.fetch_add(1, Ordering::Relaxed);
        if self.commands.try_send(Command::Ask(key)).is_err() {
            self.refused.push(key);
        }
    }

    fn answers(&mut self, out: &mut Vec<(JoinKey, Answer)>) {
        out.extend(self.refused.drain(..).map(|key| (key, Answer::Away)));
        out.extend(self.answers.try_iter());
    }

    fn stats(&self) -> StoreStats {
        let s = &self.stats;
        StoreStats {
            published: s.published.load(Ordering::Relaxed),
            publish_dropped: s.publish_dropped.load(Ordering::Relaxed),
            asked: s.asked.load(Ordering::Relaxed),
            unreadable: s.unreadable.load(Ordering::Relaxed),
            store_errors: s.store_errors.load(Ordering::Relaxed),
        }
    }

    fn waker(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.wake))
    }
}

/// An ask the thread is still working on.
struct PendingAsk {
    key: JoinKey,
    asked: Instant,
    next_try: Instant,
    tries: u32,
}

struct Worker {
    client: Target,
    /// For logs, without the password.
    url: String,
    options: RedisJoinOptions,
    connection: Option<Conn>,
    /// A connection being made (see `connect`).
    connecting: Option<Receiver<redis::RedisResult<Conn>>>,
    next_connect: Instant,
    publishes: Vec<(JoinKey, JoinRecord)>,
    asks: Vec<PendingAsk>,
    answers: mpsc::Sender<(JoinKey, Answer)>,
    /// Told after answers were sent (see `JoinStore::waker`).
    wake: Arc<Notify>,
    stats: Arc<SharedStats>,
    /// The current outage was logged (once per outage, not per attempt).
    away_logged: bool,
}

impl Worker {
    fn run(mut self, commands: &Receiver<Command>) {
        loop {
            match commands.recv_timeout(TICK) {
                Ok(command) => self.take(command),
                Err(RecvTimeoutError::Timeout) => {}
                // The agent is gone: nothing is left to answer.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(command) = commands.try_recv() {
                self.take(command);
            }
            // During an outage, connecting again goes on whether or not anything waits, so the
            // first request after Redis is back finds it connected (not a failed attempt from
            // while it was away).
            if self.away_logged {
                self.connect();
            }
            let asks = self.asks.len();
            self.round_trip();
            if self.asks.len() < asks {
                self.wake.notify_one();
            }
        }
    }

    fn take(&mut self, command: Command) {
        match command {
            Command::Publish(key, record) => self.publishes.push((key, record)),
            Command::Ask(key) => {
                let now = Instant::now();
                self.asks.push(PendingAsk {
                    key,
                    asked: now,
                    next_try: now,
                    tries: 0,
                });
            }
        }
    }

    fn round_trip(&mut self) {
        if self.publishes.is_empty() && self.asks.is_empty() {
            return;
        }
        if !self.connect() {
            // Before the first attempt has said anything, asks wait for it; during an outage
            // they are answered at once.
            if self.away_logged {
                self.store_away();
            }
            return;
        }
        if let Err(e) = self.write_publishes().and_then(|()| self.read_asks()) {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            self.log_away(&e);
            self.connection = None;
            self.next_connect = Instant::now() + RECONNECT_EVERY;
            self.store_away();
        }
    }

    /// Whether a connection is up. Connections are made on a thread of their own: against a
    /// frozen Redis, connecting (TCP, then AUTH and SELECT, each up to the I/O timeout) takes
    /// seconds, and the asks that come meanwhile must still be answered at once.
    fn connect(&mut self) -> bool {
        if self.connection.is_some() {
            return true;
        }
        let now = Instant::now();
        let made = match &self.connecting {
            Some(attempt) => match attempt.try_recv() {
                Ok(made) => made,
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.connecting = None;
                    return false;
                }
            },
            None if now < self.next_connect => return false,
            None => {
                let (tx, rx) = mpsc::channel();
                let client = self.client.clone();
                let spawned = thread::Builder::new()
                    .name("join-connect".into())
                    .spawn(move || {
                        let _ = tx.send(client.connect(IO_TIMEOUT));
                    });
                if spawned.is_ok() {
                    self.connecting = Some(rx);
                } else {
                    self.next_connect = now + RECONNECT_EVERY;
                }
                return false;
            }
        };
        self.connecting = None;
        match made {
            Ok(c) => {
                if self.away_logged {
                    eprintln!(
                        "wirespan: join store {} is back: joining across hosts again",
                        self.url
                    );
                }
                self.away_logged = false;
                self.connection = Some(c);
                true
            }
            Err(e) => {
                self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                self.log_away(&e);
                self.next_connect = now + RECONNECT_EVERY;
                false
            }
        }
    }

    fn log_away(&mut self, e: &redis::RedisError) {
        if !self.away_logged {
            eprintln!(
                "wirespan: join store {} is away ({e}): server spans from other hosts go out unjoined \
                 (counted) until it is back; trying again every {} ms",
                self.url,
                RECONNECT_EVERY.as_millis()
            );
            self.away_logged = true;
        }
    }

    /// The store cannot be reached: asks are answered at once, publishes dropped.
    fn store_away(&mut self) {
        for ask in self.asks.drain(..) {
            let _ = self.answers.send((ask.key, Answer::Away));
        }
        let dropped = self.publishes.len() as u64;
        self.publishes.clear();
        self.stats
            .publish_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }

    fn write_publishes(&mut self) -> redis::RedisResult<()> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let ttl_ms = u64::try_from(self.options.ttl.as_millis()).unwrap_or(u64::MAX);
        for batch in self.publishes.chunks(BATCH) {
            let entries: Vec<_> = batch
                .iter()
                .map(|(key, record)| (key.store_key(&self.options.prefix), record.encode()))
                .collect();
            connection.set_all(&entries, ttl_ms)?;
            self.stats
                .published
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        self.publishes.clear();
        Ok(())
    }

    /// One MGET over the asks that are due; found ones are answered, the others tried again
    /// after a pause that doubles (20 ms to 320 ms) until the wait is over.
    fn read_asks(&mut self) -> redis::RedisResult<()> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let due: Vec<usize> = (0..self.asks.len())
            .filter(|&i| self.asks[i].next_try <= now)
            .take(BATCH)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = due
            .iter()
            .map(|&i| self.asks[i].key.store_key(&self.options.prefix))
            .collect();
        let values = connection.get_all(&keys)?;
        let mut done = vec![false; self.asks.len()];
        for (&i, value) in due.iter().zip(values) {
            let ask = &mut self.asks[i];
            let answer = match value.map(|v| JoinRecord::decode(&v)) {
                Some(Some(record)) => Some(Answer::Found(record)),
                Some(None) => {
                    self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                    Some(Answer::NotFound)
                }
                None if now.duration_since(ask.asked) >= self.options.wait => {
                    Some(Answer::NotFound)
                }
                None => {
                    ask.tries += 1;
                    ask.next_try = now + Duration::from_millis(20 << ask.tries.min(4));
                    None
                }
            };
            if let Some(answer) = answer {
                let _ = self.answers.send((ask.key, answer));
                done[i] = true;
            }
        }
        let mut index = 0;
        self.asks.retain(|_| {
            index += 1;
            !done[index - 1]
        });
        Ok(())
    }
}

/// The URL with its password (if any) replaced, for logs and errors.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            hide_password("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            hide_password("rediss://app:s3cret@h:6380"),
            "rediss://app:***@h:6380"
        );
        assert_eq!(hide_password("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn a_malformed_address_is_a_clear_error() {
        let err = RedisJoin::start(RedisJoinOptions {
            url: "http://:pw@h:1".into(),
            prefix: "p".into(),
            wait: Duration::from_secs(1),
            ttl: Duration::from_secs(30),
        })
        .err()
        .expect("refused");
        let text = err.to_string();
        assert!(text.contains("redis://"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
