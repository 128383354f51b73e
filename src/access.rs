//! Source access control: which client addresses may use which gateway port.
//! Checked before any byte of the client's is read (after the PROXY header,
//! when one is expected, since that carries the real client address).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Allowed client networks, globally and per gateway port. Empty: everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    global: Vec<IpNet>,
    per_port: HashMap<u16, Vec<IpNet>>,
}

impl Access {
    /// From `--allow-cidr` entries: `(None, net)` for every port, `(Some(port), net)` for one.
    pub fn new(entries: &[(Option<u16>, IpNet)]) -> Self {
        let mut access = Access::default();
        for (port, net) in entries {
            match port {
                None => access.global.push(*net),
                Some(port) => access.per_port.entry(*port).or_default().push(*net),
            }
        }
        access
    }

    /// May `client` connect to gateway port `port`? A port with its own list
    /// uses that list plus the global one; with no list at all, everyone may.
    pub fn allows(&self, port: u16, client: IpAddr) -> bool {
        let client = canonical(client);
        let own = self.per_port.get(&port);
        if self.global.is_empty() && own.is_none() {
            return true;
        }
        self.global
            .iter()
            .chain(own.into_iter().flatten())
            .any(|net| net.contains(&client))
    }

    /// True when no rule is configured.
    pub fn is_open(&self) -> bool {
        self.global.is_empty() && self.per_port.is_empty()
    }
}

/// An IPv4 client on a dual-stack socket shows up as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_and_per_port_rules() {
        let access = Access::new(&[
            (None, "10.0.0.0/8".parse().unwrap()),
            (Some(5432), "192.168.1.0/24".parse().unwrap()),
        ]);
        assert!(access.allows(443, ip("10.1.2.3")));
        assert!(!access.allows(443, ip("192.168.1.5")));
        assert!(access.allows(5432, ip("192.168.1.5")));
        assert!(access.allows(5432, ip("10.1.2.3")));
        assert!(!access.allows(5432, ip("172.16.0.1")));
        assert!(
            access.allows(443, ip("::ffff:10.0.0.1")),
            "v4-mapped addresses match v4 rules"
        );
    }

    #[test]
    fn per_port_only_leaves_other_ports_open() {
        let access = Access::new(&[(Some(6379), "127.0.0.1/32".parse().unwrap())]);
        assert!(access.allows(443, ip("203.0.113.9")));
        assert!(!access.allows(6379, ip("203.0.113.9")));
        assert!(access.allows(6379, ip("127.0.0.1")));
        assert!(Access::default().is_open());
    }
}
