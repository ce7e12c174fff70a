//! The attach strategy: every kernel-side hook has an ordered list of modes (kprobe → fentry →
//! tp_btf → tracepoint). Each is tried in turn and the first that loads and attaches is kept;
//! every failure is kept with its exact error for the start-up report.

use std::fmt;

use aya::{
    Ebpf,
    programs::{BtfTracePoint, FEntry, KProbe, ProgramError, TracePoint},
};
use wirespan_shared::names::{
    PROGRAM_INET_CSK_ACCEPT_KRETPROBE, PROGRAM_INET_SOCK_SET_STATE,
    PROGRAM_INET_SOCK_SET_STATE_CLOSE, PROGRAM_INET_SOCK_SET_STATE_FAILED,
    PROGRAM_SCHED_PROCESS_EXEC, PROGRAM_SCHED_PROCESS_EXIT, PROGRAM_SET_STATE_CLOSE_BTF,
    PROGRAM_SET_STATE_CONNECT_BTF, PROGRAM_SET_STATE_FAILED_BTF, PROGRAM_SYS_ENTER_READ,
    PROGRAM_SYS_ENTER_READV, PROGRAM_SYS_ENTER_RECVMSG, PROGRAM_SYS_ENTER_SENDMSG,
    PROGRAM_SYS_ENTER_WRITE, PROGRAM_SYS_ENTER_WRITEV, PROGRAM_SYS_EXIT_ACCEPT,
    PROGRAM_SYS_EXIT_DATA, PROGRAM_TCP_CLOSE_FENTRY, PROGRAM_TCP_CLOSE_KPROBE,
    PROGRAM_TCP_CONNECT_FENTRY, PROGRAM_TCP_CONNECT_KPROBE,
};

pub use crate::event::AttachMode;

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// A kernel function (kprobe, kretprobe, fentry).
    Function(&'static str),
    /// A tracepoint by its BTF name, `btf_trace_<name>` (tp_btf).
    BtfTracepoint(&'static str),
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Function(name) => f.write_str(name),
            Self::BtfTracepoint(name) => write!(f, "tp_btf/{name}"),
            Self::Tracepoint { category, name } => write!(f, "{category}:{name}"),
        }
    }
}

/// One program of the probes object and the targets it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct Attachment {
    pub program: &'static str,
    pub targets: &'static [Target],
}

/// One way to attach a hook: a mode and the programs that make it up.
#[derive(Debug, Clone, Copy)]
pub struct HookMode {
    pub mode: AttachMode,
    pub attachments: &'static [Attachment],
}

impl HookMode {
    /// The targets, for the report: `sock:inet_sock_set_state` or `syscalls:sys_enter_read, ...`.
    fn targets(&self) -> String {
        let all: Vec<String> = self
            .attachments
            .iter()
            .flat_map(|a| a.targets.iter().map(ToString::to_string))
            .collect();
        if all.len() > 3 {
            format!("{}, ... {} tracepoints", all[..2].join(", "), all.len())
        } else {
            all.join(", ")
        }
    }
}

/// A kernel-side hook with its modes in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    pub name: &'static str,
    /// The agent stops when no mode of a required hook attaches.
    pub required: bool,
    pub modes: &'static [HookMode],
}

const fn function(program: &'static str, targets: &'static [Target]) -> Attachment {
    Attachment { program, targets }
}

const fn syscall(name: &'static str) -> Target {
    Target::Tracepoint {
        category: "syscalls",
        name,
    }
}

const SET_STATE: Target = Target::Tracepoint {
    category: "sock",
    name: "inet_sock_set_state",
};

/// The same tracepoint through BTF: not skipped while another program runs on the CPU, which
/// the classic one is (its closes went missing under connection churn).
const SET_STATE_BTF: Target = Target::BtfTracepoint("inet_sock_set_state");

/// Every hook wirespan attaches, in the order they are attached.
pub const HOOKS: &[Hook] = &[
    Hook {
        name: "tcp_connect",
        required: true,
        modes: &[
            HookMode {
                mode: AttachMode::Kprobe,
                attachments: &[function(
                    PROGRAM_TCP_CONNECT_KPROBE,
                    &[Target::Function("tcp_connect")],
                )],
            },
            HookMode {
                mode: AttachMode::Fentry,
                attachments: &[function(
                    PROGRAM_TCP_CONNECT_FENTRY,
                    &[Target::Function("tcp_connect")],
                )],
            },
            HookMode {
                mode: AttachMode::TpBtf,
                attachments: &[function(PROGRAM_SET_STATE_CONNECT_BTF, &[SET_STATE_BTF])],
            },
            HookMode {
                mode: AttachMode::Tracepoint,
                attachments: &[function(PROGRAM_INET_SOCK_SET_STATE, &[SET_STATE])],
            },
        ],
    },
    // A connect that never established: what failed outbound calls are made of. The tracepoint
    // whatever the connect hook's mode (kprobe and fentry on tcp_connect see connects start, not
    // how they end). Not required: the capture works without it, failed calls are then left out.
    Hook {
        name: "tcp_connect_failed",
        required: false,
        modes: &[
            HookMode {
                mode: AttachMode::TpBtf,
                attachments: &[function(PROGRAM_SET_STATE_FAILED_BTF, &[SET_STATE_BTF])],
            },
            HookMode {
                mode: AttachMode::Tracepoint,
                attachments: &[function(PROGRAM_INET_SOCK_SET_STATE_FAILED, &[SET_STATE])],
            },
        ],
    },
    Hook {
        name: "tcp_accept",
        required: true,
        modes: &[
            // fexit would need the return slot's index, which moved when inet_csk_accept lost
            // arguments in 6.10; the kretprobe reads the return register on every kernel.
            HookMode {
                mode: AttachMode::Kprobe,
                attachments: &[function(
                    PROGRAM_INET_CSK_ACCEPT_KRETPROBE,
                    &[Target::Function("inet_csk_accept")],
                )],
            },
            HookMode {
                mode: AttachMode::Tracepoint,
                attachments: &[function(
                    PROGRAM_SYS_EXIT_ACCEPT,
                    &[syscall("sys_exit_accept4"), syscall("sys_exit_accept")],
                )],
            },
        ],
    },
    Hook {
        name: "tcp_close",
        required: true,
        modes: &[
            HookMode {
                mode: AttachMode::Kprobe,
                attachments: &[function(
                    PROGRAM_TCP_CLOSE_KPROBE,
                    &[Target::Function("tcp_close")],
                )],
            },
            HookMode {
                mode: AttachMode::Fentry,
                attachments: &[function(
                    PROGRAM_TCP_CLOSE_FENTRY,
                    &[Target::Function("tcp_close")],
                )],
            },
            HookMode {
                mode: AttachMode::TpBtf,
                attachments: &[function(PROGRAM_SET_STATE_CLOSE_BTF, &[SET_STATE_BTF])],
            },
            HookMode {
                mode: AttachMode::Tracepoint,
                attachments: &[function(PROGRAM_INET_SOCK_SET_STATE_CLOSE, &[SET_STATE])],
            },
        ],
    },
    Hook {
        name: "process_exec",
        required: true,
        modes: &[HookMode {
            mode: AttachMode::Tracepoint,
            attachments: &[
                function(
                    PROGRAM_SCHED_PROCESS_EXEC,
                    &[Target::Tracepoint {
                        category: "sched",
                        name: "sched_process_exec",
                    }],
                ),
                function(
                    PROGRAM_SCHED_PROCESS_EXIT,
                    &[Target::Tracepoint {
                        category: "sched",
                        name: "sched_process_exit",
                    }],
                ),
            ],
        }],
    },
    Hook {
        name: "socket_data",
        required: true,
        // The syscall tracepoints are the data path on every kernel: they see the user buffer
        // and the fd, which the kernel-internal functions no longer have.
        modes: &[HookMode {
            mode: AttachMode::Tracepoint,
            attachments: &[
                function(
                    PROGRAM_SYS_ENTER_READ,
                    &[syscall("sys_enter_read"), syscall("sys_enter_recvfrom")],
                ),
                function(
                    PROGRAM_SYS_ENTER_WRITE,
                    &[syscall("sys_enter_write"), syscall("sys_enter_sendto")],
                ),
                function(PROGRAM_SYS_ENTER_READV, &[syscall("sys_enter_readv")]),
                function(PROGRAM_SYS_ENTER_WRITEV, &[syscall("sys_enter_writev")]),
                function(PROGRAM_SYS_ENTER_RECVMSG, &[syscall("sys_enter_recvmsg")]),
                function(PROGRAM_SYS_ENTER_SENDMSG, &[syscall("sys_enter_sendmsg")]),
                function(
                    PROGRAM_SYS_EXIT_DATA,
                    &[
                        syscall("sys_exit_read"),
                        syscall("sys_exit_recvfrom"),
                        syscall("sys_exit_write"),
                        syscall("sys_exit_sendto"),
                        syscall("sys_exit_readv"),
                        syscall("sys_exit_writev"),
                        syscall("sys_exit_recvmsg"),
                        syscall("sys_exit_sendmsg"),
                    ],
                ),
            ],
        }],
    },
];

/// A mode that did not attach, and exactly why.
#[derive(Debug, Clone)]
pub struct ModeFailure {
    pub mode: AttachMode,
    pub target: String,
    pub error: ModeError,
}

/// Why one attach mode of a hook did not load or attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error("program {0} is missing from the probes object")]
    MissingProgram(&'static str),
    #[error(
        "program {0} needs exactly one target of its kind (fentry: a function, tp_btf: a tracepoint)"
    )]
    OneTarget(&'static str),
    /// The kernel (or aya) refused: the error chain, with an empty verifier log said out loud.
    #[error("{0}")]
    Refused(String),
}

/// What happened to one hook at start-up.
#[derive(Debug, Clone)]
pub struct HookReport {
    pub hook: &'static str,
    pub attached: Option<(AttachMode, String)>,
    pub failures: Vec<ModeFailure>,
}

impl fmt::Display for HookReport {
    /// One line for the hook, then one indented line per failed mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attached {
            Some((mode, target)) => write!(f, "hook {}: attached {mode} ({target})", self.hook)?,
            None => write!(f, "hook {}: not attached", self.hook)?,
        }
        for failure in &self.failures {
            write!(
                f,
                "\n  {} ({}) failed: {}",
                failure.mode, failure.target, failure.error
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no attach mode of required hook {hook} worked: {}", failures_text(.failures))]
    Required {
        hook: &'static str,
        failures: Vec<ModeFailure>,
    },
    #[error("hook {hook} has no mode {mode} (choose one of: {available})")]
    NoSuchMode {
        hook: &'static str,
        mode: AttachMode,
        available: String,
    },
}

fn failures_text(failures: &[ModeFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({}): {}", f.mode, f.target, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error with its whole `source()` chain, so a report keeps the root cause (an errno, a path).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// Try each mode of each hook in order and keep the first that attaches. With `forced`, a hook
/// that has that mode tries only it; hooks without it (data has only tracepoints) keep theirs.
pub fn attach_hooks(
    ebpf: &mut Ebpf,
    forced: Option<AttachMode>,
) -> Result<Vec<HookReport>, AttachError> {
    let mut kernel_btf = None;
    let mut reports = Vec::new();
    for hook in HOOKS {
        let has_forced = forced.is_some_and(|f| hook.modes.iter().any(|m| m.mode == f));
        let modes = hook
            .modes
            .iter()
            .filter(|m| !has_forced || forced == Some(m.mode));
        let mut report = HookReport {
            hook: hook.name,
            attached: None,
            failures: Vec::new(),
        };
        for mode in modes {
            match attach_mode(ebpf, mode, &mut kernel_btf) {
                Ok(()) => {
                    report.attached = Some((mode.mode, mode.targets()));
                    break;
                }
                Err(error) => {
                    report.failures.push(ModeFailure {
                        mode: mode.mode,
                        target: mode.targets(),
                        error,
                    });
                }
            }
        }
        if report.attached.is_none() && hook.required {
            return Err(AttachError::Required {
                hook: hook.name,
                failures: report.failures,
            });
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Load and attach every program of one mode; on failure, unload what it loaded (which also
/// detaches) and return the error text.
fn attach_mode(
    ebpf: &mut Ebpf,
    mode: &HookMode,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), ModeError> {
    let mut done: Vec<&str> = Vec::new();
    let mut result = Ok(());
    for attachment in mode.attachments {
        result = attach_program(ebpf, mode.mode, attachment, kernel_btf);
        if result.is_err() {
            break;
        }
        done.push(attachment.program);
    }
    if result.is_err() {
        for program in done {
            if let Some(p) = ebpf.program_mut(program) {
                let _ = unload(p);
            }
        }
    }
    result
}

/// Detach a program's links and unload it, whatever kind the agent uses it as.
pub(super) fn unload(program: &mut aya::programs::Program) -> Result<(), ProgramError> {
    match program {
        aya::programs::Program::KProbe(p) => p.unload(),
        aya::programs::Program::FEntry(p) => p.unload(),
        aya::programs::Program::TracePoint(p) => p.unload(),
        aya::programs::Program::BtfTracePoint(p) => p.unload(),
        aya::programs::Program::UProbe(p) => p.unload(),
        _ => Ok(()),
    }
}

fn attach_program(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    attachment: &Attachment,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), ModeError> {
    let name = attachment.program;
    let program = ebpf
        .program_mut(name)
        .ok_or(ModeError::MissingProgram(name))?;
    let refused = |e: &dyn std::error::Error| ModeError::Refused(error_chain(e));
    let result: Result<(), ProgramError> = match mode {
        AttachMode::Kprobe => {
            let kprobe: &mut KProbe = program.try_into().map_err(|e| refused(&e))?;
            kprobe.load().and_then(|()| {
                attachment.targets.iter().try_for_each(|t| match t {
                    Target::Function(f) => kprobe.attach(f, 0).map(drop),
                    Target::Tracepoint { .. } | Target::BtfTracepoint(_) => {
                        Err(ProgramError::UnexpectedProgramType)
                    }
                })
            })
        }
        AttachMode::Fentry => {
            let btf = kernel_btf_of(kernel_btf).map_err(|e| refused(&e))?;
            let fentry: &mut FEntry = program.try_into().map_err(|e| refused(&e))?;
            let [Target::Function(function)] = attachment.targets else {
                return Err(ModeError::OneTarget(name));
            };
            fentry
                .load(function, btf)
                .and_then(|()| fentry.attach())
                .map(drop)
        }
        AttachMode::TpBtf => {
            let btf = kernel_btf_of(kernel_btf).map_err(|e| refused(&e))?;
            let tracepoint: &mut BtfTracePoint = program.try_into().map_err(|e| refused(&e))?;
            let [Target::BtfTracepoint(event)] = attachment.targets else {
                return Err(ModeError::OneTarget(name));
            };
            tracepoint
                .load(event, btf)
                .and_then(|()| tracepoint.attach())
                .map(drop)
        }
        AttachMode::Tracepoint => {
            let tracepoint: &mut TracePoint = program.try_into().map_err(|e| refused(&e))?;
            tracepoint.load().and_then(|()| {
                attachment.targets.iter().try_for_each(|t| match t {
                    Target::Tracepoint { category, name } => {
                        tracepoint.attach(category, name).map(drop)
                    }
                    Target::Function(_) | Target::BtfTracepoint(_) => {
                        Err(ProgramError::UnexpectedProgramType)
                    }
                })
            })
        }
    };
    result.map_err(|e| {
        let _ = unload(program);
        ModeError::Refused(describe_failure(&e))
    })
}

/// The kernel's BTF, read once for every fentry and tp_btf program.
fn kernel_btf_of(cache: &mut Option<aya::Btf>) -> Result<&aya::Btf, aya::BtfError> {
    if cache.is_none() {
        *cache = Some(aya::Btf::from_sys_fs()?);
    }
    Ok(cache.as_ref().expect("set above"))
}

/// The error text, with an empty verifier log said out loud (fentry refused by the kernel shows
/// nothing else).
fn describe_failure(err: &ProgramError) -> String {
    let text = error_chain(err);
    if let ProgramError::LoadError { verifier_log, .. } = err
        && verifier_log.to_string().trim().is_empty()
    {
        return format!("{text} (empty verifier log: the kernel refused the program type)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_tries_modes_in_order_and_ends_in_tracepoint() {
        let rank = |m: AttachMode| {
            [
                AttachMode::Kprobe,
                AttachMode::Fentry,
                AttachMode::TpBtf,
                AttachMode::Tracepoint,
            ]
            .iter()
            .position(|x| *x == m)
            .unwrap()
        };
        for hook in HOOKS {
            let order: Vec<usize> = hook.modes.iter().map(|m| rank(m.mode)).collect();
            assert!(order.is_sorted(), "{}: modes out of order", hook.name);
            // Tracepoints work wherever BPF does: every hook has that fallback.
            assert_eq!(
                hook.modes.last().unwrap().mode,
                AttachMode::Tracepoint,
                "{}",
                hook.name
            );
        }
        let connect = HOOKS.iter().find(|h| h.name == "tcp_connect").unwrap();
        let order: Vec<AttachMode> = connect.modes.iter().map(|m| m.mode).collect();
        assert_eq!(
            order,
            [
                AttachMode::Kprobe,
                AttachMode::Fentry,
                AttachMode::TpBtf,
                AttachMode::Tracepoint
            ]
        );
    }

    #[test]
    fn report_names_mode_and_each_failure() {
        let report = HookReport {
            hook: "tcp_connect",
            attached: Some((AttachMode::Tracepoint, "sock:inet_sock_set_state".into())),
            failures: vec![ModeFailure {
                mode: AttachMode::Kprobe,
                target: "tcp_connect".into(),
                error: ModeError::Refused("boom".into()),
            }],
        };
        assert_eq!(
            report.to_string(),
            "hook tcp_connect: attached tracepoint (sock:inet_sock_set_state)\n  kprobe (tcp_connect) failed: boom"
        );
    }
}
