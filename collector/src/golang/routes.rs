//! Real routes of a Go server, read from its memory with no trap per request: given the
//! `*http.Server` a request came through, read the patterns its handler was registered with
//! (net/http `ServeMux`, Go 1.22+) or gin's route trees, once; then match each request's path
//! in user space (`routes_match`).
//!
//! - The handler is `Server.Handler`, an interface (itab, data); nil means `DefaultServeMux`.
//!   Its dynamic type is told by the itab's first method, `ServeHTTP` of some type, named from
//!   the pclntab (so stripped binaries too). Other handlers (middleware, `HandlerFunc`) are
//!   refused by name: the caller falls back to heuristic routes.
//! - `DefaultServeMux` is the `net/http.DefaultServeMux` pointer variable: from the symbol table,
//!   or in a stripped binary from the RIP-relative loads of `serverHandler.ServeHTTP` (which
//!   reads it for a nil handler), each candidate checked by reading it as a mux.
//! - Memory is read with `pread` on `/proc/PID/mem`; every walk is bounded (nodes, lengths),
//!   since the program may be changing what is read.

use std::{collections::HashSet, fs::File, io, os::unix::fs::FileExt};

use object::{Object, ObjectKind, ObjectSegment, ObjectSymbol};

use super::{GoBinary, buildinfo::go_semver, moduledata, routes_gomap};
pub use super::{
    routes_layout::{GinLayout, MuxLayout, RouteLayoutError, RouteLayouts, route_layouts},
    routes_match::{RouteTable, RouterKind},
};

const MUX_SERVE: &str = "net/http.(*ServeMux).ServeHTTP";
const GIN_SERVE: &str = "github.com/gin-gonic/gin.(*Engine).ServeHTTP";
/// Middlewares looked through, at most, for the router they wrap.
const MIDDLEWARE_DEPTH: u32 = 3;
/// Words of a middleware's value searched for the handler it calls on to.
const MIDDLEWARE_WORDS: u64 = 16;
const SERVER_HANDLER_SERVE: &str = "net/http.serverHandler.ServeHTTP";
const DEFAULT_MUX: &str = "net/http.DefaultServeMux";
/// The itab's first method (`ITAB_FIRST_METHOD` in the shared crate).
const ITAB_FIRST_METHOD: u64 = 24;
/// Route tree nodes read at most (a program with more is not one whose routes fit a span name).
const MAX_NODES: usize = 20_000;
/// Longest string read (a pattern, a gin path or method).
const MAX_STRING: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RouteTableError {
    #[error("cannot open /proc/{pid}/mem: {source}")]
    Open { pid: u32, source: io::Error },
    #[error("cannot find where the program is mapped in process {pid}: {why}")]
    Mapping { pid: u32, why: String },
    #[error("cannot read {what} at {address:#x}: {source}")]
    Read {
        what: &'static str,
        address: u64,
        source: io::Error,
    },
    #[error("{what} at {address:#x} is inconsistent: {why}")]
    Inconsistent {
        what: &'static str,
        address: u64,
        why: String,
    },
    #[error("handler type {0} is not a known router")]
    UnknownHandler(String),
    #[error("net/http routes not readable: {0}")]
    MuxLayout(RouteLayoutError),
    #[error("gin routes not readable: {0}")]
    GinLayout(RouteLayoutError),
    #[error("the handler is gin's, but the build info names no gin module")]
    GinWithoutModule,
    #[error(
        "no http.DefaultServeMux found (no symbol, and no load of it in {SERVER_HANDLER_SERVE} reads as a mux)"
    )]
    NoDefaultMux,
    #[error("more than {MAX_NODES} route tree nodes")]
    TooManyNodes,
}

/// Process memory, by virtual address.
pub trait Memory {
    fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A live process's memory through `/proc/PID/mem` (needs ptrace-read access: root, or the
/// same user without Yama restrictions).
pub struct ProcMemory(File);

impl ProcMemory {
    pub fn open(pid: u32) -> Result<Self, RouteTableError> {
        File::open(format!("/proc/{pid}/mem"))
            .map(Self)
            .map_err(|source| RouteTableError::Open { pid, source })
    }
}

impl Memory for ProcMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, address)
    }
}

pub(super) fn read_u64(
    memory: &impl Memory,
    address: u64,
    what: &'static str,
) -> Result<u64, RouteTableError> {
    let mut buf = [0; 8];
    memory
        .read(address, &mut buf)
        .map_err(|source| RouteTableError::Read {
            what,
            address,
            source,
        })?;
    Ok(u64::from_le_bytes(buf))
}

fn read_bytes(
    memory: &impl Memory,
    address: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, RouteTableError> {
    let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
    memory
        .read(address, &mut buf)
        .map_err(|source| RouteTableError::Read {
            what,
            address,
            source,
        })?;
    Ok(buf)
}

/// A Go string header (pointer, length) at `address`.
fn read_string(
    memory: &impl Memory,
    address: u64,
    what: &'static str,
) -> Result<String, RouteTableError> {
    let ptr = read_u64(memory, address, what)?;
    let len = read_u64(memory, address.wrapping_add(8), what)?;
    if len == 0 {
        return Ok(String::new());
    }
    if len > MAX_STRING {
        return Err(inconsistent(what, address, format!("length {len}")));
    }
    String::from_utf8(read_bytes(memory, ptr, len, what)?)
        .map_err(|_| inconsistent(what, address, "not UTF-8".to_owned()))
}

/// A Go slice header's (pointer, length) at `address`, the length at most `max`.
fn read_slice(
    memory: &impl Memory,
    address: u64,
    max: u64,
    what: &'static str,
) -> Result<(u64, u64), RouteTableError> {
    let ptr = read_u64(memory, address, what)?;
    let len = read_u64(memory, address.wrapping_add(8), what)?;
    if len > max {
        return Err(inconsistent(what, address, format!("length {len}")));
    }
    Ok((ptr, len))
}

fn inconsistent(what: &'static str, address: u64, why: String) -> RouteTableError {
    RouteTableError::Inconsistent { what, address, why }
}

/// What a binary tells about reading its routes, found once per binary.
#[derive(Debug, Clone)]
pub struct RouteReader {
    layouts: RouteLayouts,
    /// Go 1.24+ maps are swiss tables.
    swiss_maps: bool,
    /// Every `ServeHTTP` method (the only method of `http.Handler`, so the first of any
    /// handler's itab), by linked address.
    serve_http: Vec<(u64, String)>,
    /// Linked addresses that may hold `DefaultServeMux` (the symbol's, or the loads' targets).
    default_mux: Vec<u64>,
    /// A PIE's lowest load address as linked, to find its load bias in the process.
    pie_base: Option<u64>,
}

impl RouteReader {
    #[must_use]
    pub fn new(binary: &GoBinary) -> Self {
        let mut reader = Self {
            layouts: route_layouts(binary),
            swiss_maps: go_semver(&binary.build_info.go_version).is_some_and(|v| v >= (1, 24, 0)),
            serve_http: Vec::new(),
            default_mux: Vec::new(),
            pie_base: None,
        };
        let Ok(file) = object::File::parse(&*binary.data) else {
            return reader;
        };
        if file.kind() == ObjectKind::Dynamic {
            reader.pie_base = file.segments().map(|s| s.address() & !0xfff).min();
        }
        let functions = moduledata::pclntab(&file)
            .and_then(|(pclntab, text)| {
                super::routes_pclntab::functions(pclntab, text, |name| {
                    name.ends_with(b".ServeHTTP")
                })
                .ok()
            })
            .unwrap_or_default();
        reader.default_mux = file
            .symbols()
            .find(|s| s.name() == Ok(DEFAULT_MUX))
            .map_or_else(
                || {
                    functions
                        .iter()
                        .find(|(name, _)| name == SERVER_HANDLER_SERVE)
                        .map(|(_, range)| super::routes_pclntab::rip_loads(binary, &file, *range))
                        .unwrap_or_default()
                },
                |s| vec![s.address()],
            );
        reader.serve_http = functions
            .into_iter()
            .map(|(name, range)| (range.address, name))
            .collect();
        reader
    }

    /// The route table of the handler of the `*http.Server` at `server` in process `pid`.
    pub fn read(&self, pid: u32, server: u64) -> Result<RouteTable, RouteTableError> {
        let bias = match self.pie_base {
            Some(base) => load_bias(pid, base)?,
            None => 0,
        };
        self.read_from(&ProcMemory::open(pid)?, bias, server)
    }

    /// Like `read`, from any memory, with the binary loaded `bias` bytes above its link address.
    pub fn read_from(
        &self,
        memory: &impl Memory,
        bias: u64,
        server: u64,
    ) -> Result<RouteTable, RouteTableError> {
        let mux = self
            .layouts
            .mux
            .as_ref()
            .map_err(|e| RouteTableError::MuxLayout(e.clone()))?;
        let handler = server.wrapping_add(u64::from(mux.server_handler));
        let itab = read_u64(memory, handler, "Server.Handler")?;
        let data = read_u64(memory, handler.wrapping_add(8), "Server.Handler")?;
        if itab == 0 {
            return self.default_mux(memory, bias, mux);
        }
        self.read_handler(memory, bias, mux, itab, data, 0)
    }

    /// The routes of the handler in an interface value `(itab, data)`: a router's own, or,
    /// for a middleware, those of the router it wraps (up to [`MIDDLEWARE_DEPTH`] deep).
    fn read_handler(
        &self,
        memory: &impl Memory,
        bias: u64,
        mux: &MuxLayout,
        itab: u64,
        data: u64,
        depth: u32,
    ) -> Result<RouteTable, RouteTableError> {
        let method = read_u64(
            memory,
            itab.wrapping_add(ITAB_FIRST_METHOD),
            "the handler's itab",
        )?;
        match self.serve_http_name(method, bias) {
            Some(MUX_SERVE) => read_mux(memory, mux, self.swiss_maps, data),
            Some(GIN_SERVE) => {
                let gin = self
                    .layouts
                    .gin
                    .as_ref()
                    .ok_or(RouteTableError::GinWithoutModule)?;
                let gin = gin
                    .as_ref()
                    .map_err(|e| RouteTableError::GinLayout(e.clone()))?;
                read_gin(memory, gin, data)
            }
            other => {
                let refused = RouteTableError::UnknownHandler(other.map_or_else(
                    || format!("(method at {method:#x})"),
                    |name| name.trim_end_matches(".ServeHTTP").to_owned(),
                ));
                if depth >= MIDDLEWARE_DEPTH {
                    return Err(refused);
                }
                self.wrapped(memory, bias, mux, data, depth + 1)
                    .ok_or(refused)
            }
        }
    }

    /// The router a middleware calls on to. Its value (a struct, or a `HandlerFunc`
    /// closure: its code pointer, then the variables it captured) holds the next handler,
    /// either as an interface (an itab whose method is a `ServeHTTP`, then the data) or as a
    /// plain `*ServeMux` (`mux.ServeHTTP(w, r)` in a closure), which is accepted only if it
    /// reads as a mux with patterns.
    fn wrapped(
        &self,
        memory: &impl Memory,
        bias: u64,
        mux: &MuxLayout,
        data: u64,
        depth: u32,
    ) -> Option<RouteTable> {
        let words: Vec<u64> = (0..MIDDLEWARE_WORDS)
            .map_while(|i| read_u64(memory, data.wrapping_add(8 * i), "a middleware").ok())
            .collect();
        for pair in words.windows(2) {
            let (itab, inner) = (pair[0], pair[1]);
            let is_handler = itab != 0
                && inner != 0
                && read_u64(memory, itab.wrapping_add(ITAB_FIRST_METHOD), "an itab")
                    .is_ok_and(|method| self.serve_http_name(method, bias).is_some());
            if is_handler
                && let Ok(table) = self.read_handler(memory, bias, mux, itab, inner, depth)
            {
                return Some(table);
            }
        }
        words.iter().filter(|w| **w != 0).find_map(|&word| {
            read_mux(memory, mux, self.swiss_maps, word)
                .ok()
                .filter(|t| !t.is_empty() && t.skipped() == 0)
        })
    }

    /// The name of the `ServeHTTP` method at `method` (a loaded address).
    fn serve_http_name(&self, method: u64, bias: u64) -> Option<&str> {
        self.serve_http
            .iter()
            .find(|(address, _)| address.wrapping_add(bias) == method)
            .map(|(_, name)| name.as_str())
    }

    /// `DefaultServeMux`: the first candidate that reads as a mux with patterns, else the first
    /// that reads at all (a program may serve an empty default mux).
    fn default_mux(
        &self,
        memory: &impl Memory,
        bias: u64,
        layout: &MuxLayout,
    ) -> Result<RouteTable, RouteTableError> {
        let mut empty = None;
        for candidate in &self.default_mux {
            let Ok(mux) = read_u64(memory, candidate.wrapping_add(bias), "DefaultServeMux") else {
                continue;
            };
            if mux == 0 {
                continue;
            }
            match read_mux(memory, layout, self.swiss_maps, mux) {
                Ok(table) if !table.is_empty() && table.skipped() == 0 => return Ok(table),
                Ok(table) if table.skipped() == 0 => empty = empty.or(Some(table)),
                _ => {}
            }
        }
        empty.ok_or(RouteTableError::NoDefaultMux)
    }
}

/// Reads the route table of the handler behind the `*http.Server` at `server` in a live process.
/// Finding the layouts reads the binary's DWARF: to read several servers, keep a `RouteReader`.
pub fn read_server_routes(
    pid: u32,
    binary: &GoBinary,
    server: u64,
) -> Result<RouteTable, RouteTableError> {
    RouteReader::new(binary).read(pid, server)
}

/// How far above its link address a PIE is loaded: where `/proc/PID/maps` maps the start of its
/// executable file.
fn load_bias(pid: u32, base: u64) -> Result<u64, RouteTableError> {
    let why = |why: String| RouteTableError::Mapping { pid, why };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| why(e.to_string()))?;
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| why(e.to_string()))?;
    let exe = exe.to_string_lossy();
    maps.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let offset = fields.nth(1)?;
            let path = fields.nth(2)?;
            (path == exe && u64::from_str_radix(offset, 16) == Ok(0))
                .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())?
        })
        .map(|start| start.wrapping_sub(base))
        .ok_or_else(|| why(format!("{exe} is not mapped at offset 0")))
}

/// The patterns of the `ServeMux` at `mux`: every leaf of its routing tree (host, then method,
/// then path segments) holds one.
fn read_mux(
    memory: &impl Memory,
    layout: &MuxLayout,
    swiss_maps: bool,
    mux: u64,
) -> Result<RouteTable, RouteTableError> {
    let mut patterns = Vec::new();
    let mut stack = vec![mux.wrapping_add(u64::from(layout.mux_tree))];
    let mut seen = HashSet::new();
    while let Some(node) = stack.pop() {
        if !seen.insert(node) {
            continue;
        }
        if seen.len() > MAX_NODES {
            return Err(RouteTableError::TooManyNodes);
        }
        let pattern = read_u64(
            memory,
            node.wrapping_add(u64::from(layout.node_pattern)),
            "routingNode",
        )?;
        if pattern != 0 {
            patterns.push(read_string(
                memory,
                pattern.wrapping_add(u64::from(layout.pattern_str)),
                "pattern.str",
            )?);
        }
        let children = node.wrapping_add(u64::from(layout.node_children));
        // `mapping.s`: up to 8 {key string; value *routingNode} entries.
        let (entries, len) = read_slice(
            memory,
            children.wrapping_add(u64::from(layout.mapping_slice)),
            64,
            "routingNode children",
        )?;
        for i in 0..len {
            stack.push(read_u64(
                memory,
                entries.wrapping_add(i * 24 + 16),
                "routingNode child",
            )?);
        }
        let map = read_u64(
            memory,
            children.wrapping_add(u64::from(layout.mapping_map)),
            "routingNode children",
        )?;
        if map != 0 {
            stack.extend(routes_gomap::string_map_values(memory, map, swiss_maps)?);
        }
        for at in [layout.node_multi_child, layout.node_empty_child] {
            if at == super::routes_layout::ABSENT {
                continue;
            }
            stack.push(read_u64(
                memory,
                node.wrapping_add(u64::from(at)),
                "routingNode child",
            )?);
        }
        stack.retain(|&n| n != 0);
    }
    patterns.sort();
    Ok(RouteTable::from_mux_patterns(&patterns))
}

/// The routes of the gin `Engine` at `engine`: each method tree's nodes with handlers, by their
/// full path.
fn read_gin(
    memory: &impl Memory,
    layout: &GinLayout,
    engine: u64,
) -> Result<RouteTable, RouteTableError> {
    let (trees, count) = read_slice(
        memory,
        engine.wrapping_add(u64::from(layout.engine_trees)),
        64,
        "Engine.trees",
    )?;
    // methodTree is {method string; root *node}: 24 bytes.
    let tree_size = u64::from(layout.tree_root.max(layout.tree_method + 8)) + 8;
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..count {
        let tree = trees.wrapping_add(i * tree_size);
        let method = read_string(
            memory,
            tree.wrapping_add(u64::from(layout.tree_method)),
            "methodTree",
        )?;
        let mut stack = vec![read_u64(
            memory,
            tree.wrapping_add(u64::from(layout.tree_root)),
            "methodTree",
        )?];
        while let Some(node) = stack.pop() {
            if node == 0 || !seen.insert(node) {
                continue;
            }
            if seen.len() > MAX_NODES {
                return Err(RouteTableError::TooManyNodes);
            }
            let (_, handlers) = read_slice(
                memory,
                node.wrapping_add(u64::from(layout.node_handlers)),
                u64::from(u16::MAX),
                "node.handlers",
            )?;
            if handlers > 0 {
                let path = read_string(
                    memory,
                    node.wrapping_add(u64::from(layout.node_full_path)),
                    "node.fullPath",
                )?;
                routes.push((method.clone(), path));
            }
            let (children, len) = read_slice(
                memory,
                node.wrapping_add(u64::from(layout.node_children)),
                512,
                "node.children",
            )?;
            for c in 0..len {
                stack.push(read_u64(
                    memory,
                    children.wrapping_add(c * 8),
                    "node child",
                )?);
            }
        }
    }
    routes.sort();
    Ok(RouteTable::from_gin_routes(&routes))
}

#[cfg(test)]
#[path = "routes_tests.rs"]
pub(super) mod tests;
