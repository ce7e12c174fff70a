//! The floor configurations: `wirespan-floor` (collector/src/bin/wirespan-floor.rs) attaches
//! programs that do nothing where the agent attaches, so the bench can tell what merely running
//! a BPF program there costs from what wirespan's programs do.
//!
//! - floor A: an empty program on the 12 tracepoints sys_enter/sys_exit of read, write,
//!   recvfrom, sendto, readv and writev;
//! - floor B: floor A and one empty uprobe per request in each serving Go program: net/http's
//!   `serverHandler.ServeHTTP` (hello; on three-tier, in every service that has it: gin-front
//!   and the relay's grpc-echo binary), or grpc-go's `(*http2Server).operateHeaders` for the
//!   gRPC echo (called once per incoming stream, i.e. per call).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::Target;

const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
const OPERATE_HEADERS: &str =
    "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders";

/// The (binary, Go function) pairs of floor B's uprobes for `target`.
fn functions(bin: &Path, target: Target) -> Vec<(PathBuf, &'static str)> {
    match target {
        Target::Hello | Target::HelloTls => vec![(bin.join("http-hello"), SERVE_HTTP)],
        Target::GrpcEcho => vec![(bin.join("grpc-echo"), OPERATE_HEADERS)],
        Target::ThreeTier => vec![
            (bin.join("gin-front"), SERVE_HTTP),
            (bin.join("grpc-echo"), SERVE_HTTP),
        ],
    }
}

/// `--uprobe BINARY:OFFSET` arguments of floor B for `target`.
pub fn uprobe_args(bin: &Path, target: Target) -> anyhow::Result<Vec<String>> {
    functions(bin, target)
        .into_iter()
        .map(|(binary, function)| {
            let offset = symbol_file_offset(&binary, function)?;
            Ok(format!("{}:{offset:#x}", binary.display()))
        })
        .collect()
}

/// Where `symbol`'s code starts in `binary`'s file: its address less its section's, plus the
/// section's file offset (what a uprobe is attached at). The examples are built unstripped, so
/// the symbol table has it. The agent probes a Go function after its stack-check prologue (a
/// goroutine whose stack grows re-enters the function and would fire the probe twice); an
/// empty floor probe may sit at the symbol itself: the prologue's re-entry is rare and costs
/// the same as any hit.
pub fn symbol_file_offset(binary: &Path, symbol: &str) -> anyhow::Result<u64> {
    let data =
        std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF file", binary.display()))?;
    let Some(found) = file.symbols().find(|s| s.name() == Ok(symbol)) else {
        bail!("{} has no symbol {symbol}", binary.display());
    };
    let section = found
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .with_context(|| format!("{symbol}: no section"))?;
    let (file_start, _) = section
        .file_range()
        .with_context(|| format!("{symbol}: its section has no file data"))?;
    Ok(found.address() - section.address() + file_start)
}
