//! The datapath's lookup procedure, on a [`PolicyState`], in Rust: the
//! reference the BPF side implements, used by tests and by tracing tools
//! to show what the tables (rather than the policies) say.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::identity::{ID_ANY, ID_WORLD};
use super::state::{Direction, PolicyEntry, PolicyKey, PolicyState};

/// What the tables decide for one direction of one local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TableVerdict {
    /// Not a local endpoint, or not enforced in this direction.
    NotEnforced,
    Allowed {
        rule_id: u32,
    },
    Denied {
        rule_id: u32,
    },
    /// Enforced and no entry matched (rule id 0 in the datapath).
    DefaultDeny,
}

impl TableVerdict {
    pub fn allows(self) -> bool {
        matches!(
            self,
            TableVerdict::NotEnforced | TableVerdict::Allowed { .. }
        )
    }
}

impl PolicyState {
    /// The peer identity of `ip`: longest matching ipcache prefix, world
    /// when none matches.
    pub fn identity_of(&self, ip: Ipv4Addr) -> u32 {
        (0..=32u8)
            .rev()
            .filter_map(|len| Ipv4Net::new(ip, len).ok())
            .find_map(|net| self.ipcache.get(&net.trunc()).copied())
            .unwrap_or(ID_WORLD)
    }

    /// Longest entry of one (endpoint, identity, direction) table that
    /// matches `proto`/`port`.
    fn longest(
        &self,
        endpoint: Ipv4Addr,
        identity: u32,
        direction: Direction,
        proto: u8,
        port: u16,
    ) -> Option<PolicyEntry> {
        let lo = PolicyKey {
            endpoint,
            identity,
            direction,
            proto: 0,
            port: 0,
            port_prefix_len: 0,
        };
        let hi = PolicyKey {
            proto: u8::MAX,
            port: u16::MAX,
            port_prefix_len: u8::MAX,
            ..lo
        };
        self.entries
            .range(lo..=hi)
            .filter(|(k, _)| k.matches_l4(proto, port))
            .max_by_key(|(k, _)| k.l4_prefix_len())
            .map(|(_, e)| *e)
    }

    /// The datapath's decision for a new connection of local endpoint
    /// `endpoint` in `direction` with the remote end at `peer`: two lookups
    /// (peer identity, then any peer); a deny from either wins, then an
    /// allow from either, else default deny.
    pub fn lookup(
        &self,
        endpoint: Ipv4Addr,
        direction: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> TableVerdict {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return TableVerdict::NotEnforced;
        };
        let enforced = match direction {
            Direction::Ingress => ep.ingress_enforced,
            Direction::Egress => ep.egress_enforced,
        };
        if !enforced {
            return TableVerdict::NotEnforced;
        }
        let identity = self.identity_of(peer);
        let found = [
            self.longest(endpoint, identity, direction, proto, port),
            self.longest(endpoint, ID_ANY, direction, proto, port),
        ];
        if let Some(e) = found.iter().flatten().find(|e| e.deny) {
            return TableVerdict::Denied { rule_id: e.rule_id };
        }
        match found.iter().flatten().next() {
            Some(e) => TableVerdict::Allowed { rule_id: e.rule_id },
            None => TableVerdict::DefaultDeny,
        }
    }
}
