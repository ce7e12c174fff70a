//! Which registered route serves a request, the way the router itself decides (pure; the
//! patterns come from the program's memory, see `routes`).
//!
//! - net/http `ServeMux` (Go 1.22+ patterns, `[METHOD ][HOST]/PATH`): patterns naming the
//!   request's host are tried before hostless ones; within those, the request's method, then GET
//!   for a HEAD, then methodless patterns. Among the paths of one such group, Go's routing tree
//!   tries a literal segment, then a `{wildcard}`, then the one `{rest...}` (or trailing-slash)
//!   pattern at each position, backtracking: the first match of that depth-first walk is the
//!   match whose per-segment kinds are lexicographically least, which is what is computed here.
//! - gin (httprouter's tree): per method; static before `:param` before `*catchAll`, with
//!   backtracking since gin 1.8: the same least-kinds rule over gin's segments.

/// Which router the patterns came from: it decides how they are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    /// net/http's `ServeMux` (Go 1.22+ patterns).
    ServeMux,
    /// gin's `Engine` route trees.
    Gin,
}

/// One segment of a pattern, by kind; the order of the variants is the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    /// A literal segment (ServeMux's `{$}` is the literal "/" after the last slash).
    Literal(String),
    /// One non-empty segment starting with this prefix (`{id}`, gin's `:id` or `user_:name`).
    Single(String),
    /// The rest of the path (`{path...}`, a trailing slash, gin's `*path`).
    Rest,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Self::Literal(_) => 0,
            Self::Single(_) => 1,
            Self::Rest => 2,
        }
    }
}

/// A registered route, parsed for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    method: Option<String>,
    host: Option<String>,
    /// The route as a span shows it: the path part of a ServeMux pattern, gin's full path.
    template: String,
    segments: Vec<Segment>,
}

/// The routes of one server's handler, and the router they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    kind: RouterKind,
    routes: Vec<Route>,
    /// Patterns that did not parse (memory changing under the read, or a syntax not known).
    skipped: usize,
}

/// Paths with more segments than this match nothing (bounds the work per request).
const MAX_SEGMENTS: usize = 128;

impl RouteTable {
    /// A table from ServeMux patterns as registered (`GET example.com/items/{id}`).
    #[must_use]
    pub fn from_mux_patterns<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut table = Self {
            kind: RouterKind::ServeMux,
            routes: Vec::new(),
            skipped: 0,
        };
        for pattern in patterns {
            match parse_mux_pattern(pattern.as_ref()) {
                Some(route) => table.routes.push(route),
                None => table.skipped += 1,
            }
        }
        table
    }

    /// A table from gin's (method, full path) pairs (`GET`, `/users/:id`).
    #[must_use]
    pub fn from_gin_routes<M: AsRef<str>, P: AsRef<str>>(routes: &[(M, P)]) -> Self {
        let mut table = Self {
            kind: RouterKind::Gin,
            routes: Vec::new(),
            skipped: 0,
        };
        for (method, path) in routes {
            match parse_gin_path(path.as_ref()) {
                Some(segments) => table.routes.push(Route {
                    method: Some(method.as_ref().to_owned()),
                    host: None,
                    template: path.as_ref().to_owned(),
                    segments,
                }),
                None => table.skipped += 1,
            }
        }
        table
    }

    #[must_use]
    pub fn kind(&self) -> RouterKind {
        self.kind
    }

    /// The number of routes (patterns) read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes that were read but did not parse.
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Every route as the router has it: (method, host, template).
    pub fn routes(&self) -> impl Iterator<Item = (Option<&str>, Option<&str>, &str)> {
        self.routes
            .iter()
            .map(|r| (r.method.as_deref(), r.host.as_deref(), r.template.as_str()))
    }

    /// The registered route template that serves this request, if any: `/items/{id}` (the
    /// ServeMux pattern `GET /items/{id}` without its method and host) or `/users/:id` (gin's
    /// full path). `host` is the request's `Host` (a port is ignored); a query is ignored.
    #[must_use]
    pub fn route(&self, method: &str, host: Option<&str>, path: &str) -> Option<&str> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if !path.starts_with('/') {
            return None;
        }
        match self.kind {
            RouterKind::ServeMux => self.route_mux(method, host, path),
            RouterKind::Gin => {
                let segments = gin_request_segments(path)?;
                self.best(&segments, |r| r.method.as_deref() == Some(method))
            }
        }
    }

    fn route_mux(&self, method: &str, host: Option<&str>, path: &str) -> Option<&str> {
        let segments = mux_request_segments(path)?;
        let host = host.map(strip_port).filter(|h| !h.is_empty());
        let hosts = host.map(Some).into_iter().chain([None]);
        for host in hosts {
            let on_host = |r: &Route| r.host.as_deref() == host;
            let head_as_get = (method == "HEAD").then_some(Some("GET"));
            let methods = [Some(method)].into_iter().chain(head_as_get).chain([None]);
            for wanted in methods {
                if let Some(found) =
                    self.best(&segments, |r| on_host(r) && r.method.as_deref() == wanted)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The matching route among those `eligible` whose segment kinds are least.
    fn best(&self, segments: &[&str], eligible: impl Fn(&Route) -> bool) -> Option<&str> {
        self.routes
            .iter()
            .filter(|r| eligible(r) && matches(&r.segments, segments))
            .min_by(|a, b| {
                let ranks = |r: &Route| r.segments.iter().map(Segment::rank).collect::<Vec<_>>();
                ranks(a).cmp(&ranks(b))
            })
            .map(|r| r.template.as_str())
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// Whether a route's segments match a request's.
fn matches(route: &[Segment], request: &[&str]) -> bool {
    let mut at = 0;
    for segment in route {
        match segment {
            Segment::Rest => return at < request.len(),
            Segment::Literal(literal) => {
                if request.get(at) != Some(&literal.as_str()) {
                    return false;
                }
            }
            Segment::Single(prefix) => match request.get(at) {
                // ServeMux's "/" stands for a trailing slash: no wildcard matches it.
                Some(&seg)
                    if seg != "/" && seg.len() > prefix.len() && seg.starts_with(&**prefix) => {}
                _ => return false,
            },
        }
        at += 1;
    }
    at == request.len()
}

/// A request path as ServeMux walks it: each segment after a slash, and a trailing slash as the
/// segment "/" (so `/a/` is `a`, `/` and `/` alone is `/`). Escapes are left as sent.
fn mux_request_segments(path: &str) -> Option<Vec<&str>> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if rest == "/" {
            segments.push("/");
            break;
        }
        let tail = &rest[1..];
        let end = tail.find('/').unwrap_or(tail.len());
        segments.push(&tail[..end]);
        rest = &tail[end..];
        if segments.len() > MAX_SEGMENTS {
            return None;
        }
    }
    Some(segments)
}

/// A request path as gin's tree walks it: the pieces between slashes (`/a/` is `a` and ``).
fn gin_request_segments(path: &str) -> Option<Vec<&str>> {
    let segments: Vec<&str> = path[1..].split('/').take(MAX_SEGMENTS + 1).collect();
    (segments.len() <= MAX_SEGMENTS).then_some(segments)
}

/// A ServeMux pattern (`[METHOD ][HOST]/[PATH]`), as Go's `parsePattern` reads it; None when Go
/// would have refused it.
fn parse_mux_pattern(pattern: &str) -> Option<Route> {
    let (method, rest) = match pattern.find([' ', '\t']) {
        Some(i) => (
            Some(&pattern[..i]),
            pattern[i + 1..].trim_start_matches([' ', '\t']),
        ),
        None => (None, pattern),
    };
    let slash = rest.find('/')?;
    let (host, path) = rest.split_at(slash);
    let mut segments = Vec::new();
    let mut tail = path;
    while !tail.is_empty() {
        tail = &tail[1..];
        if tail.is_empty() {
            segments.push(Segment::Rest);
            break;
        }
        let end = tail.find('/').unwrap_or(tail.len());
        let segment = &tail[..end];
        tail = &tail[end..];
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None if segment.contains('{') => return None,
            None => segments.push(Segment::Literal(segment.to_owned())),
            Some("$") if tail.is_empty() => segments.push(Segment::Literal("/".to_owned())),
            Some(name) if name.ends_with("...") && tail.is_empty() => segments.push(Segment::Rest),
            Some(name) if !name.is_empty() && !name.contains(['$', '.']) => {
                segments.push(Segment::Single(String::new()));
            }
            Some(_) => return None,
        }
    }
    Some(Route {
        method: method.filter(|m| !m.is_empty()).map(str::to_owned),
        host: (!host.is_empty()).then(|| host.to_owned()),
        template: path.to_owned(),
        segments,
    })
}

/// A gin full path (`/users/:id`, `/static/*path`, `/user_:name`).
fn parse_gin_path(path: &str) -> Option<Vec<Segment>> {
    let pieces = gin_request_segments(path.strip_prefix('/').map(|_| path)?)?;
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            if let Some(at) = piece.find('*') {
                // A catch-all follows a slash and ends the path.
                (at == 0 && i == last).then_some(Segment::Rest)
            } else if let Some(at) = piece.find(':') {
                Some(Segment::Single(piece[..at].to_owned()))
            } else {
                Some(Segment::Literal((*piece).to_owned()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mux(patterns: &[&str]) -> RouteTable {
        let table = RouteTable::from_mux_patterns(patterns);
        assert_eq!(table.skipped(), 0, "{patterns:?}");
        table
    }

    #[test]
    fn mux_wildcards_rest_and_exact_match() {
        let t = mux(&[
            "/items/{id}",
            "/files/{path...}",
            "GET /hello/{name}",
            "/{$}",
        ]);
        assert_eq!(t.route("GET", None, "/items/17"), Some("/items/{id}"));
        assert_eq!(
            t.route("DELETE", None, "/items/17?x=1"),
            Some("/items/{id}")
        );
        assert_eq!(t.route("GET", None, "/items/17/more"), None);
        assert_eq!(
            t.route("GET", None, "/items/"),
            None,
            "a wildcard is not empty"
        );
        assert_eq!(
            t.route("GET", None, "/files/a/b/c.txt"),
            Some("/files/{path...}")
        );
        assert_eq!(t.route("GET", None, "/files/"), Some("/files/{path...}"));
        assert_eq!(t.route("GET", None, "/files"), None);
        assert_eq!(t.route("GET", None, "/hello/ann"), Some("/hello/{name}"));
        assert_eq!(t.route("HEAD", None, "/hello/ann"), Some("/hello/{name}"));
        assert_eq!(t.route("POST", None, "/hello/ann"), None);
        assert_eq!(t.route("GET", None, "/"), Some("/{$}"));
        assert_eq!(t.route("GET", None, "/other"), None);
        assert_eq!(t.route("GET", None, "items/1"), None);
    }

    #[test]
    fn mux_literal_beats_wildcard_beats_rest_with_backtracking() {
        let t = mux(&["/a/{x}/c", "/a/b/d", "/a/", "/a/{x}", "/a/b/{y...}"]);
        assert_eq!(t.route("GET", None, "/a/b/d"), Some("/a/b/d"));
        // The literal `b` subtree has no `/a/b/c`: back to the wildcard.
        assert_eq!(t.route("GET", None, "/a/b/c"), Some("/a/b/{y...}"));
        assert_eq!(t.route("GET", None, "/a/z/c"), Some("/a/{x}/c"));
        assert_eq!(t.route("GET", None, "/a/z"), Some("/a/{x}"));
        assert_eq!(t.route("GET", None, "/a/z/q/r"), Some("/a/"));
        assert_eq!(
            t.route("GET", None, "/a/"),
            Some("/a/"),
            "no wildcard matches a trailing slash"
        );
        let t = mux(&["/", "/static/", "/static/{$}"]);
        assert_eq!(t.route("GET", None, "/static/"), Some("/static/{$}"));
        assert_eq!(t.route("GET", None, "/static/x"), Some("/static/"));
        assert_eq!(t.route("GET", None, "/anything/else"), Some("/"));
    }

    #[test]
    fn mux_method_then_get_for_head_then_methodless() {
        let t = mux(&["GET /r/{id}", "POST /r/{id}", "/r/{id}", "HEAD /h", "/h"]);
        assert_eq!(t.route("POST", None, "/r/1"), Some("/r/{id}"));
        assert_eq!(t.routes().count(), 5);
        // Which pattern won shows only through the method; the template is the same path.
        let t = mux(&["GET /m/{id}", "/m/special"]);
        assert_eq!(
            t.route("GET", None, "/m/special"),
            Some("/m/{id}"),
            "method first"
        );
        assert_eq!(t.route("PUT", None, "/m/special"), Some("/m/special"));
        assert_eq!(t.route("PUT", None, "/m/1"), None);
        let t = mux(&["GET /g/{x...}", "/g/lit"]);
        assert_eq!(
            t.route("HEAD", None, "/g/lit"),
            Some("/g/{x...}"),
            "GET serves HEAD"
        );
    }

    #[test]
    fn mux_host_patterns_first_then_hostless() {
        let t = mux(&[
            "example.com/static/",
            "/static/{f}",
            "GET api.example.com/v1/{id}",
        ]);
        assert_eq!(
            t.route("GET", Some("example.com:8080"), "/static/a"),
            Some("/static/")
        );
        assert_eq!(
            t.route("GET", Some("other"), "/static/a"),
            Some("/static/{f}")
        );
        assert_eq!(t.route("GET", None, "/static/a/b"), None);
        assert_eq!(
            t.route("GET", Some("example.com"), "/static/a/b"),
            Some("/static/")
        );
        assert_eq!(
            t.route("GET", Some("api.example.com"), "/v1/7"),
            Some("/v1/{id}")
        );
        assert_eq!(
            t.route("GET", Some("[::1]:80"), "/static/x"),
            Some("/static/{f}")
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }

    #[test]
    fn mux_patterns_go_refuses_are_skipped() {
        let t = RouteTable::from_mux_patterns(&["nohost", "/a/{b", "/{x...}/y", "/{}", "/ok"]);
        assert_eq!((t.len(), t.skipped()), (1, 4));
    }

    #[test]
    fn gin_static_beats_param_beats_catch_all_per_method() {
        let t = RouteTable::from_gin_routes(&[
            ("GET", "/users/:id"),
            ("GET", "/users/new"),
            ("GET", "/users/:id/cart"),
            ("POST", "/users"),
            ("GET", "/static/*path"),
            ("GET", "/"),
            ("GET", "/u/user_:name"),
        ]);
        assert_eq!((t.len(), t.skipped(), t.kind()), (7, 0, RouterKind::Gin));
        assert_eq!(t.route("GET", None, "/users/42"), Some("/users/:id"));
        assert_eq!(t.route("GET", None, "/users/new"), Some("/users/new"));
        assert_eq!(
            t.route("GET", None, "/users/42/cart"),
            Some("/users/:id/cart")
        );
        assert_eq!(t.route("GET", None, "/users/"), None);
        assert_eq!(t.route("POST", None, "/users"), Some("/users"));
        assert_eq!(
            t.route("HEAD", None, "/users/1"),
            None,
            "gin serves HEAD only if registered"
        );
        assert_eq!(t.route("GET", None, "/static/"), Some("/static/*path"));
        assert_eq!(
            t.route("GET", None, "/static/css/a.css"),
            Some("/static/*path")
        );
        assert_eq!(t.route("GET", None, "/static"), None);
        assert_eq!(t.route("GET", None, "/"), Some("/"));
        assert_eq!(t.route("GET", None, "/u/user_ann"), Some("/u/user_:name"));
        assert_eq!(t.route("GET", None, "/u/user_"), None);
        assert!(RouteTable::from_gin_routes(&[("GET", "/a/*x/b")]).is_empty());
    }

    #[test]
    fn very_long_paths_match_nothing() {
        let t = mux(&["/{p...}"]);
        assert_eq!(t.route("GET", None, &"/a".repeat(10_000)), None);
        assert_eq!(t.route("GET", None, "/a/b"), Some("/{p...}"));
    }
}
