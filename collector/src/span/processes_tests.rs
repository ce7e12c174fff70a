use super::*;
use crate::source::ExecImage;

fn exec(pid: u32, ts_ns: u64, env: &[u8], env_cut: bool) -> Exec {
    Exec {
        pid,
        comm: "curl".into(),
        ts_ns,
        image: Some(ExecImage {
            exe: "curl".into(),
            args: b"curl\0-s\0".to_vec(),
            env: env.to_vec(),
            args_cut: false,
            env_cut,
        }),
    }
}

/// A directory standing in for `/proc`, removed when dropped.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("wirespan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self(root)
    }

    fn process(&self, pid: u32, env: &[u8]) {
        let dir = self.0.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("environ"), env).unwrap();
        std::fs::write(dir.join("cmdline"), "/srv/bin\0--token\0secret\0").unwrap();
        std::fs::write(dir.join("comm"), "bin\n").unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_process_gone_before_its_spans_keeps_the_name_its_exec_carried() {
    let resources = Resources::offline();
    resources.on_exec(&exec(42, 100, b"A=1\0OTEL_SERVICE_NAME=job7\0", false));
    resources.on_exit(&ProcessExit {
        pid: 42,
        ts_ns: 200,
    });
    let r = resources.of(42, "curl", 150);
    assert_eq!(r.service_name, "job7");
    assert_eq!(r.attribute("process.command_args"), Some("curl"));
    assert_eq!(resources.stats().started, 1);
}

#[test]
fn an_environment_cut_at_the_cap_drops_the_entry_it_cut_through() {
    let resources = Resources::offline();
    // The cut went through the name: `jo` is not a name.
    resources.on_exec(&exec(1, 100, b"A=1\0OTEL_SERVICE_NAME=jo", true));
    assert_eq!(resources.of(1, "curl", 100).service_name, "curl");
    // Entries before the cut are whole.
    resources.on_exec(&exec(2, 100, b"OTEL_SERVICE_NAME=job1\0B=xy", true));
    assert_eq!(resources.of(2, "curl", 100).service_name, "job1");
    let stats = resources.stats();
    assert_eq!((stats.env_cut, stats.env_partial), (2, 2));
}

#[test]
fn an_environment_cut_at_the_cap_is_read_whole_while_the_process_lives() {
    let proc = FakeProc::new("proc-cut");
    proc.process(5, b"A=1\0B=2\0OTEL_SERVICE_NAME=late\0");
    // The same process: /proc starts with what the kernel captured.
    proc.process(6, b"OTHER=1\0OTEL_SERVICE_NAME=reused\0");
    let resources = Resources::new(proc.0.clone(), false);
    resources.on_exec(&exec(5, 100, b"A=1\0B=", true));
    assert_eq!(resources.of(5, "curl", 100).service_name, "late");
    // pid 6 is another program now (its block does not start with the captured part).
    resources.on_exec(&exec(6, 100, b"A=1\0B=", true));
    assert_eq!(resources.of(6, "curl", 100).service_name, "curl");
    let stats = resources.stats();
    assert_eq!(
        (stats.env_cut, stats.env_completed, stats.env_partial),
        (2, 1, 1)
    );
}

#[test]
fn a_reused_pid_gives_each_span_the_program_that_was_running() {
    let resources = Resources::offline();
    resources.on_exec(&exec(9, 100, b"OTEL_SERVICE_NAME=first\0", false));
    resources.on_exit(&ProcessExit { pid: 9, ts_ns: 200 });
    resources.on_exec(&exec(9, 300, b"OTEL_SERVICE_NAME=second\0", false));
    assert_eq!(resources.of(9, "curl", 150).service_name, "first");
    assert_eq!(resources.of(9, "curl", 350).service_name, "second");
    // An exec without an exit (`env NAME=x prog`) replaces the program too.
    resources.on_exec(&exec(9, 400, b"OTEL_SERVICE_NAME=third\0", false));
    assert_eq!(resources.of(9, "curl", 450).service_name, "third");
    assert_eq!(resources.of(9, "curl", 350).service_name, "second");
}

#[test]
fn an_exited_process_is_forgotten_once_its_spans_are_out() {
    let resources = Resources::offline();
    resources.on_exec(&exec(3, 100, b"OTEL_SERVICE_NAME=job\0", false));
    let held = resources.of(3, "curl", 100);
    resources.on_exit(&ProcessExit { pid: 3, ts_ns: 200 });
    // Still there within the retention.
    resources.on_exit(&ProcessExit {
        pid: 4,
        ts_ns: 200 + RETAIN_AFTER_EXIT_NS,
    });
    assert_eq!(resources.of(3, "curl", 150).service_name, "job");
    // Past it: gone from the table (a handle taken earlier keeps it).
    resources.on_exit(&ProcessExit {
        pid: 4,
        ts_ns: 201 + RETAIN_AFTER_EXIT_NS,
    });
    assert_eq!(resources.stats().forgotten, 1);
    assert_eq!(held.service_name, "job");
    assert_eq!(resources.of(3, "curl", 150).service_name, "curl");
}

#[test]
fn processes_older_than_the_agent_are_read_from_proc() {
    let proc = FakeProc::new("proc-scan");
    proc.process(10, b"A=1\0OTEL_SERVICE_NAME=front\0");
    proc.process(11, b"A=1\0");
    let resources = Resources::new(proc.0.clone(), false);
    resources.scan_running();
    // Gone after the scan: still named.
    std::fs::remove_dir_all(proc.0.join("10")).unwrap();
    let front = resources.of(10, "bin", 5);
    assert_eq!(front.service_name, "front");
    assert_eq!(front.attribute("process.command_args"), Some("/srv/bin"));
    assert_eq!(resources.of(11, "bin", 5).service_name, "bin");
    // Never seen, gone: its command name.
    assert_eq!(resources.of(99, "gone", 5).service_name, "gone");
    let stats = resources.stats();
    assert_eq!((stats.read_from_proc, stats.command_name_only), (2, 1));
}

#[test]
fn a_recording_without_programs_names_processes_by_command() {
    let resources = Resources::offline();
    resources.on_exec(&Exec {
        pid: 8,
        comm: "job".into(),
        ts_ns: 1,
        image: None,
    });
    assert_eq!(resources.of(8, "job", 2).service_name, "job");
}

#[test]
fn the_agent_resource_attributes_are_every_process_host_defaults() {
    let host = HostAttributes::parse(Some(
        "host.name=node-a,k8s.node.name=n1,deployment.environment.name=staging",
    ));
    let resources = Resources::with(None, "container-1".into(), false, host);
    resources.on_exec(&exec(
        1,
        100,
        b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,service.version=1.2\0",
        false,
    ));
    let own = resources.of(1, "curl", 100);
    assert_eq!(own.attribute("deployment.environment.name"), Some("prod"));
    assert_eq!(own.attribute("service.version"), Some("1.2"));
    assert_eq!(own.attribute("k8s.node.name"), Some("n1"));
    // The agent's host.name, not the hostname it read.
    assert_eq!(own.attribute("host.name"), Some("node-a"));
    // A process never seen at its exec gets them too.
    let unread = resources.of(2, "gone", 100);
    assert_eq!(
        unread.attribute("deployment.environment.name"),
        Some("staging")
    );
    assert_eq!(unread.attribute("host.name"), Some("node-a"));
    // What the service graph's metrics carry.
    let owned = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        resources.host_attributes(),
        [
            owned("k8s.node.name", "n1"),
            owned("deployment.environment.name", "staging"),
            owned("host.name", "node-a"),
        ]
    );
}

#[test]
fn without_the_agent_host_name_the_hostname_names_the_host() {
    let resources = Resources::with(None, "box".into(), false, HostAttributes::parse(None));
    assert_eq!(
        resources.of(1, "gone", 1).attribute("host.name"),
        Some("box")
    );
    assert_eq!(
        resources.host_attributes(),
        [("host.name".to_owned(), "box".to_owned())]
    );
}

#[test]
fn malformed_resource_attributes_of_processes_are_counted() {
    let resources = Resources::offline();
    resources.on_exec(&exec(
        1,
        100,
        b"OTEL_RESOURCE_ATTRIBUTES=a=1,broken,=x\0",
        false,
    ));
    assert_eq!(resources.of(1, "curl", 100).attribute("a"), Some("1"));
    assert_eq!(resources.stats().malformed_attributes, 2);
}
