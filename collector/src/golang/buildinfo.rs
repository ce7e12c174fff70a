//! Go build info (`.go.buildinfo`, Go 1.18+): the Go version, the main module and the versions
//! of the modules whose layouts the probes depend on (grpc-go, x/net, gin). Format: Go's
//! `debug/buildinfo`: a 32-byte header (magic, pointer size, flags) with the version and the
//! module info as varint-prefixed strings when the "inline strings" flag is set.

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildInfoError {
    #[error("no Go build info (not a Go program, or built before Go 1.18)")]
    Missing,
    #[error(
        "Go build info in the pre-1.18 pointer format is not supported (rebuild with Go 1.18 or newer)"
    )]
    OldFormat,
    #[error("malformed Go build info: {0}")]
    Malformed(&'static str),
}

/// A module dependency as the binary records it (after `=>` replacements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub version: String,
}

/// What `go version -m` shows of a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `go1.22.12`.
    pub go_version: String,
    /// The main package's import path.
    pub path: String,
    pub main_module: Option<Module>,
    pub deps: Vec<Module>,
}

impl BuildInfo {
    /// The version of a dependency, e.g. `google.golang.org/grpc`.
    #[must_use]
    pub fn module_version(&self, path: &str) -> Option<&str> {
        self.deps
            .iter()
            .find(|m| m.path == path)
            .map(|m| m.version.as_str())
    }
}

/// The modules whose versions pick struct layouts or matter to tracing, with short names.
const NOTABLE_MODULES: [(&str, &str); 3] = [
    ("google.golang.org/grpc", "grpc-go"),
    ("golang.org/x/net", "x/net"),
    ("github.com/gin-gonic/gin", "gin"),
];

impl BuildInfo {
    /// `go1.26.8, grpc-go v1.85.0, x/net v0.60.0`: the Go version and the notable modules the
    /// program was built with, for the start-up report.
    #[must_use]
    pub fn versions(&self) -> String {
        let mut parts = vec![self.go_version.clone()];
        for (path, short) in NOTABLE_MODULES {
            if let Some(version) = self.module_version(path) {
                parts.push(format!("{short} {version}"));
            }
        }
        parts.join(", ")
    }
}

/// (major, minor, patch) of a Go version string (`go1.22.12`, `go1.21rc2`).
#[must_use]
pub fn go_semver(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.strip_prefix("go")?;
    let v = v
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = v.split('.').map(|p| p.parse().ok());
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Parse the build info from the bytes of the `.go.buildinfo` section (or any buffer that starts
/// with its magic).
pub fn parse(section: &[u8]) -> Result<BuildInfo, BuildInfoError> {
    let start = find_magic(section).ok_or(BuildInfoError::Missing)?;
    let data = &section[start..];
    if data.len() < HEADER_LEN {
        return Err(BuildInfoError::Malformed("header cut short"));
    }
    if data[15] & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::OldFormat);
    }
    let mut rest = &data[HEADER_LEN..];
    let version = String::from_utf8_lossy(read_bytes(&mut rest)?).into_owned();
    let modinfo = read_bytes(&mut rest)?;
    let (path, main_module, deps) = parse_modinfo(modinfo);
    Ok(BuildInfo {
        go_version: version,
        path,
        main_module,
        deps,
    })
}

/// The header starts on a 16-byte boundary.
fn find_magic(data: &[u8]) -> Option<usize> {
    (0..data.len())
        .step_by(16)
        .find(|&i| data[i..].starts_with(MAGIC))
}

fn read_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], BuildInfoError> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest
            .split_first()
            .ok_or(BuildInfoError::Malformed("string length cut short"))?;
        *rest = tail;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return Err(BuildInfoError::Malformed("string length too long"));
        }
    }
    let len = usize::try_from(len).map_err(|_| BuildInfoError::Malformed("string too long"))?;
    let bytes = rest
        .get(..len)
        .ok_or(BuildInfoError::Malformed("string cut short"))?;
    *rest = &rest[len..];
    Ok(bytes)
}

/// The module info: 16 binary sentinel bytes around lines `path`, `mod`, `dep`, `=>`, `build`.
fn parse_modinfo(bytes: &[u8]) -> (String, Option<Module>, Vec<Module>) {
    let bytes = if bytes.len() >= 33 && bytes[bytes.len() - 17] == b'\n' {
        &bytes[16..bytes.len() - 16]
    } else {
        bytes
    };
    let text = String::from_utf8_lossy(bytes);
    let (mut path, mut main, mut deps) = (String::new(), None, Vec::<Module>::new());
    for line in text.lines() {
        let mut fields = line.split('\t');
        let module = |f: &mut std::str::Split<'_, char>| {
            Some(Module {
                path: f.next()?.to_owned(),
                version: f.next().unwrap_or("").to_owned(),
            })
        };
        match fields.next() {
            Some("path") => fields.next().unwrap_or("").clone_into(&mut path),
            Some("mod") => main = module(&mut fields),
            Some("dep") => deps.extend(module(&mut fields)),
            // A replacement applies to the dependency just before it; keep the original path.
            Some("=>") => {
                if let (Some(last), Some(replacement)) = (deps.last_mut(), module(&mut fields)) {
                    last.version = replacement.version;
                }
            }
            _ => {}
        }
    }
    (path, main, deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        s.resize(HEADER_LEN, 0);
        for text in [version, modinfo] {
            let mut len = text.len();
            while len >= 0x80 {
                s.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            s.push(len as u8);
            s.extend_from_slice(text.as_bytes());
        }
        s
    }

    #[test]
    fn parses_version_main_module_and_replaced_deps() {
        let sentinel = "0123456789abcdef";
        let modinfo = format!(
            "{sentinel}path\texample.com/svc\nmod\texample.com/svc\t(devel)\t\ndep\tgoogle.golang.org/grpc\tv1.56.3\th1:x\ndep\tgolang.org/x/net\tv0.10.0\th1:y\n=>\tgolang.org/x/net\tv0.11.0\th1:z\nbuild\t-compiler=gc\n{sentinel}"
        );
        let mut data = vec![0u8; 32];
        data.extend(section("go1.22.12", &modinfo));
        let info = parse(&data).unwrap();
        assert_eq!(info.go_version, "go1.22.12");
        assert_eq!(go_semver(&info.go_version), Some((1, 22, 12)));
        assert_eq!(info.path, "example.com/svc");
        assert_eq!(
            info.main_module.as_ref().map(|m| m.path.as_str()),
            Some("example.com/svc")
        );
        assert_eq!(
            info.module_version("google.golang.org/grpc"),
            Some("v1.56.3")
        );
        assert_eq!(
            info.module_version("golang.org/x/net"),
            Some("v0.11.0"),
            "the replacement's version"
        );
        assert_eq!(info.module_version("github.com/gin-gonic/gin"), None);
        assert_eq!(info.versions(), "go1.22.12, grpc-go v1.56.3, x/net v0.11.0");
    }

    #[test]
    fn versions_name_gin_when_present() {
        let info = BuildInfo {
            go_version: "go1.24.11".into(),
            path: "example.com/front".into(),
            main_module: None,
            deps: vec![Module {
                path: "github.com/gin-gonic/gin".into(),
                version: "v1.12.0".into(),
            }],
        };
        assert_eq!(info.versions(), "go1.24.11, gin v1.12.0");
    }

    #[test]
    fn foreign_old_and_cut_inputs_are_errors() {
        assert_eq!(parse(b"\x7fELF"), Err(BuildInfoError::Missing));
        let mut old = section("go1.17", "");
        old[15] = 0;
        assert_eq!(parse(&old), Err(BuildInfoError::OldFormat));
        let full = section("go1.22.1", "path\tx\n");
        for cut in MAGIC.len()..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(go_semver("go1.21rc2"), Some((1, 21, 0)));
    }
}
