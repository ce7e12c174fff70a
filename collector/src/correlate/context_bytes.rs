//! Handler runs from the bytes alone (a child of `context`): the goroutine that reads an HTTP/1
//! request on an accepted connection is its handler until it writes back, with no probe on the
//! request path; and the bounds of the per-goroutine tables whose goroutines report no end.

use super::{Data, Direction, EndKey, GRACE_NS, GoProcess, HandlerRun, MAX_GOROUTINES};

/// Handler entries a process keeps before the first sweep of ended ones.
const SWEEP_FLOOR: usize = 4096;
/// Handler runs kept per goroutine: the last few of a keep-alive connection's.
const MAX_RUNS: usize = 8;

/// Whether a read's first bytes start an HTTP/1 request: an upper-case method token and a
/// space (`GET /`, `POST /`). A body's bytes, an HTTP/2 preface or frames, and TLS records do
/// not.
pub(super) fn starts_http1_request(payload: &[u8]) -> bool {
    let token = payload
        .iter()
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    (3..=7).contains(&token)
        && payload.get(token) == Some(&b' ')
        // `PRI * HTTP/2.0`: HTTP/2's connection preface.
        && !payload.starts_with(b"PRI ")
}

impl GoProcess {
    /// A goroutine's bytes on an accepted connection. net/http serves HTTP/1 requests on the
    /// connection's own goroutine: it reads the request, runs the handler and writes the
    /// response, so the goroutine that read a request is its handler until it writes on that
    /// connection. This is what ties a handler's outbound calls to its request without a probe
    /// on the request path (the `ServeHTTP` probe, where attached, adds runs of its own that end
    /// when the handler returns).
    pub(super) fn on_server_bytes(&mut self, goid: u64, d: &Data) {
        if self.handlers.len() >= MAX_GOROUTINES && !self.handlers.contains_key(&goid) {
            // Handler goroutines report no end (the goroutine-end probe tells only of those
            // a handler started): forget the half whose last run started longest ago.
            let cutoff = median_ts(
                self.handlers
                    .values()
                    .filter_map(|r| r.last())
                    .map(|r| r.start),
            );
            self.handlers
                .retain(|_, runs| runs.last().is_some_and(|r| r.start >= cutoff));
        }
        if !self.handlers.contains_key(&goid) {
            self.sweep_handlers(d.ts_exit_ns);
        }
        // Most goroutines serve one connection and one request: room for one run (see
        // `push_run`; a run is 56 bytes, and there is one per connection).
        let runs = self
            .handlers
            .entry(goid)
            .or_insert_with(|| Vec::with_capacity(1));
        // The open byte run on this connection, wherever it is: a `ServeHTTP` run may have
        // been added after it.
        let conn = EndKey::new(d.local, d.remote);
        let open = runs
            .iter_mut()
            .rev()
            .find(|r| r.from_bytes && r.end().is_none() && r.conn == conn);
        let first = match d.direction {
            Direction::Ingress => self.first_bytes.remove(&conn),
            Direction::Egress => None,
        };
        match d.direction {
            Direction::Ingress if d.bytes == 1 && d.payload.len() == 1 => {
                if d.payload[0].is_ascii_uppercase() {
                    if self.first_bytes.len() >= MAX_GOROUTINES {
                        self.first_bytes.clear();
                    }
                    self.first_bytes.insert(conn, d.payload[0]);
                }
            }
            Direction::Ingress => {
                let starts = match first {
                    Some(byte) => starts_http1_request(&[&[byte], &d.payload[..]].concat()),
                    None => starts_http1_request(&d.payload),
                };
                if open.is_none() && starts {
                    push_run(runs, HandlerRun::new(d.ts_exit_ns, conn, true));
                }
            }
            Direction::Egress => {
                if let Some(run) = open {
                    run.set_end(d.ts_enter_ns);
                }
            }
        }
        if runs.is_empty() {
            self.handlers.remove(&goid);
        }
    }
}

impl GoProcess {
    /// Forget the handler runs of goroutines whose runs all ended more than the grace period
    /// before `now` (their goroutines served connections that are over: net/http starts one per
    /// connection). Done when the table has grown by a quarter since the last sweep, so the
    /// cost per new entry stays constant (some five entries looked at) and the table holds at
    /// most 1.25 times the entries of the last grace period (plus open runs): under churn a
    /// Go server's handler runs are the largest table, and doubling held 75k more of them.
    pub(super) fn sweep_handlers(&mut self, now: u64) {
        let last = self.handlers_swept.max(SWEEP_FLOOR);
        if self.handlers.len() < last + last / 4 {
            return;
        }
        self.handlers.retain(|_, runs| {
            runs.iter()
                .any(|r| r.end().is_none_or(|end| now.saturating_sub(end) < GRACE_NS))
        });
        self.handlers_swept = self.handlers.len();
    }
}

/// The median of some timestamps (0 for none): the cut that keeps the newer half.
pub(super) fn median_ts(times: impl Iterator<Item = u64>) -> u64 {
    let mut times: Vec<u64> = times.collect();
    let middle = times.len() / 2;
    if times.is_empty() {
        return 0;
    }
    *times.select_nth_unstable(middle).1
}

/// Add a handler run; a serving goroutine runs many handlers, and the last few are enough.
pub(super) fn push_run(runs: &mut Vec<HandlerRun>, run: HandlerRun) {
    if runs.len() >= MAX_RUNS {
        runs.remove(0);
    }
    // Room for this run only, not the doubling (to four runs) a plain push would
    // reserve: a plain server's connection goroutine has one or two runs (from the bytes and
    // from `ServeHTTP`), and the table holds one such goroutine per connection of the last
    // grace period. A keep-alive connection's goroutine grows by one run at a time, up to
    // `MAX_RUNS`.
    runs.reserve_exact(1);
    runs.push(run);
}
