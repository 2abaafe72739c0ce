//! Flow events: read from the kernel's ring buffer, named, kept, streamed.
//!
//! The reader task collects the ring buffer every [`EVENTS_POLL`], or at
//! once when the kernel wakes it because the ring is filling up (its fd in
//! tokio's `AsyncFd`; aya 0.14 has no async ring buffer): waking it per event
//! would cost a context switch per new connection. It decodes each record, enriches it with
//! pod and Service names from a [`Names`] table the controller keeps current,
//! appends it to a bounded history (the oldest flow goes first) and
//! broadcasts it to `GET /v1/flows?follow=true` clients. A slow client lags
//! and misses flows (counted in its log line); it never slows the reader,
//! which must keep up with the kernel or events are lost there.

use crate::metrics::AgentStats;
use sluice_api::{EventStatus, Flow, FlowPeer, FlowService, KernelFeatures, Verdict};
use sluice_datapath::events::{
    point_name, reason_code, reason_name, EventKind, FlowEvent, SLUICE_EVENT_F_NEW_FLOW,
    SLUICE_EVENT_F_POLICY_INGRESS, SLUICE_EVENT_F_REPLIED, SLUICE_EVENT_F_REPLY,
};
use sluice_datapath::{EventReader, MapsError, ObsMaps};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::broadcast;

/// Default number of flows kept for `sluice observe --last`.
pub const DEFAULT_HISTORY: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("cannot watch the event ring buffer: {0}")]
    Poll(std::io::Error),
}

/// The Service behind a rev-NAT id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    pub name: String,
    pub port_name: String,
    pub frontend: SocketAddrV4,
}

/// What the enrichment needs from the controller's state: pods by IP and
/// Services by rev-NAT id. The controller keeps it current (Services one
/// rev-NAT write at a time, so a change costs the same at 100k Services);
/// the event reader reads it under a short read lock.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub pods: HashMap<Ipv4Addr, (String, String)>,
    pub services: HashMap<u32, ServiceName>,
    /// Policy rules by the id the datapath reports (`x/allow-web ingress[0]`).
    pub rules: HashMap<u32, String>,
    /// Frontends per Service name: its length is the number of Services.
    service_refs: HashMap<String, usize>,
}

impl Names {
    /// Names rev-NAT id `id` (or forgets it, with `None`).
    pub fn set_service(&mut self, id: u32, name: Option<ServiceName>) {
        if let Some(old) = self.services.remove(&id) {
            if let Some(n) = self.service_refs.get_mut(&old.name) {
                *n -= 1;
                if *n == 0 {
                    self.service_refs.remove(&old.name);
                }
            }
        }
        if let Some(new) = name {
            *self.service_refs.entry(new.name.clone()).or_default() += 1;
            self.services.insert(id, new);
        }
    }

    /// Distinct Services named.
    pub fn service_count(&self) -> usize {
        self.service_refs.len()
    }
}

/// A flow as kept: numbered in arrival order, so a follower can tell the
/// history it was sent from the live flows that follow.
#[derive(Debug)]
pub struct StoredFlow {
    pub seq: u64,
    pub flow: Flow,
}

#[derive(Debug, Default)]
struct History {
    flows: VecDeque<Arc<StoredFlow>>,
    next_seq: u64,
}

/// The agent's observability state, shared by the controller (names,
/// counts), the event reader, the API and the metrics endpoint.
pub struct Telemetry {
    pub pin_dir: PathBuf,
    pub names: RwLock<Names>,
    pub stats: AgentStats,
    pub kernel: KernelFeatures,
    pub metrics_addr: Option<SocketAddr>,
    /// The run-time switches map (`sl_config`); this is its only writer.
    obs: Mutex<Option<ObsMaps>>,
    history: Mutex<History>,
    capacity: usize,
    tx: broadcast::Sender<Arc<StoredFlow>>,
    pub received: AtomicU64,
    pub decode_errors: AtomicU64,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("pin_dir", &self.pin_dir)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    pub fn new(
        pin_dir: &Path,
        capacity: usize,
        kernel: KernelFeatures,
        metrics_addr: Option<SocketAddr>,
    ) -> Self {
        let obs = match ObsMaps::open(pin_dir) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "observability maps unavailable; tracing switch disabled");
                None
            }
        };
        // Followers get a generous buffer: bursts of new flows are normal.
        let (tx, _) = broadcast::channel(4096);
        Self {
            pin_dir: pin_dir.to_path_buf(),
            names: RwLock::new(Names::default()),
            stats: AgentStats::default(),
            kernel,
            metrics_addr,
            obs: Mutex::new(obs),
            history: Mutex::new(History {
                flows: VecDeque::with_capacity(capacity.min(DEFAULT_HISTORY)),
                next_seq: 1,
            }),
            capacity: capacity.max(1),
            tx,
            received: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
        }
    }

    /// Changes the names in place.
    pub fn update_names<T>(&self, f: impl FnOnce(&mut Names) -> T) -> T {
        match self.names.write() {
            Ok(mut n) => f(&mut n),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Stores and broadcasts one flow.
    pub fn publish(&self, flow: Flow) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        let stored = Arc::new(StoredFlow {
            seq: h.next_seq,
            flow,
        });
        h.next_seq += 1;
        if h.flows.len() >= self.capacity {
            h.flows.pop_front();
        }
        h.flows.push_back(stored.clone());
        // Sent under the lock, so followers see flows in sequence order.
        // No receiver is fine: nobody is following.
        let _ = self.tx.send(stored);
    }

    /// The most recent `last` flows that `keep` accepts (oldest first), and
    /// the sequence number of the newest flow kept (0 if none).
    pub fn recent(&self, last: usize, keep: impl Fn(&Flow) -> bool) -> (Vec<Arc<StoredFlow>>, u64) {
        let Ok(h) = self.history.lock() else {
            return (Vec::new(), 0);
        };
        let mut out: Vec<Arc<StoredFlow>> = h
            .flows
            .iter()
            .rev()
            .filter(|f| keep(&f.flow))
            .take(last)
            .cloned()
            .collect();
        out.reverse();
        (out, h.next_seq - 1)
    }

    /// Live flows. Subscribe before reading [`Telemetry::recent`] and skip
    /// flows numbered at or below its sequence number: nothing is missed
    /// or sent twice.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredFlow>> {
        self.tx.subscribe()
    }

    pub fn trace_per_packet(&self) -> bool {
        self.obs
            .lock()
            .ok()
            .and_then(|o| o.as_ref().and_then(|m| m.trace_packets().ok()))
            .unwrap_or(false)
    }

    /// Tells the datapath whether policy is enforced anywhere on the node
    /// and the revision of what it was given (see `sl_config`).
    pub fn set_policy(&self, active: bool, revision: u32) -> Result<(), String> {
        let mut guard = self.obs.lock().map_err(|_| "lock poisoned".to_string())?;
        let maps = guard
            .as_mut()
            .ok_or_else(|| "the sl_config map is not available".to_string())?;
        maps.set_policy(active, revision).map_err(|e| e.to_string())
    }

    /// The policy revision in the datapath (to continue from after a restart).
    pub fn policy_revision(&self) -> u32 {
        self.obs
            .lock()
            .ok()
            .and_then(|o| o.as_ref().and_then(|m| m.policy_revision().ok()))
            .unwrap_or(0)
    }

    pub fn set_trace_per_packet(&self, on: bool) -> Result<(), String> {
        let mut guard = self.obs.lock().map_err(|_| "lock poisoned".to_string())?;
        let maps = guard
            .as_mut()
            .ok_or_else(|| "the sl_config map is not available".to_string())?;
        maps.set_trace_packets(on).map_err(|e| e.to_string())?;
        tracing::info!(per_packet = on, "flow tracing switched");
        Ok(())
    }

    /// Events the kernel could not emit (ring buffer full).
    pub fn lost_in_kernel(&self) -> u64 {
        sluice_datapath::LbMaps::open(&self.pin_dir)
            .and_then(|m| m.metrics())
            .ok()
            .and_then(|m| {
                m.get(sluice_datapath::bindings::sluice_metric::METRIC_EVENTS_LOST as usize)
                    .copied()
            })
            .unwrap_or(0)
    }

    pub fn event_status(&self) -> EventStatus {
        EventStatus {
            received: self.received.load(Ordering::Relaxed),
            lost: self.lost_in_kernel(),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            history: self.history.lock().map(|h| h.flows.len()).unwrap_or(0),
            history_capacity: self.capacity,
            trace_per_packet: self.trace_per_packet(),
            metrics_addr: self.metrics_addr.map(|a| a.to_string()),
        }
    }
}

/// Nanoseconds to add to CLOCK_MONOTONIC (the kernel's event clock) to get
/// Unix time. Recomputed per batch, so a clock step is followed quickly.
fn monotonic_to_unix_offset() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

/// RFC 3339 UTC with milliseconds, from Unix nanoseconds (no date crate for
/// one format: days to civil date after Howard Hinnant's algorithm).
pub fn rfc3339_millis(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

fn tcp_flag_names(f: u8) -> Vec<String> {
    [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, n)| n.to_string())
    .collect()
}

fn peer(names: &Names, a: SocketAddrV4) -> FlowPeer {
    let pod = names.pods.get(a.ip());
    FlowPeer {
        ip: *a.ip(),
        port: a.port(),
        namespace: pod.map(|(ns, _)| ns.clone()),
        pod: pod.map(|(_, p)| p.clone()),
    }
}

/// Turns a kernel event into the API's flow, naming what can be named.
pub fn enrich(e: &FlowEvent, names: &Names, unix_offset_ns: i128) -> Flow {
    let unix_ns = u64::try_from(i128::from(e.timestamp_ns) + unix_offset_ns).unwrap_or(0);
    let dropped = e.kind == EventKind::Drop;
    Flow {
        time: rfc3339_millis(unix_ns),
        time_unix_ns: unix_ns,
        verdict: if dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        },
        drop_reason: dropped.then(|| reason_name(e.reason).to_string()),
        refused: e.has_flag(SLUICE_EVENT_F_REPLIED),
        new_flow: e.has_flag(SLUICE_EVENT_F_NEW_FLOW),
        reply: e.has_flag(SLUICE_EVENT_F_REPLY),
        observation_point: point_name(e.point).to_string(),
        ifindex: e.ifindex,
        protocol: proto_name(e.proto),
        tcp_flags: if e.proto == 6 {
            tcp_flag_names(e.tcp_flags)
        } else {
            Vec::new()
        },
        length: e.len,
        source: peer(names, e.orig_src),
        destination: peer(names, e.orig_dst),
        translated_source: peer(names, e.xlat_src),
        translated_destination: peer(names, e.xlat_dst),
        service: names.services.get(&e.rev_nat_id).map(|s| FlowService {
            name: s.name.clone(),
            port_name: s.port_name.clone(),
            frontend_ip: *s.frontend.ip(),
            frontend_port: s.frontend.port(),
        }),
        rev_nat_id: e.rev_nat_id,
        backend_id: e.backend_id,
        policy_rule: (dropped && Some(e.reason) == reason_code("policy_denied"))
            .then(|| policy_rule_name(e, names)),
        source_identity: (e.src_identity != 0).then_some(e.src_identity),
        destination_identity: (e.dst_identity != 0).then_some(e.dst_identity),
    }
}

/// The rule behind a policy drop, by name; rule 0 is the default deny of a
/// pod that policies select and no rule allows.
fn policy_rule_name(e: &FlowEvent, names: &Names) -> String {
    let side = if e.has_flag(SLUICE_EVENT_F_POLICY_INGRESS) {
        "ingress"
    } else {
        "egress"
    };
    if e.rule_id == 0 {
        return format!("default deny ({side})");
    }
    names
        .rules
        .get(&e.rule_id)
        .cloned()
        .unwrap_or_else(|| format!("rule {} ({side})", e.rule_id))
}

/// How often the reader collects events the kernel did not wake it for:
/// the most a flow waits before `sluice observe --follow` shows it.
pub const EVENTS_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads every waiting event into `batch`.
fn drain(reader: &mut EventReader, tel: &Telemetry, batch: &mut Vec<FlowEvent>) {
    while let Some(item) = reader.next() {
        match item {
            Ok(e) => batch.push(e),
            Err(err) => {
                tel.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, "undecodable event");
            }
        }
    }
}

/// Starts the reader task. Must run inside the tokio runtime.
pub fn spawn_reader(tel: Arc<Telemetry>) -> Result<tokio::task::JoinHandle<()>, FlowsError> {
    let reader = EventReader::open(&tel.pin_dir)?;
    // SAFETY: the EventReader owns the ring buffer's map fd for as long as
    // it lives (it moves into the AsyncFd), and as_raw_fd always returns
    // that same fd.
    let mut afd = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
        .map_err(|e| FlowsError::Poll(std::io::Error::other(e.to_string())))?;
    Ok(tokio::spawn(async move {
        loop {
            // The kernel wakes us only when the ring fills up (see
            // EVENTS_WAKEUP_BYTES in bpf/lib/events.h); otherwise events
            // are collected every EVENTS_POLL.
            let mut batch = Vec::new();
            match tokio::time::timeout(EVENTS_POLL, afd.readable_mut()).await {
                Ok(Ok(mut guard)) => {
                    drain(guard.get_inner_mut(), &tel, &mut batch);
                    guard.clear_ready();
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "event ring buffer poll failed; flow events stop");
                    return;
                }
                Err(_elapsed) => drain(afd.get_mut(), &tel, &mut batch),
            }
            if batch.is_empty() {
                continue;
            }
            let offset = monotonic_to_unix_offset();
            tel.received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let flows: Vec<Flow> = {
                let names = match tel.names.read() {
                    Ok(n) => n,
                    Err(poisoned) => poisoned.into_inner(),
                };
                batch.iter().map(|e| enrich(e, &names, offset)).collect()
            };
            for f in flows {
                tel.publish(f);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_709_210_096_789_000_000),
            "2024-02-29T12:34:56.789Z"
        );
    }

    #[test]
    fn tcp_flags_by_name() {
        assert_eq!(tcp_flag_names(0x12), vec!["SYN", "ACK"]);
        assert!(tcp_flag_names(0).is_empty());
    }
}
