//! Reading routes from a fake memory image laid out as Go lays out a server, its mux and gin.

use super::*;

const BASE: u64 = 0x10_0000;

/// Memory that is one growing block at `BASE`; reads outside it fail like unmapped pages.
#[derive(Default)]
pub struct FakeMemory {
    bytes: Vec<u8>,
}

impl FakeMemory {
    pub fn alloc(&mut self, size: usize) -> u64 {
        let at = self.bytes.len().next_multiple_of(8);
        self.bytes.resize(at + size.max(8), 0);
        BASE + at as u64
    }

    pub fn put(&mut self, address: u64, data: &[u8]) {
        let at = usize::try_from(address - BASE).unwrap();
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    pub fn put_u64(&mut self, address: u64, value: u64) {
        self.put(address, &value.to_le_bytes());
    }

    /// A Go string header at `address` pointing at a fresh copy of `s`.
    pub fn put_string(&mut self, address: u64, s: &str) {
        let data = self.alloc(s.len());
        self.put(data, s.as_bytes());
        self.put_u64(address, data);
        self.put_u64(address + 8, s.len() as u64);
    }

    /// A Go slice header at `address` over `count` fresh elements of `size` bytes; returns them.
    pub fn put_slice(&mut self, address: u64, count: usize, size: usize) -> u64 {
        let data = self.alloc(count * size);
        self.put_u64(address, data);
        self.put_u64(address + 8, count as u64);
        self.put_u64(address + 16, count as u64);
        data
    }
}

impl Memory for FakeMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = address
            .checked_sub(BASE)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| self.bytes.get(at..at.checked_add(buf.len())?));
        let data = range.ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        buf.copy_from_slice(data);
        Ok(())
    }
}

const MUX: MuxLayout = MuxLayout {
    server_handler: 16,
    mux_tree: 24,
    node_pattern: 0,
    node_children: 24,
    node_multi_child: 72,
    node_empty_child: 80,
    mapping_slice: 0,
    mapping_map: 24,
    pattern_str: 0,
};
const NODE_SIZE: usize = 88;

const GIN: GinLayout = GinLayout {
    engine_trees: 40,
    tree_method: 0,
    tree_root: 16,
    node_children: 40,
    node_handlers: 64,
    node_full_path: 88,
};
const GIN_NODE_SIZE: usize = 104;

const MUX_SERVE_AT: u64 = 0x40_1000;
const GIN_SERVE_AT: u64 = 0x40_2000;
const OTHER_SERVE_AT: u64 = 0x40_3000;
const DEFAULT_MUX_VAR: u64 = 0x50_0000;

fn reader(with_gin: bool) -> RouteReader {
    RouteReader {
        layouts: RouteLayouts {
            mux: Ok(MUX),
            gin: with_gin.then_some(Ok(GIN)),
        },
        swiss_maps: true,
        serve_http: vec![
            (MUX_SERVE_AT, MUX_SERVE.to_owned()),
            (GIN_SERVE_AT, GIN_SERVE.to_owned()),
            (OTHER_SERVE_AT, "main.logging.ServeHTTP".to_owned()),
        ],
        default_mux: vec![DEFAULT_MUX_VAR, 0x20_0000],
        pie_base: None,
    }
}

/// A server whose handler has the itab whose first method is at `method` (0: a nil handler).
fn server(mem: &mut FakeMemory, method: u64, bias: u64, data: u64) -> u64 {
    let server = mem.alloc(64);
    if method != 0 {
        let itab = mem.alloc(32);
        mem.put_u64(itab + ITAB_FIRST_METHOD, method + bias);
        mem.put_u64(server + 16, itab);
        mem.put_u64(server + 24, data);
    }
    server
}

fn node(mem: &mut FakeMemory, pattern: Option<&str>) -> u64 {
    let node = mem.alloc(NODE_SIZE);
    if let Some(p) = pattern {
        let pat = mem.alloc(64);
        mem.put_string(pat, p);
        mem.put_u64(node, pat);
    }
    node
}

fn add_children(mem: &mut FakeMemory, parent: u64, children: &[(&str, u64)]) {
    let entries = mem.put_slice(parent + 24, children.len(), 24);
    for (i, (key, child)) in (0u64..).zip(children) {
        mem.put_string(entries + i * 24, key);
        mem.put_u64(entries + i * 24 + 16, *child);
    }
}

/// A mux registered with `/items/{id}`, `GET /hello/{name}`, `/files/{p...}` and
/// `example.com/`: root → host → method → segments, as `routingNode.addPattern` builds it.
fn mux(mem: &mut FakeMemory) -> u64 {
    let mux = mem.alloc(24 + NODE_SIZE);
    let root = mux + 24;
    let hostless = node(mem, None);
    mem.put_u64(root + 80, hostless);
    let host = node(mem, None);
    add_children(mem, root, &[("example.com", host)]);
    let host_any = node(mem, None);
    mem.put_u64(host + 80, host_any);
    let slash = node(mem, Some("example.com/"));
    mem.put_u64(host_any + 72, slash);

    let any = node(mem, None);
    mem.put_u64(hostless + 80, any);
    let get = node(mem, None);
    add_children(mem, hostless, &[("GET", get)]);
    let hello = node(mem, None);
    add_children(mem, get, &[("hello", hello)]);
    let name = node(mem, Some("GET /hello/{name}"));
    mem.put_u64(hello + 80, name);
    let items = node(mem, None);
    let files = node(mem, None);
    add_children(mem, any, &[("items", items), ("files", files)]);
    let id = node(mem, Some("/items/{id}"));
    mem.put_u64(items + 80, id);
    let rest = node(mem, Some("/files/{p...}"));
    mem.put_u64(files + 72, rest);
    mux
}

#[test]
fn a_servemux_handler_is_read_from_its_routing_tree() {
    let mut mem = FakeMemory::default();
    let mux = mux(&mut mem);
    let bias = 0x7f00_0000_0000;
    let server = server(&mut mem, MUX_SERVE_AT, bias, mux);
    let table = reader(false).read_from(&mem, bias, server).unwrap();
    assert_eq!((table.len(), table.kind()), (4, RouterKind::ServeMux));
    assert_eq!(table.route("GET", None, "/items/9"), Some("/items/{id}"));
    assert_eq!(table.route("HEAD", None, "/hello/x"), Some("/hello/{name}"));
    assert_eq!(
        table.route("GET", None, "/files/a/b"),
        Some("/files/{p...}")
    );
    assert_eq!(table.route("GET", Some("example.com"), "/x"), Some("/"));
    assert_eq!(table.route("GET", None, "/x"), None);
}

#[test]
fn a_nil_handler_reads_the_default_mux_through_the_candidate_that_reads() {
    let mut mem = FakeMemory::default();
    let mux = mux(&mut mem);
    let server = server(&mut mem, 0, 0, 0);
    // The first candidate is unmapped here; the second holds a pointer to the mux.
    let var = mem.alloc(8);
    mem.put_u64(var, mux);
    let mut reader = reader(false);
    reader.default_mux = vec![DEFAULT_MUX_VAR, var];
    assert_eq!(reader.read_from(&mem, 0, server).unwrap().len(), 4);
    reader.default_mux.clear();
    assert!(matches!(
        reader.read_from(&mem, 0, server),
        Err(RouteTableError::NoDefaultMux)
    ));
}

#[test]
fn other_handlers_are_refused_by_name() {
    let mut mem = FakeMemory::default();
    let server = server(&mut mem, OTHER_SERVE_AT, 0, 0);
    let err = reader(false).read_from(&mem, 0, server).unwrap_err();
    assert_eq!(
        err.to_string(),
        "handler type main.logging is not a known router"
    );
    let server2 = self::server(&mut mem, 0x40_4000, 0, 0);
    assert!(matches!(
        reader(false).read_from(&mem, 0, server2),
        Err(RouteTableError::UnknownHandler(_))
    ));
    // gin's handler in a binary without gin's layout.
    let server3 = self::server(&mut mem, GIN_SERVE_AT, 0, 0);
    assert!(matches!(
        reader(false).read_from(&mem, 0, server3),
        Err(RouteTableError::GinWithoutModule)
    ));
}

#[test]
fn a_middleware_in_front_of_a_router_is_looked_through() {
    let mut mem = FakeMemory::default();
    let mux = mux(&mut mem);
    // `struct{ name string; next http.Handler }`, itself behind another middleware.
    let mux_itab = mem.alloc(32);
    mem.put_u64(mux_itab + ITAB_FIRST_METHOD, MUX_SERVE_AT);
    let inner = mem.alloc(32);
    mem.put_string(inner, "logging");
    mem.put_u64(inner + 16, mux_itab);
    mem.put_u64(inner + 24, mux);
    let inner_itab = mem.alloc(32);
    mem.put_u64(inner_itab + ITAB_FIRST_METHOD, OTHER_SERVE_AT);
    let outer = mem.alloc(24);
    mem.put_u64(outer + 8, inner_itab);
    mem.put_u64(outer + 16, inner);
    let server = server(&mut mem, OTHER_SERVE_AT, 0, outer);
    let table = reader(false).read_from(&mem, 0, server).unwrap();
    assert_eq!(table.route("GET", None, "/items/9"), Some("/items/{id}"));

    // A `HandlerFunc` closure that captured the mux itself: code pointer, then `mux`.
    let closure = mem.alloc(16);
    mem.put_u64(closure, 0x40_5000);
    mem.put_u64(closure + 8, mux);
    let server = self::server(&mut mem, OTHER_SERVE_AT, 0, closure);
    assert_eq!(reader(false).read_from(&mem, 0, server).unwrap().len(), 4);

    // A closure that wraps nothing readable stays refused, by its own name.
    let opaque = mem.alloc(16);
    mem.put_u64(opaque, 0x40_5000);
    let server = self::server(&mut mem, OTHER_SERVE_AT, 0, opaque);
    assert!(matches!(
        reader(false).read_from(&mem, 0, server),
        Err(RouteTableError::UnknownHandler(name)) if name == "main.logging"
    ));
}

#[test]
fn cycles_and_wild_lengths_end_the_walk() {
    let mut mem = FakeMemory::default();
    let mux = mem.alloc(24 + NODE_SIZE);
    let a = node(&mut mem, Some("/a"));
    mem.put_u64(mux + 24 + 80, a);
    mem.put_u64(a + 80, mux + 24); // a cycle back to the root
    let server = server(&mut mem, MUX_SERVE_AT, 0, mux);
    assert_eq!(reader(false).read_from(&mem, 0, server).unwrap().len(), 1);
    let pattern = read_u64(&mem, a, "").unwrap();
    mem.put_u64(pattern + 8, 1 << 40); // the pattern's length
    let err = reader(false).read_from(&mem, 0, server).unwrap_err();
    assert!(matches!(err, RouteTableError::Inconsistent { .. }), "{err}");
    mem.put_u64(pattern + 8, 2);
    mem.put_u64(a + 24 + 8, 1_000_000); // the children's length
    assert!(reader(false).read_from(&mem, 0, server).is_err());
}

/// Words near the top of the address space (a Go `-1`, a tag) are looked at as pointers when a
/// middleware is searched: adding a field offset to them must fail a read, never overflow.
#[test]
fn words_at_the_top_of_the_address_space_are_refused_not_overflowed() {
    let mut mem = FakeMemory::default();
    let outer = mem.alloc(32);
    mem.put_u64(outer, u64::MAX - 3);
    mem.put_u64(outer + 8, u64::MAX);
    mem.put_u64(outer + 16, u64::MAX - 8);
    mem.put_u64(outer + 24, u64::MAX);
    let server = server(&mut mem, OTHER_SERVE_AT, 0, outer);
    assert!(matches!(
        reader(true).read_from(&mem, 0, server),
        Err(RouteTableError::UnknownHandler(_))
    ));
    let server = self::server(&mut mem, MUX_SERVE_AT, 0, u64::MAX - 8);
    assert!(reader(true).read_from(&mem, 0, server).is_err());
    let server = self::server(&mut mem, GIN_SERVE_AT, 0, u64::MAX - 8);
    assert!(reader(true).read_from(&mem, 0, server).is_err());
}

fn gin_node(mem: &mut FakeMemory, full_path: &str, handlers: usize, children: &[u64]) -> u64 {
    let node = mem.alloc(GIN_NODE_SIZE);
    mem.put_string(node + 88, full_path);
    mem.put_slice(node + 64, handlers, 8);
    let slots = mem.put_slice(node + 40, children.len(), 8);
    for (i, child) in (0u64..).zip(children) {
        mem.put_u64(slots + 8 * i, *child);
    }
    node
}

#[test]
fn a_gin_engine_is_read_from_its_method_trees() {
    let mut mem = FakeMemory::default();
    let id = gin_node(&mut mem, "/users/:id", 2, &[]);
    let param = gin_node(&mut mem, "/users/:id", 0, &[id]);
    let users = gin_node(&mut mem, "/users/", 0, &[param]);
    let static_ = gin_node(&mut mem, "/static/*path", 1, &[]);
    let root = gin_node(&mut mem, "/", 1, &[users, static_]);
    let post = gin_node(&mut mem, "/users", 1, &[]);
    let engine = mem.alloc(64);
    let trees = mem.put_slice(engine + 40, 2, 24);
    mem.put_string(trees, "GET");
    mem.put_u64(trees + 16, root);
    mem.put_string(trees + 24, "POST");
    mem.put_u64(trees + 40, post);
    let server = server(&mut mem, GIN_SERVE_AT, 0, engine);
    let table = reader(true).read_from(&mem, 0, server).unwrap();
    let routes: Vec<_> = table.routes().collect();
    assert_eq!(
        routes,
        [
            (Some("GET"), None, "/"),
            (Some("GET"), None, "/static/*path"),
            (Some("GET"), None, "/users/:id"),
            (Some("POST"), None, "/users"),
        ]
    );
    assert_eq!(table.route("GET", None, "/users/3"), Some("/users/:id"));
    assert_eq!(table.route("POST", None, "/users"), Some("/users"));
    assert_eq!(
        table.route("GET", None, "/static/x/y"),
        Some("/static/*path")
    );
}
