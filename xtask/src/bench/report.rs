//! The benchmark's results: per target, load mode and configuration, averaged over rounds, with
//! the differences against no agent and the floors, the kernel's counts per request, checked
//! against wirespan's targets; written as Markdown, JSON and a PNG plot (an SVG drawn here,
//! rendered by rsvg-convert) under `bench/results/`.

use std::{fmt::Write as _, path::Path, process::Command};

use serde_json::json;

use super::{Config, Mode, Run, Target};

/// Averages of the runs of one target, mode and configuration.
#[derive(Debug, Clone, Default)]
struct Row {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
    agent_us_per_req: f64,
    bpf_us_per_req: f64,
    services_us_per_req: f64,
    peak_rss_mib: f64,
    events_lost: u64,
    completeness: Option<f64>,
    parents_right: Option<f64>,
    /// Kernel counts per request over the measurement windows.
    uprobe_hits_per_req: f64,
    ret_hits_per_req: f64,
    /// Each program: (name, runs per request, ns per request), most time first.
    programs: Vec<(String, f64, f64)>,
    agent_sleeps_per_req: f64,
    /// From the agent's exit summary (whole runs, warm-up included), when it says.
    wakeups_per_req: Option<f64>,
    stages_us_per_req: Vec<(String, f64)>,
    spans_received_per_req: Option<f64>,
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn row(runs: &[&Run]) -> Row {
    let n = runs.len().max(1) as f64;
    let requests: u64 = runs.iter().map(|r| r.load.requests).sum();
    let per_req = |us: u64| us as f64 / requests.max(1) as f64;
    let spans: Vec<_> = runs.iter().filter_map(|r| r.spans.as_ref()).collect();
    let requests_all: u64 = runs.iter().map(|r| r.requests_all).sum();
    let entry: u64 = spans.iter().map(|s| s.entry_spans).sum();
    let chains: Vec<u64> = spans.iter().filter_map(|s| s.chains_right).collect();
    let per = |x: u64| x as f64 / requests.max(1) as f64;
    let per_all = |x: f64| x / requests_all.max(1) as f64;
    let all_programs: Vec<&super::bpf::Program> =
        runs.iter().flat_map(|r| r.programs.iter()).collect();
    let mut by_name: Vec<(String, u64, u64)> = Vec::new();
    for p in &all_programs {
        match by_name.iter_mut().find(|(n, _, _)| *n == p.name) {
            Some(entry) => {
                entry.1 += p.runs;
                entry.2 += p.run_time_ns;
            }
            None => by_name.push((p.name.clone(), p.runs, p.run_time_ns)),
        }
    }
    by_name.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let mut stages: Vec<(String, f64)> = Vec::new();
    for (name, us) in runs.iter().flat_map(|r| r.stages.iter()) {
        match stages.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 += us,
            None => stages.push((name.clone(), *us)),
        }
    }
    let wakeups: Vec<u64> = runs.iter().filter_map(|r| r.wakeups).collect();
    let received: Vec<u64> = runs.iter().filter_map(|r| r.spans_received).collect();
    Row {
        uprobe_hits_per_req: per(all_programs
            .iter()
            .filter(|p| p.is_uprobe())
            .map(|p| p.runs)
            .sum()),
        ret_hits_per_req: per(all_programs
            .iter()
            .filter(|p| p.is_return())
            .map(|p| p.runs)
            .sum()),
        programs: by_name
            .into_iter()
            .map(|(n, runs, ns)| (n, per(runs), per(ns)))
            .collect(),
        agent_sleeps_per_req: per(runs.iter().map(|r| r.agent_sleeps).sum()),
        wakeups_per_req: (!wakeups.is_empty()).then(|| per_all(wakeups.iter().sum::<u64>() as f64)),
        stages_us_per_req: stages.into_iter().map(|(n, us)| (n, per_all(us))).collect(),
        spans_received_per_req: (!received.is_empty())
            .then(|| per_all(received.iter().sum::<u64>() as f64)),
        rps: runs.iter().map(|r| r.load.rps).sum::<f64>() / n,
        p50_us: runs.iter().map(|r| r.load.p50_us).sum::<f64>() / n,
        p99_us: runs.iter().map(|r| r.load.p99_us).sum::<f64>() / n,
        requests,
        errors: runs.iter().map(|r| r.load.errors).sum(),
        agent_us_per_req: per_req(runs.iter().map(|r| r.agent_cpu_us).sum()),
        bpf_us_per_req: per_req(runs.iter().map(|r| r.agent_bpf_ns / 1000).sum()),
        services_us_per_req: per_req(runs.iter().map(|r| r.services_cpu_us).sum()),
        peak_rss_mib: runs
            .iter()
            .map(|r| r.agent_peak_rss_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        events_lost: runs.iter().map(|r| r.events_lost).sum(),
        completeness: (!spans.is_empty()).then(|| entry as f64 / requests_all.max(1) as f64),
        parents_right: (!chains.is_empty())
            .then(|| chains.iter().sum::<u64>() as f64 / entry.max(1) as f64),
    }
}

const CONFIGS: [Config; 5] = [
    Config::NoAgent,
    Config::FloorA,
    Config::FloorB,
    Config::Wirespan,
    Config::GoAuto,
];
const MODES: [Mode; 2] = [Mode::Saturation, Mode::FixedRate];

/// Rows by (target, mode, config), for the configurations that ran.
fn rows(runs: &[Run]) -> Vec<(Target, Mode, Config, Row)> {
    let mut out = Vec::new();
    for target in Target::ALL {
        for mode in MODES {
            for config in CONFIGS {
                let of: Vec<&Run> = runs
                    .iter()
                    .filter(|r| r.target == target && r.mode == mode && r.config == config)
                    .collect();
                if !of.is_empty() {
                    out.push((target, mode, config, row(&of)));
                }
            }
        }
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem} memory, Linux {}; load generator, services and agent on the same machine",
        kernel.trim()
    )
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.2}%", v * 100.0))
}

/// The Markdown report.
fn markdown(
    rows: &[(Target, Mode, Config, Row)],
    quick: bool,
    go_auto_note: Option<&str>,
) -> String {
    let mut md = format!(
        "# wirespan benchmark{}\n\nMachine: {}.\n\nEach target runs under a load of {} calls in flight (oha for HTTP, grpc-echo load for gRPC), at saturation and at a fixed 10k requests/s; configurations alternate within each round. CPU per request counts the agent's user and system time (/proc) and its BPF programs' run time (kernel.bpf_stats_enabled); the traced program's extra CPU is its CPU per request minus the same without an agent (BPF time spent in its syscalls lands there too).\n\n",
        if quick { " (--quick smoke run)" } else { "" },
        machine(),
        super::CONCURRENCY
    );
    if let Some(note) = go_auto_note {
        let _ = writeln!(md, "**go-auto:** {note}\n");
    }
    md.push_str("Floor A attaches programs that do nothing to the 12 tracepoints sys_enter/sys_exit of read, write, recvfrom, sendto, readv and writev; floor B adds one empty uprobe per request in each serving Go program (net/http's serverHandler.ServeHTTP, or grpc-go's (*http2Server).operateHeaders for the gRPC echo; on three-tier ServeHTTP in gin-front and the relay). wirespan exports over OTLP/gRPC to a receiver that discards spans (xtask/otlp-sink).\n\n");
    md.push_str("| target | load | config | req/s | vs none | vs floor A | vs floor B | p50 µs | p99 µs | p99 added µs | agent CPU µs/req (user+sys / BPF) | traced extra CPU µs/req | agent peak RSS MiB | events lost | span completeness | three-tier parents right |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (target, mode, config, r) in rows {
        let of = |config: Config| {
            rows.iter()
                .find(|(t, m, c, _)| t == target && m == mode && *c == config)
                .map(|(_, _, _, r)| r.clone())
        };
        let none = of(Config::NoAgent).unwrap_or_default();
        let vs = |floor: Config| match of(floor) {
            Some(f) if floor != *config && *config != Config::NoAgent => {
                format!("{:.3}", r.rps / f.rps.max(1.0))
            }
            _ => "-".to_owned(),
        };
        let agent = if *config == Config::NoAgent {
            "-".to_owned()
        } else {
            format!(
                "{:.2} ({:.2} / {:.2})",
                r.agent_us_per_req + r.bpf_us_per_req,
                r.agent_us_per_req,
                r.bpf_us_per_req
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.3} | {} | {} | {:.0} | {:.0} | {:+.0} | {agent} | {:+.2} | {} | {} | {} | {} |",
            target.name(),
            mode.name(),
            config.name(),
            r.rps,
            r.rps / none.rps.max(1.0),
            vs(Config::FloorA),
            vs(Config::FloorB),
            r.p50_us,
            r.p99_us,
            r.p99_us - none.p99_us,
            r.services_us_per_req - none.services_us_per_req,
            if *config == Config::NoAgent {
                "-".to_owned()
            } else {
                format!("{:.1}", r.peak_rss_mib)
            },
            if *config == Config::Wirespan {
                r.events_lost.to_string()
            } else {
                "-".to_owned()
            },
            pct(r.completeness),
            pct(r.parents_right),
        );
    }
    md.push_str(&kernel_counts(rows));
    md.push_str(&targets(rows));
    md
}

/// How many programs the per-request breakdown names.
const TOP_PROGRAMS: usize = 5;

fn optional(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The kernel's counts per request, and what the agent says of its own work.
fn kernel_counts(rows: &[(Target, Mode, Config, Row)]) -> String {
    let mut md = String::from(
        "\n## Per request: the kernel's counts and the agent's work\n\nOver the measurement window, from each BPF program's run_cnt and run_time_ns (kernel.bpf_stats_enabled): uprobe hits (kprobe-type programs named go_* or floor_uprobe), RET-probe hits (*_return and their multi-uprobe twins *_return_m) and BPF time, in total and for the programs that took most (ns per request, runs per request in brackets). Agent sleeps are the voluntary context switches of all its threads (an upper bound on ring-buffer wake-ups). Ring-buffer wake-ups and user-space time by stage come from the agent's exit summary, over its whole run (warm-up included), when it reports them; '-' when it does not. Spans received: what the OTLP receiver got, per request sent.\n\n| target | load | config | uprobe hits/req | RET-probe hits/req | BPF ns/req | top programs, ns/req (runs/req) | agent sleeps/req | ring-buffer wake-ups/req | agent user µs/req by stage | spans received/req |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (target, mode, config, r) in rows {
        if *config == Config::NoAgent {
            continue;
        }
        let top: Vec<String> = r
            .programs
            .iter()
            .take(TOP_PROGRAMS)
            .map(|(name, runs, ns)| format!("{name} {ns:.0} ({runs:.2})"))
            .collect();
        let stages: Vec<String> = r
            .stages_us_per_req
            .iter()
            .map(|(name, us)| format!("{name} {us:.2}"))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {} | {:.3} | {} | {} | {} |",
            target.name(),
            mode.name(),
            config.name(),
            r.uprobe_hits_per_req,
            r.ret_hits_per_req,
            r.bpf_us_per_req * 1000.0,
            if top.is_empty() {
                "-".to_owned()
            } else {
                top.join(", ")
            },
            r.agent_sleeps_per_req,
            optional(r.wakeups_per_req, 3),
            if stages.is_empty() {
                "-".to_owned()
            } else {
                stages.join(", ")
            },
            optional(r.spans_received_per_req, 2),
        );
    }
    md
}

/// wirespan's targets, met or missed by how much.
fn targets(rows: &[(Target, Mode, Config, Row)]) -> String {
    let get = |t: Target, m: Mode, c: Config| {
        rows.iter()
            .find(|(tt, mm, cc, _)| *tt == t && *mm == m && *cc == c)
            .map(|(_, _, _, r)| r)
    };
    let mut out = String::from("\n## wirespan against its targets\n\n");
    let mut line = |ok: bool, text: String| {
        let _ = writeln!(out, "- {} {text}", if ok { "met:" } else { "MISSED:" });
    };
    let (Some(none), Some(ws)) = (
        get(Target::Hello, Mode::Saturation, Config::NoAgent),
        get(Target::Hello, Mode::Saturation, Config::Wirespan),
    ) else {
        return out;
    };
    let ratio = ws.rps / none.rps.max(1.0);
    line(
        ratio >= 0.90,
        format!("hello at saturation: throughput {ratio:.3} of no agent (target >= 0.90)"),
    );
    match get(Target::Hello, Mode::Saturation, Config::GoAuto) {
        Some(go) => line(
            ws.rps > go.rps,
            format!(
                "hello at saturation: {:.0} req/s against go-auto's {:.0}",
                ws.rps, go.rps
            ),
        ),
        None => line(
            false,
            "better than go-auto: not compared, go-auto did not run (see above)".to_owned(),
        ),
    }
    for (t, m) in [
        (Target::Hello, Mode::Saturation),
        (Target::Hello, Mode::FixedRate),
    ] {
        if let (Some(n), Some(w)) = (get(t, m, Config::NoAgent), get(t, m, Config::Wirespan)) {
            let added = w.p99_us - n.p99_us;
            line(
                added <= 50.0,
                format!(
                    "{} at {}: p99 added {added:+.0} µs (target <= 50)",
                    t.name(),
                    m.name()
                ),
            );
            let cpu = w.agent_us_per_req + w.bpf_us_per_req;
            line(
                cpu <= 3.0,
                format!(
                    "{} at {}: {cpu:.2} µs CPU per traced request, agent + BPF (target <= 3)",
                    t.name(),
                    m.name()
                ),
            );
        }
    }
    for t in Target::ALL {
        if let Some(w) = get(t, Mode::FixedRate, Config::Wirespan) {
            line(
                w.events_lost == 0,
                format!(
                    "{} at 10k req/s: {} events lost (target 0)",
                    t.name(),
                    w.events_lost
                ),
            );
            let c = w.completeness.unwrap_or(0.0);
            line(
                c >= 0.9999,
                format!(
                    "{} at 10k req/s: span completeness {} (target 100%)",
                    t.name(),
                    pct(Some(c))
                ),
            );
        }
    }
    let rss = rows
        .iter()
        .filter(|(_, _, c, _)| *c == Config::Wirespan)
        .map(|(_, _, _, r)| r.peak_rss_mib)
        .fold(0.0, f64::max);
    line(
        rss <= 100.0,
        format!("agent peak RSS {rss:.1} MiB (target <= 100)"),
    );
    out.push_str(&https_note(rows));
    out.push_str(&floor_notes(rows));
    out
}

/// What reading HTTPS plaintext costs the hello server (no target set for it yet).
fn https_note(rows: &[(Target, Mode, Config, Row)]) -> String {
    let get = |c: Config| {
        rows.iter()
            .find(|(t, m, cc, _)| *t == Target::HelloTls && *m == Mode::Saturation && *cc == c)
            .map(|(_, _, _, r)| r)
    };
    let (Some(n), Some(w)) = (get(Config::NoAgent), get(Config::Wirespan)) else {
        return String::new();
    };
    format!(
        "- HTTPS (no target yet): hello over HTTPS at saturation keeps {:.3} of its \
         throughput, with {:.2} uprobe hits per request ({:.2} of them RET probes): the \
         crypto/tls reads and writes that carry its plaintext.\n",
        w.rps / n.rps.max(1.0),
        w.uprobe_hits_per_req,
        w.ret_hits_per_req
    )
}

/// wirespan's throughput on hello at saturation against the floors', for reference.
fn floor_notes(rows: &[(Target, Mode, Config, Row)]) -> String {
    let get = |c: Config| {
        rows.iter()
            .find(|(t, m, cc, _)| *t == Target::Hello && *m == Mode::Saturation && *cc == c)
            .map(|(_, _, _, r)| r)
    };
    let (Some(none), Some(ws)) = (get(Config::NoAgent), get(Config::Wirespan)) else {
        return String::new();
    };
    let mut out = String::new();
    for floor in [Config::FloorA, Config::FloorB] {
        if let Some(f) = get(floor) {
            let _ = writeln!(
                out,
                "- (for reference) hello at saturation: wirespan's throughput is {:.3} of {}'s, whose own is {:.3} of no agent",
                ws.rps / f.rps.max(1.0),
                floor.name(),
                f.rps / none.rps.max(1.0)
            );
        }
    }
    out
}

/// `row`'s throughput against `floor`'s, for the same target and load.
fn ratio(
    rows: &[(Target, Mode, Config, Row)],
    target: Target,
    mode: Mode,
    floor: Config,
    row: &Row,
) -> Option<f64> {
    rows.iter()
        .find(|(t, m, c, _)| *t == target && *m == mode && *c == floor)
        .map(|(_, _, _, f)| row.rps / f.rps.max(1.0))
}

fn json_of(rows: &[(Target, Mode, Config, Row)], go_auto_note: Option<&str>) -> serde_json::Value {
    json!({
        "machine": machine(),
        "go_auto": go_auto_note,
        "rows": rows.iter().map(|(t, m, c, r)| json!({
            "target": t.name(), "load": m.name(), "config": c.name(),
            "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us,
            "requests": r.requests, "errors": r.errors,
            "agent_us_per_req": r.agent_us_per_req, "bpf_us_per_req": r.bpf_us_per_req,
            "services_us_per_req": r.services_us_per_req, "agent_peak_rss_mib": r.peak_rss_mib,
            "events_lost": r.events_lost, "span_completeness": r.completeness,
            "three_tier_parents_right": r.parents_right,
            "vs_floor_a": ratio(rows, *t, *m, Config::FloorA, r),
            "vs_floor_b": ratio(rows, *t, *m, Config::FloorB, r),
            "uprobe_hits_per_req": r.uprobe_hits_per_req,
            "ret_hits_per_req": r.ret_hits_per_req,
            "bpf_ns_per_req": r.bpf_us_per_req * 1000.0,
            "bpf_programs": r.programs.iter().map(|(name, runs, ns)| json!({
                "name": name, "runs_per_req": runs, "ns_per_req": ns,
            })).collect::<Vec<_>>(),
            "agent_sleeps_per_req": r.agent_sleeps_per_req,
            "ring_buffer_wakeups_per_req": r.wakeups_per_req,
            "agent_stage_us_per_req": r.stages_us_per_req.iter()
                .map(|(name, us)| json!({"stage": name, "us_per_req": us}))
                .collect::<Vec<_>>(),
            "spans_received_per_req": r.spans_received_per_req,
        })).collect::<Vec<_>>(),
    })
}

/// Two panels: throughput against no agent, and p99 latency; one group of bars per target and
/// load, one bar per configuration.
#[expect(clippy::cast_precision_loss, reason = "a handful of bars")]
fn svg(rows: &[(Target, Mode, Config, Row)]) -> String {
    let groups: Vec<(Target, Mode)> = Target::ALL
        .iter()
        .flat_map(|t| MODES.iter().map(move |m| (*t, *m)))
        .collect();
    let colors = ["#888888", "#bbbbbb", "#dddd99", "#2b7bb9", "#d95f02"];
    let (width, panel_h, left, top) = (980.0, 220.0, 60.0, 40.0);
    let group_w = (width - left - 20.0) / groups.len() as f64;
    let bar_w = group_w / (CONFIGS.len() as f64 + 1.0);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#,
        top * 2.0 + panel_h * 2.0 + 80.0
    );
    let max_p99 = rows.iter().map(|(_, _, _, r)| r.p99_us).fold(1.0, f64::max);
    for (panel, title) in ["throughput vs no agent", "p99 latency, µs"]
        .iter()
        .enumerate()
    {
        let y0 = top + panel as f64 * (panel_h + 60.0);
        let _ = write!(
            out,
            r#"<text x="{left}" y="{}" font-size="13">{title}</text><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            y0 - 8.0,
            y0 + panel_h,
            width - 20.0,
            y0 + panel_h
        );
        for (g, (target, mode)) in groups.iter().enumerate() {
            let none = rows
                .iter()
                .find(|(t, m, c, _)| t == target && m == mode && *c == Config::NoAgent)
                .map_or(1.0, |(_, _, _, r)| r.rps.max(1.0));
            for (i, config) in CONFIGS.iter().enumerate() {
                let Some((_, _, _, r)) = rows
                    .iter()
                    .find(|(t, m, c, _)| t == target && m == mode && c == config)
                else {
                    continue;
                };
                let (value, scale, label) = if panel == 0 {
                    (r.rps / none, 1.2, format!("{:.2}", r.rps / none))
                } else {
                    (r.p99_us, max_p99 * 1.1, format!("{:.0}", r.p99_us))
                };
                let h = (value / scale).min(1.0) * panel_h;
                let x = left + g as f64 * group_w + (i as f64 + 0.5) * bar_w;
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{label}</text>"#,
                    y0 + panel_h - h,
                    bar_w * 0.9,
                    colors[i],
                    x + bar_w * 0.45,
                    y0 + panel_h - h - 3.0
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{} / {}</text>"#,
                left + (g as f64 + 0.5) * group_w,
                y0 + panel_h + 14.0,
                target.name().split(' ').next().unwrap_or_default(),
                mode.name()
            );
        }
    }
    let legend_y = top * 2.0 + panel_h * 2.0 + 60.0;
    for (i, config) in CONFIGS.iter().enumerate() {
        let x = left + i as f64 * 140.0;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            legend_y - 10.0,
            colors[i],
            x + 16.0,
            legend_y,
            config.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Write `<stamp>.md`, `.json` and `.png` (through rsvg-convert) into `dir` and print the
/// Markdown.
pub fn write(
    dir: &Path,
    runs: &[Run],
    quick: bool,
    go_auto_note: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rows = rows(runs);
    let stamp = Command::new("date")
        .arg("+%Y%m%d-%H%M%S")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let base = dir.join(format!("{stamp}{}", if quick { "-quick" } else { "" }));
    let md = markdown(&rows, quick, go_auto_note);
    std::fs::write(base.with_extension("md"), &md)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&json_of(&rows, go_auto_note))?,
    )?;
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg(&rows))?;
    let png = base.with_extension("png");
    let rendered = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg_path)
        .status()
        .is_ok_and(|s| s.success());
    if rendered {
        let _ = std::fs::remove_file(&svg_path);
    } else {
        eprintln!("xtask: rsvg-convert is missing (librsvg2-bin); the plot stays an SVG");
    }
    println!("{md}");
    eprintln!("xtask: results in {}.{{md,json,png}}", base.display());
    Ok(())
}
