//! The serving tier of a Go binary's probes (see `golang::discover::Tier`): on at start, off
//! once the binary's processes are seen serving without calling out, back on when one calls
//! out or a new process of the binary starts.
//!
//! **Why.** A uprobe hit costs the traced program about 22 µs of CPU here (a trap; a probe on a
//! RET adds a single-step), and the serving probes fire on every request: `ServeHTTP` at entry
//! and every RET, `newproc1` at entry and RET (net/http starts a goroutine per request), and
//! `goexit1`. A server that never calls out needs none of them: its requests and responses are
//! in the bytes, read by tracepoints, and no outbound call needs a parent. Nothing can tell at
//! start whether a program will call out, so the tier starts on (the first requests of a
//! program that does call out keep exact ancestry at any depth) and comes off after a quiet
//! period. When it is off, a call is still tied to its request through the handler goroutine's
//! bytes and the caller's `parentGoid` (see `correlate::context`); only a call made two or more
//! goroutines below its handler, before the tier is back on, loses its parent.
//!
//! Some binaries keep it for good ([`Keep`]). Links taken off are dropped on a thread of their
//! own: detaching a uprobe waits for an RCU grace period in the kernel, once per probe, which
//! must not stall the event loop.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use aya::{Ebpf, programs::UProbe};

use super::go_attach::{GoAttachError, Link, attach_function};
use crate::golang::discover::{PlannedProbe, short_name};

/// Why a binary's serving tier is never taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// A process of the binary called out.
    CallsOut,
    /// The layout has no `runtime.g.parentGoid` (Go before 1.21): only the spawn probe ties a
    /// child goroutine to its parent.
    NoAncestry,
    /// A process had TCP connections open before the agent started: their HTTP/2 header
    /// tables (HPACK) are only readable through the header probes.
    OlderConnections,
    /// `--keep-serving-probes`.
    Asked,
}

/// One binary's serving probes: what to attach, and the links while attached.
pub struct ServingTier {
    plan: Vec<PlannedProbe>,
    /// Empty while off.
    links: Vec<Link>,
    /// When the tier last went on.
    since: Instant,
    keep: Option<Keep>,
}

impl ServingTier {
    /// The tier as just attached, with its links.
    #[must_use]
    pub fn new(plan: Vec<PlannedProbe>, links: Vec<Link>) -> Self {
        Self {
            plan,
            links,
            since: Instant::now(),
            keep: None,
        }
    }

    /// Never take the tier off (the first reason given is kept).
    pub fn keep(&mut self, why: Keep) {
        self.keep.get_or_insert(why);
    }

    /// Put the tier back on if it is off (restarting its quiet period either way): None when
    /// it was on already.
    pub fn ensure_on(&mut self, ebpf: &mut Ebpf, exe: &Path) -> Option<Result<(), GoAttachError>> {
        self.since = Instant::now();
        if !self.links.is_empty() || self.plan.is_empty() {
            return None;
        }
        let mut links = Vec::new();
        for planned in &self.plan {
            match attach_function(
                ebpf,
                exe,
                &planned.probe,
                planned.entry_program,
                planned.return_program,
            ) {
                Ok(made) => links.extend(made),
                Err(e) => {
                    // All or nothing: a partly attached tier would give partial ancestry.
                    drop_in_background(take_links(ebpf, links), || {});
                    return Some(Err(e));
                }
            }
        }
        self.links = links;
        Some(Ok(()))
    }

    /// Take the tier off if it is on, may come off, and has been quiet for `quiet_after`; once
    /// every probe is off, `report` is printed with the functions the tier covered. True when
    /// it is coming off.
    pub fn off_if_quiet(
        &mut self,
        ebpf: &mut Ebpf,
        quiet_after: Duration,
        report: impl FnOnce(&[String]) -> String + Send + 'static,
    ) -> bool {
        if self.keep.is_some() || self.links.is_empty() || self.since.elapsed() < quiet_after {
            return false;
        }
        let functions: Vec<String> = self
            .plan
            .iter()
            .map(|p| short_name(&p.probe.name))
            .collect();
        let links = take_links(ebpf, std::mem::take(&mut self.links));
        drop_in_background(links, move || eprintln!("wirespan: {}", report(&functions)));
        true
    }
}

/// The links, taken out of their programs (a link whose program is gone is skipped).
fn take_links(ebpf: &mut Ebpf, links: Vec<Link>) -> Vec<aya::programs::uprobe::UProbeLink> {
    links
        .into_iter()
        .filter_map(|(program, id)| {
            let uprobe: &mut UProbe = ebpf.program_mut(program)?.try_into().ok()?;
            uprobe.take_link(id).ok()
        })
        .collect()
}

/// Drop (detach) links on a thread of their own, each probe waiting for an RCU grace period,
/// then call `done`.
fn drop_in_background(
    links: Vec<aya::programs::uprobe::UProbeLink>,
    done: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("wirespan-detach".into())
        .spawn(move || {
            drop(links);
            done();
        });
    if let Err(e) = spawned {
        // The links went with the failed closure and were dropped here, on this thread:
        // slower, still correct.
        eprintln!("wirespan: detached on the event loop's thread (no thread for it: {e})");
    }
}

/// Whether process `pid` has an established TCP connection now (read from `/proc`: its socket
/// inodes against its network namespace's TCP tables). False when anything is unreadable.
#[must_use]
pub fn has_open_connections(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<u64> = fds
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    if sockets.is_empty() {
        return false;
    }
    ["tcp", "tcp6"].iter().any(|table| {
        fs::read_to_string(format!("/proc/{pid}/net/{table}")).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .any(|line| established_inode(line).is_some_and(|i| sockets.contains(&i)))
        })
    })
}

/// The socket inode of a `/proc/net/tcp` line in state ESTABLISHED (`01`).
fn established_inode(line: &str) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields.get(3) == Some(&"01"))
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_lines_give_their_inode() {
        let established = "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 \
                           00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        let listening = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 \
                         00000000     0        0 654321 1 0000000000000000 100 0 0 10 0";
        assert_eq!(established_inode(established), Some(123_456));
        assert_eq!(established_inode(listening), None);
        assert_eq!(established_inode("garbage"), None);
    }

    #[test]
    fn this_process_without_connections_has_none_open() {
        // The test runner holds no TCP connection of its own.
        assert!(!has_open_connections(u32::MAX));
    }
}
