//! Shared by the policy tests: object builders and an independent model
//! of the datapath's policy lookup, to check compiled tables against
//! `PolicyEngine::evaluate`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sluice_core::model::{Change, ContainerPort, Meta, Namespace, Object, Pod};
use sluice_core::policy::{
    Direction, DirectionVerdict, Peer, PolicyEngine, PolicyState, TableVerdict, Verdict, ID_ANY,
    ID_WORLD, RULE_ID_HOST,
};
use sluice_core::{parse_documents, Protocol};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn namespace(name: &str, l: &[(&str, &str)]) -> Change {
    Change::Upsert(Object::Namespace(Namespace {
        meta: Meta {
            name: name.into(),
            labels: labels(l),
            ..Meta::default()
        },
    }))
}

/// `ports`: (name, protocol, number).
pub fn pod(
    ns: &str,
    name: &str,
    l: &[(&str, &str)],
    ip: Option<&str>,
    ports: &[(&str, Protocol, u16)],
) -> Change {
    Change::Upsert(Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: ns.into(),
            labels: labels(l),
            ..Meta::default()
        },
        ports: ports
            .iter()
            .map(|&(n, protocol, port)| ContainerPort {
                name: Some(n.to_string()),
                port,
                protocol,
            })
            .collect(),
        ip: ip.map(|s| s.parse().unwrap()),
        ready: true,
        terminating: false,
    }))
}

/// Parses manifests that must all be valid.
pub fn manifests(text: &str) -> Vec<Change> {
    let out = parse_documents("t.yaml", text);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    out.objects
        .into_iter()
        .map(|(o, _)| Change::Upsert(o))
        .collect()
}

/// Longest-prefix ipcache lookup, world when nothing matches.
pub fn identity_of(state: &PolicyState, ip: Ipv4Addr) -> u32 {
    let mut best: Option<(u8, u32)> = None;
    for (net, &id) in &state.ipcache {
        if net.contains(&ip) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
            best = Some((net.prefix_len(), id));
        }
    }
    best.map_or(ID_WORLD, |(_, id)| id)
}

/// The longest entry for (endpoint, identity, direction) matching the
/// packet, with prefix length counted as the datapath does.
fn longest(
    state: &PolicyState,
    endpoint: Ipv4Addr,
    identity: u32,
    direction: Direction,
    proto: u8,
    port: u16,
) -> Option<(bool, u32)> {
    let mut best: Option<(u32, bool, u32)> = None;
    for (k, e) in &state.entries {
        if k.endpoint != endpoint || k.identity != identity || k.direction != direction {
            continue;
        }
        let len = if k.proto == 0 {
            72
        } else {
            if k.proto != proto {
                continue;
            }
            let shift = 16 - u32::from(k.port_prefix_len);
            let mask = if shift >= 16 { 0 } else { u16::MAX << shift };
            if k.port & mask != port & mask {
                continue;
            }
            80 + u32::from(k.port_prefix_len)
        };
        assert!(
            best.is_none_or(|(l, _, _)| l != len),
            "two entries of the same length match: {k:?}"
        );
        if best.is_none_or(|(l, _, _)| len > l) {
            best = Some((len, e.deny, e.rule_id));
        }
    }
    best.map(|(_, deny, id)| (deny, id))
}

/// One side as the datapath decides it.
pub fn datapath_side(
    state: &PolicyState,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: Ipv4Addr,
    proto: u8,
    port: u16,
) -> TableVerdict {
    let Some(ep) = state.endpoints.get(&endpoint) else {
        return TableVerdict::NotEnforced;
    };
    let enforced = match direction {
        Direction::Ingress => ep.ingress_enforced,
        Direction::Egress => ep.egress_enforced,
    };
    if !enforced {
        return TableVerdict::NotEnforced;
    }
    let id = identity_of(state, peer);
    let a = longest(state, endpoint, id, direction, proto, port);
    let b = longest(state, endpoint, ID_ANY, direction, proto, port);
    let v = match (a, b) {
        (Some((true, r)), _) | (_, Some((true, r))) => TableVerdict::Denied { rule_id: r },
        (Some((false, r)), _) | (_, Some((false, r))) => TableVerdict::Allowed { rule_id: r },
        (None, None) => TableVerdict::DefaultDeny,
    };
    // The library's own model of the lookup must agree with this one.
    assert_eq!(
        state
            .lookup(endpoint, direction, peer, proto, port)
            .allows(),
        v.allows()
    );
    v
}

/// Checks a table verdict against the evaluator's verdict for one side:
/// same decision, and the rule the tables report is a rule of the right
/// kind.
fn agree(state: &PolicyState, table: TableVerdict, eval: &DirectionVerdict, what: &str) {
    match (table, eval) {
        (TableVerdict::NotEnforced, DirectionVerdict::NotSelected)
        | (TableVerdict::NotEnforced, DirectionVerdict::NotApplicable)
        | (TableVerdict::DefaultDeny, DirectionVerdict::DefaultDeny { .. }) => {}
        // The node's implicit allow: the evaluator names a rule when one
        // also allows the node, or says the node is always allowed.
        (
            TableVerdict::Allowed {
                rule_id: RULE_ID_HOST,
            },
            DirectionVerdict::Allowed { .. } | DirectionVerdict::HostAllowed,
        ) => {}
        (TableVerdict::Allowed { rule_id }, DirectionVerdict::Allowed { .. }) => {
            assert!(!state.rules[&rule_id].deny, "{what}: allow from deny rule");
        }
        (TableVerdict::Denied { rule_id }, DirectionVerdict::DeniedByRule { .. }) => {
            assert!(state.rules[&rule_id].deny, "{what}: deny from allow rule");
        }
        _ => panic!("{what}: tables say {table:?}, evaluate says {eval:?}"),
    }
}

/// An engine, its compile with every pod local, and pod names → IPs.
pub struct Fixture {
    pub engine: PolicyEngine,
    pub state: PolicyState,
    pub ips: BTreeMap<String, Ipv4Addr>,
}

impl Fixture {
    pub fn new(node_ips: &[&str], changes: &[Change]) -> Self {
        let mut engine = PolicyEngine::new(node_ips.iter().map(|s| s.parse().unwrap()).collect());
        engine.apply(changes);
        let mut ips = BTreeMap::new();
        for c in changes {
            if let Change::Upsert(Object::Pod(p)) = c {
                if let Some(ip) = p.ip {
                    ips.insert(format!("{}/{}", p.meta.namespace, p.meta.name), ip);
                }
            }
        }
        let local: BTreeSet<Ipv4Addr> = ips.values().copied().collect();
        let state = engine.compile(&local);
        Self { engine, state, ips }
    }

    /// `ns/name` is a pod, anything else an IP.
    pub fn peer(&self, s: &str) -> (Peer, Ipv4Addr) {
        match s.split_once('/') {
            Some((namespace, name)) => (
                Peer::Pod {
                    namespace: namespace.into(),
                    name: name.into(),
                },
                self.ips[s],
            ),
            None => {
                let ip = s.parse().unwrap();
                (Peer::Ip(ip), ip)
            }
        }
    }

    /// Evaluates, checks the tables agree, returns the verdict.
    pub fn verdict(&self, src: &str, dst: &str, proto: Protocol, port: u16) -> Verdict {
        let (sp, sip) = self.peer(src);
        let (dp, dip) = self.peer(dst);
        let v = self.engine.evaluate(sp, dp, proto, port);
        check_tables(&self.state, sip, dip, proto, port, &v);
        v
    }

    pub fn allowed(&self, src: &str, dst: &str, proto: Protocol, port: u16) -> bool {
        self.verdict(src, dst, proto, port).allowed
    }

    pub fn tcp(&self, src: &str, dst: &str, port: u16) -> bool {
        self.allowed(src, dst, Protocol::Tcp, port)
    }
}

/// Both sides of the datapath for one connection (every pod local)
/// against `v`.
pub fn check_tables(
    state: &PolicyState,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: Protocol,
    port: u16,
    v: &Verdict,
) {
    let what = format!("{src} -> {dst} {proto}/{port}");
    let egress = datapath_side(state, src, Direction::Egress, dst, proto.as_u8(), port);
    let ingress = datapath_side(state, dst, Direction::Ingress, src, proto.as_u8(), port);
    agree(state, egress, &v.egress, &format!("{what} egress"));
    agree(state, ingress, &v.ingress, &format!("{what} ingress"));
    assert_eq!(egress.allows() && ingress.allows(), v.allowed, "{what}");
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
