//! Placeholder for the route rules (the `routes` branch replaces this file).

/// Where a span's route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    Program,
    Template,
    Heuristic,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub template: String,
    pub source: RouteSource,
}

#[derive(Debug, Clone, Default)]
pub struct RouteRules;

impl RouteRules {
    #[must_use]
    pub fn route(&self, _path: &str) -> Option<Route> {
        None
    }
}
