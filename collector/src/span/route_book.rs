//! Routes for HTTP spans, on their way from the correlator to the sinks.
//!
//! A server span's route is, in order: the pattern its own program registered (a Go program's
//! `ServeMux` or gin tree, read from the process's memory once per server: see
//! `golang::routes`), a template the user configured, or the unmatched policy (the heuristic by
//! default). A client span gets a route only when its callee runs on this host (an accepted
//! connection showed which process listens at the address it called) and the route is one the
//! callee registered or the user configured: then both ends of a call carry the same name. A
//! heuristic guess stays on the server's side.
//!
//! The Go route table is found from the `*http.Server` the `ServeHTTP` probe reports (at most
//! once per server); a Go process that serves while that probe is off (see `load::serving`)
//! is listed in [`RouteBook::take_wanted`] once, so its probes can come back on for a moment.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
};

use super::{
    Payload, Span, SpanKind,
    route::{Route, RouteRules, RouteSource},
};
use crate::{
    event::Event,
    golang::{
        GoBinary,
        routes::{RouteReader, RouteTable},
    },
};

/// One server's registered routes, as read from its process.
pub trait ProgramRoutes: Send {
    /// The template registered for this request, if one matches.
    fn route(&self, method: &str, host: Option<&str>, path: &str) -> Option<String>;
}

/// Reads the routes of the server at an address in a live process; the error says why not
/// (not a router the agent knows, memory unreadable...).
pub type TableReader = Box<dyn FnMut(u32, u64) -> Result<Box<dyn ProgramRoutes>, String> + Send>;

impl ProgramRoutes for RouteTable {
    fn route(&self, method: &str, host: Option<&str>, path: &str) -> Option<String> {
        RouteTable::route(self, method, host, path).map(str::to_owned)
    }
}

/// Executables whose route readers are kept at most (a reader is rebuilt when needed).
const MAX_READERS: usize = 256;

/// The reader of live runs: a process's executable (`/proc/PID/exe`) is opened once, its
/// `RouteReader` (layouts from DWARF or the offsets table, its routers' `ServeHTTP` functions)
/// kept per executable, and each server's table read from `/proc/PID/mem`.
pub fn live_table_reader() -> TableReader {
    let mut readers: HashMap<PathBuf, Result<RouteReader, String>> = HashMap::new();
    Box::new(move |pid, server| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("cannot read /proc/{pid}/exe: {e}"))?;
        if readers.len() >= MAX_READERS {
            readers.clear();
        }
        let reader = readers.entry(exe.clone()).or_insert_with(|| {
            GoBinary::open(&exe, &[])
                .map(|binary| RouteReader::new(&binary))
                .map_err(|e| format!("{}: {e}", exe.display()))
        });
        let reader = reader.as_ref().map_err(Clone::clone)?;
        // A traced program's memory is input the agent does not control: whatever a walk
        // through it runs into costs that program its routes, never the agent its life.
        let table =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.read(pid, server)))
                .map_err(|_| {
                    format!("reading the routes of pid {pid} failed (a bug: please report)")
                })?
                .map_err(|e| e.to_string())?;
        Ok(Box::new(table) as Box<dyn ProgramRoutes>)
    })
}

/// Processes, listening addresses and servers remembered at most; each table starts over
/// beyond it (a table is refilled from the next events).
const MAX_ENTRIES: usize = 65_536;

/// What the book did, for the run summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteStats {
    /// Route tables read from programs, and servers whose table could not be read.
    pub tables: u64,
    pub unreadable: u64,
    /// Server and client spans named by each source, and left without a route.
    pub program: u64,
    pub template: u64,
    pub heuristic: u64,
    pub path: u64,
    pub none: u64,
}

impl RouteStats {
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{} route tables read ({} unreadable); routes: {} program, {} template, {} heuristic, {} path, {} none",
            self.tables,
            self.unreadable,
            self.program,
            self.template,
            self.heuristic,
            self.path,
            self.none
        )
    }
}

/// A server of a process, and its routes when they could be read.
struct Server {
    address: u64,
    routes: Option<Box<dyn ProgramRoutes>>,
}

pub struct RouteBook {
    rules: RouteRules,
    reader: Option<TableReader>,
    servers: HashMap<u32, Vec<Server>>,
    /// Which process accepted connections at each local address.
    listeners: HashMap<SocketAddr, u32>,
    /// Processes that served HTTP with no server of theirs known, listed once.
    wanted: Vec<u32>,
    asked: HashSet<u32>,
    pub stats: RouteStats,
}

impl RouteBook {
    /// `reader` reads programs' route tables (None: replays, where the processes are gone).
    #[must_use]
    pub fn new(rules: RouteRules, reader: Option<TableReader>) -> Self {
        Self {
            rules,
            reader,
            servers: HashMap::new(),
            listeners: HashMap::new(),
            wanted: Vec::new(),
            asked: HashSet::new(),
            stats: RouteStats::default(),
        }
    }

    /// Learn servers (a handler's start names its `*http.Server`) and listeners (accepts);
    /// forget processes that exit.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::GoServe(g) if !g.client && g.start && g.server != 0 => {
                self.on_server(g.pid, g.server);
            }
            Event::Conn(c) if c.kind == crate::event::ConnKind::Accept => {
                if self.listeners.len() >= MAX_ENTRIES {
                    self.listeners.clear();
                }
                self.listeners.insert(c.local, c.pid);
            }
            Event::Exit(exit) => {
                self.servers.remove(&exit.pid);
                self.asked.remove(&exit.pid);
                self.listeners.retain(|_, pid| *pid != exit.pid);
            }
            _ => {}
        }
    }

    fn on_server(&mut self, pid: u32, address: u64) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        if self.servers.len() >= MAX_ENTRIES {
            self.servers.clear();
        }
        let servers = self.servers.entry(pid).or_default();
        if servers.iter().any(|s| s.address == address) {
            return;
        }
        let routes = match reader(pid, address) {
            Ok(routes) => {
                self.stats.tables += 1;
                Some(routes)
            }
            Err(why) => {
                self.stats.unreadable += 1;
                eprintln!("wirespan: routes of pid {pid}: {why}; its spans use the route rules");
                None
            }
        };
        servers.push(Server { address, routes });
    }

    /// Name the routes of a batch of spans. Server spans first tell who listens at their
    /// address: a connection accepted before the agent started showed no accept, and a client
    /// span comes out before the server span it caused (its child).
    pub fn assign_all(&mut self, spans: &mut [Span]) {
        for span in spans.iter() {
            if span.kind == SpanKind::Server && matches!(span.payload, Payload::Http(_)) {
                if self.listeners.len() >= MAX_ENTRIES {
                    self.listeners.clear();
                }
                self.listeners.insert(span.local, span.pid);
            }
        }
        for span in spans {
            self.assign(span);
        }
    }

    /// Name an HTTP span's route (other spans pass unchanged).
    pub fn assign(&mut self, span: &mut Span) {
        let Payload::Http(http) = &mut span.payload else {
            return;
        };
        let path = http
            .target
            .split_once('?')
            .map_or(http.target.as_str(), |(p, _)| p);
        let callee = match span.kind {
            SpanKind::Server => Some(span.pid),
            SpanKind::Client => self.listeners.get(&span.remote).copied(),
        };
        let Some(pid) = callee else {
            return;
        };
        let mut route = self.route_of(pid, &http.method, http.host.as_deref(), path);
        // A caller carries only a route its callee registered, or one the user configured: a
        // guess from the path is the server's own to make.
        if span.kind == SpanKind::Client
            && route
                .as_ref()
                .is_some_and(|r| matches!(r.source, RouteSource::Heuristic | RouteSource::Path))
        {
            route = None;
        }
        match route.as_ref().map(|r| r.source) {
            Some(RouteSource::Program) => self.stats.program += 1,
            Some(RouteSource::Template) => self.stats.template += 1,
            Some(RouteSource::Heuristic) => self.stats.heuristic += 1,
            Some(RouteSource::Path) => self.stats.path += 1,
            None => self.stats.none += 1,
        }
        http.route = route;
    }

    fn route_of(
        &mut self,
        pid: u32,
        method: &str,
        host: Option<&str>,
        path: &str,
    ) -> Option<Route> {
        match self.servers.get(&pid) {
            Some(servers) => {
                let program = servers
                    .iter()
                    .filter_map(|s| s.routes.as_ref())
                    .find_map(|routes| routes.route(method, host, path));
                if let Some(template) = program {
                    return Some(Route {
                        template,
                        source: RouteSource::Program,
                    });
                }
            }
            None if self.reader.is_some() => {
                if self.asked.len() >= MAX_ENTRIES {
                    self.asked.clear();
                }
                if self.asked.insert(pid) {
                    self.wanted.push(pid);
                }
            }
            None => {}
        }
        self.rules.route(path)
    }

    /// Processes that served HTTP before any of their servers was known, each listed once:
    /// live runs put a Go program's `ServeHTTP` probe back on for a moment to learn it.
    pub fn take_wanted(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.wanted)
    }
}

#[cfg(test)]
#[path = "route_book_tests.rs"]
mod tests;
