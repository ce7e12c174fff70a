//! Readings the benchmark takes: CPU time of processes (/proc/PID/stat, user + system), peak
//! RSS (/proc/PID/status VmHWM), BPF run time of the programs a process holds (their fdinfo,
//! with `kernel.bpf_stats_enabled` on, in `bpf`), voluntary context switches, the load
//! generators' results, what the OTLP receiver kept (completeness, parent links of the
//! three-tier chain) and what the agent's exit summary says.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use anyhow::Context as _;
use serde_json::Value;

/// CPU time of a process so far, µs (user + system; children not included).
pub fn cpu_us(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    ticks * 1_000_000 / per_second.max(1)
}

/// Peak resident set of a process, KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Turn BPF run-time accounting on (`kernel.bpf_stats_enabled`); its previous value.
pub fn enable_bpf_stats() -> Option<String> {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let previous = std::fs::read_to_string(path).ok()?;
    std::fs::write(path, "1").ok()?;
    Some(previous)
}

pub fn restore_bpf_stats(previous: Option<String>) {
    if let Some(value) = previous {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", value.trim());
    }
}

/// Voluntary context switches of every thread of `pid` so far: each is a thread going to sleep
/// (on the ring buffer's epoll, a timer, a lock, the exporter's socket), so over a window they
/// bound from above how often the agent was woken to read events.
pub fn voluntary_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// oha's `--output-format json`.
pub fn parse_oha(json: &[u8]) -> anyhow::Result<Load> {
    let v: Value = serde_json::from_slice(json).context("oha printed no JSON")?;
    let summary = &v["summary"];
    // Every answer is a request; answers other than 2xx and connection errors are errors.
    let (answered, failed_answers) = v["statusCodeDistribution"].as_object().map_or((0, 0), |m| {
        m.iter().fold((0, 0), |(all, bad), (code, n)| {
            let n = n.as_u64().unwrap_or(0);
            (all + n, bad + if code.starts_with('2') { 0 } else { n })
        })
    });
    let failed_connections: u64 = v["errorDistribution"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let seconds = |key: &str| v["latencyPercentiles"][key].as_f64().unwrap_or(0.0) * 1e6;
    Ok(Load {
        requests: answered + failed_connections,
        errors: failed_answers + failed_connections,
        rps: summary["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_us: seconds("p50"),
        p99_us: seconds("p99"),
    })
}

/// grpc-echo load's JSON line.
pub fn parse_grpc_load(json: &[u8]) -> anyhow::Result<Load> {
    let v: Value = serde_json::from_slice(json).context("grpc-echo load printed no JSON")?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "request counts"
    )]
    Ok(Load {
        requests: num("requests") as u64,
        errors: num("errors") as u64,
        rps: num("rps"),
        p50_us: num("p50_us"),
        p99_us: num("p99_us"),
    })
}

/// A span as the bench's OTLP receiver (xtask/otlp-sink) keeps it.
struct FileSpan {
    service: String,
    trace: String,
    id: String,
    parent: String,
    kind: i64,
}

/// The receiver's records: `trace\tspan\tparent\tservice\tkind` lines (ids in hex, an empty
/// parent for a root).
fn file_spans(path: &Path) -> Vec<FileSpan> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            Some(FileSpan {
                trace: f.next()?.to_owned(),
                id: f.next()?.to_owned(),
                parent: f.next()?.to_owned(),
                service: f.next()?.to_owned(),
                kind: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// What the received spans say about a run.
#[derive(Debug, Clone, Default)]
pub struct SpanCheck {
    /// Server spans of the entry service.
    pub entry_spans: u64,
    /// For the three-tier target: entry spans whose whole chain (front → relay → echo-grpc,
    /// client and server at each hop) is in their trace with every parent right.
    pub chains_right: Option<u64>,
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

/// Count the entry service's server spans and, when `chain` names the services below it
/// (`["relay", "echo-grpc"]`), check each request's chain.
pub fn check_spans(path: &Path, entry: &str, chain: &[&str]) -> SpanCheck {
    let spans = file_spans(path);
    let by_parent: HashMap<(&str, &str), Vec<&FileSpan>> =
        spans.iter().fold(HashMap::new(), |mut m, s| {
            m.entry((s.trace.as_str(), s.parent.as_str()))
                .or_default()
                .push(s);
            m
        });
    let children = |s: &FileSpan| -> Vec<&FileSpan> {
        by_parent
            .get(&(s.trace.as_str(), s.id.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    let entries: Vec<&FileSpan> = spans
        .iter()
        .filter(|s| s.service == entry && s.kind == SERVER)
        .collect();
    let chains_right = (!chain.is_empty()).then(|| {
        let mut right = 0;
        for root in &entries {
            let mut at = vec![*root];
            let mut ok = true;
            for (hop, callee) in chain.iter().enumerate() {
                let caller = if hop == 0 { entry } else { chain[hop - 1] };
                let mut next = Vec::new();
                for server in &at {
                    let calls: Vec<&FileSpan> = children(server)
                        .into_iter()
                        .filter(|c| c.kind == CLIENT && c.service == caller)
                        .collect();
                    let served: Vec<&FileSpan> = calls
                        .iter()
                        .flat_map(|c| children(c))
                        .filter(|s| s.kind == SERVER && s.service == *callee)
                        .collect();
                    if calls.is_empty() || served.len() != calls.len() {
                        ok = false;
                    }
                    next.extend(served);
                }
                at = next;
            }
            right += u64::from(ok);
        }
        right
    });
    let unique: HashSet<&str> = entries.iter().map(|s| s.id.as_str()).collect();
    SpanCheck {
        entry_spans: unique.len() as u64,
        chains_right,
    }
}

/// `lost in kernel: none` → 0; `lost in kernel: 12 (ring buffer full), 3 (...)` → 15.
pub fn events_lost(agent_stderr: &str) -> u64 {
    agent_stderr
        .lines()
        .filter_map(|l| l.split_once("lost in kernel: "))
        .next_back()
        .map_or(0, |(_, rest)| {
            let part = rest.split(';').next().unwrap_or_default();
            part.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
}

/// `otlp-sink: 1234 spans received, 1234 kept` → 1234.
pub fn sink_spans(sink_stderr: &str) -> Option<u64> {
    sink_stderr
        .lines()
        .find_map(|l| l.strip_prefix("otlp-sink: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Ring-buffer wake-ups the agent counted, if its exit summary has them (`wake-ups: N` or
/// `wakeups: N`); none today: the column stays empty until the agent reports them.
pub fn wakeups(agent_stderr: &str) -> Option<u64> {
    let line = agent_stderr
        .lines()
        .rfind(|l| l.contains("wirespan: stopped:"))?;
    ["wake-ups: ", "wakeups: "].iter().find_map(|key| {
        let (_, rest) = line.split_once(key)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// The agent's user-space time by stage, µs over its whole run, from its `stages:` line
/// (`…; decode_ms=1.5 conn_protocol_ms=… correlate_ms=… export_ms=… other_ms=…`); empty when
/// it has none.
pub fn stages(agent_stderr: &str) -> Vec<(String, f64)> {
    let Some(line) = agent_stderr.lines().rfind(|l| l.starts_with("stages:")) else {
        return Vec::new();
    };
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim_end_matches(',').parse::<f64>().ok())
    };
    [
        ("decode", "decode_ms"),
        ("conn/protocol", "conn_protocol_ms"),
        ("correlate", "correlate_ms"),
        ("export", "export_ms"),
        ("other", "other_ms"),
    ]
    .iter()
    .filter_map(|(name, key)| Some(((*name).to_owned(), field(key)? * 1e3)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_events_are_summed_from_the_summary() {
        assert_eq!(
            events_lost("wirespan: stopped: 10 events, 0 malformed; lost in kernel: none; x"),
            0
        );
        assert_eq!(
            events_lost("...; lost in kernel: 12 (ring buffer full), 3 (read failed); spans"),
            15
        );
    }

    #[test]
    fn summary_extras_are_read_when_present() {
        let plain = "wirespan: stopped: 10 events, 0 malformed; lost in kernel: none";
        assert_eq!(wakeups(plain), None);
        assert_eq!(stages(plain), Vec::new());
        let rich = "wirespan: stopped: 10 events; wake-ups: 42\nstages: user-space µs per \
                    event by stage: decode 0.40, conn/protocol 0.30; clock_read_ns=20 events=7 \
                    decode_ms=1.5 conn_protocol_ms=0.3 correlate_ms=2.0 export_ms=4.0 other_ms=0.0";
        assert_eq!(wakeups(rich), Some(42));
        assert_eq!(
            stages(rich),
            vec![
                ("decode".to_owned(), 1500.0),
                ("conn/protocol".to_owned(), 300.0),
                ("correlate".to_owned(), 2000.0),
                ("export".to_owned(), 4000.0),
                ("other".to_owned(), 0.0)
            ]
        );
        assert_eq!(
            sink_spans("otlp-sink: 77 spans received, 77 kept"),
            Some(77)
        );
    }

    #[test]
    fn oha_json_gives_requests_rate_and_percentiles() {
        let json = br#"{"summary":{"requestsPerSec":1000.5},
            "latencyPercentiles":{"p50":0.0005,"p99":0.002},
            "statusCodeDistribution":{"200":990,"502":5},"errorDistribution":{"timeout":5}}"#;
        let load = parse_oha(json).unwrap();
        assert_eq!(load.requests, 1000);
        assert_eq!(load.errors, 10);
        assert!((load.p50_us - 500.0).abs() < 1e-6 && (load.p99_us - 2000.0).abs() < 1e-6);
    }
}
