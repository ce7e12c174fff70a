//! The checks of the multi-host test (privileged_hosts) on what its agents exported: each
//! request one trace with every parent right across the three hosts (`check_joined`), or, with
//! no store to join through, each host's part as a single host exports it (`check_unjoined`,
//! `check_alone`); no parent across hosts but the caller's client span; every span and Go
//! attachment on its own host; the agents' join counts agreeing with the spans. Each check
//! returns what failed, with the evidence, so one run reports every failure.

use std::{path::PathBuf, time::Duration};

use super::{
    Stopped,
    hosts_agent_output::{JoinCounts, go_report_pids},
    hosts_services::{SERVICES, secs},
    hosts_spans::{HostSpan, Route, Sent, Spans, host_spans},
};

/// The one child of `parent` in `trace` on `host` of `service`, `kind`, named `name…`.
pub fn one_child<'a>(
    trace: &[&'a HostSpan],
    parent: &str,
    (host, service, kind, name): (&str, &str, u64, &str),
) -> Result<&'a HostSpan, String> {
    let found: Vec<&HostSpan> = trace
        .iter()
        .copied()
        .filter(|s| s.span.parent == parent)
        .collect();
    match found.as_slice() {
        [one]
            if one.host == host
                && one.span.service == service
                && one.span.kind == kind
                && one.span.name.starts_with(name) =>
        {
            Ok(one)
        }
        _ => Err(format!(
            "expected one child of {parent}: {host} {service} kind={kind} {name:?}; found {}",
            found.len()
        )),
    }
}

/// The whole trace of a request: every span on its host, every parent right, and no span of
/// the request outside the trace.
pub fn check_joined(spans: &Spans, sent: &Sent) -> Result<(), String> {
    let fail = |why: String| format!("{why}\n{}", spans.evidence(sent));
    let (trace_id, parent) = if sent.route == Route::Python {
        // curl's client span starts the trace.
        let curls: Vec<&HostSpan> = spans
            .of_host("host-a")
            .filter(|s| s.span.kind == 3 && s.carries(&sent.msg))
            .collect();
        let [curl] = curls.as_slice() else {
            return Err(fail(format!("{} client spans of curl, not 1", curls.len())));
        };
        (curl.span.trace.clone(), String::new())
    } else {
        (sent.trace.clone(), sent.parent.clone())
    };
    let trace: Vec<&HostSpan> = spans
        .all
        .iter()
        .filter(|s| s.span.trace == trace_id)
        .collect();
    let curl = one_child(&trace, &parent, ("host-a", "curl-a", 3, "GET")).map_err(fail)?;
    if sent.route == Route::Python {
        one_child(&trace, &curl.span.id, ("host-b", "py-b", 2, "GET"))
            .map_err(|e| fail(format!("curl → Python (across hosts, through DNAT): {e}")))?;
    } else {
        let path = if sent.route == Route::Echo {
            "/echo"
        } else {
            "/fanout"
        };
        let front = one_child(
            &trace,
            &curl.span.id,
            ("host-a", "front", 2, &format!("GET {path}")),
        )
        .map_err(fail)?;
        let calls: Vec<&&HostSpan> = trace
            .iter()
            .filter(|s| s.span.parent == front.span.id)
            .collect();
        if calls.len() != sent.calls() {
            return Err(fail(format!(
                "front made {} calls for the request, not {}",
                calls.len(),
                sent.calls()
            )));
        }
        for call in calls {
            if (
                call.host.as_str(),
                call.span.service.as_str(),
                call.span.kind,
            ) != ("host-a", "front", 3)
            {
                return Err(fail(format!("front's call is {}", call.describe())));
            }
            let relay = one_child(&trace, &call.span.id, ("host-b", "relay", 2, "GET /relay"))
                .map_err(|e| fail(format!("front → relay (across hosts, through DNAT): {e}")))?;
            let relay_call = one_child(
                &trace,
                &relay.span.id,
                ("host-b", "relay", 3, "wirespan.echo.Echo/Say"),
            )
            .map_err(fail)?;
            let echo = one_child(
                &trace,
                &relay_call.span.id,
                ("host-c", "echo-grpc", 2, "wirespan.echo.Echo/Say"),
            )
            .map_err(|e| fail(format!("relay → echo-grpc (across hosts, gRPC): {e}")))?;
            if trace.iter().any(|s| s.span.parent == echo.span.id) {
                return Err(fail("echo-grpc's server span has children".into()));
            }
        }
    }
    let want = if sent.route == Route::Python {
        2
    } else {
        2 + 4 * sent.calls()
    };
    if trace.len() != want {
        return Err(fail(format!(
            "{} spans in the trace, not {want}",
            trace.len()
        )));
    }
    if let Some(stray) = spans
        .all
        .iter()
        .find(|s| s.carries(&sent.msg) && s.span.trace != trace_id)
    {
        return Err(fail(format!(
            "a span of the request in another trace: {}",
            stray.describe()
        )));
    }
    Ok(())
}

/// A request whose hop to host B met no store: host A's part is whole (same-host joins need no
/// store), and relay's server span on B is a root (`joined_ok`: or joined right, for a request
/// whose wait outlasted the outage), with its own call below it.
pub fn check_unjoined(spans: &Spans, sent: &Sent, joined_ok: bool) -> Result<(), String> {
    let fail = |why: String| format!("{why}\n{}", spans.evidence(sent));
    let trace: Vec<&HostSpan> = spans
        .all
        .iter()
        .filter(|s| s.span.trace == sent.trace)
        .collect();
    let curl = one_child(&trace, &sent.parent, ("host-a", "curl-a", 3, "GET")).map_err(fail)?;
    let front =
        one_child(&trace, &curl.span.id, ("host-a", "front", 2, "GET /echo")).map_err(fail)?;
    let call = one_child(&trace, &front.span.id, ("host-a", "front", 3, "GET")).map_err(fail)?;
    let relays: Vec<&HostSpan> = spans
        .of_host("host-b")
        .filter(|s| s.span.kind == 2 && s.carries(&sent.msg))
        .collect();
    let [relay] = relays.as_slice() else {
        return Err(fail(format!("{} relay server spans, not 1", relays.len())));
    };
    let joined = relay.span.parent == call.span.id && relay.span.trace == sent.trace;
    if !(relay.span.parent.is_empty() || (joined_ok && joined)) {
        return Err(fail(format!(
            "relay's server span during the outage has parent {:?}",
            relay.span.parent
        )));
    }
    let below: Vec<&HostSpan> = spans
        .of_host("host-b")
        .filter(|s| s.span.parent == relay.span.id)
        .collect();
    match below.as_slice() {
        [one] if one.span.kind == 3 && one.span.trace == relay.span.trace => Ok(()),
        _ => Err(fail("relay's server span lost its own call".into())),
    }
}

/// Every span on the host whose agent exported it, named by that agent's `host.name`; no
/// service of another host; Go programs attached only by their own host's agent.
pub fn check_scoping(
    go_pids: &[(&str, Vec<u32>)],
    files: &[PathBuf; 3],
    stopped: &[Stopped],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (((host, services), file), stopped) in SERVICES.iter().zip(files).zip(stopped) {
        let own_pids = &go_pids.iter().find(|(h, _)| h == host).unwrap().1;
        for span in host_spans(file) {
            if span.host != *host {
                failures.push(format!(
                    "{host}'s agent exported host.name={:?} (its OTEL_RESOURCE_ATTRIBUTES says host.name={host}): {}",
                    span.host,
                    span.describe()
                ));
            }
            if !services.contains(&span.span.service.as_str()) {
                failures.push(format!(
                    "{host}'s agent exported a span of another host's process: {}",
                    span.describe()
                ));
            }
        }
        for (line, pid) in go_report_pids(
            &stopped
                .stderr
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ) {
            if !own_pids.contains(&pid) {
                failures.push(format!(
                    "{host}'s agent attached the Go uprobes to pid {pid}, a process of another host (its own: {own_pids:?}): {line}"
                ));
            }
        }
        if !stopped.stderr.lines().any(|l| {
            l.starts_with("wirespan: go: ") && own_pids.iter().any(|p| l.contains(&p.to_string()))
        }) {
            failures.push(format!(
                "{host}'s agent did not attach to its own Go program (pids {own_pids:?}):\n{}",
                stopped.stderr
            ));
        }
    }
    failures
}

/// Each agent exited cleanly; its stop output read and checked against the semantic
/// conventions (every line JSON, every attribute key known).
pub fn check_stopped(files: &[PathBuf; 3], stopped: &[Stopped]) {
    for (file, stopped) in files.iter().zip(stopped) {
        assert!(
            stopped.status.success(),
            "an agent failed:\n{}",
            stopped.stderr
        );
        super::file_spans(file);
    }
}

/// No server span is joined to anything but a client span on the host that calls it, in its
/// own trace.
pub fn check_no_wrong_parent(spans: &Spans) -> Vec<String> {
    let mut failures = Vec::new();
    for s in spans
        .all
        .iter()
        .filter(|s| s.span.kind == 2 && s.host != "host-a" && !s.span.parent.is_empty())
    {
        let caller = if s.host == "host-b" {
            "host-a"
        } else {
            "host-b"
        };
        match spans.by_id(&s.span.parent) {
            Some(p) if p.host == caller && p.span.kind == 3 && p.span.trace == s.span.trace => {}
            p => failures.push(format!(
                "a wrong parent across hosts: {} under {:?}",
                s.describe(),
                p.map(HostSpan::describe)
            )),
        }
    }
    failures
}

/// The agents' `joins across hosts:` lines count what they exported: on B and C, every
/// server span joined or unjoined; the outage (Redis stopped for `outage`) met; no join
/// without a published record.
pub fn check_counts(
    spans: &Spans,
    counts: &[Option<(String, JoinCounts)>],
    outage: Duration,
) -> Vec<String> {
    let mut failures = Vec::new();
    for ((host, _), count) in SERVICES.iter().zip(counts) {
        let Some((line, count)) = count else {
            failures.push(format!(
                "{host}'s agent printed no `joins across hosts:` line"
            ));
            continue;
        };
        if *host == "host-a" {
            continue;
        }
        let (joined, roots) = spans.server_spans(host);
        if (count.joined, count.unjoined) != (joined, roots) {
            failures.push(format!(
                "{host}: summary {line:?}, but {joined} server spans were exported joined and {roots} unjoined"
            ));
        }
        if count.store_away == 0 {
            failures.push(format!(
                "{host}: summary {line:?} counts nothing that met the store away, yet Redis was stopped for {}",
                secs(outage)
            ));
        }
    }
    if let [Some((_, a)), Some((_, b)), Some((_, c))] = counts
        && (a.published < b.joined || b.published < c.joined)
    {
        failures.push(format!(
            "fewer records published than joined: A published {}, B joined {}; B published {}, C joined {}",
            a.published, b.joined, b.published, c.joined
        ));
    }
    failures
}

/// Without a store, a request's spans as before: host A's part whole (same-host joins), the
/// server spans on the other hosts roots of traces of their own.
pub fn check_alone(spans: &Spans, sent: &Sent) -> Result<(), String> {
    match sent.route {
        // Host A's part whole, relay's server span a root.
        Route::Echo => check_unjoined(spans, sent, false),
        Route::Fanout => {
            let roots = spans
                .of_host("host-b")
                .filter(|s| s.span.kind == 2 && s.carries(&sent.msg))
                .filter(|s| s.span.parent.is_empty())
                .count();
            let in_trace = spans
                .all
                .iter()
                .filter(|s| s.span.trace == sent.trace)
                .count();
            // curl, front's server span and its two calls.
            if roots == 2 && in_trace == 4 {
                Ok(())
            } else {
                Err(format!(
                    "{roots} root relay spans (want 2), {in_trace} spans in the trace on host A (want 4)\n{}",
                    spans.evidence(sent)
                ))
            }
        }
        Route::Python => {
            let carrying = |host: &'static str, service: &'static str| -> Vec<&HostSpan> {
                spans
                    .of_host(host)
                    .filter(|s| s.span.service == service && s.carries(&sent.msg))
                    .collect()
            };
            match (
                carrying("host-a", "curl-a").as_slice(),
                carrying("host-b", "py-b").as_slice(),
            ) {
                ([curl], [python])
                    if python.span.parent.is_empty() && python.span.trace != curl.span.trace =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "curl's span and the Python server's, a root\n{}",
                    spans.evidence(sent)
                )),
            }
        }
    }
}
