//! The demo's traces in a real trace UI, checked in a real browser (needs root, a kernel, Go,
//! Java, Debian's chromium and chromedriver, and Zipkin's server jar, which `cargo xtask test`
//! fetches once from Maven Central and passes in `WIRESPAN_ZIPKIN_JAR`).
//!
//! The example services run as in `cargo xtask demo`: front (gin) → relay (net/http) →
//! echo-grpc (grpc-go). The agent exports to Zipkin (`--exporter zipkin`) while this test asks
//! front for `/fanout` every 200 ms. Then headless Chromium does what a user does, and the test
//! reads the rendered page (its DOM, not its pixels):
//! - on the search page it adds `serviceName=front` and `spanName=get /fanout` in the search
//!   bar, runs the query, and opens a `/fanout` trace from the list;
//! - the waterfall has the trace's 10 spans, in tree order: this test's client, front's server
//!   span, then for each of the two calls front → relay → relay's gRPC client → echo-grpc;
//! - on the dependency page it runs the query, clicks the graph's nodes (drawn with WebGL), and
//!   reads each node's panel: front uses relay, relay uses echo-grpc, and the reverse.
//!
//! Screenshots of the three pages go to `target/tmp/browser/` (or `WIRESPAN_BROWSER_OUT`); the
//! README shows two of them.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{
    Agent, Listening, http_get as get, require_privileges,
    webdriver::{self, Browser, ENTER, ESCAPE},
    zipkin::{Zipkin, service_of, zipkin_jar},
};
use wirespan::testing::cannot_run;

/// Spans of one `/fanout` trace: the test's client, front's server span, and twice front's
/// client, relay's server and gRPC client, and echo-grpc's server.
const FANOUT_SPANS: usize = 10;

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("WIRESPAN_BROWSER_OUT").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Ask front for `/fanout` every 200 ms until stopped.
fn traffic(front: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let (status, _) = get(&front, &format!("/fanout?msg=ui-{n}"), "");
            assert_eq!(status, 200);
            n += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The service names of a complete `/fanout` trace as Zipkin's API has it (waiting up to 60 s
/// for one), with the client's service (this test's process) first.
fn complete_fanout_trace(zipkin: &Zipkin) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let traces = zipkin.traces("front", "get /fanout");
        if let Some(trace) = traces.iter().find(|t| t.len() == FANOUT_SPANS) {
            let root = trace
                .iter()
                .find(|s| s.get("parentId").is_none())
                .expect("a root");
            return service_of(root).to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no complete /fanout trace in Zipkin: {traces:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The search page: criteria typed into the search bar as a user does, the query run, and a
/// `/fanout` trace opened from the list.
fn search_and_open_a_trace(browser: &Browser, zipkin: &Zipkin, out: &Path) -> String {
    browser.goto(&zipkin.ui("/")).unwrap();
    let add = browser
        .wait_until("the search bar", Duration::from_secs(30), |b| {
            Ok(b.find_all("[data-testid=add-button]")?.into_iter().next())
        })
        .unwrap();
    browser.click(&add).unwrap();
    for text in ["serviceName", "front", "spanName", "get /fanout"] {
        std::thread::sleep(Duration::from_millis(300));
        browser.keys(text).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        browser.keys(ENTER).unwrap();
    }
    browser.keys(ESCAPE).unwrap();
    let run = browser
        .find_all("button")
        .unwrap()
        .into_iter()
        .find(|b| browser.text(b).is_ok_and(|t| t == "RUN QUERY"))
        .expect("a Run Query button");
    browser.click(&run).unwrap();
    // The result list: one row per trace, with a link to it.
    let link = browser
        .wait_until(
            "a /fanout trace in the list",
            Duration::from_secs(30),
            |b| {
                for row in b.find_all("tbody tr")? {
                    let text = b.text(&row)?;
                    if text.contains("get /fanout") && text.contains(&format!("\n{FANOUT_SPANS}\n"))
                    {
                        return first_link_in(b, &row);
                    }
                }
                Ok(None)
            },
        )
        .unwrap();
    let url = browser.url().unwrap();
    assert!(
        url.contains("serviceName=front") && url.contains("spanName=get"),
        "the query ran from the search bar: {url}"
    );
    browser.screenshot(&out.join("zipkin-search.png")).unwrap();
    browser.click(&link).unwrap();
    browser
        .wait_until("the trace page", Duration::from_secs(30), |b| {
            Ok(b.url()?.contains("/traces/").then_some(()))
        })
        .unwrap();
    browser.url().unwrap()
}

/// The link to a trace inside a result row.
fn first_link_in(
    browser: &Browser,
    row: &webdriver::Element,
) -> Result<Option<webdriver::Element>, String> {
    let found = browser.script(
        "return arguments[0].querySelector(\"a[href*='/traces/']\");",
        &serde_json::json!([row.reference()]),
    )?;
    Ok(webdriver::Element::from_value(&found))
}

/// The waterfall's rows, in order, as (service, span name), read from the rendered page: each
/// row is a 30-pixel-high box whose label reads `service: name`.
fn waterfall_rows(browser: &Browser) -> Result<Vec<(String, String)>, String> {
    let labels = browser.script(
        r#"const rows = Array.from(document.querySelectorAll('div[style*="height: 30px"]'));
        return rows.map(row => {
          const leaf = Array.from(row.querySelectorAll('div'))
            .find(d => d.children.length === 0 && /^\S+: \S/.test(d.textContent));
          return leaf ? leaf.textContent : null;
        }).filter(t => t !== null);"#,
        &serde_json::json!([]),
    )?;
    Ok(labels
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str()?.split_once(": "))
        .map(|(service, name)| (service.to_owned(), name.to_owned()))
        .collect())
}

/// The value shown under a trace summary heading (`Services`, `Total Spans`).
fn summary_value(page: &str, heading: &str) -> Option<String> {
    let mut lines = page.lines().map(str::trim);
    lines.find(|l| *l == heading)?;
    lines.next().map(str::to_owned)
}

fn check_waterfall(browser: &Browser, client: &str, out: &Path) {
    let rows = browser
        .wait_until("the waterfall", Duration::from_secs(30), |b| {
            let rows = waterfall_rows(b)?;
            Ok((rows.len() >= FANOUT_SPANS).then_some(rows))
        })
        .unwrap();
    let body = browser.find_all("body").unwrap();
    let page = browser.text(&body[0]).unwrap();
    assert_eq!(
        summary_value(&page, "Total Spans").as_deref(),
        Some("10"),
        "{page}"
    );
    assert_eq!(
        summary_value(&page, "Services").as_deref(),
        Some("4"),
        "{page}"
    );
    let services: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    let call = ["front", "relay", "relay", "echo-grpc"];
    let mut expected = vec![client, "front"];
    expected.extend(call);
    expected.extend(call);
    assert_eq!(services, expected, "waterfall rows: {rows:#?}");
    let names: Vec<&str> = rows.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names[..2], ["get /fanout", "get /fanout"], "{rows:#?}");
    for leg in [&names[2..6], &names[6..10]] {
        assert_eq!(leg[..2], ["get /relay", "get /relay"], "{rows:#?}");
        assert!(
            leg[2..].iter().all(|n| n.ends_with("echo.echo/say")),
            "{rows:#?}"
        );
    }
    browser.screenshot(&out.join("zipkin-trace.png")).unwrap();
}

/// A dependency-graph node's panel: the node, whom it uses and who uses it (with calls).
#[derive(Debug, Default)]
struct NodePanel {
    uses: Vec<String>,
    used_by: Vec<String>,
}

/// Read the panel the graph shows for its focused node: its name, then `Uses` and `Used`
/// tables of `service calls errors` rows.
fn parse_panel(text: &str) -> Option<(String, NodePanel)> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    lines.find(|l| *l == "Filter")?;
    let name = lines.next()?.to_owned();
    let mut panel = NodePanel::default();
    let mut section: Option<&mut Vec<String>> = None;
    for line in lines {
        if line.starts_with("Uses") {
            section = Some(&mut panel.uses);
        } else if line.starts_with("Used") {
            section = Some(&mut panel.used_by);
        } else if let Some(list) = section.as_deref_mut() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [service, calls, _errors] = parts[..]
                && calls.parse::<u64>().is_ok_and(|c| c > 0)
            {
                list.push(service.to_owned());
            }
        }
    }
    (!name.is_empty() && name != "TRACES").then_some((name, panel))
}

/// Open the dependency page and run its query; the graph's canvas.
fn open_dependencies(browser: &Browser, zipkin: &Zipkin) -> webdriver::Element {
    browser.goto(&zipkin.ui("/dependency")).unwrap();
    let run = browser
        .wait_until("the Run Query button", Duration::from_secs(30), |b| {
            Ok(b.find_all("[data-testid=search-button]")?
                .into_iter()
                .next())
        })
        .unwrap();
    browser.click(&run).unwrap();
    browser
        .wait_until("the dependency graph", Duration::from_secs(30), |b| {
            Ok(b.find_all("[data-testid=dependencies-graph] canvas")?
                .into_iter()
                .next())
        })
        .unwrap()
}

/// Where Vizceral's left-to-right tree layout puts the nodes of a four-node chain (this test's
/// client → front → relay → echo-grpc), as offsets from the canvas's centre in a 1400×720
/// canvas (the 1400×1000 window): read off its screenshots, the same on every run, since the
/// layout depends only on the graph's shape. The graph is drawn with WebGL, so a node is
/// reached by clicking where it is drawn; the panel that opens says which node it was.
const CHAIN_NODES: [(i64, i64); 4] = [(-459, -1), (-153, -24), (152, 22), (457, -24)];

/// Click each node of the chain and read the panel it opens. Vizceral finds what is under the
/// pointer on its next frames, so each click waits for its panel; a panel narrows the canvas
/// and moves the nodes, so the page is opened again before the next click.
fn node_panels(browser: &Browser, zipkin: &Zipkin, out: &Path) -> Vec<(String, NodePanel)> {
    let mut found: Vec<(String, NodePanel)> = Vec::new();
    for (i, (dx, dy)) in CHAIN_NODES.into_iter().enumerate() {
        let canvas = open_dependencies(browser, zipkin);
        std::thread::sleep(Duration::from_secs(2));
        if i == 0 {
            browser
                .screenshot(&out.join("zipkin-dependencies.png"))
                .unwrap();
        }
        browser
            .click_at(&canvas, dx, dy, Duration::from_millis(100))
            .unwrap();
        let panel = browser.wait_until("a node's panel", Duration::from_secs(5), |b| {
            let graph = b.find_all("[data-testid=dependencies-graph]")?;
            Ok(parse_panel(&b.text(&graph[0])?))
        });
        match panel {
            Ok((name, panel)) => {
                if name == "relay" {
                    browser
                        .screenshot(&out.join("zipkin-dependencies-relay.png"))
                        .unwrap();
                }
                found.push((name, panel));
            }
            Err(e) => {
                browser
                    .screenshot(&out.join(format!("zipkin-dependencies-miss-{i}.png")))
                    .unwrap();
                panic!("no node at ({dx}, {dy}) from the graph's centre: {e}");
            }
        }
    }
    found
}

fn check_dependencies(browser: &Browser, zipkin: &Zipkin, client: &str, out: &Path) {
    let panels = node_panels(browser, zipkin, out);
    let names: Vec<&str> = panels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [client, "front", "relay", "echo-grpc"],
        "{panels:#?}"
    );
    let panel = |name: &str| {
        &panels
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no panel for {name} found in the graph: {panels:#?}"))
            .1
    };
    assert_eq!(panel(client).uses, ["front"], "{panels:#?}");
    let front = panel("front");
    assert_eq!(front.uses, ["relay"], "{panels:#?}");
    assert_eq!(front.used_by, [client], "{panels:#?}");
    let relay = panel("relay");
    assert_eq!(relay.uses, ["echo-grpc"], "{panels:#?}");
    assert_eq!(relay.used_by, ["front"], "{panels:#?}");
    let echo = panel("echo-grpc");
    assert!(echo.uses.is_empty(), "{panels:#?}");
    assert_eq!(echo.used_by, ["relay"], "{panels:#?}");
}

#[test]
fn privileged_browser_zipkin_ui_shows_the_fanout_waterfall_and_the_dependencies() {
    if !require_privileges() {
        return;
    }
    let Some(jar) = zipkin_jar() else {
        cannot_run(
            "no Zipkin jar: run through `cargo xtask test`, which fetches it once (or set WIRESPAN_ZIPKIN_JAR)",
        );
        return;
    };
    if let Some(why) = webdriver::missing() {
        cannot_run(&why);
        return;
    }
    let (Some(grpc_echo), Some(gin_front)) = (
        support::go_build("examples/grpc-echo", "e2e-grpc-echo"),
        support::go_build("examples/gin-front", "e2e-gin-front"),
    ) else {
        cannot_run("cannot build examples/grpc-echo and examples/gin-front");
        return;
    };
    let zipkin = Zipkin::start(&jar);
    let service = |binary: &Path, name: &str, args: &[&str]| {
        Listening::start(
            Command::new(binary)
                .args(args)
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let echo = service(&grpc_echo, "echo-grpc", &["server"]);
    let relay = service(&grpc_echo, "relay", &["relay", "--target", &echo.addr]);
    let front = service(&gin_front, "front", &["--backend", &relay.addr]);
    let spans_url = zipkin.spans_url();
    let agent = Agent::start_with_env(
        &[
            "run",
            "--exporter",
            "zipkin",
            "--zipkin-endpoint",
            &spans_url,
            "--port",
            &front.port(),
            "--port",
            &relay.port(),
            "--port",
            &echo.port(),
        ],
        Stdio::null(),
        &[],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = traffic(front.addr.clone(), Arc::clone(&stop));
    let client = complete_fanout_trace(&zipkin);
    assert!(
        !["front", "relay", "echo-grpc"].contains(&client.as_str()),
        "the root is this test's client: {client}"
    );

    let out = out_dir();
    let browser = Browser::start(1400, 1000).unwrap();
    search_and_open_a_trace(&browser, &zipkin, &out);
    check_waterfall(&browser, &client, &out);
    check_dependencies(&browser, &zipkin, &client, &out);
    drop(browser);

    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("zipkin: ") && stopped.stderr.contains("0 dropped (export failed)"),
        "{}",
        stopped.stderr
    );
}
