//! The OpenTelemetry resource of a traced process: who made a span. `service.name` is the
//! process's own `OTEL_SERVICE_NAME`, else the `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`
//! (what an SDK in the process would report), else its executable's name.
//!
//! Built from what the process started with (its executable, argument block and environment
//! block), which the exec probe captures before the process can exit; see
//! [`super::processes`] for where those come from and how long a resource is kept.
//!
//! The agent's own `OTEL_RESOURCE_ATTRIBUTES` ([`HostAttributes`]) describes the host it runs on
//! (`host.name`, `k8s.node.name`, ...) and fills, in every resource, the keys the process did not
//! set. Per key, the first of these that has it wins:
//! 1. what wirespan measures: `process.pid`, `process.executable.name`,
//!    `process.command_args`, `telemetry.distro.*` (and `service.name`, resolved as above);
//! 2. the process's own `OTEL_RESOURCE_ATTRIBUTES`;
//! 3. the agent's `OTEL_RESOURCE_ATTRIBUTES`;
//! 4. for `host.name`, the hostname.
//!
//! A process's own `host.name` stays, like any key it sets: it is what an SDK in that process
//! reports, so its spans from wirespan and from its SDK share one host; the agent's `host.name`
//! only replaces the hostname the agent read.

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
    /// The `host.name` of a process that sets none: the agent's own `host.name`, else the
    /// hostname.
    pub host_name: String,
    /// `process.command_args` whole; otherwise only the program (arguments can hold secrets).
    pub show_command_args: bool,
}

/// Keys wirespan measures itself: a value in an `OTEL_RESOURCE_ATTRIBUTES` does not replace
/// them (the distro is wirespan, whichever SDK the process carries).
const MEASURED: [&str; 5] = [
    "process.pid",
    "process.executable.name",
    "process.command_args",
    "telemetry.distro.name",
    "telemetry.distro.version",
];

/// The value of `name` in a NUL-separated environment block (the first non-empty one).
#[must_use]
pub fn env_value(env: &[u8], name: &str) -> Option<String> {
    env.split(|b| *b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name && !value.is_empty()).then(|| value.to_owned())
    })
}

/// An `OTEL_RESOURCE_ATTRIBUTES` value, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedAttributes {
    /// Each key once, where it first appeared, with its last value (as the SDKs keep it).
    pub attributes: Vec<(String, String)>,
    /// Entries skipped: no `=`, or a key that is not a W3C Baggage token.
    pub malformed: usize,
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k=v`, W3C Baggage without properties, values
/// percent-encoded; whitespace around keys and values is trimmed. A malformed entry is skipped
/// and counted, the others kept (the spec would discard the whole value; one typo should not
/// cost a node its `k8s.node.name`). An empty entry (`a=1,,b=2`, a trailing comma) is no entry,
/// and an empty value says nothing: it is dropped, so `host.name=` does not blank the hostname.
/// Values are decoded leniently: a `%` without two hex digits stays as written.
#[must_use]
pub fn parse_resource_attributes(raw: &str) -> ParsedAttributes {
    let mut parsed = ParsedAttributes::default();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            parsed.malformed += 1;
            continue;
        };
        let key = key.trim();
        if !is_token(key) {
            parsed.malformed += 1;
            continue;
        }
        let value = percent_decode(value.trim());
        if value.is_empty() {
            continue;
        }
        match parsed.attributes.iter_mut().find(|(have, _)| have == key) {
            Some((_, old)) => *old = value,
            None => parsed.attributes.push((key.to_owned(), value)),
        }
    }
    parsed
}

/// A W3C Baggage key (an RFC 7230 token): visible ASCII but separators.
fn is_token(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Percent-decoding; bytes that are not UTF-8 become U+FFFD, as W3C Baggage says.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits exactly (`from_str_radix` alone would take `%+1`).
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|d| d.is_ascii_hexdigit()))
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

/// The agent's own `OTEL_RESOURCE_ATTRIBUTES`: attributes of the host it runs on, which every
/// resource it exports gets where its process did not set the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAttributes {
    /// The agent's `host.name`: it replaces the hostname (a container's hostname is rarely the
    /// node's name, which is what the agent is told).
    pub host_name: Option<String>,
    /// The other attributes, in the order given.
    pub defaults: Vec<(String, String)>,
    /// Entries skipped as malformed.
    pub malformed: usize,
    /// Keys left out because they describe the agent itself, not its host.
    pub agent_only: Vec<String>,
}

impl HostAttributes {
    /// From the agent's `OTEL_RESOURCE_ATTRIBUTES` (`None` when unset); the caller reads the
    /// environment, once, so that tests need not touch it.
    #[must_use]
    pub fn parse(raw: Option<&str>) -> Self {
        let parsed = raw.map(parse_resource_attributes).unwrap_or_default();
        let mut host = Self {
            malformed: parsed.malformed,
            ..Self::default()
        };
        for (key, value) in parsed.attributes {
            if key == "host.name" {
                host.host_name = Some(value);
            } else if describes_the_agent(&key) {
                host.agent_only.push(key);
            } else {
                host.defaults.push((key, value));
            }
        }
        host
    }

    /// What was left out of the value, for one warning when the agent starts.
    #[must_use]
    pub fn problems(&self) -> Option<String> {
        let mut said = Vec::new();
        if self.malformed > 0 {
            said.push(format!(
                "{} malformed entries skipped (an entry is key=value, the value percent-encoded)",
                self.malformed
            ));
        }
        if !self.agent_only.is_empty() {
            said.push(format!(
                "{} left out (they describe the agent, not its host: a traced process's own come from its environment)",
                self.agent_only.join(", ")
            ));
        }
        (!said.is_empty()).then(|| format!("OTEL_RESOURCE_ATTRIBUTES: {}", said.join("; ")))
    }
}

/// Keys of the agent's own identity: given to the agent, they name the agent's service, process
/// or SDK, and would be false of every process it traces (a curl with the agent's
/// `service.version`). Everything else (`service.namespace`, `deployment.environment.name`,
/// `k8s.*`, `cloud.*`) is shared by the host's processes.
fn describes_the_agent(key: &str) -> bool {
    matches!(
        key,
        "service.name" | "service.version" | "service.instance.id"
    ) || key.starts_with("process.")
        || key.starts_with("telemetry.")
}

impl Resource {
    /// The resource of a process that started as `image`, without host defaults.
    #[must_use]
    pub fn of(image: &ProcessImage<'_>, style: &ResourceStyle) -> Self {
        Self::on_host(image, style, &[]).0
    }

    /// The resource of a process that started as `image`, the agent's host `defaults`
    /// ([`HostAttributes::defaults`]) filling the keys it did not set (see the module's
    /// precedence); also how many entries of its `OTEL_RESOURCE_ATTRIBUTES` were malformed.
    #[must_use]
    pub fn on_host(
        image: &ProcessImage<'_>,
        style: &ResourceStyle,
        defaults: &[(String, String)],
    ) -> (Self, usize) {
        let executable = if image.exe.is_empty() {
            image.comm.to_owned()
        } else {
            image.exe.trim_end_matches(" (deleted)").to_owned()
        };
        let own = env_value(image.env, "OTEL_RESOURCE_ATTRIBUTES")
            .map(|raw| parse_resource_attributes(&raw))
            .unwrap_or_default();
        let service_name = env_value(image.env, "OTEL_SERVICE_NAME")
            .or_else(|| {
                own.attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
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
        // The process's own OTEL_RESOURCE_ATTRIBUTES, as an SDK in it would report them, then
        // the host's defaults: the first to name a key wins.
        for (k, v) in own.attributes.into_iter().chain(defaults.iter().cloned()) {
            if !MEASURED.contains(&k.as_str()) && !attributes.iter().any(|(have, _)| *have == k) {
                attributes.push((k, v));
            }
        }
        if !attributes.iter().any(|(k, _)| k == "host.name") {
            attributes.push(("host.name".to_owned(), style.host_name.clone()));
        }
        attributes.push(("telemetry.distro.name".to_owned(), "wirespan".to_owned()));
        attributes.push((
            "telemetry.distro.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
        let resource = Self {
            service_name,
            attributes,
        };
        (resource, own.malformed)
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

    /// Every attribute, in order.
    fn pairs(r: &Resource) -> Vec<(&str, &str)> {
        r.attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn resource_attribute_values_are_trimmed_and_percent_decoded() {
        let parsed =
            parse_resource_attributes(" a = x%20y , b=%E2%9C%93,c=1=2,d=50%+1,e=%zz%4,f=%FF,g=a+b");
        assert_eq!(
            parsed.attributes,
            owned(&[
                ("a", "x y"),
                ("b", "\u{2713}"),
                // Only the first `=` separates: a value may hold more.
                ("c", "1=2"),
                // A `%` without two hex digits stays as written.
                ("d", "50%+1"),
                ("e", "%zz%4"),
                // Not UTF-8: the replacement character, as W3C Baggage says.
                ("f", "\u{fffd}"),
                // `+` is a plus, not a space.
                ("g", "a+b"),
            ])
        );
        assert_eq!(parsed.malformed, 0);
    }

    #[test]
    fn malformed_resource_attribute_entries_are_skipped_and_counted() {
        let parsed =
            parse_resource_attributes("a=1,novalue,=x,bad key=2,k\u{e9}y=3,ok=%41,,empty=, ");
        assert_eq!(parsed.attributes, owned(&[("a", "1"), ("ok", "A")]));
        // Empty entries and empty values are not malformed, only dropped.
        assert_eq!(parsed.malformed, 4);
        assert_eq!(parse_resource_attributes(""), ParsedAttributes::default());
    }

    #[test]
    fn a_repeated_resource_attribute_keeps_its_place_and_its_last_value() {
        let parsed = parse_resource_attributes("a=1,b=2,a=3");
        assert_eq!(parsed.attributes, owned(&[("a", "3"), ("b", "2")]));
    }

    #[test]
    fn a_process_own_resource_attributes_apply_to_its_resource() {
        let env =
            b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,service.version=1.2\0";
        let (r, malformed) = Resource::on_host(&image(env), &style(), &[]);
        assert_eq!(malformed, 0);
        assert_eq!(
            pairs(&r),
            [
                ("service.name", "curl"),
                ("process.pid", "7"),
                ("process.executable.name", "curl"),
                ("process.command_args", "curl"),
                ("deployment.environment.name", "prod"),
                ("service.version", "1.2"),
                ("host.name", "h"),
                ("telemetry.distro.name", "wirespan"),
                ("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
            ]
        );
    }

    #[test]
    fn host_defaults_fill_only_the_keys_the_process_did_not_set() {
        let env =
            b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,oops,service.version=1.2\0";
        let host = HostAttributes::parse(Some(
            "deployment.environment.name=staging,k8s.node.name=n1,host.name=node-a",
        ));
        let style = ResourceStyle {
            host_name: host.host_name.clone().unwrap(),
            ..style()
        };
        let (r, malformed) = Resource::on_host(&image(env), &style, &host.defaults);
        assert_eq!(malformed, 1);
        assert_eq!(
            pairs(&r)[4..],
            [
                // The process's own, then the host's for the keys it left.
                ("deployment.environment.name", "prod"),
                ("service.version", "1.2"),
                ("k8s.node.name", "n1"),
                // The agent's host.name, not the hostname.
                ("host.name", "node-a"),
                ("telemetry.distro.name", "wirespan"),
                ("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
            ]
        );
        // A process that sets nothing gets every default.
        let bare = Resource::on_host(&image(b""), &style, &host.defaults).0;
        assert_eq!(
            bare.attribute("deployment.environment.name"),
            Some("staging")
        );
    }

    #[test]
    fn a_process_own_host_name_stays_over_the_agent_and_the_hostname() {
        let env = b"OTEL_RESOURCE_ATTRIBUTES=host.name=pod-host\0";
        let style = ResourceStyle {
            host_name: "node-a".into(),
            ..style()
        };
        let r = Resource::of(&image(env), &style);
        assert_eq!(r.attribute("host.name"), Some("pod-host"));
        assert_eq!(
            r.attributes
                .iter()
                .filter(|(k, _)| k == "host.name")
                .count(),
            1
        );
    }

    #[test]
    fn measured_keys_are_not_replaced_by_any_resource_attributes() {
        let env = b"OTEL_RESOURCE_ATTRIBUTES=process.pid=1,telemetry.distro.name=other,process.command_args=x\0";
        let defaults = owned(&[("process.executable.name", "agent"), ("team", "a")]);
        let r = Resource::on_host(&image(env), &style(), &defaults).0;
        assert_eq!(r.attribute("process.pid"), Some("7"));
        assert_eq!(r.attribute("process.executable.name"), Some("curl"));
        assert_eq!(r.attribute("process.command_args"), Some("curl"));
        assert_eq!(r.attribute("telemetry.distro.name"), Some("wirespan"));
        assert_eq!(r.attribute("team"), Some("a"));
        let mut keys: Vec<&str> = r.attributes.iter().map(|(k, _)| k.as_str()).collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all, "{r:?}");
    }

    #[test]
    fn agent_resource_attributes_split_into_host_name_defaults_and_agent_only_keys() {
        let host = HostAttributes::parse(Some(
            "host.name=node%2Da, k8s.node.name=n1,service.version=9,process.runtime.name=rust,bad,service.namespace=shop",
        ));
        assert_eq!(host.host_name.as_deref(), Some("node-a"));
        assert_eq!(
            host.defaults,
            owned(&[("k8s.node.name", "n1"), ("service.namespace", "shop")])
        );
        assert_eq!(host.agent_only, ["service.version", "process.runtime.name"]);
        assert_eq!(host.malformed, 1);
        let said = host.problems().unwrap();
        assert!(
            said.contains("1 malformed") && said.contains("service.version"),
            "{said}"
        );
        // Unset, or set to nothing usable: nothing to say, no host.name.
        assert_eq!(HostAttributes::parse(None), HostAttributes::default());
        assert_eq!(HostAttributes::parse(Some("host.name=")).host_name, None);
        assert_eq!(HostAttributes::parse(None).problems(), None);
    }
}
