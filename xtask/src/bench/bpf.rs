//! What the kernel counts for each BPF program a process holds, with `kernel.bpf_stats_enabled`
//! on: runs (`run_cnt`) and run time (`run_time_ns`), from the fdinfo of its program fds, and
//! the program's name. The kernel keeps names to 15 characters (`go_grpc_server_headers` and
//! `go_grpc_server_headers_return` are both `go_grpc_server_`), so the full name comes from
//! /proc/kallsyms, where a JIT-compiled program is `bpf_prog_<tag>_<name>` with its BTF
//! function name in full; the short name (BPF_OBJ_GET_INFO_BY_FD) picks among programs that
//! share a tag, and stands when kallsyms has none.

use std::collections::HashMap;

/// BPF_PROG_TYPE_KPROBE: kprobes and uprobes alike.
pub const TYPE_KPROBE: u32 = 2;

/// One program's counters at one moment (or their difference over a window).
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub id: u32,
    pub name: String,
    /// `BPF_PROG_TYPE_*`.
    pub kind: u32,
    pub runs: u64,
    pub run_time_ns: u64,
}

impl Program {
    /// A uprobe of ours: a kprobe-type program named `go_*` (the agent's Go programs) or the
    /// floor's `floor_uprobe`. The agent's kernel-function kprobes have other names.
    pub fn is_uprobe(&self) -> bool {
        self.kind == TYPE_KPROBE
            && (self.name.starts_with("go_") || self.name.starts_with("floor_uprobe"))
    }

    /// A return probe: `*_return`, or its multi-uprobe twin `*_return_m` (the agent attaches
    /// them at a Go function's RETs).
    pub fn is_return(&self) -> bool {
        self.name.ends_with("_return") || self.name.ends_with("_return_m")
    }
}

/// The programs `pid` holds, each once (link fds name their program too, without counters).
pub fn programs(pid: u32) -> Vec<Program> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut by_id: HashMap<u32, (Program, String)> = HashMap::new();
    for fd in fds.filter_map(Result::ok) {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let text = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let (Some(id), Some(kind)) = (number("prog_id:"), number("prog_type:")) else {
            continue;
        };
        let entry = by_id.entry(id as u32).or_insert_with(|| {
            (
                Program {
                    id: id as u32,
                    kind: kind as u32,
                    ..Program::default()
                },
                text("prog_tag:").unwrap_or_default(),
            )
        });
        entry.0.runs = entry.0.runs.max(number("run_cnt:").unwrap_or(0));
        entry.0.run_time_ns = entry.0.run_time_ns.max(number("run_time_ns:").unwrap_or(0));
    }
    let kallsyms = kallsyms_names();
    by_id
        .into_values()
        .map(|(mut program, tag)| {
            let short = short_name(program.id).unwrap_or_default();
            let full: Vec<&String> = kallsyms
                .get(&tag)
                .into_iter()
                .flatten()
                .filter(|n| n.starts_with(&short))
                .collect();
            program.name = match full.as_slice() {
                [one] => (*one).clone(),
                _ if !short.is_empty() => short,
                _ => format!("prog {}", program.id),
            };
            program
        })
        .collect()
}

/// Counters over a window: `after` minus `before`, by program id (a program loaded during the
/// window counts from zero).
pub fn delta(before: &[Program], after: &[Program]) -> Vec<Program> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            Program {
                runs: a.runs.saturating_sub(b.map_or(0, |b| b.runs)),
                run_time_ns: a.run_time_ns.saturating_sub(b.map_or(0, |b| b.run_time_ns)),
                ..a.clone()
            }
        })
        .collect()
}

/// Full program names by tag, from `bpf_prog_<tag>_<name>` symbols.
fn kallsyms_names() -> HashMap<String, Vec<String>> {
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    for line in text.lines().filter(|l| l.ends_with("[bpf]")) {
        let Some(symbol) = line.split_whitespace().nth(2) else {
            continue;
        };
        let Some((tag, name)) = symbol
            .strip_prefix("bpf_prog_")
            .and_then(|rest| rest.split_once('_'))
        else {
            continue;
        };
        names
            .entry(tag.to_owned())
            .or_default()
            .push(name.to_owned());
    }
    names
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info`: `name[16]` starts at byte 64; 96 bytes reach past it.
const INFO_NAME_AT: usize = 64;

/// The kernel's (15-character) name of program `id`.
fn short_name(id: u32) -> Option<String> {
    // union bpf_attr, zeroed past the fields used (the kernel checks that).
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id); // prog_id (u32), next_id 0
    // SAFETY: bpf(2) with a zeroed attr of the given size; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return None;
    }
    let mut info = [0u64; 12];
    let mut attr = [0u64; 16];
    // bpf_fd (u32) and info_len (u32), then the info pointer.
    attr[0] = (fd as u64) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most info_len bytes into `info`, which lives past the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    // SAFETY: `fd` is the descriptor bpf(2) just opened for us.
    unsafe { libc::close(fd as libc::c_int) };
    if rc != 0 {
        return None;
    }
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let name = &bytes[INFO_NAME_AT..INFO_NAME_AT + 16];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}
