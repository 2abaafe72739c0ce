//! Direct reading of the policies for one connection, without tables.
//!
//! This is the reference the compiled tables are tested against and what
//! `sluice policy trace` shows, so it stays a plain transcription of the
//! semantics: selectors against labels, blocks against addresses, ports
//! against the port. It never looks at identities or the ipcache.

use super::cluster::{PodView, Remote};
use super::engine::PolicyEngine;
use super::model::{Entity, PolicyPort, PortMatch};
use super::rules::{PeerSel, Peers, Rule};
use super::state::{Direction, DirectionVerdict, Peer, RuleRef, Verdict};
use crate::model::Protocol;

/// Whether `sel` matches the remote end.
fn peer_matches(sel: &PeerSel, remote: &Remote<'_, '_>) -> bool {
    match sel {
        PeerSel::Pods { .. } | PeerSel::Endpoints(_) => match remote {
            Remote::Pod(p) => sel.matches_pod_labels(p),
            _ => false,
        },
        PeerSel::Cidr(block) => remote.ip().is_some_and(|ip| block.contains(ip)),
        PeerSel::Entity(e) => match e {
            Entity::All => true,
            Entity::World => matches!(remote, Remote::World(_)),
            Entity::Cluster => matches!(remote, Remote::Pod(_) | Remote::Host(_)),
            Entity::Host => matches!(remote, Remote::Host(_)),
            // Other nodes and health endpoints are not modelled as peers.
            Entity::RemoteNode | Entity::Health => false,
        },
    }
}

/// Whether one policy port admits `proto`/`port`; a named port needs the
/// pod it resolves on (`None`: it admits nothing).
fn port_matches(
    p: &PolicyPort,
    named_on: Option<&PodView<'_>>,
    proto: Protocol,
    port: u16,
) -> bool {
    let proto_ok = p.protocol.is_none_or(|q| q == proto);
    match &p.port {
        PortMatch::All => proto_ok,
        PortMatch::Range { start, end } => proto_ok && (*start..=*end).contains(&port),
        // The pod has a container port of that name with this protocol
        // and number.
        PortMatch::Named(name) => {
            proto_ok
                && named_on.is_some_and(|pod| {
                    pod.pod.ports.iter().any(|cp| {
                        cp.name.as_deref() == Some(name.as_str())
                            && cp.protocol == proto
                            && cp.port == port
                    })
                })
        }
    }
}

fn ports_match(
    ports: &[PolicyPort],
    named_on: Option<&PodView<'_>>,
    proto: Protocol,
    port: u16,
) -> bool {
    ports.is_empty() || ports.iter().any(|p| port_matches(p, named_on, proto, port))
}

/// Whether `rule` of a policy selecting `me` matches the connection.
fn rule_matches(
    rule: &Rule,
    me: &PodView<'_>,
    remote: &Remote<'_, '_>,
    proto: Protocol,
    port: u16,
) -> bool {
    let remote_pod = match remote {
        Remote::Pod(p) => Some(*p),
        _ => None,
    };
    // Named ports resolve on the destination: the endpoint itself for
    // ingress, the peer pod for egress (only if a pod-selecting peer
    // matched it).
    let named_on = |sel: Option<&PeerSel>| match rule.rref.direction {
        Direction::Ingress => Some(me),
        Direction::Egress if sel.is_none_or(PeerSel::resolves_named_ports) => remote_pod,
        Direction::Egress => None,
    };
    match &rule.peers {
        Peers::All => ports_match(&rule.ports, named_on(None), proto, port),
        Peers::Some(list) => list.iter().any(|sel| {
            peer_matches(sel, remote) && ports_match(&rule.ports, named_on(Some(sel)), proto, port)
        }),
    }
}

impl PolicyEngine {
    /// Would a new connection from `src` to `dst` on `proto`/`port` be
    /// allowed? Every pod counts as local here. A side that is not a pod
    /// (host, world) is not enforced.
    pub fn evaluate(&self, src: Peer, dst: Peer, proto: Protocol, port: u16) -> Verdict {
        let cluster = self.cluster();
        let src = cluster.resolve(&src);
        let dst = cluster.resolve(&dst);
        let egress = match &src {
            Remote::Pod(me) => self.side(Direction::Egress, me, &dst, proto, port),
            _ => DirectionVerdict::NotApplicable,
        };
        let ingress = match &dst {
            Remote::Pod(me) => self.side(Direction::Ingress, me, &src, proto, port),
            _ => DirectionVerdict::NotApplicable,
        };
        Verdict {
            allowed: egress.allows() && ingress.allows(),
            egress,
            ingress,
        }
    }

    /// One direction of one pod: deny rules first, then allow rules, then
    /// isolation. Among several matching rules the lowest id is reported.
    fn side(
        &self,
        dir: Direction,
        me: &PodView<'_>,
        remote: &Remote<'_, '_>,
        proto: Protocol,
        port: u16,
    ) -> DirectionVerdict {
        let mut selected_by = Vec::new();
        let mut deny: Option<&RuleRef> = None;
        let mut allow: Option<&RuleRef> = None;
        for policy in self.policies.values() {
            if !policy.enforces(dir) || !policy.subject.selects(me) {
                continue;
            }
            selected_by.push(policy.object.clone());
            for rule in policy.rules.iter().filter(|r| r.rref.direction == dir) {
                if !rule_matches(rule, me, remote, proto, port) {
                    continue;
                }
                let best = if rule.rref.deny {
                    &mut deny
                } else {
                    &mut allow
                };
                if best.is_none_or(|b| rule.rref.id < b.id) {
                    *best = Some(&rule.rref);
                }
            }
        }
        match (deny, allow) {
            _ if selected_by.is_empty() => DirectionVerdict::NotSelected,
            (Some(rule), _) => DirectionVerdict::DeniedByRule { rule: rule.clone() },
            (None, Some(rule)) => DirectionVerdict::Allowed { rule: rule.clone() },
            (None, None) if matches!(remote, Remote::Host(_)) => DirectionVerdict::HostAllowed,
            (None, None) => DirectionVerdict::DefaultDeny { selected_by },
        }
    }
}
