//! Incremental service compiler: object changes → desired datapath tables
//! and the ordered map operations that reach them.
//!
//! Only Services touched by a change are recompiled, found through the
//! reverse indexes in [`crate::index`], so the cost of a change does not
//! grow with the number of Services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::CompileConfig;
use crate::endpoints::{backends_for, Scope};
use crate::health::{health_check, HealthCheckSpec};
use crate::ids::{IdAllocator, IdError};
use crate::index::{Key, Objects};
pub use crate::model::Protocol;
use crate::model::{Change, Service};
use crate::plan::{
    plan_frontend, AppliedState, MapOp, Master, FLAG_AFFINITY, FLAG_DROP_NO_BACKEND,
    FLAG_ETP_LOCAL, FLAG_EXTERNAL, FLAG_MAGLEV, FLAG_NODE_PORT, FLAG_SOURCE_RANGES,
};
use ipnet::Ipv4Net;

/// A service address as the datapath matches it. `ip` 0.0.0.0 is a
/// NodePort: it matches every node address that serves NodePorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    /// Which clients the entry serves (`lb_service_key.scope`).
    #[serde(default)]
    pub scope: FrontendScope,
}

impl Frontend {
    /// A frontend of scope [`FrontendScope::All`].
    pub fn new(ip: Ipv4Addr, port: u16, proto: Protocol) -> Self {
        Self {
            ip,
            port,
            proto,
            scope: FrontendScope::All,
        }
    }
}

/// externalTrafficPolicy Local gives an external address two backend sets
/// (as Cilium's service scopes): every client but external ones uses the
/// cluster-wide set, external clients the set of this node's endpoints.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum FrontendScope {
    /// The frontend's entry for every client (`LB_SCOPE_ALL`).
    #[default]
    All,
    /// eTP Local: the entry external clients use, local endpoints only
    /// (`LB_SCOPE_EXTERNAL`).
    External,
}

impl FrontendScope {
    /// `lb_service_key.scope` / `lb_revnat.scope`.
    pub fn as_u8(self) -> u8 {
        match self {
            FrontendScope::All => 0,
            FrontendScope::External => 1,
        }
    }

    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(FrontendScope::All),
            1 => Some(FrontendScope::External),
            _ => None,
        }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)?;
        if self.scope == FrontendScope::External {
            f.write_str(" (external, local endpoints)")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendAddr {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

/// One programmed frontend of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DesiredService {
    pub frontend: Frontend,
    /// `namespace/name`.
    pub service: String,
    pub port_name: String,
    pub kind: FrontendKind,
    pub rev_nat_id: u32,
    /// Slot order: backends sorted by address.
    pub backend_ids: Vec<u32>,
    /// Session affinity (ClientIP) timeout in seconds; 0 = none.
    #[serde(default)]
    pub affinity_timeout: u32,
    /// With no backend, drop (internalTrafficPolicy Local) instead of refusing.
    #[serde(default)]
    pub drop_no_backend: bool,
    /// Backends are picked from a Maglev table (`crate::maglev`).
    #[serde(default)]
    pub maglev: bool,
    /// externalTrafficPolicy Local on an external address (scope All
    /// entry): external clients use the [`FrontendScope::External`] entry.
    #[serde(default)]
    pub external_local: bool,
    /// loadBalancerSourceRanges (LB IP frontends only): only these sources
    /// may connect; the agent writes them into `sl_src_ranges`.
    #[serde(default)]
    pub source_ranges: Vec<Ipv4Net>,
}

impl DesiredService {
    pub fn master(&self) -> Master {
        Master {
            // The compiler caps backends at u16::MAX per frontend.
            count: u16::try_from(self.backend_ids.len()).unwrap_or(u16::MAX),
            rev_nat_id: self.rev_nat_id,
            flags: match self.kind {
                FrontendKind::NodePort => FLAG_NODE_PORT | FLAG_EXTERNAL,
                FrontendKind::ExternalIp | FrontendKind::LoadBalancer => FLAG_EXTERNAL,
                FrontendKind::ClusterIp => 0,
            } | if self.external_local {
                FLAG_ETP_LOCAL
            } else {
                0
            } | if self.source_ranges.is_empty() {
                0
            } else {
                FLAG_SOURCE_RANGES
            } | if self.affinity_timeout > 0 {
                FLAG_AFFINITY
            } else {
                0
            } | if self.drop_no_backend {
                FLAG_DROP_NO_BACKEND
            } else {
                0
            } | if self.maglev { FLAG_MAGLEV } else { 0 },
            affinity_timeout: self.affinity_timeout,
        }
    }
}

/// Everything the maps should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub services: BTreeMap<Frontend, DesiredService>,
    pub backends: BTreeMap<u32, BackendAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompileError {
    /// The Service keeps its previous tables.
    #[error("Service {service}: {error}")]
    Ids { service: String, error: IdError },
    /// Only reachable when the engine is fed without the store's conflict check.
    #[error("Service {service}: {frontend} is already used by Service {owner}")]
    FrontendConflict {
        service: String,
        frontend: Frontend,
        owner: String,
    },
    /// Not fatal: the port is programmed and refuses connections until a
    /// pod with that container port appears.
    #[error("Service {service}: spec.ports[{index}].targetPort {target:?} names no container port of the {pods} selected pod(s); the port has no endpoints")]
    NamedPortUnresolved {
        service: String,
        index: usize,
        target: String,
        pods: usize,
    },
    #[error("Service {service}: port {port_name:?} has {count} backends; only the first {max} are used", max = u16::MAX)]
    TooManyBackends {
        service: String,
        port_name: String,
        count: usize,
    },
}

/// Result of one [`Engine::apply`]: ops in a safe order, plus what could not
/// be compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    pub errors: Vec<CompileError>,
}

/// A frontend as compiled, before IDs.
struct Spec {
    frontend: Frontend,
    kind: FrontendKind,
    port_name: String,
    backends: Vec<BackendAddr>,
    affinity_timeout: u32,
    drop_no_backend: bool,
    maglev: bool,
    external_local: bool,
    source_ranges: Vec<Ipv4Net>,
}

/// IDs taken during a batch, released only at its end so that an ID freed
/// by one Service cannot be handed to another within the same plan (the old
/// user may still be live in the maps until the plan's deletes run).
#[derive(Default)]
struct Batch {
    /// Frontend → its entry before the batch (first touch wins).
    touched: BTreeMap<Frontend, Option<(Master, Vec<u32>)>>,
    new_backends: BTreeSet<u32>,
    new_rev_nat: BTreeMap<u32, Frontend>,
    release_rev_nat: Vec<Frontend>,
    release_backends: Vec<BackendAddr>,
}

pub struct Engine {
    config: CompileConfig,
    objects: Objects,
    ids: IdAllocator,
    desired: DesiredState,
    /// Frontends programmed for each Service.
    owned: HashMap<Key, Vec<Frontend>>,
    /// Health-check node ports (eTP Local LoadBalancers), by Service.
    health: BTreeMap<Key, HealthCheckSpec>,
    /// Bumped by every compile of a Service that has (or had) a
    /// LoadBalancer IP or source ranges.
    ranges_generation: u64,
    /// What the last compile of each Service could not do (conflicts,
    /// unresolved named ports): kept until that Service compiles cleanly.
    warnings: BTreeMap<Key, Vec<String>>,
}

impl Engine {
    pub fn new(config: CompileConfig) -> Self {
        Self::with_ids(config, IdAllocator::new())
    }

    /// Starts from restored IDs. The plan returned by the first `apply`
    /// assumes empty maps; after a restart use [`crate::plan::plan_full`]
    /// against the read-back maps instead.
    pub fn with_ids(config: CompileConfig, ids: IdAllocator) -> Self {
        Self {
            config,
            objects: Objects::default(),
            ids,
            desired: DesiredState::default(),
            owned: HashMap::new(),
            health: BTreeMap::new(),
            warnings: BTreeMap::new(),
            ranges_generation: 0,
        }
    }

    /// Restores IDs from maps read back after a restart.
    pub fn restore(config: CompileConfig, applied: &AppliedState) -> Result<Self, IdError> {
        let ids = IdAllocator::restore(
            applied.rev_nat.iter().map(|(&id, &fe)| (id, fe)),
            applied.backends.iter().map(|(&id, &be)| (id, be)),
        )?;
        Ok(Self::with_ids(config, ids))
    }

    pub fn config(&self) -> &CompileConfig {
        &self.config
    }

    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// All programmed frontends, ordered by frontend.
    pub fn services(&self) -> impl Iterator<Item = &DesiredService> {
        self.desired.services.values()
    }

    pub fn backends(&self) -> &BTreeMap<u32, BackendAddr> {
        &self.desired.backends
    }

    /// Frontends of one Service (for `sluice services <ns>/<name>`).
    pub fn service(&self, namespace: &str, name: &str) -> Vec<&DesiredService> {
        self.owned
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|fe| self.desired.services.get(fe))
            .collect()
    }

    /// Changes whenever loadBalancerSourceRanges (or the LB IPs they admit)
    /// may have changed: the agent recomputes its range map only then, so
    /// a change elsewhere costs nothing extra at 100k Services.
    pub fn source_ranges_generation(&self) -> u64 {
        self.ranges_generation
    }

    /// The current compile problems of every Service that has one, in
    /// Service order (for `sluice status`).
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.warnings.values().flatten()
    }

    /// Health-check node ports to serve, with their local ready endpoint
    /// counts (kept up to date by `apply`, one Service at a time).
    pub fn health_checks(&self) -> impl Iterator<Item = &HealthCheckSpec> {
        self.health.values()
    }

    pub fn ids(&self) -> &IdAllocator {
        &self.ids
    }

    /// Applies object changes and returns the ops that move the maps from
    /// the previous desired state to the new one.
    pub fn apply(&mut self, changes: &[Change]) -> Plan {
        let mut affected = BTreeSet::new();
        for change in changes {
            self.objects.apply(change, &mut affected);
        }
        let mut batch = Batch::default();
        let mut errors = Vec::new();
        for key in &affected {
            let before = errors.len();
            self.recompile(key, &mut batch, &mut errors);
            if errors.len() == before {
                self.warnings.remove(key);
            } else {
                let msgs = errors[before..].iter().map(|e| e.to_string()).collect();
                self.warnings.insert(key.clone(), msgs);
            }
        }
        let ops = self.finish(batch);
        Plan { ops, errors }
    }

    /// A named targetPort that none of the selected pods declares is most
    /// likely a typo: say so (the EndpointSlice controller would silently
    /// publish no endpoint for it).
    fn check_named_ports(&self, key: &Key, svc: &Service, errors: &mut Vec<CompileError>) {
        let pods: Vec<_> = self.objects.selected_pods(svc).collect();
        if pods.is_empty() {
            return;
        }
        for (index, port) in svc.ports.iter().enumerate() {
            let crate::model::TargetPort::Name(target) = &port.target_port else {
                continue;
            };
            let declared = pods.iter().any(|p| {
                p.ports.iter().any(|c| {
                    c.name.as_deref() == Some(target.as_str()) && c.protocol == port.protocol
                })
            });
            if !declared {
                errors.push(CompileError::NamedPortUnresolved {
                    service: service_name(key),
                    index,
                    target: target.clone(),
                    pods: pods.len(),
                });
            }
        }
    }

    fn compile_specs(&self, key: &Key, svc: &Service, errors: &mut Vec<CompileError>) -> Vec<Spec> {
        let Some(cluster_ip) = svc.cluster_ip.filter(|_| svc.is_proxied()) else {
            return Vec::new();
        };
        let mut specs = Vec::new();
        let mut seen: std::collections::BTreeSet<Frontend> = std::collections::BTreeSet::new();
        if !self.objects.has_slices(key) {
            self.check_named_ports(key, svc, errors);
        }
        for port in &svc.ports {
            let mut limited = |mut backends: Vec<BackendAddr>| {
                let max = usize::from(u16::MAX);
                if backends.len() > max {
                    errors.push(CompileError::TooManyBackends {
                        service: service_name(key),
                        port_name: port.name.clone(),
                        count: backends.len(),
                    });
                    backends.truncate(max);
                }
                backends
            };
            let cluster_scope = match self.config.node_zone.as_deref() {
                Some(zone) if svc.prefer_close => Scope::ClusterPreferZone(zone),
                _ => Scope::Cluster,
            };
            let cluster = limited(backends_for(&self.objects, key, svc, port, cluster_scope));
            // internalTrafficPolicy governs the ClusterIP only; NodePort
            // traffic follows externalTrafficPolicy (Cluster here).
            let internal = if svc.internal_traffic_local {
                let node = self.config.node_name.as_deref();
                limited(backends_for(
                    &self.objects,
                    key,
                    svc,
                    port,
                    Scope::Node(node),
                ))
            } else {
                cluster.clone()
            };
            // externalTrafficPolicy Local: external clients get this
            // node's endpoints only (the same ready-else-terminating choice,
            // made among the local ones); pods and the node keep `cluster`.
            let local = if svc.external_traffic_local {
                let node = self.config.node_name.as_deref();
                Some(limited(backends_for(
                    &self.objects,
                    key,
                    svc,
                    port,
                    Scope::Node(node),
                )))
            } else {
                None
            };
            let affinity_timeout = svc.session_affinity_timeout.unwrap_or(0);
            let maglev = svc.maglev.unwrap_or(self.config.maglev_default);
            let mut push = |frontend: Frontend,
                            kind,
                            backends: Vec<BackendAddr>,
                            drop_no_backend,
                            source_ranges: Vec<Ipv4Net>| {
                // An address listed twice (externalIPs: [X, X], an external
                // IP equal to an LB IP or to the ClusterIP) is one frontend:
                // the first one pushed (the ClusterIP first) keeps it.
                if !seen.insert(frontend) {
                    return;
                }
                let external = kind != FrontendKind::ClusterIp;
                if let (true, Some(local)) = (external, &local) {
                    // Endpoints elsewhere but none here: drop (the external
                    // load balancer's health check steers clients away);
                    // no endpoint anywhere: refuse, as for any Service.
                    specs.push(Spec {
                        frontend: Frontend {
                            scope: FrontendScope::External,
                            ..frontend
                        },
                        kind,
                        port_name: port.name.clone(),
                        backends: local.clone(),
                        affinity_timeout,
                        drop_no_backend: !backends.is_empty(),
                        maglev,
                        external_local: false,
                        source_ranges: Vec::new(),
                    });
                }
                specs.push(Spec {
                    frontend,
                    kind,
                    port_name: port.name.clone(),
                    backends,
                    affinity_timeout,
                    drop_no_backend,
                    maglev,
                    external_local: external && local.is_some(),
                    source_ranges,
                })
            };
            // iTP Local with no local endpoint: drop while the Service has
            // endpoints elsewhere, refuse (as any Service) when it has none.
            let itp_drop = svc.internal_traffic_local && !cluster.is_empty();
            push(
                Frontend::new(cluster_ip, port.port, port.protocol),
                FrontendKind::ClusterIp,
                internal,
                itp_drop,
                Vec::new(),
            );
            // External addresses follow externalTrafficPolicy, not
            // internalTrafficPolicy; source ranges guard LB IPs only.
            for ip in &svc.external_ips {
                push(
                    Frontend::new(*ip, port.port, port.protocol),
                    FrontendKind::ExternalIp,
                    cluster.clone(),
                    false,
                    Vec::new(),
                );
            }
            for ip in &svc.load_balancer_ips {
                push(
                    Frontend::new(*ip, port.port, port.protocol),
                    FrontendKind::LoadBalancer,
                    cluster.clone(),
                    false,
                    svc.load_balancer_source_ranges.clone(),
                );
            }
            if let Some(np) = port.node_port.filter(|_| svc.has_node_ports()) {
                push(
                    Frontend::new(Ipv4Addr::UNSPECIFIED, np, port.protocol),
                    FrontendKind::NodePort,
                    cluster,
                    false,
                    Vec::new(),
                );
            }
        }
        specs
    }

    fn recompile(&mut self, key: &Key, batch: &mut Batch, errors: &mut Vec<CompileError>) {
        let name = service_name(key);
        let health = self.objects.services.get(key).and_then(|svc| {
            health_check(&self.objects, key, svc, self.config.node_name.as_deref())
        });
        match health {
            Some(h) => self.health.insert(key.clone(), h),
            None => self.health.remove(key),
        };
        let specs = match self.objects.services.get(key) {
            Some(svc) => self.compile_specs(key, svc, errors),
            None => Vec::new(),
        };
        // Source ranges live beside the service maps (the agent writes
        // them from the whole desired state): say when they may differ.
        let concerns_ranges = |kind: FrontendKind, ranges: &[Ipv4Net]| {
            kind == FrontendKind::LoadBalancer || !ranges.is_empty()
        };
        let before = self.owned.get(key).into_iter().flatten().any(|fe| {
            self.desired
                .services
                .get(fe)
                .is_some_and(|d| concerns_ranges(d.kind, &d.source_ranges))
        });
        if before
            || specs
                .iter()
                .any(|s| concerns_ranges(s.kind, &s.source_ranges))
        {
            self.ranges_generation += 1;
        }
        // Frontends another Service already owns are skipped, not stolen.
        let specs: Vec<Spec> = specs
            .into_iter()
            .filter(|s| match self.desired.services.get(&s.frontend) {
                Some(d) if d.service != name => {
                    errors.push(CompileError::FrontendConflict {
                        service: name.clone(),
                        frontend: s.frontend,
                        owner: d.service.clone(),
                    });
                    false
                }
                _ => true,
            })
            .collect();
        let new = match self.take_ids(&specs, &name, batch) {
            Ok(new) => new,
            Err(error) => {
                errors.push(CompileError::Ids {
                    service: name,
                    error,
                });
                return;
            }
        };
        let old = self.owned.remove(key).unwrap_or_default();
        for fe in &old {
            if let Some(d) = self.desired.services.remove(fe) {
                batch
                    .touched
                    .entry(*fe)
                    .or_insert_with(|| Some((d.master(), d.backend_ids.clone())));
                batch.release_rev_nat.push(*fe);
                for id in &d.backend_ids {
                    if let Some(addr) = self.desired.backends.get(id) {
                        batch.release_backends.push(*addr);
                    }
                }
            }
        }
        let mut fronts = Vec::with_capacity(new.len());
        for d in new {
            batch.touched.entry(d.frontend).or_insert(None);
            fronts.push(d.frontend);
            self.desired.services.insert(d.frontend, d);
        }
        if !fronts.is_empty() {
            self.owned.insert(key.clone(), fronts);
        }
    }

    /// Takes a reference on every ID the specs need; all or nothing.
    fn take_ids(
        &mut self,
        specs: &[Spec],
        name: &str,
        batch: &mut Batch,
    ) -> Result<Vec<DesiredService>, IdError> {
        let mut taken_fe: Vec<Frontend> = Vec::new();
        let mut taken_be: Vec<BackendAddr> = Vec::new();
        let mut out = Vec::with_capacity(specs.len());
        let result = (|| {
            for s in specs {
                let (rev_nat_id, new) = self.ids.acquire_rev_nat(&s.frontend)?;
                taken_fe.push(s.frontend);
                if new {
                    batch.new_rev_nat.insert(rev_nat_id, s.frontend);
                }
                let mut backend_ids = Vec::with_capacity(s.backends.len());
                for b in &s.backends {
                    let a = self.ids.acquire_backend(b)?;
                    taken_be.push(*b);
                    if a.new {
                        batch.new_backends.insert(a.id);
                    }
                    // Also for IDs restored from the maps, which are not new.
                    self.desired.backends.entry(a.id).or_insert(*b);
                    backend_ids.push(a.id);
                }
                out.push(DesiredService {
                    frontend: s.frontend,
                    service: name.to_string(),
                    port_name: s.port_name.clone(),
                    kind: s.kind,
                    rev_nat_id,
                    backend_ids,
                    affinity_timeout: s.affinity_timeout,
                    drop_no_backend: s.drop_no_backend,
                    maglev: s.maglev,
                    external_local: s.external_local,
                    source_ranges: s.source_ranges.clone(),
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            for fe in &taken_fe {
                if let Some(id) = self.ids.release_rev_nat(fe) {
                    batch.new_rev_nat.remove(&id);
                }
            }
            for b in &taken_be {
                if let Some(id) = self.ids.release_backend(b) {
                    batch.new_backends.remove(&id);
                    self.desired.backends.remove(&id);
                }
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Releases the batch's old references and orders the ops.
    fn finish(&mut self, batch: Batch) -> Vec<MapOp> {
        let mut ops = Vec::new();
        for &id in &batch.new_backends {
            if let Some(&addr) = self.desired.backends.get(&id) {
                ops.push(MapOp::UpsertBackend { id, addr });
            }
        }
        for (&id, &frontend) in &batch.new_rev_nat {
            ops.push(MapOp::UpsertRevNat { id, frontend });
        }
        for (fe, old) in &batch.touched {
            let (old_master, old_slots) = match old {
                Some((m, slots)) => (Some(*m), slots.iter().map(|&id| Some(id)).collect()),
                None => (None, Vec::new()),
            };
            let new = self
                .desired
                .services
                .get(fe)
                .map(|d| (d.master(), d.backend_ids.as_slice()));
            plan_frontend(fe, old_master, &old_slots, new, &mut ops);
        }
        let mut freed_rev_nat = BTreeSet::new();
        for fe in &batch.release_rev_nat {
            if let Some(id) = self.ids.release_rev_nat(fe) {
                freed_rev_nat.insert(id);
            }
        }
        let mut freed_backends = BTreeSet::new();
        for b in &batch.release_backends {
            if let Some(id) = self.ids.release_backend(b) {
                freed_backends.insert(id);
            }
        }
        // IDs restored from the maps but not claimed by this compile: the
        // caller resyncs with plan_full after a restore, which deletes them.
        self.ids.finish_restore();
        for id in freed_backends {
            self.desired.backends.remove(&id);
            ops.push(MapOp::DeleteBackend { id });
        }
        for id in freed_rev_nat {
            ops.push(MapOp::DeleteRevNat { id });
        }
        ops
    }
}

fn service_name(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}
