//! Connection ends that closed, in close order, until both tables that remember ends are done
//! with them: the execution contexts (last seen, a Go client's uses) and the peers (first
//! bytes). Each forgets a closed end `END_GRACE_NS` after its close, but at its own moments
//! (the contexts also at connects and accepts, and early past their cap), so each reads the
//! one queue with a cursor of its own. Under churn some 80k ends are closing at a time: one
//! queue holds them once, not once per table. An entry stays until both readers took it, so
//! both must read: the correlator has the peers read at every close, every connection given up
//! on, and every clock tick, as the contexts do.

use std::collections::VecDeque;

use super::end_key::EndKey;

/// A connection end that closed (or was given up on, see `Contexts::on_conn_gone`) at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    pub(crate) at: u64,
    pub(crate) pid: u32,
    pub(crate) end: EndKey,
}

/// Who reads the queue.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reader {
    Contexts = 0,
    Peers = 1,
}

/// Closed ends, oldest first, each kept until both readers took it.
#[derive(Debug, Default)]
pub(crate) struct ClosedEnds {
    queue: VecDeque<Closed>,
    /// How many entries were ever dropped from the queue's front: the position of its first.
    dropped: u64,
    /// The position of each reader's next entry.
    next: [u64; 2],
}

impl ClosedEnds {
    pub(crate) fn push(&mut self, closed: Closed) {
        self.queue.push_back(closed);
    }

    /// Entries `reader` has not taken yet.
    pub(crate) fn len(&self, reader: Reader) -> usize {
        self.queue.len() - self.offset(reader)
    }

    /// `reader`'s next entry, taken when `take` says so.
    pub(crate) fn take_if(
        &mut self,
        reader: Reader,
        take: impl FnOnce(&Closed) -> bool,
    ) -> Option<Closed> {
        let next = *self.queue.get(self.offset(reader))?;
        if !take(&next) {
            return None;
        }
        self.next[reader as usize] += 1;
        // Entries both readers took go.
        let done = self.next[0].min(self.next[1]);
        while self.dropped < done {
            self.queue.pop_front();
            self.dropped += 1;
        }
        Some(next)
    }

    fn offset(&self, reader: Reader) -> usize {
        usize::try_from(self.next[reader as usize] - self.dropped)
            .expect("a reader is at most the queue's length ahead of its front")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(at: u64) -> Closed {
        Closed {
            at,
            pid: 1,
            end: EndKey::new(([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into()),
        }
    }

    fn take_all(q: &mut ClosedEnds, reader: Reader) -> Vec<u64> {
        std::iter::from_fn(|| q.take_if(reader, |_| true).map(|c| c.at)).collect()
    }

    #[test]
    fn each_reader_takes_every_entry_in_order_and_entries_go_when_both_did() {
        let mut q = ClosedEnds::default();
        for at in 1..=4 {
            q.push(closed(at));
        }
        assert_eq!(q.take_if(Reader::Contexts, |c| c.at < 3), Some(closed(1)));
        assert_eq!(q.take_if(Reader::Contexts, |c| c.at < 3), Some(closed(2)));
        assert_eq!(q.take_if(Reader::Contexts, |c| c.at < 3), None);
        assert_eq!((q.len(Reader::Contexts), q.len(Reader::Peers)), (2, 4));
        assert_eq!(q.queue.len(), 4, "the peers have not taken any");
        assert_eq!(take_all(&mut q, Reader::Peers), [1, 2, 3, 4]);
        assert_eq!(q.queue.len(), 2, "what the contexts have not taken stays");
        q.push(closed(5));
        assert_eq!(take_all(&mut q, Reader::Contexts), [3, 4, 5]);
        assert_eq!(q.queue.len(), 1);
        assert_eq!(take_all(&mut q, Reader::Peers), [5]);
        assert_eq!((q.queue.len(), q.len(Reader::Contexts)), (0, 0));
        assert_eq!(q.take_if(Reader::Peers, |_| true), None);
    }
}
