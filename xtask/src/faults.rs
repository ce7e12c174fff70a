//! `cargo xtask faults`: the fault suite of issue 19 at its full sizes, and `faults/RESULTS.md`.
//!
//! The cases are the collector's `faults_*` test binaries (`tests/faults_*.rs`). `cargo xtask
//! test` runs them too, in their short form; here `WIRESPAN_FAULTS=full` gives the sizes the
//! issue names. Each case writes its figures as JSON into `WIRESPAN_FAULTS_OUT` before it
//! asserts, so a failing case still shows what it measured; this module renders them.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{cargo, demo, workspace_root};

/// The fault cases: every `[[test]]` of the collector whose name starts with `faults_`.
fn case_binaries() -> anyhow::Result<Vec<String>> {
    let manifest = std::fs::read_to_string(workspace_root().join("collector/Cargo.toml"))?;
    let names: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| n.starts_with("faults_"))
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("no faults_* test in collector/Cargo.toml");
    }
    Ok(names)
}

/// Where the cases write their figures under `cargo xtask faults` and `cargo xtask test`.
pub fn figures_dir() -> PathBuf {
    workspace_root().join("target/faults/figures")
}

/// After `cargo xtask test`: the short form's figures as `target/faults/RESULTS-short.md`.
pub fn render_short() -> anyhow::Result<()> {
    let results = workspace_root().join("target/faults/RESULTS-short.md");
    std::fs::write(&results, render(&read_figures(&figures_dir())?, true)?)?;
    eprintln!(
        "xtask: the fault suite's short-form figures are in {}",
        results.display()
    );
    Ok(())
}

/// Run the suite (`short`: the CI sizes) and write `faults/RESULTS.md` (full) or
/// `target/faults/RESULTS-short.md` (short). `only` names test binaries to run again
/// (`faults_churn`), keeping the other cases' figures from the last run. Fails when a case
/// failed, after writing.
pub fn run(short: bool, only: &[String]) -> anyhow::Result<()> {
    let out = figures_dir();
    let cases = case_binaries()?;
    if let Some(unknown) = only.iter().find(|c| !cases.contains(c)) {
        bail!(
            "--case {unknown}: not a fault case; the cases are {}",
            cases.join(", ")
        );
    }
    if only.is_empty() {
        let _ = std::fs::remove_dir_all(&out);
    }
    std::fs::create_dir_all(&out)?;
    let mut test = cargo();
    test.current_dir(workspace_root())
        .args(["test", "-p", "wirespan", "--no-fail-fast"])
        .env("WIRESPAN_FAULTS", if short { "short" } else { "full" })
        .env("WIRESPAN_FAULTS_OUT", &out);
    for name in if only.is_empty() { &cases } else { only } {
        test.args(["--test", name]);
    }
    // The cases start agents that each see every process: one case at a time.
    test.args(["--", "--test-threads=1"]);
    match demo::jaeger_binary() {
        Ok(jaeger) => {
            test.env("WIRESPAN_JAEGER", jaeger);
        }
        Err(why) => eprintln!("xtask: cannot build Jaeger ({why:#}); the outage cases will say so"),
    }
    let status = test.status().context("running cargo test")?;
    let results = if short {
        workspace_root().join("target/faults/RESULTS-short.md")
    } else {
        workspace_root().join("faults/RESULTS.md")
    };
    let markdown = render(&read_figures(&out)?, short)?;
    std::fs::create_dir_all(results.parent().unwrap())?;
    std::fs::write(&results, markdown)?;
    eprintln!("xtask: fault figures in {}", results.display());
    if !status.success() {
        bail!("a fault case failed ({status}); its figures are in the results all the same");
    }
    Ok(())
}

fn read_figures(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            cases.push(serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?);
        }
    }
    cases.sort_by_key(|c: &Value| (c["order"].as_u64(), c["case"].as_str().map(str::to_owned)));
    Ok(cases)
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn mib(kib: &Value) -> String {
    kib.as_u64().map_or_else(
        || "–".to_owned(),
        |k| format!("{}.{} MiB", k / 1024, k % 1024 * 10 / 1024),
    )
}

/// The Markdown: where and when, one summary row per case, then each case's figures.
fn render(cases: &[Value], short: bool) -> anyhow::Result<String> {
    let mut md = String::from("# Fault suite results\n\n");
    writeln!(
        md,
        "Written by `cargo xtask faults{}` on {} (kernel {}, {} CPUs), commit {}. Each case's \
         checks are in `tests/faults_*.rs`; `cargo xtask test` runs the short form of every \
         case.\n",
        if short { " --short" } else { "" },
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        command_line("uname", &["-r"]),
        command_line("nproc", &[]),
        command_line("git", &["rev-parse", "--short", "HEAD"]),
    )?;
    md.push_str("| case | size | passed | lost | agent peak RSS | seconds |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    for c in cases {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c["case"].as_str().unwrap_or("?"),
            c["size"].as_str().unwrap_or("?"),
            if c["passed"].as_bool() == Some(true) {
                "yes"
            } else {
                "**no**"
            },
            c["lost"].as_str().unwrap_or(""),
            mib(&c["agent_peak_rss_kib"]),
            c["seconds"]
        )?;
    }
    for c in cases {
        writeln!(md, "\n## {}\n", c["case"].as_str().unwrap_or("?"))?;
        for (label, key) in [
            ("Done", "done"),
            ("Load", "load"),
            ("Lost", "lost"),
            ("Counted by the agent", "counted"),
        ] {
            writeln!(md, "- **{label}:** {}", c[key].as_str().unwrap_or(""))?;
        }
        writeln!(
            md,
            "- **Agent peak RSS:** {}",
            mib(&c["agent_peak_rss_kib"])
        )?;
        for p in c["programs"].as_array().into_iter().flatten() {
            writeln!(
                md,
                "- **Traced program** {}: {}",
                p[0].as_str().unwrap_or("?"),
                p[1].as_str().unwrap_or("?")
            )?;
        }
        for n in c["notes"].as_array().into_iter().flatten() {
            writeln!(md, "- {}", n.as_str().unwrap_or(""))?;
        }
    }
    if cases.is_empty() {
        md.push_str("\nNo case wrote figures (were the tests run as root?).\n");
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_row_and_a_section_per_case_in_order() {
        let case = |name: &str, order: u64, passed: bool| {
            serde_json::json!({
                "case": name, "order": order, "size": "short", "passed": passed, "seconds": 3,
                "done": "stopped it", "load": "100/s", "lost": "0 of 10", "counted": "0 dropped",
                "agent_peak_rss_kib": 2048, "programs": [["hello", "exit 0"]], "notes": ["n1"],
            })
        };
        let dir = std::env::temp_dir().join(format!("xtask-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.json"), case("b", 20, false).to_string()).unwrap();
        std::fs::write(dir.join("a.json"), case("a", 10, true).to_string()).unwrap();
        let md = render(&read_figures(&dir).unwrap(), true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            md.contains("| a | short | yes | 0 of 10 | 2.0 MiB | 3 |"),
            "{md}"
        );
        assert!(md.contains("| b | short | **no** |"), "{md}");
        assert!(md.find("## a").unwrap() < md.find("## b").unwrap());
        assert!(md.contains("- **Traced program** hello: exit 0"), "{md}");
    }
}
