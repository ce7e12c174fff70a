//! The benchmark's results: per target, load mode and configuration, averaged over rounds, with
//! the differences against no agent, checked against wirespan's targets; written as Markdown,
//! JSON and a PNG plot (an SVG drawn here, rendered by rsvg-convert) under `bench/results/`.

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
    Row {
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

const CONFIGS: [Config; 3] = [Config::NoAgent, Config::Wirespan, Config::GoAuto];
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
    md.push_str("| target | load | config | req/s | vs none | p50 µs | p99 µs | p99 added µs | agent CPU µs/req (user+sys / BPF) | traced extra CPU µs/req | agent peak RSS MiB | events lost | span completeness | three-tier parents right |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (target, mode, config, r) in rows {
        let none = rows
            .iter()
            .find(|(t, m, c, _)| t == target && m == mode && *c == Config::NoAgent)
            .map(|(_, _, _, r)| r.clone())
            .unwrap_or_default();
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
            "| {} | {} | {} | {:.0} | {:.3} | {:.0} | {:.0} | {:+.0} | {agent} | {:+.2} | {} | {} | {} | {} |",
            target.name(),
            mode.name(),
            config.name(),
            r.rps,
            r.rps / none.rps.max(1.0),
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
    md.push_str(&targets(rows));
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
    out
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
    let colors = ["#888888", "#2b7bb9", "#d95f02"];
    let (width, panel_h, left, top) = (980.0, 220.0, 60.0, 40.0);
    let group_w = (width - left - 20.0) / groups.len() as f64;
    let bar_w = group_w / 4.0;
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
