//! A NAT lab on this host for the privileged tests: two network namespaces joined through this
//! host, which forwards between them and rewrites a virtual address per service (DNAT, as
//! kube-proxy does for a Service, or `docker run -p`), optionally hiding the client (SNAT). Its
//! addresses (10.231.0.0/16) exist only inside the lab; everything is removed when it is dropped.

use std::process::Command;

/// Two network namespaces joined through this host, which forwards between them and rewrites a
/// virtual address per service (DNAT, like kube-proxy), optionally hiding the client (SNAT).
/// Everything it made is removed when dropped.
pub struct NatLab {
    tag: String,
    forwarding_was: String,
}

/// 10.231.0.0/16: only inside this lab's namespaces and host-side veths.
pub const CLIENT_NS_ADDR: &str = "10.231.1.2";
pub const SERVER_NS_ADDR: &str = "10.231.2.2";
pub const FRONT_VIP: &str = "10.231.9.9";
pub const BACK_VIP: &str = "10.231.9.10";

/// Run `script` with `sh -e`; its standard error (and the script) when it fails. The hosts lab
/// builds its namespaces with it too.
pub fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl NatLab {
    pub fn up(snat: bool) -> Result<Self, String> {
        // Unique per process and lab, and short: interface names have 15 bytes at most.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let forwarding_was = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map_err(|e| e.to_string())?
            .trim()
            .to_owned();
        let lab = Self {
            tag: tag.clone(),
            forwarding_was,
        };
        let masquerade = if snat {
            format!("ip daddr {{ {SERVER_NS_ADDR}, {CLIENT_NS_ADDR} }} masquerade")
        } else {
            String::new()
        };
        sh(&format!(
            "ip netns add wsc{tag}; ip netns add wss{tag}
             ip link add wshc{tag} type veth peer name eth0 netns wsc{tag}
             ip link add wshs{tag} type veth peer name eth0 netns wss{tag}
             ip addr add 10.231.1.1/24 dev wshc{tag}; ip link set wshc{tag} up
             ip addr add 10.231.2.1/24 dev wshs{tag}; ip link set wshs{tag} up
             ip -n wsc{tag} addr add {CLIENT_NS_ADDR}/24 dev eth0
             ip -n wss{tag} addr add {SERVER_NS_ADDR}/24 dev eth0
             for ns in wsc{tag} wss{tag}; do ip -n $ns link set eth0 up; ip -n $ns link set lo up; done
             ip -n wsc{tag} route add default via 10.231.1.1
             ip -n wss{tag} route add default via 10.231.2.1
             echo 1 > /proc/sys/net/ipv4/ip_forward
             nft -f - <<NFT
table ip wirespan_lab{tag} {{
  chain pre {{
    type nat hook prerouting priority -100;
    ip daddr {FRONT_VIP} tcp dport 80 dnat to {SERVER_NS_ADDR}:8080
    ip daddr {BACK_VIP} tcp dport 80 dnat to {CLIENT_NS_ADDR}:8081
  }}
  chain post {{
    type nat hook postrouting priority 100;
    {masquerade}
  }}
}}
NFT"
        ))
        .map(|()| lab)
    }

    pub fn client_ns(&self) -> String {
        format!("wsc{}", self.tag)
    }

    pub fn server_ns(&self) -> String {
        format!("wss{}", self.tag)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let tag = &self.tag;
        let _ = sh(&format!(
            "nft delete table ip wirespan_lab{tag} || true
             ip link del wshc{tag} || true; ip link del wshs{tag} || true
             ip netns del wsc{tag} || true; ip netns del wss{tag} || true
             echo {} > /proc/sys/net/ipv4/ip_forward",
            self.forwarding_was
        ));
    }
}
