//! The agent's NetworkPolicy plane: feeds the pure compiler
//! ([`PolicyEngine`]) with the store's changes, compiles for the pods on this
//! node, writes the result through [`PolicyReconciler`], and answers the
//! explain questions (`sluice identity list`, `policy get`, `policy trace`)
//! from the same compiled state the datapath holds.

use crate::flows::Telemetry;
use crate::policy_sync::PolicyReconciler;
use sluice_api::{
    EndpointPolicyView, IdentityView, PolicyEntryView, PolicyStatus, PolicyTraceRequest,
    PolicyTraceResult,
};
use sluice_core::model::{Meta, Pod};
use sluice_core::policy::{
    Direction, DirectionVerdict, IdentityKind, Peer, PolicyEngine, PolicyKey, PolicyState,
    RULE_ID_HOST,
};
use sluice_core::{Change, Kind, Object, ObjectRef, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

/// A pod the CNI registered, for policy: key and address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

pub struct PolicyPlane {
    engine: PolicyEngine,
    state: PolicyState,
    reconciler: Option<PolicyReconciler>,
    revision: u32,
    /// The maps may differ from `state`: write on the next sync.
    dirty: bool,
    /// Registered pods without a Pod object: given to the engine with no
    /// labels, so selectors like `podSelector: {}` still see them.
    synthesized: BTreeSet<(String, String)>,
    policies: BTreeSet<ObjectRef>,
}

fn pod_ref(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::Pod,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn is_policy_kind(k: Kind) -> bool {
    matches!(k, Kind::NetworkPolicy | Kind::CiliumNetworkPolicy)
}

/// Whether a change can alter what policy compiles to.
fn relevant(c: &Change) -> bool {
    let kind = match c {
        Change::Upsert(o) => o.kind(),
        Change::Delete(r) => r.kind,
    };
    matches!(kind, Kind::Namespace | Kind::Pod) || is_policy_kind(kind)
}

impl PolicyPlane {
    pub fn new(pin_dir: &Path, node_ips: Vec<Ipv4Addr>, tel: &Telemetry) -> Self {
        let reconciler = match PolicyReconciler::open(pin_dir) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "policy maps unavailable: NetworkPolicy is not enforced");
                None
            }
        };
        tracing::info!(node_ips = ?node_ips, "policy: node addresses get the host identity");
        Self {
            engine: PolicyEngine::new(node_ips),
            state: PolicyState::default(),
            reconciler,
            revision: tel.policy_revision(),
            dirty: true,
            synthesized: BTreeSet::new(),
            policies: BTreeSet::new(),
        }
    }

    /// Feeds the store's changes, then the registered pods that have no
    /// Pod object. Marks the plane dirty when something relevant changed.
    pub fn observe(
        &mut self,
        changes: &[Change],
        local: &[LocalPod],
        has_pod_object: impl Fn(&ObjectRef) -> bool,
    ) {
        let ours: Vec<Change> = changes.iter().filter(|c| relevant(c)).cloned().collect();
        for c in &ours {
            match c {
                Change::Upsert(o) if is_policy_kind(o.kind()) => {
                    self.policies.insert(o.object_ref());
                }
                Change::Delete(r) if is_policy_kind(r.kind) => {
                    self.policies.remove(r);
                }
                _ => {}
            }
        }
        let mut synth = Vec::new();
        let want: BTreeMap<(String, String), Ipv4Addr> = local
            .iter()
            .filter(|p| !has_pod_object(&pod_ref(&p.namespace, &p.name)))
            .map(|p| ((p.namespace.clone(), p.name.clone()), p.ip))
            .collect();
        for ((ns, name), ip) in &want {
            // Also re-sent when the store just deleted the pod's manifest.
            let manifest_gone = ours
                .iter()
                .any(|c| matches!(c, Change::Delete(r) if *r == pod_ref(ns, name)));
            if self.synthesized.insert((ns.clone(), name.clone())) || manifest_gone {
                synth.push(Change::Upsert(Object::Pod(Pod {
                    meta: Meta {
                        name: name.clone(),
                        namespace: ns.clone(),
                        ..Meta::default()
                    },
                    ports: Vec::new(),
                    ip: Some(*ip),
                    ready: true,
                    terminating: false,
                })));
            }
        }
        let gone: Vec<(String, String)> = self
            .synthesized
            .iter()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.synthesized.remove(&(ns.clone(), name.clone()));
            // Still registered: the store has its Pod object now, which
            // replaced the synthesized one; only a pod that left the node
            // is deleted.
            if !local.iter().any(|p| p.namespace == ns && p.name == name) {
                synth.push(Change::Delete(pod_ref(&ns, &name)));
            }
        }
        if ours.is_empty() && synth.is_empty() {
            return;
        }
        self.engine.apply(&ours);
        self.engine.apply(&synth);
        self.dirty = true;
    }

    /// The local endpoint set changed (a pod registered or left).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Compiles for `local` and writes what changed. Cheap when nothing did.
    pub fn sync(&mut self, local: &[LocalPod], tel: &Telemetry) {
        if !self.dirty {
            return;
        }
        let Some(reconciler) = self.reconciler.as_mut() else {
            return;
        };
        let started = Instant::now();
        let ips: BTreeSet<Ipv4Addr> = local.iter().map(|p| p.ip).collect();
        let state = self.engine.compile(&ips);
        let compiled = started.elapsed();
        match reconciler.apply(&state) {
            // Nothing to write; a revision that could not be published
            // before (the on/off flag with it) is retried until it is.
            Ok(0) => match tel.set_policy(reconciler.active(), self.revision) {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::error!(error = %e, "cannot publish the policy revision"),
            },
            Ok(writes) => {
                self.revision = self.revision.wrapping_add(1);
                match tel.set_policy(reconciler.active(), self.revision) {
                    Ok(()) => self.dirty = false,
                    Err(e) => tracing::error!(error = %e, "cannot publish the policy revision"),
                }
                tracing::info!(
                    writes,
                    revision = self.revision,
                    endpoints = state.endpoints.len(),
                    entries = state.entries.len(),
                    compile_us = compiled.as_micros() as u64,
                    total_us = started.elapsed().as_micros() as u64,
                    "policy maps updated"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "policy map update incomplete; retrying");
            }
        }
        let rules = state
            .rules
            .iter()
            .map(|(id, r)| (*id, r.to_string()))
            .collect();
        tel.update_names(|n| n.rules = rules);
        self.state = state;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            policies: self.policies.len(),
            identities: self.state.identities.len(),
            enforced_endpoints: self
                .state
                .endpoints
                .values()
                .filter(|e| e.ingress_enforced || e.egress_enforced)
                .count(),
            entries: self.state.entries.len(),
            revision: self.revision,
        }
    }

    pub fn identities(&self) -> Vec<IdentityView> {
        let mut pods: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for ep in self.state.endpoints.values() {
            pods.entry(ep.identity)
                .or_default()
                .push(format!("{}/{}", ep.pod.namespace, ep.pod.name));
        }
        self.state
            .identities
            .values()
            .map(|i| IdentityView {
                id: i.id,
                kind: match i.kind {
                    IdentityKind::Reserved => "reserved",
                    IdentityKind::Pod => "pod",
                    IdentityKind::Cidr => "cidr",
                }
                .to_string(),
                labels: i.labels.clone(),
                pods: pods.remove(&i.id).unwrap_or_default(),
            })
            .collect()
    }

    fn peer_name(&self, id: u32) -> String {
        if id == 0 {
            return "any".into();
        }
        match self.state.identities.get(&id) {
            Some(i) if i.kind == IdentityKind::Pod => {
                // The pod's own labels are the readable part; namespace
                // labels are prefixed and long.
                let own: Vec<&str> = i
                    .labels
                    .iter()
                    .filter(|l| !l.starts_with("k8s:io.cilium.k8s.namespace.labels."))
                    .map(String::as_str)
                    .collect();
                format!("{id} ({})", own.join(","))
            }
            Some(i) => format!("{id} ({})", i.labels.join(",")),
            None => id.to_string(),
        }
    }

    fn entry_view(&self, k: &PolicyKey, deny: bool, rule_id: u32) -> PolicyEntryView {
        let protocol = match k.proto {
            0 => "any".to_string(),
            p => Protocol::from_u8(p).map_or_else(|| p.to_string(), |p| p.to_string()),
        };
        let ports = if k.proto == 0 || k.port_prefix_len == 0 {
            "all".to_string()
        } else {
            let span = (1u32 << (16 - u32::from(k.port_prefix_len.min(16)))) - 1;
            let last = u32::from(k.port) + span;
            if span == 0 {
                k.port.to_string()
            } else {
                format!("{}-{last}", k.port)
            }
        };
        PolicyEntryView {
            direction: k.direction.to_string(),
            peer_identity: k.identity,
            peer: self.peer_name(k.identity),
            protocol,
            ports,
            verdict: if deny { "deny" } else { "allow" }.into(),
            rule_id,
            rule: if rule_id == RULE_ID_HOST {
                "the pod's own node (always allowed)".to_string()
            } else {
                self.state
                    .rules
                    .get(&rule_id)
                    .map_or_else(|| format!("rule {rule_id}"), ToString::to_string)
            },
        }
    }

    pub fn endpoints(&self) -> Vec<EndpointPolicyView> {
        self.state
            .endpoints
            .iter()
            .map(|(ip, ep)| {
                let entries = self
                    .state
                    .entries
                    .iter()
                    .filter(|(k, _)| k.endpoint == *ip)
                    .map(|(k, v)| self.entry_view(k, v.deny, v.rule_id))
                    .collect();
                EndpointPolicyView {
                    pod: format!("{}/{}", ep.pod.namespace, ep.pod.name),
                    ip: *ip,
                    identity: ep.identity,
                    ingress_enforced: ep.ingress_enforced,
                    egress_enforced: ep.egress_enforced,
                    selected_by_ingress: ep
                        .selected_by_ingress
                        .iter()
                        .map(|r| r.to_string())
                        .collect(),
                    selected_by_egress: ep
                        .selected_by_egress
                        .iter()
                        .map(|r| r.to_string())
                        .collect(),
                    entries,
                }
            })
            .collect()
    }

    /// Evaluates a connection with the compiler's own semantics.
    pub fn trace(&self, req: &PolicyTraceRequest) -> Result<PolicyTraceResult, String> {
        let peer = |s: &str, what: &str| -> Result<Peer, String> {
            if let Ok(ip) = s.parse::<Ipv4Addr>() {
                return Ok(Peer::Ip(ip));
            }
            match s.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Peer::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                }),
                _ => Err(format!(
                    "{what}: {s:?} is neither namespace/pod nor an IPv4 address"
                )),
            }
        };
        let src = peer(&req.from, "from")?;
        let dst = peer(&req.to, "to")?;
        let proto = Protocol::parse_k8s(&req.protocol.to_ascii_uppercase())
            .ok_or_else(|| format!("protocol {:?} is not one of TCP, UDP, SCTP", req.protocol))?;
        let v = self.engine.evaluate(src, dst, proto, req.port);
        Ok(PolicyTraceResult {
            allowed: v.allowed,
            egress: describe(&v.egress, Direction::Egress),
            ingress: describe(&v.ingress, Direction::Ingress),
        })
    }
}

fn describe(v: &DirectionVerdict, d: Direction) -> String {
    match v {
        DirectionVerdict::NotSelected => format!("no {d} policy selects it: open"),
        DirectionVerdict::NotApplicable => "not a pod: no policy applies".into(),
        DirectionVerdict::HostAllowed => {
            "the pod's own node: always allowed (no deny rule names it)".into()
        }
        DirectionVerdict::Allowed { rule } => format!("allowed by {rule}"),
        DirectionVerdict::DeniedByRule { rule } => format!("denied by {rule}"),
        DirectionVerdict::DefaultDeny { selected_by } => format!(
            "default deny: selected by {}",
            selected_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
