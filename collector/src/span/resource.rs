//! The OpenTelemetry resource of a traced process: who made a span. `service.name` is the
//! process's own `OTEL_SERVICE_NAME`, else the `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`
//! (what an SDK in the process would report), else its executable's name.
//!
//! Built from what the process started with (its executable, argument block and environment
//! block), which the exec probe captures before the process can exit; see
//! [`super::processes`] for where those come from and how long a resource is kept.

/// One process's resource attributes, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub service_name: String,
    pub attributes: Vec<(String, String)>,
}

/// What a process's resource is made of.
#[derive(Debug, Clone, Copy)]
pub struct ProcessImage<'a> {
    pub pid: u32,
    /// The executable's file name; when empty, the command name stands in.
    pub exe: &'a str,
    pub comm: &'a str,
    /// NUL-separated blocks, as in `/proc/<pid>/cmdline` and `environ` (possibly empty).
    pub args: &'a [u8],
    pub env: &'a [u8],
}

/// How resources are written: the host's name, and whether arguments are shown whole.
#[derive(Debug, Clone)]
pub struct ResourceStyle {
    pub host_name: String,
    /// `process.command_args` whole; otherwise only the program (arguments can hold secrets).
    pub show_command_args: bool,
}

/// The value of `name` in a NUL-separated environment block (the first non-empty one).
#[must_use]
pub fn env_value(env: &[u8], name: &str) -> Option<String> {
    env.split(|b| *b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name && !value.is_empty()).then(|| value.to_owned())
    })
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k=v`, values percent-encoded (W3C Baggage style).
fn resource_attributes(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Resource {
    /// The resource of a process that started as `image`.
    #[must_use]
    pub fn of(image: &ProcessImage<'_>, style: &ResourceStyle) -> Self {
        let executable = if image.exe.is_empty() {
            image.comm.to_owned()
        } else {
            image.exe.trim_end_matches(" (deleted)").to_owned()
        };
        let extra = env_value(image.env, "OTEL_RESOURCE_ATTRIBUTES")
            .map(|raw| resource_attributes(&raw))
            .unwrap_or_default();
        let service_name = env_value(image.env, "OTEL_SERVICE_NAME")
            .or_else(|| {
                extra
                    .iter()
                    .find(|(k, v)| k == "service.name" && !v.is_empty())
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| executable.clone());
        let mut attributes = vec![
            ("service.name".to_owned(), service_name.clone()),
            ("process.pid".to_owned(), image.pid.to_string()),
            ("process.executable.name".to_owned(), executable),
        ];
        let args: Vec<String> = image
            .args
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            let shown = if style.show_command_args {
                args.join(" ")
            } else {
                args[0].clone()
            };
            attributes.push(("process.command_args".to_owned(), shown));
        }
        // The process's own OTEL_RESOURCE_ATTRIBUTES, as an SDK in it would report them.
        for (k, v) in extra {
            if k != "service.name" && !attributes.iter().any(|(have, _)| *have == k) {
                attributes.push((k, v));
            }
        }
        attributes.push(("host.name".to_owned(), style.host_name.clone()));
        attributes.push(("telemetry.distro.name".to_owned(), "wirespan".to_owned()));
        attributes.push((
            "telemetry.distro.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
        Self {
            service_name,
            attributes,
        }
    }

    /// The value of attribute `key`.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> ResourceStyle {
        ResourceStyle {
            host_name: "h".into(),
            show_command_args: false,
        }
    }

    fn image(env: &[u8]) -> ProcessImage<'_> {
        ProcessImage {
            pid: 7,
            exe: "curl",
            comm: "curl",
            args: b"curl\0--header\0token\0",
            env,
        }
    }

    #[test]
    fn service_name_from_otel_service_name() {
        let r = Resource::of(&image(b"A=1\0OTEL_SERVICE_NAME=job3\0B=2\0"), &style());
        assert_eq!(r.service_name, "job3");
        assert_eq!(r.attribute("service.name"), Some("job3"));
        assert_eq!(r.attribute("process.executable.name"), Some("curl"));
        assert_eq!(r.attribute("process.pid"), Some("7"));
        // Arguments can hold secrets: only the program unless asked.
        assert_eq!(r.attribute("process.command_args"), Some("curl"));
        let whole = ResourceStyle {
            show_command_args: true,
            ..style()
        };
        assert_eq!(
            Resource::of(&image(b""), &whole).attribute("process.command_args"),
            Some("curl --header token")
        );
    }

    #[test]
    fn service_name_from_resource_attributes_when_no_service_name_variable() {
        let env =
            b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=ci,service.name=nightly%20job\0";
        let r = Resource::of(&image(env), &style());
        assert_eq!(r.service_name, "nightly job");
        assert_eq!(r.attribute("deployment.environment"), Some("ci"));
        assert_eq!(
            r.attributes
                .iter()
                .filter(|(k, _)| k == "service.name")
                .count(),
            1
        );
        // OTEL_SERVICE_NAME wins over the attribute, as in the SDKs.
        let both = b"OTEL_RESOURCE_ATTRIBUTES=service.name=a\0OTEL_SERVICE_NAME=b\0";
        assert_eq!(Resource::of(&image(both), &style()).service_name, "b");
    }

    #[test]
    fn service_name_is_the_executable_without_either() {
        assert_eq!(
            Resource::of(&image(b"A=1\0"), &style()).service_name,
            "curl"
        );
        let gone = ProcessImage {
            exe: "",
            comm: "python3",
            ..image(b"")
        };
        assert_eq!(Resource::of(&gone, &style()).service_name, "python3");
        // An empty OTEL_SERVICE_NAME is no name.
        assert_eq!(
            Resource::of(&image(b"OTEL_SERVICE_NAME=\0"), &style()).service_name,
            "curl"
        );
    }
}
