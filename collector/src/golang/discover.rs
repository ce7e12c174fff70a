//! Finding Go programs and deciding what to probe in each: the executable behind a pid, the
//! functions wanted, and for one binary the plan of uprobes (which function gets which entry and
//! return programs) with its layout. Pure: reads /proc and binaries only; `load::go_attach`
//! carries the plan out in the kernel.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use wirespan_shared::GoOffsets;
use wirespan_shared::names::{
    PROGRAM_GO_GOEXIT, PROGRAM_GO_NEWPROC1, PROGRAM_GO_NEWPROC1_RETURN,
    PROGRAM_GO_PERSIST_CONN_ROUND_TRIP, PROGRAM_GO_ROUND_TRIP, PROGRAM_GO_ROUND_TRIP_RETURN,
    PROGRAM_GO_SERVE_HTTP, PROGRAM_GO_SERVE_HTTP_RETURN, PROGRAM_GO_SPAWNED, PROGRAM_GO_TLS_READ,
    PROGRAM_GO_TLS_READ_RETURN, PROGRAM_GO_TLS_WRITE,
};

use super::{
    FunctionProbe, GoBinary, grpc,
    layout::{
        self, H2_WRITER_METHOD, LayoutError, RESPONSE_METHOD, TCP_CONN_METHOD, TLS_CONN_METHOD,
    },
};

pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
pub const NEWPROC1: &str = "runtime.newproc1";
/// The closure `newproc` runs on the system stack: `newproc1`, then `runqput(pp, newg, true)`.
pub const NEWPROC_CLOSURE: &str = "runtime.newproc.func1";
pub const RUNQPUT: &str = "runtime.runqput";
pub const ROUND_TRIP: &str = "net/http.(*Transport).roundTrip";
pub const GOEXIT1: &str = "runtime.goexit1";
pub const PERSIST_ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
/// crypto/tls's connection: where Go programs' TLS plaintext is read and written.
pub const TLS_READ: &str = "crypto/tls.(*Conn).Read";
pub const TLS_WRITE: &str = "crypto/tls.(*Conn).Write";

/// One line of the start-up report per Go binary found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoReport {
    pub binary: PathBuf,
    pub pids: Vec<u32>,
    /// `go1.22.12` and the notable modules (`grpc-go v1.56.3`), when the build info was readable.
    pub go_version: Option<String>,
    /// None when attached; otherwise why the binary was skipped.
    pub skipped: Option<String>,
    /// Where the layout came from when not from the binary's own DWARF, and what was left out.
    pub note: Option<String>,
    /// The functions attached (short names).
    pub functions: Vec<String>,
}

impl std::fmt::Display for GoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.go_version.as_deref().unwrap_or("Go");
        let pids: Vec<String> = self.pids.iter().map(ToString::to_string).collect();
        match &self.skipped {
            None => {
                write!(
                    f,
                    "go: {} ({version}, pids {}): attached {}",
                    self.binary.display(),
                    pids.join(","),
                    self.functions.join(", ")
                )?;
                match &self.note {
                    Some(note) => write!(f, " ({note})"),
                    None => Ok(()),
                }
            }
            Some(why) => write!(
                f,
                "go: {} ({version}, pids {}): skipped: {why}",
                self.binary.display(),
                pids.join(",")
            ),
        }
    }
}

/// Why a Go binary is not probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(
        "neither {SERVE_HTTP}, grpc-go's server or client, nor crypto/tls (the program serves no requests wirespan reads, and its bytes are plain)"
    )]
    ServesNothing,
    #[error("no {NEWPROC1} with a RET instruction")]
    NoSpawn,
}

/// The executable of a process: a path to it and its (device, inode).
#[must_use]
pub fn executable(pid: u32) -> Option<(PathBuf, (u64, u64))> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    // Kernel threads have no exe; processes gone meanwhile fail here too.
    let meta = std::fs::metadata(&exe).ok()?;
    Some((exe, (meta.dev(), meta.ino())))
}

/// Every function the probes may go on, or whose address they compare with.
#[must_use]
pub fn wanted_functions() -> Vec<&'static str> {
    let mut wanted = vec![
        SERVE_HTTP,
        NEWPROC1,
        NEWPROC_CLOSURE,
        RUNQPUT,
        ROUND_TRIP,
        GOEXIT1,
        PERSIST_ROUND_TRIP,
        TLS_READ,
        TLS_WRITE,
        TCP_CONN_METHOD,
        RESPONSE_METHOD,
        H2_WRITER_METHOD,
        TLS_CONN_METHOD,
        grpc::STATUS_ERROR_METHOD,
    ];
    wanted.extend(grpc::PROBES.iter().map(|(name, _, _)| *name));
    wanted.extend(grpc::SPAWN_SITES);
    wanted
}

/// The last path segment of a Go function name, for the report (`(*Transport).roundTrip`).
#[must_use]
pub fn short_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// When a probe fires, and so when it is worth its cost (a uprobe hit costs the traced program
/// about 22 µs of CPU on these VMs, against about 0.3 µs for a tracepoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Fires only on an outbound call (a client round trip, a gRPC call, its response headers):
    /// it says which goroutine asked, which the bytes cannot. Always attached; a program that
    /// never calls out never pays for it.
    Outbound,
    /// Fires on every inbound request or goroutine: handler starts and ends, goroutine starts
    /// and ends, gRPC server headers. Needed only by a program that calls out (to tie calls made
    /// deeper than a handler's own goroutine and its children to their request) or whose
    /// connections predate the agent (warm HPACK state). Attached at start, and taken off a
    /// program that is seen serving without calling out (see `load::go_attach`).
    Serving,
    /// Fires on every read and write of a TLS connection: the plaintext, which the bytes on the
    /// socket cannot give. Always attached; a program that speaks no TLS never pays for it.
    Tls,
}

/// One function to probe: where, the entry and return programs ("" when only the entry is
/// needed), and its tier.
#[derive(Debug, Clone)]
pub struct PlannedProbe {
    pub probe: FunctionProbe,
    pub entry_program: &'static str,
    pub return_program: &'static str,
    pub tier: Tier,
}

/// What to attach to one binary, in order, and the layout its processes get.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub offsets: GoOffsets,
    /// Goroutine ancestry first: without it only the handler's own goroutine is tied to its
    /// request.
    pub probes: Vec<PlannedProbe>,
    /// Where the layout came from and what was left out.
    pub notes: Vec<String>,
}

/// The plan of a program that only calls out: its calls have no parent to find, and their
/// plain bytes say everything, but its TLS plaintext is only in crypto/tls.
fn tls_only(
    present: Vec<(FunctionProbe, &'static str, &'static str)>,
    offsets: GoOffsets,
    mut notes: Vec<String>,
) -> Result<ProbePlan, PlanError> {
    let probes: Vec<PlannedProbe> = present
        .into_iter()
        .filter(|(p, _, ret)| {
            [TLS_READ, TLS_WRITE].contains(&p.name.as_str())
                && (ret.is_empty() || !p.return_offsets.is_empty())
        })
        .map(|(probe, entry_program, return_program)| PlannedProbe {
            probe,
            entry_program,
            return_program,
            tier: Tier::Tls,
        })
        .collect();
    if probes.is_empty() {
        return Err(PlanError::ServesNothing);
    }
    notes.push("serves nothing: only its TLS plaintext is read".to_owned());
    Ok(ProbePlan {
        offsets,
        probes,
        notes,
    })
}

/// Decide what to attach to `binary`: the layout, then goroutine ancestry and ends, then the
/// request functions it has (skipping, with a note, one whose RETs were not found).
pub fn plan(binary: &GoBinary) -> Result<ProbePlan, PlanError> {
    let (offsets, mut notes) = layout::layout_of(binary)?;
    let grpc_known = offsets.grpc.field_size != 0;
    let mut wanted: Vec<(&str, &'static str, &'static str)> = vec![
        (
            SERVE_HTTP,
            PROGRAM_GO_SERVE_HTTP,
            PROGRAM_GO_SERVE_HTTP_RETURN,
        ),
        (
            ROUND_TRIP,
            PROGRAM_GO_ROUND_TRIP,
            PROGRAM_GO_ROUND_TRIP_RETURN,
        ),
        (PERSIST_ROUND_TRIP, PROGRAM_GO_PERSIST_CONN_ROUND_TRIP, ""),
        (TLS_READ, PROGRAM_GO_TLS_READ, PROGRAM_GO_TLS_READ_RETURN),
        (TLS_WRITE, PROGRAM_GO_TLS_WRITE, ""),
    ];
    if grpc_known {
        wanted.extend(grpc::PROBES);
    }
    let present: Vec<_> = wanted
        .into_iter()
        .filter_map(|(name, entry, ret)| Some((binary.probe(name)?, entry, ret)))
        .collect();
    if !present
        .iter()
        .any(|(p, _, _)| p.name == SERVE_HTTP || p.name.starts_with(grpc::GRPC_MODULE))
    {
        return tls_only(present, offsets, notes);
    }
    // A spawn is seen whole where newproc queues the new goroutine (one emulated trap);
    // without the fields that takes, at newproc1's entry and RETs.
    let at_queue = (offsets.g_parent_goid != 0 && offsets.g_gopc != 0)
        .then(|| binary.call_site(NEWPROC_CLOSURE, RUNQPUT))
        .flatten();
    let spawn = match at_queue {
        Some(call) => PlannedProbe {
            probe: call,
            entry_program: PROGRAM_GO_SPAWNED,
            return_program: "",
            tier: Tier::Serving,
        },
        None => PlannedProbe {
            probe: binary
                .probe(NEWPROC1)
                .filter(|p| !p.return_offsets.is_empty())
                .ok_or(PlanError::NoSpawn)?,
            entry_program: PROGRAM_GO_NEWPROC1,
            return_program: PROGRAM_GO_NEWPROC1_RETURN,
            tier: Tier::Serving,
        },
    };
    let mut probes = vec![spawn];
    // Goroutine ends let both sides forget per-goroutine state; without them the bounded
    // tables still evict the oldest entries.
    if let Some(exit) = binary.probe(GOEXIT1) {
        probes.push(PlannedProbe {
            probe: exit,
            entry_program: PROGRAM_GO_GOEXIT,
            return_program: "",
            tier: Tier::Serving,
        });
    } else {
        notes.push(format!("no {GOEXIT1}: goroutine ends not seen"));
    }
    for (probe, entry_program, return_program) in present {
        if !return_program.is_empty() && probe.return_offsets.is_empty() {
            notes.push(format!(
                "no RET instruction found in {}: not attached",
                probe.name
            ));
            continue;
        }
        let tier = if [SERVE_HTTP, grpc::SERVER_OPERATE_HEADERS, grpc::WRITE_HEADER]
            .contains(&probe.name.as_str())
        {
            Tier::Serving
        } else if [TLS_READ, TLS_WRITE].contains(&probe.name.as_str()) {
            Tier::Tls
        } else {
            Tier::Outbound
        };
        probes.push(PlannedProbe {
            probe,
            entry_program,
            return_program,
            tier,
        });
    }
    Ok(ProbePlan {
        offsets,
        probes,
        notes,
    })
}
