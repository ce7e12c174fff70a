//! What the agents of the multi-host test (privileged_hosts) print, read back: the Go programs
//! each attached to (`go:` report lines), the counts of its `joins across hosts:` summary on
//! its stop line, and its standard error trimmed for a failure message.

use super::Stopped;

/// The process ids named in an agent's `go:` report lines (the Go programs it attached to).
pub fn go_report_pids(report: &[String]) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for line in report {
        let Some(rest) = line.strip_prefix("wirespan: go: ") else {
            continue;
        };
        let Some((_, after)) = rest.split_once("pids ") else {
            continue;
        };
        let list = after.split(')').next().unwrap_or_default();
        found.extend(
            list.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .map(|pid| (line.clone(), pid)),
        );
    }
    found
}

/// The counts of an agent's `joins across hosts:` summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinCounts {
    pub published: u64,
    pub joined: u64,
    pub unjoined: u64,
    pub store_away: u64,
}

/// The agent's `joins across hosts:` summary (the part of its stop line from there to the next
/// `;`), parsed; None when it printed none. A count reads `name N` (`published 24`) or `N name`
/// (`0 store away`), whichever the agent wrote.
pub fn join_counts(stderr: &str) -> Option<(String, JoinCounts)> {
    let (_, rest) = stderr.split_once("joins across hosts:")?;
    let part = rest.split([';', '\n']).next().unwrap_or_default();
    let count = |name: &str| -> u64 {
        count_in(part, name).unwrap_or_else(|| panic!("no `{name} N` or `N {name}` in {part:?}"))
    };
    Some((
        format!("joins across hosts:{part}"),
        JoinCounts {
            published: count("published"),
            joined: count("joined"),
            unjoined: count("unjoined"),
            store_away: count("store away"),
        },
    ))
}

/// The number written next to `name` (a whole word) in `text`: after it, else before it.
fn count_in(text: &str, name: &str) -> Option<u64> {
    let word_start = |i: usize| {
        text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    };
    for (i, _) in text.match_indices(name) {
        let end = i + name.len();
        if !word_start(i)
            || text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric)
        {
            continue;
        }
        let after: String = text[end..]
            .trim_start_matches(' ')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = after.parse() {
            return Some(n);
        }
        let before = text[..i].trim_end_matches(' ');
        let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if let Ok(n) = before[before.len() - digits..].parse() {
            return Some(n);
        }
    }
    None
}

/// The agents' standard error, without the per-stage timing lines, for a failure message.
pub fn stderr_of(stopped: &[Stopped]) -> String {
    stopped
        .iter()
        .map(|s| {
            s.stderr
                .lines()
                .filter(|l| !l.starts_with("stages:"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}
