//! The correlator's index of its spans, pending or emitted (a child of the correlator): client
//! spans by the request they made, for the server span at the other end; server spans by
//! process and connection, for the client spans made while serving them.
//!
//! A span is taken out again when it is forgotten (two windows after it was emitted), so each
//! span must remember where it is indexed. Remembering its key would store every key twice:
//! under churn that is some 130k spans, and a key (a connection end and a request) is some 50
//! bytes. A span remembers the key's hash instead (the correlator keeps it with the span's
//! ids), and is found again in its table by that hash and its own id (an id is in at most one
//! entry).

use std::hash::{BuildHasher, RandomState};

use hashbrown::{HashTable, hash_table::Entry};

use super::{PeerKey, ServerKey};

/// Client and server spans by what finds them.
#[derive(Default)]
pub(super) struct SpanIndex {
    /// Keys come from the traffic (addresses and ports anyone can choose): SipHash, keyed.
    hasher: RandomState,
    /// The latest client span of each request.
    clients: HashTable<(PeerKey, u64)>,
    /// Server spans by (pid, connection), oldest first.
    servers: HashTable<(ServerKey, Vec<u64>)>,
}

impl SpanIndex {
    /// Index client span `id` by its request (replacing an earlier span of the same request).
    /// The key's hash, to forget the span by.
    pub(super) fn insert_client(&mut self, key: PeerKey, id: u64) -> u64 {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        match self
            .clients
            .entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k))
        {
            Entry::Occupied(mut e) => e.get_mut().1 = id,
            Entry::Vacant(e) => {
                e.insert((key, id));
            }
        }
        hash
    }

    /// Index server span `id` by its process and connection. The key's hash, to forget the span
    /// by.
    pub(super) fn insert_server(&mut self, key: ServerKey, id: u64) -> u64 {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        let (_, ids) = self
            .servers
            .entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k))
            .or_insert_with(|| (key, Vec::with_capacity(1)))
            .into_mut();
        ids.push(id);
        hash
    }

    /// The latest client span of a request.
    pub(super) fn client(&self, key: &PeerKey) -> Option<u64> {
        self.clients
            .find(self.hasher.hash_one(key), |(k, _)| k == key)
            .map(|(_, id)| *id)
    }

    /// The server spans of a process's connection, oldest first.
    pub(super) fn servers(&self, key: &ServerKey) -> &[u64] {
        self.servers
            .find(self.hasher.hash_one(key), |(k, _)| k == key)
            .map_or(&[][..], |(_, ids)| ids.as_slice())
    }

    /// Take span `id`, indexed under `hash`, out of the index. A client span replaced by a
    /// later one of the same request is in no entry any more.
    pub(super) fn forget(&mut self, id: u64, hash: u64) {
        if let Ok(entry) = self.clients.find_entry(hash, |(_, i)| *i == id) {
            entry.remove();
        } else if let Ok(mut entry) = self.servers.find_entry(hash, |(_, ids)| ids.contains(&id)) {
            let ids = &mut entry.get_mut().1;
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{RequestId, end_key::EndKey};

    fn end(port: u16) -> EndKey {
        EndKey::new(([127, 0, 0, 1], port).into(), ([127, 0, 0, 1], 8080).into())
    }

    #[test]
    fn a_request_finds_its_latest_client_and_forgetting_an_older_one_keeps_it() {
        let mut index = SpanIndex::default();
        let key = (end(1), RequestId::Seq(7));
        let hash = index.insert_client(key, 1);
        index.insert_client((end(2), RequestId::Seq(7)), 2);
        assert_eq!(index.client(&key), Some(1));
        // The same request again (a retransmitted capture, a reused port): the later span.
        assert_eq!(index.insert_client(key, 3), hash);
        assert_eq!(index.client(&key), Some(3));
        index.forget(1, hash);
        assert_eq!(index.client(&key), Some(3));
        index.forget(3, hash);
        assert_eq!(index.client(&key), None);
        assert_eq!(index.client(&(end(2), RequestId::Seq(7))), Some(2));
        assert_eq!(index.client(&(end(2), RequestId::Stream(7))), None);
    }

    #[test]
    fn a_connection_lists_its_servers_oldest_first_until_each_is_forgotten() {
        let mut index = SpanIndex::default();
        let (a, b) = ((9, end(1)), (9, end(2)));
        let hash = index.insert_server(a, 10);
        for id in [11, 12] {
            assert_eq!(index.insert_server(a, id), hash);
        }
        let hash_b = index.insert_server(b, 13);
        assert_eq!(index.servers(&a), &[10, 11, 12]);
        index.forget(11, hash);
        assert_eq!(index.servers(&a), &[10, 12]);
        index.forget(10, hash);
        index.forget(12, hash);
        assert_eq!(index.servers(&a), &[] as &[u64]);
        assert_eq!(index.servers(&b), &[13]);
        assert_eq!(index.servers(&(8, end(2))), &[] as &[u64]);
        // Forgetting twice, or an id never indexed, changes nothing.
        index.forget(12, hash);
        index.forget(99, hash_b);
        assert_eq!(index.servers(&b), &[13]);
        assert_eq!(index.clients.len(), 0);
        assert_eq!(index.servers.len(), 1);
    }
}
