//! One rule's peers and ports → policy entries, and the deny-wins pass.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::cluster::PodView;
use super::identity::ID_ANY;
use super::model::{PolicyPort, PortMatch};
use super::ports::port_blocks;
use super::resolve::{Ctx, PeerSet};
use super::rules::Rule;
use super::state::{Direction, PolicyEntry, PolicyKey};
use crate::model::Protocol;

const ALL_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// Adds an entry; on the same key a deny beats an allow and otherwise the
/// lower rule id is kept, so the result does not depend on order.
fn add(entries: &mut BTreeMap<PolicyKey, PolicyEntry>, key: PolicyKey, entry: PolicyEntry) {
    let slot = entries.entry(key).or_insert(entry);
    if (entry.deny, Reverse(entry.rule_id)) > (slot.deny, Reverse(slot.rule_id)) {
        *slot = entry;
    }
}

/// The entry that lets the pod's own node through in `dir`, whatever the
/// policies say (a deny on the same key still wins, and more specific
/// denies win by `deny_wins`).
pub(super) fn host_entry(
    entries: &mut BTreeMap<PolicyKey, PolicyEntry>,
    endpoint: std::net::Ipv4Addr,
    direction: super::state::Direction,
) {
    let key = PolicyKey {
        endpoint,
        identity: super::identity::ID_HOST,
        direction,
        proto: 0,
        port: 0,
        port_prefix_len: 0,
    };
    let entry = PolicyEntry {
        deny: false,
        rule_id: super::state::RULE_ID_HOST,
    };
    add(entries, key, entry);
}

/// (proto, port, prefix length) triples one policy port stands for, where
/// `named` lists the matching container ports of the pod it resolves on.
fn l4_keys(port: &PolicyPort, named: &[(Protocol, u16)]) -> Vec<(u8, u16, u8)> {
    let protos: Vec<Protocol> = match port.protocol {
        Some(p) => vec![p],
        None => ALL_PROTOCOLS.to_vec(),
    };
    match &port.port {
        PortMatch::All if port.protocol.is_none() => vec![(0, 0, 0)],
        PortMatch::All => protos.iter().map(|p| (p.as_u8(), 0, 0)).collect(),
        PortMatch::Range { start, end } => protos
            .iter()
            .flat_map(|p| {
                port_blocks(*start, *end)
                    .into_iter()
                    .map(move |(base, len)| (p.as_u8(), base, len))
            })
            .collect(),
        PortMatch::Named(_) => named.iter().map(|(p, n)| (p.as_u8(), *n, 16)).collect(),
    }
}

/// Container ports of `pod` a named policy port refers to.
fn named_ports(pod: &PodView<'_>, port: &PolicyPort) -> Vec<(Protocol, u16)> {
    let PortMatch::Named(name) = &port.port else {
        return Vec::new();
    };
    pod.pod
        .ports
        .iter()
        .filter(|cp| cp.name.as_deref() == Some(name.as_str()))
        .filter(|cp| port.protocol.is_none_or(|p| p == cp.protocol))
        .map(|cp| (cp.protocol, cp.port))
        .collect()
}

/// Entries of one rule for one local endpoint.
pub(super) fn rule_entries(
    ctx: &Ctx<'_, '_>,
    rule: &Rule,
    endpoint: Ipv4Addr,
    me: &PodView<'_>,
    peers: &PeerSet<'_, '_>,
    entries: &mut BTreeMap<PolicyKey, PolicyEntry>,
) {
    let dir = rule.rref.direction;
    let entry = PolicyEntry {
        deny: rule.rref.deny,
        rule_id: rule.rref.id,
    };
    let peer_ids: Vec<u32> = if peers.any {
        vec![ID_ANY]
    } else {
        peers.ids.iter().copied().collect()
    };
    let mut emit = |identity: u32, (proto, port, port_prefix_len): (u8, u16, u8)| {
        let key = PolicyKey {
            endpoint,
            identity,
            direction: dir,
            proto,
            port,
            port_prefix_len,
        };
        add(entries, key, entry);
    };
    if rule.ports.is_empty() {
        for &id in &peer_ids {
            emit(id, (0, 0, 0));
        }
        return;
    }
    for port in &rule.ports {
        match (&port.port, dir) {
            // Egress: the named port is the destination pod's, so entries
            // are per destination identity, with that pod's number.
            (PortMatch::Named(_), Direction::Egress) => {
                for pod in &peers.pods {
                    let Some(id) = ctx.pod_id(pod) else { continue };
                    for l4 in l4_keys(port, &named_ports(pod, port)) {
                        emit(id, l4);
                    }
                }
            }
            // Ingress: the named port is the endpoint's own.
            _ => {
                let named = named_ports(me, port);
                for l4 in l4_keys(port, &named) {
                    for &id in &peer_ids {
                        emit(id, l4);
                    }
                }
            }
        }
    }
}

/// Makes deny win over a more specific allow in the same (endpoint,
/// identity, direction) table: such an allow takes the rule id of the most
/// specific deny covering it.
pub(super) fn deny_wins(entries: &mut BTreeMap<PolicyKey, PolicyEntry>) {
    let rows: Vec<(PolicyKey, PolicyEntry)> = entries.iter().map(|(k, e)| (*k, *e)).collect();
    let table = |k: &PolicyKey| (k.endpoint, k.identity, k.direction);
    for group in rows.chunk_by(|a, b| table(&a.0) == table(&b.0)) {
        let denies: Vec<&(PolicyKey, PolicyEntry)> = group.iter().filter(|(_, e)| e.deny).collect();
        if denies.is_empty() {
            continue;
        }
        for (key, _) in group.iter().filter(|(_, e)| !e.deny) {
            let cover = denies
                .iter()
                .filter(|(dk, _)| dk.covers_l4(key))
                .max_by_key(|(dk, de)| (dk.l4_prefix_len(), Reverse(de.rule_id)));
            if let Some((_, de)) = cover {
                entries.insert(*key, *de);
            }
        }
    }
}
