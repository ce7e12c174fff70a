//! Where the routers' fields are (see `routes`): net/http's `Server.Handler` and `ServeMux` route
//! tree, and gin's route trees. From the binary's DWARF, else from the committed offsets table
//! (net/http by Go version, gin by gin version), like the probes' own layout (`layout`).

use serde::{Deserialize, Serialize};

use super::{GoBinary, dwarf::Facts, offsets_table};

/// The gin module, whose version picks gin's layout from the table.
pub const GIN_MODULE: &str = "github.com/gin-gonic/gin";

const ROUTING_MAPPING: &str = "net/http.mapping[string,*net/http.routingNode]";

/// net/http members read: `Server.Handler`, the mux's embedded root `routingNode`, each node's
/// leaf pattern and children, the pattern's registered string.
const MUX_MEMBERS: [(&str, &str); 9] = [
    ("net/http.Server", "Handler"),
    ("net/http.ServeMux", "tree"),
    ("net/http.routingNode", "pattern"),
    ("net/http.routingNode", "children"),
    ("net/http.routingNode", "multiChild"),
    ("net/http.routingNode", "emptyChild"),
    (ROUTING_MAPPING, "s"),
    (ROUTING_MAPPING, "m"),
    ("net/http.pattern", "str"),
];

const GIN_MEMBERS: [(&str, &str); 6] = [
    ("github.com/gin-gonic/gin.Engine", "trees"),
    ("github.com/gin-gonic/gin.methodTree", "method"),
    ("github.com/gin-gonic/gin.methodTree", "root"),
    ("github.com/gin-gonic/gin.node", "children"),
    ("github.com/gin-gonic/gin.node", "handlers"),
    ("github.com/gin-gonic/gin.node", "fullPath"),
];

/// A field this version does not have.
pub const ABSENT: u32 = u32::MAX;

/// Offsets of the net/http fields the route reader follows (Go 1.22+, where `ServeMux` keeps
/// its patterns in a routing tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuxLayout {
    pub server_handler: u32,
    pub mux_tree: u32,
    pub node_pattern: u32,
    pub node_children: u32,
    /// [`ABSENT`] in Go 1.22, which keeps the multi-wildcard child under the key `*`.
    pub node_multi_child: u32,
    pub node_empty_child: u32,
    /// `mapping.s` (a slice of key/value entries) and `mapping.m` (a Go map, past 8 children).
    pub mapping_slice: u32,
    pub mapping_map: u32,
    pub pattern_str: u32,
}

/// Offsets of gin's route tree fields. A `methodTree` is `{method string; root *node}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GinLayout {
    pub engine_trees: u32,
    pub tree_method: u32,
    pub tree_root: u32,
    pub node_children: u32,
    pub node_handlers: u32,
    pub node_full_path: u32,
}

/// Why a layout cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteLayoutError {
    /// Before Go 1.22 `ServeMux` kept a map of prefixes (not read).
    #[error("{0} predates Go 1.22 routing patterns (not read)")]
    OldGo(String),
    #[error("no {strukt}.{member} in DWARF ({what})")]
    NoMember {
        strukt: &'static str,
        member: &'static str,
        what: &'static str,
    },
    #[error("{dwarf}, and no offsets table entry with net/http routes near {version}")]
    NoMuxTableEntry { dwarf: String, version: String },
    #[error("{dwarf}, and no offsets table entry near gin {version}")]
    NoGinTableEntry { dwarf: String, version: String },
}

/// What `routes` needs of the layouts: net/http's (or why not), and gin's when the program
/// uses gin (or why not).
#[derive(Debug, Clone)]
pub struct RouteLayouts {
    pub mux: Result<MuxLayout, RouteLayoutError>,
    pub gin: Option<Result<GinLayout, RouteLayoutError>>,
}

/// The route layouts of a binary: DWARF first, else the committed table.
#[must_use]
pub fn route_layouts(binary: &GoBinary) -> RouteLayouts {
    let go_version = &binary.build_info.go_version;
    let gin_version = binary.build_info.module_version(GIN_MODULE);
    let (mux, gin) = match dwarf_route_layouts(binary) {
        Ok((mux, gin)) => (
            mux.map_err(|e| e.to_string()),
            gin.map(|g| g.map_err(|e| e.to_string())),
        ),
        Err(dwarf) => (
            Err(dwarf.to_string()),
            gin_version.map(|_| Err(dwarf.to_string())),
        ),
    };
    let table = offsets_table::committed;
    let old_go = super::buildinfo::go_semver(go_version).is_some_and(|v| v < (1, 22, 0));
    let mux = if old_go {
        Err(RouteLayoutError::OldGo(go_version.clone()))
    } else {
        mux.or_else(|dwarf| {
            offsets_table::lookup(&table().go, go_version)
                .and_then(|(entry, _)| entry.mux)
                .ok_or_else(|| RouteLayoutError::NoMuxTableEntry {
                    dwarf,
                    version: go_version.clone(),
                })
        })
    };
    let gin = gin.map(|gin| {
        gin.or_else(|dwarf| {
            let version = gin_version.unwrap_or_default();
            offsets_table::lookup_gin(&table().gin, version)
                .map(|(layout, _)| *layout)
                .ok_or_else(|| RouteLayoutError::NoGinTableEntry {
                    dwarf,
                    version: version.to_owned(),
                })
        })
    });
    RouteLayouts { mux, gin }
}

type Found = (
    Result<MuxLayout, RouteLayoutError>,
    Option<Result<GinLayout, RouteLayoutError>>,
);

/// The route layouts from DWARF; `Err` when the binary has none (a member missing from present
/// DWARF is an error of that part only).
pub fn dwarf_route_layouts(binary: &GoBinary) -> Result<Found, super::dwarf::DwarfError> {
    let uses_gin = binary.build_info.module_version(GIN_MODULE).is_some();
    let mut members = MUX_MEMBERS.to_vec();
    if uses_gin {
        members.extend(GIN_MEMBERS);
    }
    let facts = binary.inspect(&members, &[])?;
    Ok((mux_from(&facts), uses_gin.then(|| gin_from(&facts))))
}

fn member(
    facts: &Facts,
    (strukt, member): (&'static str, &'static str),
    what: &'static str,
) -> Result<u32, RouteLayoutError> {
    facts
        .members
        .get(&(strukt.to_owned(), member.to_owned()))
        .and_then(|m| u32::try_from(m.offset).ok())
        .ok_or(RouteLayoutError::NoMember {
            strukt,
            member,
            what,
        })
}

fn mux_from(facts: &Facts) -> Result<MuxLayout, RouteLayoutError> {
    const WHAT: &str = "net/http before Go 1.22, or no ServeMux linked in";
    let [
        handler,
        tree,
        pattern,
        children,
        multi,
        empty,
        slice,
        map,
        string,
    ] = MUX_MEMBERS.map(|m| member(facts, m, WHAT));
    Ok(MuxLayout {
        server_handler: handler?,
        mux_tree: tree?,
        node_pattern: pattern?,
        node_children: children?,
        node_multi_child: multi.unwrap_or(ABSENT),
        node_empty_child: empty?,
        mapping_slice: slice?,
        mapping_map: map?,
        pattern_str: string?,
    })
}

fn gin_from(facts: &Facts) -> Result<GinLayout, RouteLayoutError> {
    const WHAT: &str = "a gin whose route trees wirespan does not know";
    let [trees, method, root, children, handlers, full_path] =
        GIN_MEMBERS.map(|m| member(facts, m, WHAT));
    Ok(GinLayout {
        engine_trees: trees?,
        tree_method: method?,
        tree_root: root?,
        node_children: children?,
        node_handlers: handlers?,
        node_full_path: full_path?,
    })
}
