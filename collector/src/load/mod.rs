//! `load`: check privileges, read this kernel's layout (BTF, tracefs formats), write it into the
//! probes object as load-time globals, load it, and attach every hook by mode
//! (kprobe → fentry → tp_btf → tracepoint). Produces the maps the `source` stage reads.

pub mod attach;
pub mod btf;
pub mod filters;
pub mod go_attach;
#[cfg(test)]
mod object_names;
pub mod privilege;
pub mod serving;
pub mod skipped;
pub mod tls_attach;
pub mod tracefs;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
};
use wirespan_shared::names::{MAP_EVENTS, MAP_LOST, MAP_READER_POLLING, MAP_SCRATCH};
use wirespan_shared::{
    GLOBAL_FD_OFFSETS, GLOBAL_PROC_OFFSETS, GLOBAL_SET_STATE_FORMAT, GLOBAL_SETTINGS,
    GLOBAL_SOCK_OFFSETS, LOST_CAUSES, MAX_CAPTURE, Settings, UNENTERED_READS_WINDOW_NS,
};

pub use self::{
    attach::{AttachMode, HOOKS, HookReport, error_chain},
    filters::Filters,
    tls_attach::TlsReport,
};
use self::{go_attach::GoAttacher, tls_attach::TlsAttacher};
use crate::golang::discover::GoReport;

/// Payload bytes captured per data event unless `--capture-bytes` says otherwise.
pub const DEFAULT_CAPTURE_BYTES: u32 = 4096;
/// How long a Go program that serves without calling out keeps its per-request probes.
pub const DEFAULT_SERVING_QUIET: std::time::Duration = std::time::Duration::from_secs(5);
/// Size of the event ring buffer unless `--ring-buffer-mib` says otherwise: about 4000 full
/// 4 KiB data events of slack while user space catches up.
pub const DEFAULT_RING_BUFFER_MIB: u32 = 16;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Prefer this attach mode for every hook that has it, instead of trying them in order.
    pub attach_mode: Option<AttachMode>,
    /// Payload bytes captured per data event, at most `MAX_CAPTURE`.
    pub capture_bytes: u32,
    /// Size of the event ring buffer in MiB: a power of two.
    pub ring_buffer_mib: u32,
    /// How long a Go binary keeps its serving probes while none of its processes calls out
    /// (see `serving`); None: always.
    pub serving_quiet_after: Option<std::time::Duration>,
    pub filters: Filters,
    /// Keep the message bodies of TLS plaintext. The probes capture the first `capture_bytes`
    /// of each TLS call either way; by default the agent blanks the bodies in them before
    /// anything keeps or shows them (see `protocol::content`).
    pub keep_tls_bodies: bool,
    /// Keep credentials (header values, query values) in what shows captured bytes (the events
    /// view, recordings); by default they are blanked.
    pub show_secrets: bool,
    /// Credential headers blanked beyond the default ones (`protocol::content`).
    pub redact_headers: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            attach_mode: None,
            capture_bytes: DEFAULT_CAPTURE_BYTES,
            ring_buffer_mib: DEFAULT_RING_BUFFER_MIB,
            serving_quiet_after: Some(DEFAULT_SERVING_QUIET),
            filters: Filters::default(),
            keep_tls_bodies: false,
            show_secrets: false,
            redact_headers: Vec::new(),
        }
    }
}

/// The probes object, built by build.rs from `probes-ebpf` for the bpfel target.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("cannot read kernel struct offsets: {0}")]
    Btf(#[from] btf::BtfError),
    #[error("loading the probes object failed: {}", error_chain(.0))]
    Object(#[source] aya::EbpfError),
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    #[error(transparent)]
    Filter(#[from] filters::FilterError),
    #[error("--ring-buffer-mib {0}: give a power of two from 1 to 1024")]
    RingBufferSize(u32),
    #[error("cannot count the possible CPUs from {path}: {source}")]
    Cpus {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("--capture-bytes {0}: at most {MAX_CAPTURE} bytes per event")]
    CaptureBytes(u32),
    #[error("the probes object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name} is unusable: {}", error_chain(.source))]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Loaded and attached probes. Dropping it detaches and unloads every program; the maps taken
/// out of it (`events`, `lost`) stay readable, so the ring buffer can be drained after detach.
pub struct Probes {
    ebpf: Ebpf,
    pub report: Vec<HookReport>,
    /// The Go programs found at start, attached or skipped.
    pub go_report: Vec<GoReport>,
    /// The TLS libraries found at start, attached or skipped.
    pub tls_report: Vec<TlsReport>,
    go: GoAttacher,
    tls: TlsAttacher,
}

/// The maps the agent reads, owned apart from the programs.
pub struct ProbeMaps {
    pub events: RingBuf<MapData>,
    /// Tells the probes whether the reader polls `events` (see `source::ringbuf`).
    pub reader_polling: Array<MapData, u32>,
    pub lost: LostCounters,
}

/// The kernel's per-CPU counts of lost events, by `LOST_*` cause.
pub struct LostCounters(PerCpuArray<MapData, u64>);

impl Probes {
    /// Check privileges, load the probes with this kernel's offsets and the options' settings,
    /// fill the filters, attach every hook.
    pub fn load(options: &LoadOptions) -> Result<(Self, ProbeMaps), LoadError> {
        if options.capture_bytes as usize > MAX_CAPTURE {
            return Err(LoadError::CaptureBytes(options.capture_bytes));
        }
        let ring_mib = options.ring_buffer_mib;
        if !ring_mib.is_power_of_two() || ring_mib > 1024 {
            return Err(LoadError::RingBufferSize(ring_mib));
        }
        // Bad filter input is reported before anything touches the kernel.
        let cgroup_ids = options.filters.cgroup_ids()?;
        privilege::check()?;
        raise_memlock_on_old_kernels();
        let tracefs_root = tracefs::ensure_mounted()?;
        let kernel_btf = btf::Btf::from_sys_fs()?;
        let sock_offsets = btf::sock_common_offsets(&kernel_btf)?;
        let fd_offsets = btf::fd_offsets(&kernel_btf)?;
        let proc_offsets = btf::proc_offsets(&kernel_btf)?;
        drop(kernel_btf);
        let set_state = tracefs::set_state_format(&tracefs_root)?;
        let settings = Settings {
            agent_tgid: std::process::id(),
            capture_bytes: options.capture_bytes,
            filters: options.filters.bits(),
            pad0: 0,
            unentered_reads_until_ns: crate::clock::monotonic_now_ns()
                .saturating_add(UNENTERED_READS_WINDOW_NS),
        };

        let cpus =
            aya::util::nr_cpus().map_err(|(path, source)| LoadError::Cpus { path, source })?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_SCRATCH, cpus.get())
            .map_max_entries(MAP_EVENTS, ring_mib << 20)
            .override_global(GLOBAL_SOCK_OFFSETS, &sock_offsets, true)
            .override_global(GLOBAL_FD_OFFSETS, &fd_offsets, true)
            .override_global(GLOBAL_PROC_OFFSETS, &proc_offsets, true)
            .override_global(GLOBAL_SET_STATE_FORMAT, &set_state, true)
            .override_global(GLOBAL_SETTINGS, &settings, true)
            .load(PROBES_OBJECT)
            .map_err(LoadError::Object)?;
        options.filters.write_maps(&mut ebpf, &cgroup_ids)?;
        let maps = ProbeMaps {
            events: take_map(&mut ebpf, MAP_EVENTS, RingBuf::try_from)?,
            reader_polling: take_map(&mut ebpf, MAP_READER_POLLING, Array::try_from)?,
            lost: LostCounters(take_map(&mut ebpf, MAP_LOST, PerCpuArray::try_from)?),
        };
        let report = attach::attach_hooks(&mut ebpf, options.attach_mode)?;
        let mut go = GoAttacher::new(
            settings.agent_tgid,
            &options.filters.pids,
            &cgroup_ids,
            options.serving_quiet_after,
        );
        let go_report = go.attach_running(&mut ebpf);
        let mut tls = TlsAttacher::default();
        let tls_report = tls.attach_running(&mut ebpf);
        Ok((
            Self {
                ebpf,
                report,
                go_report,
                tls_report,
                go,
                tls,
            },
            maps,
        ))
    }

    /// A process executed a program: attach the Go uprobes if it is a Go program not seen yet.
    pub fn exec(&mut self, pid: u32) -> Option<GoReport> {
        self.go.attach_pid(&mut self.ebpf, pid)
    }

    /// A process executed a program: attach to a TLS library it maps that is new.
    pub fn tls_exec(&mut self, pid: u32) -> Vec<TlsReport> {
        self.tls.exec(&mut self.ebpf, pid)
    }

    /// Process `pid` made an outbound call (see `serving`): a report line when its binary's
    /// serving probes went back on.
    pub fn calls_out(&mut self, pid: u32) -> Option<String> {
        self.go.calls_out(&mut self.ebpf, pid)
    }

    /// Process `pid` served HTTP before its route table was known: its binary's serving
    /// probes go back on for a quiet period, so its `ServeHTTP` names its server once.
    pub fn wants_routes(&mut self, pid: u32) -> Option<String> {
        self.go.wants_routes(&mut self.ebpf, pid)
    }

    /// Take the serving probes off Go binaries that served without calling out for a while
    /// (each prints a report line once its probes are off).
    pub fn retire_quiet(&mut self) {
        self.go.retire_quiet(&mut self.ebpf);
    }

    /// Detach and unload every program, each on a thread of its own. Detaching a link waits
    /// for RCU grace periods (~0.1 s each on these machines): one after another, an idle
    /// agent's programs took 2.3 s to detach (strace). In parallel the waits the kernel does
    /// not serialize overlap (classic tracepoints still take a kernel mutex each): 1.9 s.
    pub fn detach(mut self) {
        std::thread::scope(|scope| {
            for (_, program) in self.ebpf.programs_mut() {
                let spawned = std::thread::Builder::new()
                    .name("wirespan-detach".into())
                    .spawn_scoped(scope, move || attach::unload(program));
                // Without a thread, the program is unloaded when `ebpf` drops below: slower,
                // still correct.
                drop(spawned);
            }
        });
        drop(self.ebpf);
    }
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, aya::maps::MapError>,
) -> Result<M, LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    convert(map).map_err(|source| LoadError::Map { name, source })
}

impl LostCounters {
    /// Events lost in the kernel so far, per cause (`LOST_*`), summed over CPUs.
    #[must_use]
    pub fn counts(&self) -> [u64; LOST_CAUSES as usize] {
        let mut counts = [0; LOST_CAUSES as usize];
        for (cause, count) in (0..LOST_CAUSES).zip(counts.iter_mut()) {
            if let Ok(per_cpu) = self.0.get(&cause, 0) {
                *count = per_cpu.iter().sum();
            }
        }
        counts
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the memory cgroup,
/// where raising the limit is pointless and may be refused (no CAP_SYS_RESOURCE). A refusal
/// is a warning, never fatal.
fn raise_memlock_on_old_kernels() {
    if kernel_release_at_least(5, 11) {
        return;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        eprintln!(
            "wirespan: warning: cannot raise RLIMIT_MEMLOCK ({}); loading may fail on this kernel",
            std::io::Error::last_os_error()
        );
    }
}

fn kernel_release_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
