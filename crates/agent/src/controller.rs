//! The agent's single owner of state: store, compiler, reconciler, datapath,
//! IPAM and endpoint registry. Everything that changes state arrives as a
//! [`Command`] on one channel and is handled in order, so there are no locks
//! and no interleavings to reason about: a manifest change and a pod
//! registration can never race each other into the maps.

use crate::endpoints::{EndpointRecord, Registry};
use crate::flows::{ServiceName, Telemetry};
use crate::ipam::{Ipam, IpamError};
use crate::policy::{LocalPod, PolicyPlane};
use crate::reconciler::{read_applied, Reconciler};
use crate::source::FileUpdate;
use crate::AgentConfig;
use sluice_api::{
    BackendInfo, DatapathStatus, EndpointInfo, EndpointPolicyView, EndpointRegistration,
    EndpointState, IdentityView, IpamAllocation, IpamRequest, PolicyTraceRequest,
    PolicyTraceResult, RejectedObject, ServiceInfo, SocketHookFailure, SocketLbStatus, Status,
};
use sluice_core::{parse_documents_with, plan_full, Change, Engine, FrontendKind, MapOp, Store};
use sluice_core::{Kind, Object, ObjectRef};
use sluice_datapath::{Datapath, SockHook, SockOptOutMap, SockRevNatMap, SocketLbState};
use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// The gateway every pod routes through: link-local, answered by a static
/// neighbour entry that points at the host side of the pod's veth.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// An API-facing failure: HTTP status + machine-readable kind + message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, Failure>>;

pub enum Command {
    Manifests(Vec<FileUpdate>),
    Allocate(IpamRequest, Reply<IpamAllocation>),
    Release(String, Reply<()>),
    Register(String, EndpointRegistration, Reply<EndpointInfo>),
    Unregister(String, Reply<()>),
    Endpoints(Reply<Vec<EndpointInfo>>),
    Services(Reply<Vec<ServiceInfo>>),
    Status(Reply<Status>),
    Identities(Reply<Vec<IdentityView>>),
    PolicyEndpoints(Reply<Vec<EndpointPolicyView>>),
    PolicyTrace(PolicyTraceRequest, Reply<PolicyTraceResult>),
    /// Periodic: retry a sync that failed (e.g. a full map).
    Retry,
}

pub struct Controller {
    cfg: AgentConfig,
    store: Store,
    engine: Engine,
    reconciler: Reconciler,
    datapath: Datapath,
    ipam: Ipam,
    registry: Registry,
    endpoint_state: HashMap<String, (EndpointState, Option<String>)>,
    /// Files that could not be read: their objects stay as they were.
    file_errors: HashMap<String, String>,
    /// The maps may differ from the engine's desired state: resync with a full diff.
    dirty: bool,
    last_sync_unix: Option<u64>,
    last_sync_writes: usize,
    /// Names, counts and flow history shared with the event reader, the API
    /// and the metrics endpoint.
    tel: Arc<Telemetry>,
    /// Rebuild every enrichment name (start-up, full resyncs); otherwise
    /// Service names follow the rev-NAT writes one by one.
    names_rebuild: bool,
    /// Registered pods changed: rebuild the pod names (one per pod).
    pods_stale: bool,
    /// Socket hooks attached at start (empty when switched off).
    socket_lb: SocketLbState,
    /// `sl_sock_optout`, when the socket programs are loaded.
    optout_map: Option<SockOptOutMap>,
    /// Opted-out endpoints written to `sl_sock_optout`: container id → netns cookie.
    optout: HashMap<String, u64>,
    /// `sl_sock_revnat`, when the socket programs are loaded: tells which
    /// Service a connected UDP socket reached its backend through.
    revnat_map: Option<SockRevNatMap>,
    /// NetworkPolicy: compiler, maps, explain.
    policy: PolicyPlane,
    /// Maglev tables of the frontends that use Maglev (None: map missing).
    maglev: Option<crate::maglev_sync::MaglevSync>,
    /// loadBalancerSourceRanges in `sl_src_ranges` (None: map missing).
    src_ranges: Option<crate::net_sync::SrcRangeSync>,
    /// The engine's source-range generation last written (None: never).
    ranges_synced: Option<u64>,
    /// healthCheckNodePort responders (None: started outside a runtime).
    health: Option<crate::health::HealthServer>,
}

/// A UDP frontend's backend as the maps hold it (for the stale-flow cleanups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct UdpPair {
    rev_nat_id: u32,
    frontend: SocketAddrV4,
    backend: SocketAddrV4,
}

/// Pod or Namespace annotation: `"false"` keeps the pod's Service traffic
/// addressed to the Service IP on the wire (translated per packet by tc),
/// for sidecar meshes that must see it.
pub const SOCKET_LB_ANNOTATION: &str = "sluice.io/socket-lb";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Asks the kernel in our own network namespace: /sys/class/net would show
/// the namespace sysfs was mounted from, not necessarily ours.
fn interface_exists(ifname: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(ifname) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Frontends whose slots or master `ops` write.
fn touched_frontends(ops: &[MapOp]) -> impl Iterator<Item = sluice_core::Frontend> + '_ {
    ops.iter().filter_map(|op| match op {
        MapOp::UpsertSlot { frontend, .. }
        | MapOp::DeleteSlot { frontend, .. }
        | MapOp::UpsertMaster { frontend, .. }
        | MapOp::DeleteMaster { frontend } => Some(*frontend),
        _ => None,
    })
}

fn service_name(s: &sluice_core::DesiredService) -> ServiceName {
    ServiceName {
        name: s.service.clone(),
        port_name: s.port_name.clone(),
        frontend: SocketAddrV4::new(s.frontend.ip, s.frontend.port),
    }
}

impl Controller {
    /// Loads the datapath (reusing pinned maps), reads back what they hold,
    /// restores IDs and the endpoint registry, and re-attaches programs.
    /// Nothing is written to the maps until the first [`Controller::sync`].
    pub fn start(cfg: AgentConfig, datapath: Datapath) -> Result<Self, crate::AgentError> {
        let maps = sluice_datapath::LbMaps::open(datapath.pin_dir())?;
        let applied = read_applied(&maps)?;
        let engine = Engine::restore(cfg.compile.clone(), &applied)
            .map_err(|e| crate::AgentError::Restore(e.to_string()))?;
        let reconciler = Reconciler::open(maps)?;
        let ipam = Ipam::open(cfg.pod_cidr, cfg.state_dir.join("ipam.json"))?;
        let registry = Registry::open(cfg.state_dir.join("endpoints.json"))?;
        let kernel = sluice_datapath::mapinfo::probe_features();
        let tel = Arc::new(Telemetry::new(
            datapath.pin_dir(),
            cfg.flow_history,
            sluice_api::KernelFeatures {
                kernel: kernel.kernel,
                tcx: kernel.tcx,
                btf: kernel.btf,
                ringbuf: kernel.ringbuf,
                xdp: kernel.xdp,
                socket_hooks: kernel.socket_hooks,
            },
            cfg.metrics_addr,
        ));
        tracing::info!(
            frontends = applied.masters.len(),
            backends = applied.backends.len(),
            endpoints = registry.len(),
            "restored state from pinned maps and state dir"
        );
        let policy = PolicyPlane::new(
            datapath.pin_dir(),
            crate::node_addrs::node_ipv4_addrs(),
            &tel,
        );
        let maglev = match crate::maglev_sync::MaglevSync::open(
            datapath.pin_dir(),
            cfg.maglev_table_size,
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "Maglev tables unavailable: Maglev Services pick at random");
                None
            }
        };
        let node_ips = crate::node_addrs::node_ipv4_addrs();
        let node_addr_entries =
            crate::net_sync::node_addr_entries(&node_ips, &cfg.resolved_nodeport_addresses());
        match crate::net_sync::write_node_addrs(datapath.pin_dir(), &node_addr_entries) {
            Ok(()) => {
                tracing::info!(addresses = ?node_addr_entries, "node addresses (flag 1: serves NodePorts)")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write node addresses: NodePorts are not served")
            }
        }
        let src_ranges = match crate::net_sync::SrcRangeSync::open(datapath.pin_dir(), node_ips) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "loadBalancerSourceRanges map unavailable: guarded LB IPs drop every client");
                None
            }
        };
        let mut c = Self {
            cfg,
            store: Store::new(),
            engine,
            reconciler,
            datapath,
            ipam,
            registry,
            endpoint_state: HashMap::new(),
            file_errors: HashMap::new(),
            dirty: true,
            last_sync_unix: None,
            last_sync_writes: 0,
            tel,
            names_rebuild: true,
            pods_stale: true,
            socket_lb: SocketLbState::default(),
            optout_map: None,
            optout: HashMap::new(),
            revnat_map: None,
            policy,
            maglev,
            src_ranges,
            ranges_synced: None,
            health: tokio::runtime::Handle::try_current()
                .ok()
                .map(crate::health::HealthServer::new),
        };
        if c.cfg.socket_lb {
            c.socket_lb = c.datapath.attach_sockets(&c.cfg.cgroup);
            tracing::info!(
                cgroup = %c.cfg.cgroup.display(),
                attached = ?c.socket_lb.attached.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                failed = c.socket_lb.failed.len(),
                "socket-level LB"
            );
        } else {
            // Switched off: hooks a previous run left attached must go too.
            c.datapath.detach_sockets();
            tracing::info!("socket-level LB off (--socket-lb=false)");
        }
        if c.cfg.socket_lb {
            match SockOptOutMap::open(c.datapath.pin_dir()) {
                Ok(mut m) => {
                    // Cookies are not stable across reboots and the store is
                    // empty until the first scan: start from a clean map and
                    // let sync_optout() write what applies now.
                    for cookie in m.cookies().unwrap_or_default() {
                        let _ = m.remove(cookie);
                    }
                    c.optout_map = Some(m);
                }
                Err(e) => tracing::warn!(error = %e, "socket LB opt-out unavailable"),
            }
            match SockRevNatMap::open(c.datapath.pin_dir()) {
                Ok(m) => c.revnat_map = Some(m),
                Err(e) => tracing::warn!(
                    error = %e,
                    "connected UDP sockets will not be reset when their backend leaves"
                ),
            }
        }
        for dev in c.cfg.devices.clone() {
            c.datapath.attach_device(&dev)?;
            tracing::info!(device = %dev, "NodePort program attached");
        }
        let records: Vec<EndpointRecord> = c.registry.iter().cloned().collect();
        for rec in records {
            // The CNI plugin creates the veth on ADD and only DEL removes it:
            // a registered pod without its veth is gone (its DEL may have run
            // while the agent was down). Free its address and registration.
            if !interface_exists(&rec.host_ifname) {
                tracing::info!(
                    pod = %format!("{}/{}", rec.namespace, rec.pod),
                    ifname = %rec.host_ifname,
                    "endpoint's interface is gone: releasing it"
                );
                c.registry.remove(&rec.container_id)?;
                c.ipam.release(&rec.container_id)?;
                continue;
            }
            let _ = c.store.set_pod_ip(&rec.namespace, &rec.pod, Some(rec.ip));
            let state = c.attach_endpoint(&rec);
            c.endpoint_state.insert(rec.container_id.clone(), state);
        }
        c.refresh_telemetry();
        Ok(c)
    }

    /// The state shared with the event reader, the API and metrics.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.tel.clone()
    }

    /// Publishes names (when stale) and counts for enrichment and metrics.
    /// Names are rebuilt only when Services or pods changed: a rebuild walks
    /// every Service, which an endpoint change alone should not pay for.
    fn refresh_telemetry(&mut self) {
        let stats = &self.tel.stats;
        if self.pods_stale || self.names_rebuild {
            let pods = self
                .registry
                .iter()
                .map(|r| (r.ip, (r.namespace.clone(), r.pod.clone())))
                .collect();
            self.tel.update_names(|n| n.pods = pods);
            self.pods_stale = false;
        }
        if self.names_rebuild {
            let engine = &self.engine;
            self.tel.update_names(|n| {
                let ids: Vec<u32> = n.services.keys().copied().collect();
                for id in ids {
                    n.set_service(id, None);
                }
                for s in engine.services() {
                    n.set_service(s.rev_nat_id, Some(service_name(s)));
                }
            });
            self.names_rebuild = false;
        }
        let count = self.tel.update_names(|n| n.service_count());
        stats.services.store(count as u64, Ordering::Relaxed);
        stats.frontends.store(
            self.engine.desired().services.len() as u64,
            Ordering::Relaxed,
        );
        stats
            .backends
            .store(self.engine.backends().len() as u64, Ordering::Relaxed);
        stats
            .endpoints
            .store(self.registry.len() as u64, Ordering::Relaxed);
        stats.rejected_objects.store(
            (self.store.rejections().count() + self.file_errors.len()) as u64,
            Ordering::Relaxed,
        );
        stats
            .map_write_errors
            .store(self.reconciler.write_errors(), Ordering::Relaxed);
    }

    fn attach_endpoint(&mut self, rec: &EndpointRecord) -> (EndpointState, Option<String>) {
        if !interface_exists(&rec.host_ifname) {
            return (
                EndpointState::NotReady,
                Some(format!("interface {} does not exist", rec.host_ifname)),
            );
        }
        match self.datapath.attach_pod(&rec.host_ifname) {
            Ok(()) => (EndpointState::Ready, None),
            Err(e) => (EndpointState::NotReady, Some(e.to_string())),
        }
    }

    /// Handles one command. Returns after any resulting map writes are done.
    pub fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Manifests(files) => {
                let changes = self.ingest(files);
                self.apply(changes);
            }
            Command::Allocate(req, reply) => {
                let r = self
                    .ipam
                    .allocate_ip(&req.container_id, &req.namespace, &req.pod, req.ip)
                    .map(|a| IpamAllocation {
                        ip: a.ip,
                        prefix_len: 32,
                        gateway: POD_GATEWAY,
                    })
                    .map_err(|e| match e {
                        IpamError::Exhausted { .. } => {
                            Failure::new(507, "ipam_exhausted", e.to_string())
                        }
                        IpamError::OutsideCidr { .. }
                        | IpamError::Reserved { .. }
                        | IpamError::InUse { .. } => {
                            Failure::new(409, "ipam_unavailable", e.to_string())
                        }
                        IpamError::Persist(_) => Failure::new(500, "state", e.to_string()),
                    });
                let _ = reply.send(r);
            }
            Command::Release(id, reply) => {
                let r = self
                    .ipam
                    .release(&id)
                    .map_err(|e| Failure::new(500, "state", e.to_string()));
                let _ = reply.send(r);
            }
            Command::Register(id, reg, reply) => {
                let r = self.register(&id, reg);
                let _ = reply.send(r);
            }
            Command::Unregister(id, reply) => {
                let r = self.unregister(&id);
                let _ = reply.send(r);
            }
            Command::Endpoints(reply) => {
                let _ = reply.send(Ok(self.endpoints()));
            }
            Command::Services(reply) => {
                let _ = reply.send(Ok(self.services()));
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Identities(reply) => {
                let _ = reply.send(Ok(self.policy.identities()));
            }
            Command::PolicyEndpoints(reply) => {
                let _ = reply.send(Ok(self.policy.endpoints()));
            }
            Command::PolicyTrace(req, reply) => {
                let r = self
                    .policy
                    .trace(&req)
                    .map_err(|m| Failure::new(400, "bad_request", m));
                let _ = reply.send(r);
            }
            Command::Retry => {
                if self.dirty {
                    self.sync(Vec::new());
                }
            }
        }
        self.sync_optout();
        self.sync_policy();
        self.sync_health();
        self.refresh_telemetry();
    }

    fn local_pods(&self) -> Vec<LocalPod> {
        self.registry
            .iter()
            .map(|r| LocalPod {
                namespace: r.namespace.clone(),
                name: r.pod.clone(),
                ip: r.ip,
            })
            .collect()
    }

    /// Compiles and writes policy when something it depends on changed.
    /// Held, like the Service maps, until the first sync after start: an
    /// empty or partly read store would open every pod the last agent
    /// isolated.
    fn sync_policy(&mut self) {
        if self.last_sync_unix.is_none() || !self.policy.is_dirty() {
            return;
        }
        let local = self.local_pods();
        self.policy.sync(&local, &self.tel);
    }

    /// Whether the pod (or its Namespace) opted out of socket-level LB.
    fn opted_out(&self, namespace: &str, pod: &str) -> bool {
        let says_false = |r: ObjectRef| {
            self.store.get(&r).is_some_and(|o| {
                let meta = match &o {
                    Object::Pod(p) => &p.meta,
                    Object::Namespace(n) => &n.meta,
                    _ => return false,
                };
                meta.annotations
                    .get(SOCKET_LB_ANNOTATION)
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
            })
        };
        says_false(ObjectRef {
            kind: Kind::Pod,
            namespace: namespace.to_string(),
            name: pod.to_string(),
        }) || says_false(ObjectRef {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: namespace.to_string(),
        })
    }

    /// Makes `sl_sock_optout` hold the netns cookies of the opted-out pods.
    /// Cheap when nothing changed (a few hash lookups per endpoint); a
    /// cookie is read only when a pod newly opts out.
    fn sync_optout(&mut self) {
        let Some(mut map) = self.optout_map.take() else {
            return;
        };
        let wanted: Vec<(String, String)> = self
            .registry
            .iter()
            .filter(|r| self.opted_out(&r.namespace, &r.pod))
            .map(|r| (r.container_id.clone(), r.netns.clone()))
            .collect();
        let stale: Vec<String> = self
            .optout
            .keys()
            .filter(|id| !wanted.iter().any(|(w, _)| w == *id))
            .cloned()
            .collect();
        for id in stale {
            if let Some(cookie) = self.optout.remove(&id) {
                if let Err(e) = map.remove(cookie) {
                    tracing::warn!(error = %e, "cannot remove socket LB opt-out");
                    self.optout.insert(id, cookie);
                }
            }
        }
        for (id, netns) in wanted {
            if self.optout.contains_key(&id) {
                continue;
            }
            let written = crate::netns::netns_cookie(std::path::Path::new(&netns))
                .map_err(|e| e.to_string())
                .and_then(|cookie| {
                    map.insert(cookie)
                        .map(|()| cookie)
                        .map_err(|e| e.to_string())
                });
            match written {
                Ok(cookie) => {
                    tracing::info!(container = %id, cookie, "pod opted out of socket-level LB");
                    self.optout.insert(id, cookie);
                }
                // Retried on the next command (at the latest the 2 s retry tick).
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot opt pod out of socket LB")
                }
            }
        }
        self.optout_map = Some(map);
    }

    /// Parses changed files into the store; returns object-level changes.
    fn ingest(&mut self, files: Vec<FileUpdate>) -> Vec<Change> {
        let mut changes = Vec::new();
        for f in files {
            match f.content {
                None => {
                    self.file_errors.remove(&f.name);
                    changes.extend(self.store.remove_file(&f.name));
                }
                Some(Err(e)) => {
                    tracing::warn!(file = %f.name, error = %e, "cannot read manifest; its objects stay as they were");
                    self.file_errors.insert(f.name, e);
                }
                Some(Ok(text)) => {
                    self.file_errors.remove(&f.name);
                    let outcome = parse_documents_with(&f.name, &text, &self.cfg.compile);
                    changes.extend(self.store.replace_file(&f.name, outcome));
                }
            }
        }
        for r in self.store.rejections() {
            match self.policy_rejection_effect(r) {
                Some(effect) => tracing::warn!(rejected = %r, effect, "policy rejected"),
                None => tracing::warn!(rejected = %r, "object rejected"),
            }
        }
        changes
    }

    fn apply(&mut self, changes: Vec<Change>) {
        let local = self.local_pods();
        let store = &self.store;
        self.policy
            .observe(&changes, &local, |r| store.get(r).is_some());
        if changes.is_empty() && !self.dirty {
            return;
        }
        let started = Instant::now();
        let plan = self.engine.apply(&changes);
        // The engine's own plan, not the one sync() may replace with a full
        // diff: after a restart the maps already hold everything (empty
        // diff) but the names still have to be learnt.
        for e in &plan.errors {
            tracing::warn!(error = %e, "service not (fully) compiled");
        }
        self.sync(plan.ops);
        self.tel
            .stats
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            changes = changes.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "applied"
        );
    }

    /// Writes `ops` (the engine's incremental plan) to the maps; when the
    /// maps may differ from what the engine assumes (start-up, an earlier
    /// failed write) a full diff against the read-back mirror is used instead.
    pub fn sync(&mut self, ops: Vec<sluice_core::MapOp>) {
        // Before the first sync after a start, the store knows only what it
        // could read. A manifest that cannot be read yet (permissions during
        // a deploy, a mount not ready) would make the full diff delete its
        // Services from the pinned maps, which still serve them: hold the
        // maps as they are until every file reads.
        if self.dirty && self.last_sync_unix.is_none() && !self.file_errors.is_empty() {
            let files: Vec<&String> = self.file_errors.keys().collect();
            tracing::warn!(
                ?files,
                "unreadable manifests at start: keeping the maps as the last agent left them"
            );
            return;
        }
        let ops = if self.dirty {
            plan_full(self.engine.desired(), self.reconciler.applied())
        } else {
            ops
        };
        // Enrichment follows the rev-NAT writes (a plan touches a handful;
        // a full resync may touch all, which is when it runs anyway).
        let desired = &self.engine.desired().services;
        self.tel.update_names(|n| {
            for op in &ops {
                match op {
                    MapOp::UpsertRevNat { id, frontend } => {
                        n.set_service(*id, desired.get(frontend).map(service_name));
                    }
                    MapOp::DeleteRevNat { id } => n.set_service(*id, None),
                    _ => {}
                }
            }
        });
        let udp_before = self.udp_pairs(&ops);
        // Source ranges are recomputed over every frontend: only when they
        // may have changed, so a change's cost does not grow with the
        // number of Services.
        let generation = self.engine.source_ranges_generation();
        let ranges_due = self.dirty || self.ranges_synced != Some(generation);
        if let Some(r) = self.src_ranges.as_mut().filter(|_| ranges_due) {
            if let Err(e) = r.add(self.engine.desired()) {
                tracing::error!(error = %e, "source range write failed; retrying");
                self.dirty = true;
            }
        }
        let result = self.reconciler.apply(&ops);
        self.sync_maglev(&ops);
        if let Some(r) = self.src_ranges.as_mut().filter(|_| ranges_due) {
            if let Err(e) = r.remove_stale(self.engine.desired()) {
                tracing::error!(error = %e, "source range removal failed; retrying");
                self.dirty = true;
            }
        }
        if ranges_due {
            self.ranges_synced = Some(generation);
        }
        // What a write made unreachable (even a partly applied plan).
        let udp_gone: BTreeSet<UdpPair> = udp_before
            .difference(&self.udp_pairs(&ops))
            .copied()
            .collect();
        self.flush_stale_udp_ct(&udp_gone);
        self.reset_stale_udp(udp_gone.iter().map(|p| (p.frontend, p.backend)).collect());
        match result {
            Ok(n) => {
                self.dirty = false;
                let first = self.last_sync_unix.is_none();
                self.last_sync_unix = Some(now_unix());
                if first {
                    self.reset_stale_udp_at_start();
                }
                self.last_sync_writes = n;
                if n > 0 {
                    tracing::info!(writes = n, "maps updated");
                }
            }
            Err(e) => {
                self.dirty = true;
                tracing::error!(error = %e, "map update incomplete; what was programmed stays, retrying");
            }
        }
    }

    /// Health-check node ports follow the compiled Services; the proxy
    /// reports itself unhealthy while the maps lag the compiled state.
    fn sync_health(&mut self) {
        let Some(health) = self.health.as_mut() else {
            return;
        };
        health.set_proxy_healthy(!self.dirty);
        health.sync(self.engine.health_checks().cloned().collect());
    }

    /// Rewrites the Maglev tables of the frontends `ops` touched, after
    /// their slots (a table names slot numbers).
    fn sync_maglev(&mut self, ops: &[MapOp]) {
        let Some(maglev) = self.maglev.as_mut() else {
            return;
        };
        let touched = touched_frontends(ops).collect();
        if let Err(e) = maglev.sync(self.engine.desired(), touched) {
            tracing::error!(error = %e, "Maglev table write failed; those frontends pick at random until the retry");
            maglev.mark_full();
            self.dirty = true;
        }
    }

    /// After the first sync: connected UDP sockets whose backend left its
    /// Service while no agent was running (the maps were changed by this
    /// start's diff, or by an edit the last agent never saw) are destroyed
    /// like those of a live removal. Candidates come from `sl_sock_revnat`
    /// (every socket socket-LB translated), checked against what the maps
    /// hold now.
    fn reset_stale_udp_at_start(&mut self) {
        let Some(revnat) = self.revnat_map.as_ref() else {
            return;
        };
        let applied = self.reconciler.applied();
        let mut live: BTreeSet<(SocketAddrV4, SocketAddrV4)> = BTreeSet::new();
        for (fe, master) in &applied.masters {
            if fe.proto != sluice_core::Protocol::Udp {
                continue;
            }
            for slot in 1..=master.count {
                if let Some(b) = applied
                    .slots
                    .get(&(*fe, slot))
                    .and_then(|id| applied.backends.get(id))
                {
                    live.insert((
                        SocketAddrV4::new(fe.ip, fe.port),
                        SocketAddrV4::new(b.ip, b.port),
                    ));
                }
            }
        }
        let udp_frontends: BTreeSet<SocketAddrV4> = applied
            .masters
            .keys()
            .filter(|fe| fe.proto == sluice_core::Protocol::Udp)
            .map(|fe| SocketAddrV4::new(fe.ip, fe.port))
            .collect();
        // A frontend that is no longer UDP-programmed at all also strands
        // its sockets; a TCP frontend's entries are not about UDP sockets,
        // which the dump below never returns for them anyway.
        let gone: BTreeSet<(SocketAddrV4, SocketAddrV4)> = revnat
            .entries()
            .into_iter()
            .map(|(_, backend, fe)| (fe, backend))
            .filter(|pair| !live.contains(pair))
            .filter(|(fe, _)| {
                udp_frontends.contains(fe)
                    || !applied
                        .masters
                        .keys()
                        .any(|m| m.ip == *fe.ip() && m.port == fe.port())
            })
            .collect();
        if !gone.is_empty() {
            tracing::info!(
                pairs = gone.len(),
                "catching up connected UDP sockets whose backend left while the agent was down"
            );
        }
        self.reset_stale_udp(gone);
    }

    /// (frontend, backend) pairs a UDP flow (a conntrack entry, or a
    /// connected socket through socket LB) can hold, for the UDP frontends
    /// `ops` touch, as the maps hold them now (active slots 1..=count). Only touched frontends: a change costs
    /// what it writes, not what the node holds.
    fn udp_pairs(&self, ops: &[MapOp]) -> BTreeSet<UdpPair> {
        let mut out = BTreeSet::new();
        let applied = self.reconciler.applied();
        let frontends: BTreeSet<sluice_core::Frontend> = touched_frontends(ops)
            .filter(|f| f.proto == sluice_core::Protocol::Udp)
            .collect();
        // A backend id's address can only go away with a DeleteBackend,
        // which comes with the slot writes of every frontend that used it.
        for fe in frontends {
            let Some(master) = applied.masters.get(&fe) else {
                continue;
            };
            for slot in 1..=master.count {
                let Some(b) = applied
                    .slots
                    .get(&(fe, slot))
                    .and_then(|id| applied.backends.get(id))
                else {
                    continue;
                };
                out.insert(UdpPair {
                    rev_nat_id: master.rev_nat_id,
                    frontend: SocketAddrV4::new(fe.ip, fe.port),
                    backend: SocketAddrV4::new(b.ip, b.port),
                });
            }
        }
        out
    }

    /// Deletes the conntrack entries of UDP flows whose backend left their
    /// frontend (kube-proxy's conntrack cleanup, svc-032/033): a UDP client
    /// that keeps sending on one source port refreshes its entry forever,
    /// so without this it would talk to the gone backend for good. TCP
    /// flows keep their backend until they close, as with kube-proxy. The
    /// next datagram selects a live backend. Costs one pass over `sl_ct`,
    /// only when a UDP backend leaves.
    fn flush_stale_udp_ct(&mut self, gone: &BTreeSet<UdpPair>) {
        if gone.is_empty() {
            return;
        }
        let pairs: BTreeSet<(u32, SocketAddrV4)> =
            gone.iter().map(|p| (p.rev_nat_id, p.backend)).collect();
        let started = Instant::now();
        // Forward entries name the backend as their NAT target; reply
        // entries are keyed by it as their source.
        let res = self.reconciler.maps_mut().ct_delete_where(|row| {
            let backend = if row.reply { row.src } else { row.nat };
            row.proto == libc::IPPROTO_UDP as u8
                && pairs.contains(&(row.rev_nat_id, SocketAddrV4::new(backend.0, backend.1)))
        });
        match res {
            Ok(n) => tracing::info!(
                backends_gone = gone.len(),
                entries = n,
                elapsed_us = started.elapsed().as_micros() as u64,
                "conntrack entries of UDP flows to removed backends deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete conntrack entries of removed UDP backends")
            }
        }
    }

    /// Destroys the pods' connected UDP sockets that socket LB gave a
    /// backend which has now left that Service (`gone`: frontend, backend).
    /// The application gets ECONNABORTED and its next connect() picks a
    /// live backend. A socket that addressed the pod directly (no
    /// `sl_sock_revnat` entry for it) or reached the backend through a
    /// Service that still has it is left alone.
    fn reset_stale_udp(&mut self, gone: BTreeSet<(SocketAddrV4, SocketAddrV4)>) {
        let Some(revnat) = self.revnat_map.as_ref() else {
            return;
        };
        if gone.is_empty() || self.registry.is_empty() {
            return;
        }
        let started = Instant::now();
        let backends: BTreeSet<SocketAddrV4> = gone.iter().map(|(_, b)| *b).collect();
        let netns: Vec<std::path::PathBuf> = self
            .registry
            .iter()
            .map(|r| std::path::PathBuf::from(&r.netns))
            .collect();
        let out = crate::sockdiag::destroy_connected_udp(netns, backends, |cookie, peer| {
            revnat
                .frontend_of(cookie, peer)
                .is_some_and(|fe| gone.contains(&(fe, peer)))
        });
        for e in &out.errors {
            tracing::warn!(error = %e, "cannot reset connected UDP sockets in a pod");
        }
        tracing::info!(
            backends_gone = gone.len(),
            destroyed = out.destroyed,
            elapsed_us = started.elapsed().as_micros() as u64,
            "connected UDP sockets of removed backends reset"
        );
    }

    fn register(&mut self, id: &str, reg: EndpointRegistration) -> Result<EndpointInfo, Failure> {
        if reg.namespace.is_empty() || reg.pod.is_empty() || reg.host_ifname.is_empty() {
            return Err(Failure::new(
                400,
                "bad_request",
                "namespace, pod and host_ifname must not be empty",
            ));
        }
        let rec = EndpointRecord::new(id, &reg);
        let (state, reason) = self.attach_endpoint(&rec);
        if state != EndpointState::Ready {
            return Err(Failure::new(
                500,
                "datapath",
                reason.unwrap_or_else(|| "endpoint not ready".into()),
            ));
        }
        self.registry
            .upsert(rec.clone())
            .map_err(|e| Failure::new(500, "state", e.to_string()))?;
        self.endpoint_state.insert(id.to_string(), (state, None));
        self.pods_stale = true;
        self.policy.mark_dirty();
        let changes = self
            .store
            .set_pod_ip(&rec.namespace, &rec.pod, Some(rec.ip));
        self.apply(changes);
        // Before the CNI answers: the pod's first packet must meet its policy.
        self.sync_policy();
        tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.pod), ip = %rec.ip, ifname = %rec.host_ifname, "endpoint registered");
        Ok(rec.info(state, None))
    }

    fn unregister(&mut self, id: &str) -> Result<(), Failure> {
        let old = self
            .registry
            .remove(id)
            .map_err(|e| Failure::new(500, "state", e.to_string()))?;
        self.endpoint_state.remove(id);
        self.pods_stale = true;
        self.policy.mark_dirty();
        if let Some(rec) = old {
            self.datapath.detach(&rec.host_ifname);
            let changes = self.store.set_pod_ip(&rec.namespace, &rec.pod, None);
            self.apply(changes);
            tracing::info!(pod = %format!("{}/{}", rec.namespace, rec.pod), "endpoint removed");
        }
        Ok(())
    }

    fn endpoints(&self) -> Vec<EndpointInfo> {
        self.registry
            .iter()
            .map(|r| {
                let (state, reason) = self
                    .endpoint_state
                    .get(&r.container_id)
                    .cloned()
                    .unwrap_or((EndpointState::NotReady, Some("not attached".into())));
                // An interface can vanish under us (pod netns deleted).
                if state == EndpointState::Ready && !interface_exists(&r.host_ifname) {
                    return r.info(
                        EndpointState::NotReady,
                        Some(format!("interface {} does not exist", r.host_ifname)),
                    );
                }
                r.info(state, reason)
            })
            .collect()
    }

    fn services(&self) -> Vec<ServiceInfo> {
        let backends = self.engine.backends();
        self.engine
            .services()
            .map(|s| ServiceInfo {
                service: s.service.clone(),
                kind: {
                    let kind = match s.kind {
                        FrontendKind::ClusterIp => "ClusterIP",
                        FrontendKind::NodePort => "NodePort",
                        FrontendKind::ExternalIp => "ExternalIP",
                        FrontendKind::LoadBalancer => "LoadBalancer",
                    };
                    // externalTrafficPolicy Local: the entry external
                    // clients use (this node's endpoints only).
                    match s.frontend.scope {
                        sluice_core::FrontendScope::All => kind.to_string(),
                        sluice_core::FrontendScope::External => format!("{kind}/local"),
                    }
                },
                ip: s.frontend.ip,
                port: s.frontend.port,
                protocol: s.frontend.proto.to_string(),
                port_name: s.port_name.clone(),
                rev_nat_id: s.rev_nat_id,
                backends: s
                    .backend_ids
                    .iter()
                    .filter_map(|id| backends.get(id).map(|b| (*id, b)))
                    .map(|(id, b)| BackendInfo {
                        id,
                        ip: b.ip,
                        port: b.port,
                        pod: self.registry.pod_by_ip(b.ip),
                    })
                    .collect(),
            })
            .collect()
    }

    fn status(&self) -> Status {
        let services: std::collections::BTreeSet<&str> =
            self.engine.services().map(|s| s.service.as_str()).collect();
        let mut rejected: Vec<RejectedObject> = self
            .store
            .rejections()
            .map(|r| RejectedObject {
                file: r.file.clone(),
                object: r.object.clone(),
                error: match self.policy_rejection_effect(r) {
                    Some(effect) => format!("{}; {effect}", r.error),
                    None => r.error.to_string(),
                },
            })
            .collect();
        rejected.extend(self.file_errors.iter().map(|(f, e)| RejectedObject {
            file: f.clone(),
            object: "(file)".into(),
            error: e.clone(),
        }));
        Status {
            node_name: self.cfg.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            pod_cidr: self.cfg.pod_cidr.to_string(),
            manifests: self.cfg.manifests.display().to_string(),
            datapath: DatapathStatus {
                attach_mode: self
                    .datapath
                    .attach_mode()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_else(|| "none yet".into()),
                pin_dir: self.datapath.pin_dir().display().to_string(),
                devices: self.cfg.devices.clone(),
            },
            services: services.len(),
            frontends: self.engine.desired().services.len(),
            backends: self.engine.backends().len(),
            endpoints: self.registry.len(),
            last_sync_unix: self.last_sync_unix,
            last_sync_writes: self.last_sync_writes,
            map_write_errors: self.reconciler.write_errors(),
            rejected,
            service_warnings: self.engine.warnings().cloned().collect(),
            health_check_ports: self.health.as_ref().map(|h| h.ports()).unwrap_or_default(),
            kernel: self.tel.kernel.clone(),
            events: self.tel.event_status(),
            socket_lb: self.socket_lb_status(),
            policy: self.policy.status(),
        }
    }

    /// What a rejected policy leaves in force, said with the error: the
    /// node never falls back to "allow all" or "deny all" because of it.
    fn policy_rejection_effect(&self, r: &sluice_core::Rejection) -> Option<&'static str> {
        let key = r.object_ref.as_ref()?;
        if !matches!(key.kind, Kind::NetworkPolicy | Kind::CiliumNetworkPolicy) {
            return None;
        }
        Some(if self.store.get(key).is_some() {
            "the node keeps enforcing the last good version of this policy"
        } else {
            "not enforced: the pods it would select keep what the other policies give them (open if none selects them)"
        })
    }

    fn socket_lb_status(&self) -> SocketLbStatus {
        let s = &self.socket_lb;
        SocketLbStatus {
            enabled: self.cfg.socket_lb,
            active: s.attached.contains(&SockHook::Connect4),
            cgroup: s.cgroup.as_ref().map(|p| p.display().to_string()),
            hooks: s.attached.iter().map(|h| h.as_str().to_string()).collect(),
            failed: s
                .failed
                .iter()
                .map(|(h, why)| SocketHookFailure {
                    hook: h.as_str().to_string(),
                    reason: why.clone(),
                })
                .collect(),
            opted_out_pods: self.optout.len(),
        }
    }
}
