//! What the policy compiler produces and what `evaluate` answers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::identity::IdentityInfo;
use crate::model::ObjectRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The datapath's encoding.
    pub fn as_u8(self) -> u8 {
        match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }

    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// One rule of one policy. `id` is what the datapath reports in verdicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: u32,
    pub policy: ObjectRef,
    pub direction: Direction,
    /// Index in the policy's `ingress`/`egress` (or `…Deny`) list.
    pub index: usize,
    pub deny: bool,
}

impl fmt::Display for RuleRef {
    /// `x/allow-foo ingress[0]`, `x/block egressDeny[2]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deny = if self.deny { "Deny" } else { "" };
        write!(
            f,
            "{}/{} {}{deny}[{}]",
            self.policy.namespace, self.policy.name, self.direction, self.index
        )
    }
}

/// Key of the policy LPM table. Field order is the key's bit order, so the
/// derived `Ord` sorts entries as the datapath's trie nests them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyKey {
    /// The local pod the entry belongs to.
    pub endpoint: Ipv4Addr,
    /// Peer identity; [`super::identity::ID_ANY`] matches every peer.
    pub identity: u32,
    pub direction: Direction,
    /// IPPROTO number; 0 = every protocol (then `port` and
    /// `port_prefix_len` are 0).
    pub proto: u8,
    /// Bits below `port_prefix_len` are zero.
    pub port: u16,
    /// 0..=16; 0 = every port of `proto`, 16 = exactly `port`.
    pub port_prefix_len: u8,
}

impl PolicyKey {
    /// Bits after (endpoint, identity, direction) this key matches on:
    /// 0 for any protocol, else 8 + the port prefix.
    pub fn l4_prefix_len(&self) -> u8 {
        if self.proto == 0 {
            0
        } else {
            8 + self.port_prefix_len
        }
    }

    /// LPM prefix length over the whole 88-bit key.
    pub fn prefix_len(&self) -> u32 {
        72 + u32::from(self.l4_prefix_len())
    }

    /// Whether a packet of `proto`/`port` falls under this key's L4 part.
    pub fn matches_l4(&self, proto: u8, port: u16) -> bool {
        if self.proto == 0 {
            return true;
        }
        self.proto == proto && port_prefix_matches(self.port, self.port_prefix_len, port)
    }

    /// Whether every packet `other` matches is also matched by `self`
    /// (same endpoint, identity and direction assumed).
    pub fn covers_l4(&self, other: &PolicyKey) -> bool {
        if self.proto == 0 {
            return true;
        }
        self.proto == other.proto
            && self.port_prefix_len <= other.port_prefix_len
            && port_prefix_matches(self.port, self.port_prefix_len, other.port)
    }
}

fn port_prefix_matches(base: u16, len: u8, port: u16) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(len.min(16)))
    };
    base & mask == port & mask
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub deny: bool,
    /// The [`RuleRef`] this entry comes from (never 0).
    pub rule_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    pub pod: ObjectRef,
    pub identity: u32,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// Policies that isolate this pod for ingress, in order.
    pub selected_by_ingress: Vec<ObjectRef>,
    pub selected_by_egress: Vec<ObjectRef>,
}

/// Everything the policy maps of one node should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    pub identities: BTreeMap<u32, IdentityInfo>,
    /// Prefix → identity: pod IPs, node IPs (host) and policy CIDRs.
    pub ipcache: BTreeMap<Ipv4Net, u32>,
    /// Local pods only, by IP.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointPolicy>,
    /// Serialized as a list of `{key, entry}`: JSON map keys must be strings.
    #[serde(with = "entries_as_list")]
    pub entries: BTreeMap<PolicyKey, PolicyEntry>,
    /// Every rule id that appears in `entries`.
    pub rules: BTreeMap<u32, RuleRef>,
}

mod entries_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{PolicyEntry, PolicyKey};

    #[derive(Serialize, Deserialize)]
    struct Row {
        key: PolicyKey,
        entry: PolicyEntry,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<PolicyKey, PolicyEntry>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(&key, &entry)| Row { key, entry }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<PolicyKey, PolicyEntry>, D::Error> {
        let rows = Vec::<Row>::deserialize(d)?;
        Ok(rows.into_iter().map(|r| (r.key, r.entry)).collect())
    }
}

/// One side of a connection, for [`super::PolicyEngine::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer {
    Pod {
        namespace: String,
        name: String,
    },
    /// An address; if it is a known pod's IP, that pod.
    Ip(Ipv4Addr),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Peer::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Rule id of the entries that let a pod's own node reach it and be
/// reached by it (no policy rule produced them).
pub const RULE_ID_HOST: u32 = u32::MAX;

/// The outcome for one direction (egress of the source, ingress of the
/// destination).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectionVerdict {
    /// A pod no policy isolates in this direction: open.
    NotSelected,
    Allowed {
        rule: RuleRef,
    },
    /// A CiliumNetworkPolicy deny rule matched.
    DeniedByRule {
        rule: RuleRef,
    },
    /// The peer is this node: always allowed (Kubernetes: traffic to and
    /// from the node a pod runs on is allowed whatever the policies say),
    /// unless a deny rule names it.
    HostAllowed,
    /// Isolated, and no rule allows it.
    DefaultDeny {
        selected_by: Vec<ObjectRef>,
    },
    /// This side is not a pod (host, world, unknown): nothing to enforce.
    NotApplicable,
}

impl DirectionVerdict {
    pub fn allows(&self) -> bool {
        matches!(
            self,
            DirectionVerdict::NotSelected
                | DirectionVerdict::Allowed { .. }
                | DirectionVerdict::HostAllowed
                | DirectionVerdict::NotApplicable
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: DirectionVerdict,
    pub ingress: DirectionVerdict,
}
