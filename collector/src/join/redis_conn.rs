//! Where the join store's records live: one Redis (or Valkey), or a Redis Cluster, behind the
//! two operations the store makes: write records, read keys.
//!
//! One server takes a pipeline of `SET`s and one `MGET`. A cluster spreads keys over its
//! nodes by hash slot, and `MGET` over keys of different slots is refused (`CROSSSLOT`), so
//! there both go as a cluster pipeline, which sends each command to the node of its slot.

use std::time::Duration;

use redis::{
    RedisResult,
    cluster::{ClusterClient, ClusterConnection, cluster_pipe},
};

use super::key::RECORD_LEN;

/// The store's address: one server, or the nodes of a cluster (the others are discovered).
#[derive(Clone)]
pub(super) enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Target {
    /// `redis://..` or `rediss://..` is one server; several, comma-separated, are nodes of one
    /// cluster.
    pub(super) fn parse(url: &str, io_timeout: Duration) -> RedisResult<Self> {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        if let [one] = nodes[..] {
            return redis::Client::open(one).map(Self::Single);
        }
        ClusterClient::builder(nodes)
            .connection_timeout(io_timeout)
            .response_timeout(io_timeout)
            .build()
            .map(Self::Cluster)
    }

    /// A connection whose every read and write gives up after `io_timeout`.
    pub(super) fn connect(&self, io_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Self::Single(client) => {
                let c = client.get_connection_with_timeout(io_timeout)?;
                c.set_read_timeout(Some(io_timeout))?;
                c.set_write_timeout(Some(io_timeout))?;
                Ok(Conn::Single(c))
            }
            Self::Cluster(client) => {
                let mut c = client.get_connection()?;
                c.set_read_timeout(Some(io_timeout))?;
                c.set_write_timeout(Some(io_timeout))?;
                // The slots are learnt on first use: fail here, not on the first batch.
                if !c.check_connection() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cluster nodes did not answer",
                    )));
                }
                Ok(Conn::Cluster(Box::new(c)))
            }
        }
    }
}

/// A live connection to the store.
pub(super) enum Conn {
    Single(redis::Connection),
    /// Boxed: it holds a connection per node and the slot map.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    /// `SET key record PX ttl_ms` for each entry, in one round trip (per node).
    pub(super) fn set_all(
        &mut self,
        entries: &[(String, [u8; RECORD_LEN])],
        ttl_ms: u64,
    ) -> RedisResult<()> {
        // The two pipelines share their builder methods but no trait.
        macro_rules! sets {
            ($pipe:expr) => {{
                let mut pipe = $pipe;
                for (key, record) in entries {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(&record[..])
                        .arg("PX")
                        .arg(ttl_ms)
                        .ignore();
                }
                pipe
            }};
        }
        match self {
            Self::Single(c) => sets!(redis::pipe()).query(c),
            Self::Cluster(c) => sets!(cluster_pipe()).query(c),
        }
    }

    /// The values of `keys`, in their order (None where there is none).
    pub(super) fn get_all(&mut self, keys: &[String]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        match self {
            Self::Single(c) => redis::cmd("MGET").arg(keys).query(c),
            Self::Cluster(c) => {
                let mut pipe = cluster_pipe();
                for key in keys {
                    pipe.cmd("GET").arg(key);
                }
                pipe.query(c)
            }
        }
    }
}
