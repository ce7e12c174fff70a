//! wirespan's kernel side. Probes are thin: capture, tag with pid/tid/five-tuple, send through the
//! `EVENTS` ring buffer. Parsing belongs to user space.
//!
//! One file per hook family: `conn` (TCP connection lifecycle; `set_state` holds its tracepoint modes), `data` (socket syscalls; `frames` follows HTTP/2 frames through them), `golang` (Go runtime and net/http uprobes), `grpc` (grpc-go uprobes; `multi` loads both as multi-uprobes), `process` (exec and exit), `tls` (OpenSSL's read and write calls: plaintext), `gotls` (Go crypto/tls's). Shared maps are in `maps`, reads of
//! kernel structs (at offsets user space found in BTF) in `sock`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::inline_always,
        reason = "BPF helpers must inline into their program: a BPF-to-BPF call costs stack and \
                  verifier state, and the programs were verified with these bodies inlined"
    )
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::needless_pass_by_value,
        reason = "aya's program macros hand each program its context (one pointer) by value"
    )
)]

#[cfg(target_arch = "bpf")]
mod conn;
#[cfg(target_arch = "bpf")]
mod data;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod frames;
#[cfg(target_arch = "bpf")]
mod golang;
#[cfg(target_arch = "bpf")]
mod goroutines;
#[cfg(target_arch = "bpf")]
mod gotls;
#[cfg(target_arch = "bpf")]
mod grpc;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod multi;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod set_state;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No probe code panics (Result everywhere); the verifier rejects unbounded loops anyway.
    loop {}
}

/// bpf_probe_read_kernel and the ring buffer helpers are GPL-only.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "probes-ebpf builds only for the bpfel-unknown-none target; collector/build.rs builds it"
    );
}
