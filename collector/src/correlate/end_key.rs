//! Connection ends as compact hash keys. The correlator remembers every connection end for a
//! grace period after its close, and every span's connection for two windows: under churn
//! that is some 80k ends and 130k spans, most of them in tables keyed by an address pair. A
//! `std::net::SocketAddr` takes 32 bytes (an IPv6 address with its flow info and scope id), a
//! pair 64; an [`EndKey`] takes 38, and its alignment of 1 leaves no padding between it and
//! the key's other fields.
//!
//! The agent's addresses come from the kernel and the Go probes as canonical IPs with a port
//! (`source::decode::endpoints`): no flow info, no scope id. Those two are therefore not kept:
//! an address that had them comes back without them. An IPv4 address and its IPv4-mapped IPv6
//! form stay distinct, as they are as `SocketAddr`s.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A socket address in 19 bytes: the IP as IPv6 (an IPv4 address mapped), the port, and
/// which family it was.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    ip: [u8; 16],
    port: [u8; 2],
    v6: bool,
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        let (ip, v6) = match a.ip() {
            IpAddr::V4(ip) => (ip.to_ipv6_mapped(), false),
            IpAddr::V6(ip) => (ip, true),
        };
        Self {
            ip: ip.octets(),
            port: a.port().to_ne_bytes(),
            v6,
        }
    }
}

impl From<Addr> for SocketAddr {
    fn from(a: Addr) -> Self {
        let ip = Ipv6Addr::from(a.ip);
        let ip = match ip.to_ipv4_mapped() {
            Some(v4) if !a.v6 => IpAddr::V4(v4),
            _ => IpAddr::V6(ip),
        };
        SocketAddr::new(ip, u16::from_ne_bytes(a.port))
    }
}

impl std::fmt::Debug for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::from(*self).fmt(f)
    }
}

/// A connection end as its process's socket names it: (local, remote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndKey {
    local: Addr,
    remote: Addr,
}

impl EndKey {
    #[must_use]
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            local: local.into(),
            remote: remote.into(),
        }
    }

    /// The other end of the same connection when no NAT is in between: (remote, local).
    #[must_use]
    pub fn mirrored(self) -> Self {
        Self {
            local: self.remote,
            remote: self.local,
        }
    }

    #[must_use]
    pub fn local(self) -> SocketAddr {
        self.local.into()
    }

    #[must_use]
    pub fn remote(self) -> SocketAddr {
        self.remote.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(s: &str) {
        let a: SocketAddr = s.parse().unwrap();
        assert_eq!(SocketAddr::from(Addr::from(a)), a, "{s}");
    }

    #[test]
    fn addresses_come_back_as_they_went_in() {
        round_trip("127.0.0.1:8080");
        round_trip("0.0.0.0:0");
        round_trip("255.255.255.255:65535");
        round_trip("[::1]:443");
        round_trip("[2001:db8::7]:1");
        // The mapped form stays IPv6, distinct from the IPv4 address it maps.
        round_trip("[::ffff:10.0.0.1]:80");
        round_trip("[::]:0");
    }

    #[test]
    fn an_ipv4_address_and_its_mapped_form_are_different_keys() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_ne!(Addr::from(v4), Addr::from(mapped));
        assert_ne!(EndKey::new(v4, v4), EndKey::new(mapped, v4));
    }

    #[test]
    fn an_end_is_small_and_mirrors() {
        assert_eq!(size_of::<EndKey>(), 38);
        assert_eq!(align_of::<EndKey>(), 1);
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        let end = EndKey::new(a, b);
        assert_eq!((end.local(), end.remote()), (a, b));
        assert_eq!(end.mirrored(), EndKey::new(b, a));
        assert_eq!(end.mirrored().mirrored(), end);
        assert_eq!(
            format!("{end:?}"),
            "EndKey { local: 10.0.0.1:40000, remote: 10.0.0.2:80 }"
        );
    }
}
