//! The attach strategy: every kernel-side hook has an ordered list of modes (kprobe → fentry →
//! tracepoint). Each is tried in turn and the first that loads and attaches is kept; every
//! failure is kept with its exact error for the start-up report.

use std::fmt;

use aya::{
    Ebpf,
    programs::{FEntry, KProbe, ProgramError, TracePoint},
};

/// How a hook is attached to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// A kprobe on a kernel function: cheap and exact, but kernels may be built without kprobes.
    Kprobe,
    /// An fentry (BPF trampoline) program: cheapest, needs BTF and may be refused (lockdown).
    Fentry,
    /// Stable tracepoints only (`sock:inet_sock_set_state`): works wherever BPF does.
    Tracepoint,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kprobe => "kprobe",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
        })
    }
}

/// Where one mode of a hook attaches.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Function(&'static str),
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Function(name) => f.write_str(name),
            Self::Tracepoint { category, name } => write!(f, "{category}:{name}"),
        }
    }
}

/// One way to attach a hook: the mode, the program in the object, and its target.
#[derive(Debug, Clone, Copy)]
pub struct HookMode {
    pub mode: AttachMode,
    pub program: &'static str,
    pub target: Target,
}

/// A kernel-side hook with its modes in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    pub name: &'static str,
    /// The agent stops when no mode of a required hook attaches.
    pub required: bool,
    pub modes: &'static [HookMode],
}

/// Every hook wirespan attaches, in the order they are attached.
pub const HOOKS: &[Hook] = &[Hook {
    name: "tcp_connect",
    required: true,
    modes: &[
        HookMode {
            mode: AttachMode::Kprobe,
            program: "tcp_connect_kprobe",
            target: Target::Function("tcp_connect"),
        },
        HookMode {
            mode: AttachMode::Fentry,
            program: "tcp_connect_fentry",
            target: Target::Function("tcp_connect"),
        },
        HookMode {
            mode: AttachMode::Tracepoint,
            program: "inet_sock_set_state",
            target: Target::Tracepoint {
                category: "sock",
                name: "inet_sock_set_state",
            },
        },
    ],
}];

/// A mode that did not attach, and exactly why.
#[derive(Debug, Clone)]
pub struct ModeFailure {
    pub mode: AttachMode,
    pub target: String,
    pub error: String,
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

/// Try each mode of each hook (only `forced` when given); keep the first that attaches.
pub fn attach_hooks(
    ebpf: &mut Ebpf,
    forced: Option<AttachMode>,
) -> Result<Vec<HookReport>, AttachError> {
    let mut kernel_btf = None;
    let mut reports = Vec::new();
    for hook in HOOKS {
        let modes: Vec<&HookMode> = hook
            .modes
            .iter()
            .filter(|m| forced.is_none_or(|f| f == m.mode))
            .collect();
        if let (Some(mode), true) = (forced, modes.is_empty()) {
            let available = hook
                .modes
                .iter()
                .map(|m| m.mode.to_string())
                .collect::<Vec<_>>();
            return Err(AttachError::NoSuchMode {
                hook: hook.name,
                mode,
                available: available.join(", "),
            });
        }
        let mut report = HookReport {
            hook: hook.name,
            attached: None,
            failures: Vec::new(),
        };
        for mode in modes {
            match attach_mode(ebpf, mode, &mut kernel_btf) {
                Ok(()) => {
                    report.attached = Some((mode.mode, mode.target.to_string()));
                    break;
                }
                Err(error) => report.failures.push(ModeFailure {
                    mode: mode.mode,
                    target: mode.target.to_string(),
                    error,
                }),
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

/// Load and attach one mode's program; on failure, unload it and return the error text.
fn attach_mode(
    ebpf: &mut Ebpf,
    mode: &HookMode,
    kernel_btf: &mut Option<aya::Btf>,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(mode.program)
        .ok_or_else(|| format!("program {} is missing from the probes object", mode.program))?;
    let result: Result<(), ProgramError> = match (mode.mode, mode.target) {
        (AttachMode::Kprobe, Target::Function(function)) => {
            let kprobe: &mut KProbe = program.try_into().map_err(|e| error_chain(&e))?;
            kprobe
                .load()
                .and_then(|()| kprobe.attach(function, 0))
                .map(drop)
                .inspect_err(|_| {
                    let _ = kprobe.unload();
                })
        }
        (AttachMode::Fentry, Target::Function(function)) => {
            if kernel_btf.is_none() {
                *kernel_btf = Some(aya::Btf::from_sys_fs().map_err(|e| error_chain(&e))?);
            }
            let btf = kernel_btf.as_ref().expect("set above");
            let fentry: &mut FEntry = program.try_into().map_err(|e| error_chain(&e))?;
            fentry
                .load(function, btf)
                .and_then(|()| fentry.attach())
                .map(drop)
                .inspect_err(|_| {
                    let _ = fentry.unload();
                })
        }
        (AttachMode::Tracepoint, Target::Tracepoint { category, name }) => {
            let tracepoint: &mut TracePoint = program.try_into().map_err(|e| error_chain(&e))?;
            tracepoint
                .load()
                .and_then(|()| tracepoint.attach(category, name))
                .map(drop)
                .inspect_err(|_| {
                    let _ = tracepoint.unload();
                })
        }
        (mode, target) => return Err(format!("mode {mode} cannot attach to {target}")),
    };
    result.map_err(|e| describe_failure(&e))
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
    fn every_hook_tries_kprobe_then_fentry_then_tracepoint() {
        for hook in HOOKS {
            let order: Vec<AttachMode> = hook.modes.iter().map(|m| m.mode).collect();
            assert_eq!(
                order,
                [
                    AttachMode::Kprobe,
                    AttachMode::Fentry,
                    AttachMode::Tracepoint
                ]
            );
        }
    }

    #[test]
    fn report_names_mode_and_each_failure() {
        let report = HookReport {
            hook: "tcp_connect",
            attached: Some((AttachMode::Tracepoint, "sock:inet_sock_set_state".into())),
            failures: vec![ModeFailure {
                mode: AttachMode::Kprobe,
                target: "tcp_connect".into(),
                error: "boom".into(),
            }],
        };
        assert_eq!(
            report.to_string(),
            "hook tcp_connect: attached tracepoint (sock:inet_sock_set_state)\n  kprobe (tcp_connect) failed: boom"
        );
    }
}
