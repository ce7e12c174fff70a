//! `route`: the low-cardinality route (`http.route`) of a request path when the traced program
//! did not tell us one. Real routes read from Go programs (ServeMux patterns, gin's full path)
//! always win; this module is what comes after them: route templates the user configured
//! (first match wins), then the `unmatched` policy — by default a heuristic that turns the
//! path segments that look like ids into `{id}` (`/order/17/items/0a1b2c3d4e5f` →
//! `/order/{id}/items/{id}`), marked `wirespan.route.source=heuristic` so a guess is never
//! taken for the program's own route.
//!
//! Pure and allocation-light: the span stage calls it once per span, on paths of any length
//! (the heuristic's work and output are bounded, see [`MAX_SEGMENTS`] and
//! [`MAX_SEGMENT_LEN`]).

use std::str::FromStr;

/// The span attribute that says where a route came from.
pub const SOURCE_ATTRIBUTE: &str = "wirespan.route.source";

/// Path segments the heuristic handles; the rest of a longer path becomes one `{rest}`
/// segment (`/a/b/.../{rest}`), so a route's size stays bounded whatever the path.
pub const MAX_SEGMENTS: usize = 32;

/// A segment longer than this (in bytes) is an id whatever it holds: no route word is that
/// long, and it bounds each segment of a heuristic route.
pub const MAX_SEGMENT_LEN: usize = 64;

/// Where a span's route came from; exported as `wirespan.route.source` (every source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// Read from the traced program: Go ServeMux patterns, gin's full path.
    Program,
    /// A configured template (`--routes pattern=...`).
    Template,
    /// The path with its id-like segments replaced by `{id}` ([`heuristic`]).
    Heuristic,
    /// The raw path, by the user's choice (`--routes unmatched=path`).
    Path,
}

impl RouteSource {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Program => "program",
            Self::Template => "template",
            Self::Heuristic => "heuristic",
            Self::Path => "path",
        }
    }
}

/// A span's route and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route as exported in `http.route` and the span name: a template as the user wrote
    /// it, a heuristic route, or the path.
    pub template: String,
    pub source: RouteSource,
}

/// What a path no configured template matches gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// A heuristic route ([`heuristic`]), marked `wirespan.route.source=heuristic`.
    #[default]
    Heuristic,
    /// The path itself as the route (high-cardinality when paths carry ids).
    Path,
    /// No route: the span is named `{method}` alone and has no `http.route`.
    None,
}

impl FromStr for Unmatched {
    type Err = RouteRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "heuristic" => Ok(Self::Heuristic),
            "path" => Ok(Self::Path),
            "none" => Ok(Self::None),
            _ => Err(RouteRuleError::BadUnmatched(s.to_owned())),
        }
    }
}

/// Why a route template or option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRuleError {
    #[error("route template `{0}` must start with `/`")]
    NoLeadingSlash(String),
    #[error(
        "route template `{template}`: `{segment}` has unbalanced or misplaced braces (a parameter \
         is a whole segment: `{{name}}`, or `{{name...}}` for the rest of the path)"
    )]
    Braces { template: String, segment: String },
    #[error(
        "route template `{template}`: the parameter name in `{segment}` must be non-empty \
         letters, digits or `_`"
    )]
    BadName { template: String, segment: String },
    #[error(
        "route template `{template}`: `{segment}` matches the rest of the path, so it must be the \
         last segment"
    )]
    RestNotLast { template: String, segment: String },
    #[error(
        "route template `{template}`: `*` only as a whole last segment (`*` or `*name`), not in \
         `{segment}`"
    )]
    Star { template: String, segment: String },
    #[error("unmatched={0}: expected unmatched=heuristic, unmatched=path or unmatched=none")]
    BadUnmatched(String),
    #[error("route option `{0}`: expected unmatched=heuristic|path|none or pattern=TEMPLATE")]
    UnknownOption(String),
}

/// One `--routes KEY=VALUE` (or `WIRESPAN_ROUTES`) setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOption {
    /// `unmatched=heuristic|path|none`
    Unmatched(Unmatched),
    /// `pattern=TEMPLATE`, checked when parsed.
    Pattern(String),
}

impl FromStr for RouteOption {
    type Err = RouteRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once('=') {
            Some(("unmatched", mode)) => Ok(Self::Unmatched(mode.trim().parse()?)),
            Some(("pattern", template)) => {
                let template = template.trim();
                Template::parse(template)?;
                Ok(Self::Pattern(template.to_owned()))
            }
            _ => Err(RouteRuleError::UnknownOption(s.to_owned())),
        }
    }
}

/// The configured route rules: templates, then the unmatched policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRules {
    templates: Vec<Template>,
    unmatched: Unmatched,
}

impl RouteRules {
    pub fn new(templates: &[String], unmatched: Unmatched) -> Result<Self, RouteRuleError> {
        let templates = templates
            .iter()
            .map(|t| Template::parse(t))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            templates,
            unmatched,
        })
    }

    /// The rules of `--routes` settings in order: patterns in the order given; of several
    /// `unmatched=`, the last wins; none means the default (heuristic).
    pub fn from_options(options: &[RouteOption]) -> Result<Self, RouteRuleError> {
        let mut templates = Vec::new();
        let mut unmatched = Unmatched::default();
        for option in options {
            match option {
                RouteOption::Unmatched(u) => unmatched = *u,
                RouteOption::Pattern(t) => templates.push(t.clone()),
            }
        }
        Self::new(&templates, unmatched)
    }

    #[must_use]
    pub fn unmatched(&self) -> Unmatched {
        self.unmatched
    }

    /// Templates first (first match wins, source Template), then the unmatched policy.
    /// `path` has no query string (one is cut off all the same: with `unmatched=path` it would
    /// leak tokens into the route).
    #[must_use]
    pub fn route(&self, path: &str) -> Option<Route> {
        let path = path.split_once(['?', '#']).map_or(path, |(p, _)| p);
        if let Some(t) = self.templates.iter().find(|t| t.matches(path)) {
            return Some(Route {
                template: t.text.clone(),
                source: RouteSource::Template,
            });
        }
        match self.unmatched {
            Unmatched::Heuristic => Some(Route {
                template: heuristic(path),
                source: RouteSource::Heuristic,
            }),
            Unmatched::Path => Some(Route {
                template: path.to_owned(),
                source: RouteSource::Path,
            }),
            Unmatched::None => None,
        }
    }
}

/// A parsed route template.
///
/// Segments: a literal matches itself exactly (case-sensitive; a trailing slash is a last,
/// empty segment, so `/users/` and `/users` differ); `{name}` or `:name` matches one
/// non-empty segment; a last `{name...}`, `*` or `*name` matches the rest of the path, any
/// number of segments including none (`/files/*` matches `/files`, `/files/` and `/files/a/b`).
/// A `:` or `*` inside a literal is literal (`/v1/models/m:predict`) but a `*` in one is
/// refused, as it looks like a glob that would never match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    /// As the user wrote it: the route it yields.
    text: String,
    segments: Vec<Segment>,
    /// Ends in a rest wildcard.
    rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl Template {
    fn parse(text: &str) -> Result<Self, RouteRuleError> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(RouteRuleError::NoLeadingSlash(text.to_owned()));
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            let err = |make: fn(String, String) -> RouteRuleError| {
                Err(make(text.to_owned(), (*part).to_owned()))
            };
            let name = if let Some(inner) = part.strip_prefix('{') {
                let Some(inner) = inner.strip_suffix('}') else {
                    return err(|template, segment| RouteRuleError::Braces { template, segment });
                };
                if let Some(name) = inner.strip_suffix("...") {
                    rest = true;
                    name
                } else {
                    inner
                }
            } else if let Some(name) = part.strip_prefix('*') {
                rest = true;
                name
            } else if let Some(name) = part.strip_prefix(':') {
                name
            } else {
                if part.contains(['{', '}']) {
                    return err(|template, segment| RouteRuleError::Braces { template, segment });
                }
                if part.contains('*') {
                    return err(|template, segment| RouteRuleError::Star { template, segment });
                }
                segments.push(Segment::Literal((*part).to_owned()));
                continue;
            };
            // `*` alone is the one nameless form.
            let nameless_ok = *part == "*";
            if !(nameless_ok || is_name(name)) {
                if name.contains(['{', '}']) {
                    return err(|template, segment| RouteRuleError::Braces { template, segment });
                }
                if part.starts_with('*') {
                    return err(|template, segment| RouteRuleError::Star { template, segment });
                }
                return err(|template, segment| RouteRuleError::BadName { template, segment });
            }
            if rest {
                if i + 1 != parts.len() {
                    return err(|template, segment| RouteRuleError::RestNotLast {
                        template,
                        segment,
                    });
                }
            } else {
                segments.push(Segment::Param);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
            rest,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = body.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Param, Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The heuristic route of a path: each segment that looks like an id becomes `{id}`;
/// `/order/17/items/0a1b2c3d4e5f` → `/order/{id}/items/{id}`.
///
/// A segment is an id when it is (see `is_id`): all digits; a UUID (any case, with or
/// without dashes); 8 or more hex digits with at least one decimal digit; a token of 16 or
/// more base64/base64url characters (`A-Z a-z 0-9 - _ + =`) with both letters and digits
/// (slugs that carry a number, like `post-about-rust-2024`, count too: they are per-item);
/// 8 or more letters and digits with at least 3 digits in two or more runs, or at least 4
/// digits (`a8f3k29x`, `user1234`, but not `sha256sum`); or longer than [`MAX_SEGMENT_LEN`].
/// Words, versions and file names stay: `api`, `v1`, `v2beta`, `v1alpha2`, `healthz`,
/// `index.html`, `deadbeef` (hex, but no digit). Percent-encoded segments are text. Empty
/// segments (`//`, a trailing slash) stay as they are. Past [`MAX_SEGMENTS`] segments, the
/// rest of the path is one `{rest}` segment.
#[must_use]
pub fn heuristic(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(256));
    // Segment 0 is what precedes the first `/` (empty for a path).
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if i > MAX_SEGMENTS {
            out.push_str("{rest}");
            break;
        }
        out.push_str(if is_id(segment) { "{id}" } else { segment });
    }
    out
}

fn is_id(segment: &str) -> bool {
    let b = segment.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.len() > MAX_SEGMENT_LEN || b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_version(b) {
        return false;
    }
    is_uuid(b) || is_long_hex(b) || is_token(b) || is_mixed(b)
}

/// `v1`, `V2`, `v2beta`, `v1beta1`, `v1alpha2`: `v`, 1 to 3 digits, then optionally lowercase
/// letters and digits.
fn is_version(b: &[u8]) -> bool {
    let Some((&(b'v' | b'V'), rest)) = b.split_first() else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) {
        return false;
    }
    let rest = &rest[digits..];
    let letters = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
    rest[letters..].iter().all(u8::is_ascii_digit) && rest.len() - letters <= 3
}

/// `123e4567-e89b-12d3-a456-426614174000`, any case (dashless ones are long hex).
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_long_hex(b: &[u8]) -> bool {
    b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit)
}

fn is_token(b: &[u8]) -> bool {
    b.len() >= 16
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'='))
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter().any(u8::is_ascii_digit)
}

fn is_mixed(b: &[u8]) -> bool {
    if b.len() < 8 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let runs = b
        .iter()
        .enumerate()
        .filter(|&(i, c)| c.is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
        .count();
    digits < b.len() && (digits >= 4 || (digits >= 3 && runs >= 2))
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
