//! Multi-uprobe twins of Go uprobe programs (`golang`): the same code, loaded as `uprobe.multi`
//! so that all of a function's points (its entry, or every RET) attach as one link. Detaching a
//! link of per-point uprobes waits one RCU grace period per point, seconds for an agent attached
//! to a few Go binaries; a multi link detaches in one go. The kernel has them since 6.6; where it
//! does not, user space attaches the single-point programs (collector/src/load/go_attach.rs).
//!
//! Each twin only forwards its context to the original program. Only programs whose body is a
//! function outside the program's section (`try_serve`, `try_round_trip`) have a twin: a twin
//! calling a program whose body is inline makes aya 0.16 fail the whole object's relocation
//! ("function 0x8 not found while relocating `go_persist_conn_round_trip`"). The other Go
//! programs get twins once their bodies move into such functions.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};

use crate::golang;

#[uprobe(multi)]
pub fn go_round_trip_m(ctx: ProbeContext) -> u32 {
    golang::go_round_trip(ctx.regs.cast())
}

#[uprobe(multi)]
pub fn go_round_trip_return_m(ctx: ProbeContext) -> u32 {
    golang::go_round_trip_return(ctx.regs.cast())
}

#[uprobe(multi)]
pub fn go_serve_http_m(ctx: ProbeContext) -> u32 {
    golang::go_serve_http(ctx.regs.cast())
}

#[uprobe(multi)]
pub fn go_serve_http_return_m(ctx: ProbeContext) -> u32 {
    golang::go_serve_http_return(ctx.regs.cast())
}
