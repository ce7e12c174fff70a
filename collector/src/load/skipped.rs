//! Program runs the kernel skipped. A BPF program that would run while another one (a classic
//! tracepoint or kprobe program: any of them; a BPF tracepoint or fentry program: itself) is
//! already running on the CPU is not run, and the probes cannot count what they never saw. The
//! kernel counts it per program (`recursion_misses`), shown in each program descriptor's
//! fdinfo; this sums them over the agent's own programs for the loss report.

use std::path::Path;

/// Runs of this process's BPF programs the kernel skipped so far (`recursion_misses` of every
/// program descriptor in `/proc/self/fdinfo`). 0 when unreadable: the report then shows none.
#[must_use]
pub fn skipped_runs() -> u64 {
    skipped_runs_in(Path::new("/proc/self/fdinfo"))
}

fn skipped_runs_in(fdinfo: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(fdinfo) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|text| program_misses(&text))
        .sum()
}

/// The `recursion_misses` of one fdinfo text when it is a program's (a link's fdinfo also names
/// a `prog_id`, but has no count: the program's own descriptor carries it).
fn program_misses(fdinfo: &str) -> u64 {
    let field = |name: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("prog_type:").is_none() {
        return 0;
    }
    field("recursion_misses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROGRAM: &str = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t7\nrun_cnt:\t9\nrecursion_misses:\t130\nverified_insns:\t99\n";
    const LINK: &str =
        "pos:\t0\nlink_type:\traw_tracepoint\nprog_id:\t7\ntp_name:\tinet_sock_set_state\n";

    #[test]
    fn a_program_descriptor_gives_its_misses_and_a_link_none() {
        assert_eq!(program_misses(PROGRAM), 130);
        assert_eq!(program_misses(LINK), 0);
        assert_eq!(program_misses("pos:\t0\nflags:\t02\n"), 0);
    }

    #[test]
    fn misses_are_summed_over_every_descriptor() {
        let dir = std::env::temp_dir().join(format!("wirespan-skipped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("3"), PROGRAM).unwrap();
        std::fs::write(dir.join("4"), PROGRAM).unwrap();
        std::fs::write(dir.join("5"), LINK).unwrap();
        assert_eq!(skipped_runs_in(&dir), 260);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(skipped_runs_in(&dir), 0);
    }
}
