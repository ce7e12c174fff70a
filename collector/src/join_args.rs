//! `wirespan run`'s flags for joining traces across hosts (see the library's `join`).

use std::time::Duration;

use clap::Args;
use wirespan::join::{JoinStore, RedisJoin, RedisJoinOptions};

/// How long a record lives in the store: a server span asks within its wait of its exchange,
/// and the client's agent publishes when the client span is emitted (after its own parent,
/// which can take the correlation window). 30 s covers both with room.
const RECORD_TTL: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct JoinArgs {
    /// Join traces across hosts through this Redis (or Valkey), which every node's agent points
    /// at: redis://[user:password@]host:port[/db], or rediss:// for TLS. Each agent publishes
    /// its client spans whose peer is on another host, and looks up the client of each server
    /// span whose peer is, under the TCP sequence numbers both ends see (NAT keeps them).
    /// Without it, traces join on this host only.
    #[arg(
        long = "join-store",
        value_name = "URL",
        env = "WIRESPAN_JOIN_STORE",
        hide_env_values = true
    )]
    store_url: Option<String>,
    /// Seconds a server span from another host waits for its client's record before it goes
    /// out unjoined (counted). While the store is away, spans go out at once.
    #[arg(
        long = "join-wait",
        value_name = "SECS",
        default_value_t = 3.0,
        env = "WIRESPAN_JOIN_WAIT_SECS"
    )]
    wait_secs: f64,
    /// Prefix of the store's keys (`PREFIX:` + 16 hex digits), to keep clusters sharing one
    /// Redis apart.
    #[arg(
        long = "join-prefix",
        value_name = "PREFIX",
        default_value = "wirespan",
        env = "WIRESPAN_JOIN_PREFIX"
    )]
    prefix: String,
}

impl JoinArgs {
    /// The store, when one is configured: its thread is started (Redis need not be up yet).
    pub fn store(&self, replay: bool) -> anyhow::Result<Option<Box<dyn JoinStore>>> {
        let Some(url) = &self.store_url else {
            return Ok(None);
        };
        anyhow::ensure!(
            !replay,
            "--join-store with --replay: a recording's spans are not live, and publishing them \
             would join today's servers to old clients; leave --join-store out to replay"
        );
        let wait = Duration::try_from_secs_f64(self.wait_secs)
            .ok()
            .filter(|w| *w <= RECORD_TTL)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--join-wait {}: expected seconds between 0 and {}",
                    self.wait_secs,
                    RECORD_TTL.as_secs()
                )
            })?;
        let store = RedisJoin::start(RedisJoinOptions {
            url: url.clone(),
            prefix: self.prefix.clone(),
            wait,
            ttl: RECORD_TTL,
        })?;
        Ok(Some(Box::new(store)))
    }
}
