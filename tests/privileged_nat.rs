//! Privileged end to end (needs root, a kernel, Go, curl and nft): a virtual service address on
//! the same host (DNAT, as kube-proxy does for a Service or `docker run -p`), with and without
//! SNAT, between network namespaces this test makes (tests/support/nat_lab.rs). The two ends of
//! a connection name different addresses and ports; every parent must still be right.

mod support;

use std::{process::Command, sync::Mutex};

use support::{
    Listening,
    nat_lab::{BACK_VIP, FRONT_VIP, NatLab},
    require_privileges,
    shapes::{
        agent, assert_no_mapped_addresses, build_cgo_stripped, build_go, check_fanout, read_spans,
        tmp,
    },
};
use wirespan::testing::cannot_run;

/// Agents of these tests would see each other's services: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client in one namespace calls front through its virtual address; front (in the other
/// namespace) fans out to back through back's virtual address. Both hops cross DNAT (and SNAT
/// when asked): every server span must still be the child of the client span at the other end.
fn dnat_case(snat: bool, cgo_stripped: bool) {
    if !require_privileges() {
        return;
    }
    let _serial = serial();
    let built = if cgo_stripped {
        build_cgo_stripped("http-hello")
    } else {
        build_go("http-hello")
    };
    let Some(hello) = built else {
        return cannot_run("cannot build examples/http-hello");
    };
    if Command::new("nft").arg("--version").output().is_err() {
        return cannot_run(
            "nft is not installed (Debian package nftables; cargo xtask setup installs it)",
        );
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return cannot_run("curl is not installed");
    }
    let lab = match NatLab::up(snat) {
        Ok(lab) => lab,
        Err(why) => return cannot_run(&format!("cannot build the NAT lab: {why}")),
    };
    let in_ns = |ns: &str, name: &str, args: &[&str]| {
        Listening::start(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(&hello)
                .args(args)
                .env("OTEL_SERVICE_NAME", name),
        )
    };
    let back = in_ns(&lab.client_ns(), "back", &["--listen", ":8081"]);
    let front = in_ns(
        &lab.server_ns(),
        "front",
        &["--listen", ":8080", "--backend", &format!("{BACK_VIP}:80")],
    );
    let file = tmp(&format!("shapes-dnat-{snat}-{cgo_stripped}.jsonl"));
    let agent = agent(&file, &["80".into(), "8080".into(), "8081".into()]);
    for id in 5000..5005 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client_ns(),
                "curl",
                "-sf",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{FRONT_VIP}/fanout?id={id}"))
            .env("OTEL_SERVICE_NAME", "curl-client")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl through the virtual address failed: {out:?}"
        );
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The programs leave the namespaces before the lab goes.
    drop((front, back));
    drop(lab);
    let spans = read_spans(&file);
    assert_no_mapped_addresses(&spans);
    for id in 5000..5005 {
        let entry = spans
            .iter()
            .find(|s| s.kind == 2 && s.service == "front" && s.carries(id))
            .unwrap_or_else(|| panic!("no front span of {id}: {spans:#?}"));
        let caller = spans
            .iter()
            .find(|s| s.id == entry.parent)
            .unwrap_or_else(|| panic!("request {id}: front lost its client parent (snat {snat})"));
        assert_eq!(caller.kind, 3, "request {id}");
        assert!(
            caller.attrs.values().any(|v| v.contains(FRONT_VIP)),
            "{caller:#?}"
        );
        check_fanout(&spans, id, "front", Some(&caller.service), "back");
    }
}

#[test]
fn privileged_nat_dnat_to_a_virtual_address_on_this_host_keeps_every_parent() {
    dnat_case(false, false);
}

#[test]
fn privileged_nat_dnat_and_snat_on_this_host_keep_every_parent() {
    dnat_case(true, false);
}

/// DNAT and SNAT between stripped, host-linked cgo builds.
#[test]
fn privileged_nat_dnat_and_snat_keep_every_parent_between_stripped_cgo_binaries() {
    dnat_case(true, true);
}
