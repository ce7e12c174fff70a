//! Conformance of attribute keys with the OpenTelemetry semantic conventions, as the pinned
//! Python package `opentelemetry-semantic-conventions` defines them: every key wirespan emits is
//! defined there and not deprecated, apart from our own `wirespan.` namespace.
//!
//! The keys are read from the package itself (tests/support/semconv_keys.py parses its modules),
//! never from a copied list, so moving the pin is the whole of an upgrade. The package is
//! installed once per version with `pip install --target` into wirespan's cache, outside the
//! clone, and read once per test process. Where it cannot be installed or read the check cannot
//! run: a failure under `CI=true`, a loud skip elsewhere (as privileged tests do).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use wirespan::testing::cannot_run;

/// The `opentelemetry-semantic-conventions` release the keys are checked against (0.66b1 and
/// 0.66b2 differ from it only in their version string).
pub const SEMCONV_PY_VERSION: &str = "0.66b0";

/// Our own attributes' namespace (the conventions reserve a vendor prefix for such keys).
pub const VENDOR_PREFIX: &str = "wirespan.";

const PACKAGE: &str = "opentelemetry-semantic-conventions";

/// wirespan's cache directory, as xtask and the build script name it.
mod cache {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../build-support/toolchains.rs"
    ));
}

/// The attribute keys of the conventions.
#[derive(Debug)]
pub struct Conventions {
    pub version: String,
    defined: BTreeSet<String>,
    /// Prefixes of template attributes (`http.request.header` for `http.request.header.<key>`).
    templates: Vec<String>,
    /// Deprecated key → the package's reason or replacement.
    deprecated: BTreeMap<String, String>,
}

impl Conventions {
    /// What is wrong with `key`, if anything.
    #[must_use]
    pub fn problem(&self, key: &str) -> Option<String> {
        if key.starts_with(VENDOR_PREFIX) {
            return None;
        }
        let template = self.templates.iter().find(|prefix| {
            key.strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|suffix| !suffix.is_empty())
        });
        let defined_as = if self.defined.contains(key) && !self.templates.iter().any(|t| t == key) {
            key
        } else if let Some(prefix) = template {
            prefix
        } else {
            return Some("not defined".to_owned());
        };
        self.deprecated
            .get(defined_as)
            .map(|why| format!("deprecated: {why}"))
    }
}

/// The conventions, loaded once per test process; why not when they cannot be.
pub fn conventions() -> Result<&'static Conventions, &'static str> {
    static LOADED: OnceLock<Result<Conventions, String>> = OnceLock::new();
    LOADED.get_or_init(load).as_ref().map_err(String::as_str)
}

/// The conventions, or None after saying why they cannot be loaded (a failure under `CI=true`).
pub fn require(context: &str) -> Option<&'static Conventions> {
    match conventions() {
        Ok(conventions) => Some(conventions),
        Err(why) => {
            cannot_run(&format!("semantic conventions check of {context}: {why}"));
            None
        }
    }
}

/// Panics listing every key of `keys` that the conventions do not define or mark deprecated
/// (with the package's replacement); `context` says where the keys come from. Where the
/// conventions cannot be loaded: a failure under `CI=true`, a printed skip elsewhere.
pub fn assert_conforming<'a>(keys: impl IntoIterator<Item = &'a str>, context: &str) {
    let keys: BTreeSet<&str> = keys.into_iter().collect();
    if keys.is_empty() {
        return;
    }
    let Some(conventions) = require(context) else {
        return;
    };
    let offending: Vec<String> = keys
        .iter()
        .filter_map(|key| Some(format!("  {key}: {}", conventions.problem(key)?)))
        .collect();
    assert!(
        offending.is_empty(),
        "{context}: attribute keys that do not conform to the OpenTelemetry semantic conventions \
         ({PACKAGE} {}):\n{}",
        conventions.version,
        offending.join("\n")
    );
}

/// Where the pinned package is installed: wirespan's cache, keyed by version.
#[must_use]
pub fn install_dir() -> PathBuf {
    cache::cache_dir().join(format!("semconv-py-{SEMCONV_PY_VERSION}"))
}

fn load() -> Result<Conventions, String> {
    let dir = install()?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/support/semconv_keys.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .arg(SEMCONV_PY_VERSION)
        .output()
        .map_err(|e| format!("python3 cannot run ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{script} printed no JSON: {e}"))?;
    let strings = |field: &str| -> Vec<String> {
        json[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    };
    let deprecated = json["deprecated"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, why)| (k.clone(), why.as_str().unwrap_or_default().to_owned()))
        .collect();
    let defined: BTreeSet<String> = strings("defined").into_iter().collect();
    if defined.is_empty() {
        return Err(format!(
            "{script} found no attribute keys in {}",
            dir.display()
        ));
    }
    Ok(Conventions {
        version: json["version"].as_str().unwrap_or_default().to_owned(),
        defined,
        templates: strings("templates"),
        deprecated,
    })
}

/// The package's version file: present once an install completed (installs are renamed into
/// place whole).
fn installed(dir: &Path) -> bool {
    dir.join("opentelemetry/semconv/version/__init__.py")
        .is_file()
}

/// Install the pinned package unless it is there: `pip install --target` into a scratch
/// directory beside the final one, then renamed into place, so an interrupted or concurrent
/// install never leaves a half-filled directory that looks complete. Without its dependencies:
/// the modules are parsed, not imported.
fn install() -> Result<PathBuf, String> {
    let dir = install_dir();
    if installed(&dir) {
        return Ok(dir);
    }
    // Not a finished install (those are renamed into place whole): left by hand, say.
    let _ = std::fs::remove_dir_all(&dir);
    let parent = dir.parent().expect("the install directory has a parent");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let scratch = parent.join(format!(
        ".semconv-py-{SEMCONV_PY_VERSION}.{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!(
        "semconv: installing {PACKAGE}=={SEMCONV_PY_VERSION} into {} (once)",
        dir.display()
    );
    let pip = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&scratch)
        .arg(format!("{PACKAGE}=={SEMCONV_PY_VERSION}"))
        // A user's pip configuration must not turn this into a `--user` or venv-only install.
        .env("PIP_USER", "0")
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .output()
        .map_err(|e| format!("python3 -m pip cannot run ({e})"))?;
    let result = if !pip.status.success() || !installed(&scratch) {
        Err(format!(
            "`python3 -m pip install --target {} {PACKAGE}=={SEMCONV_PY_VERSION}` failed: {}",
            scratch.display(),
            String::from_utf8_lossy(&pip.stderr).trim()
        ))
    } else if std::fs::rename(&scratch, &dir).is_ok() || installed(&dir) {
        // A concurrent install may have won the rename: its copy serves as well.
        Ok(dir)
    } else {
        Err(format!(
            "cannot move {} to {}",
            scratch.display(),
            dir.display()
        ))
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
