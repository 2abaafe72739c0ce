use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Machine-readable kind, e.g. `ipam_exhausted`, `bad_request`, `not_found`, `datapath`.
    pub kind: String,
    /// A sentence a person can act on.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamRequest {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    /// This exact address (CNI_ARGS `IP=`, the host-local convention):
    /// granted only if it is inside the pod CIDR and free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamAllocation {
    pub ip: Ipv4Addr,
    /// Prefix length to put on the pod's interface (32: pods get a host route).
    pub prefix_len: u8,
    /// Next hop the pod uses for everything (a link-local address answered by
    /// a static neighbour entry pointing at the host side of the veth).
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamRelease {
    pub container_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRegistration {
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    /// Host-side veth name, in the agent's network namespace.
    pub host_ifname: String,
    /// Interface name inside the pod (CNI_IFNAME).
    pub ifname: String,
    /// Path of the pod's network namespace (CNI_NETNS).
    pub netns: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Programs attached, traffic flows.
    Ready,
    /// Registered but its interface is gone or programs could not be attached.
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub container_id: String,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub ifname: String,
    pub netns: String,
    pub state: EndpointState,
    /// Why the endpoint is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectedObject {
    pub file: String,
    /// `kind namespace/name`, or the document index when the name is unknown.
    pub object: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendInfo {
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Pod `namespace/name` behind this address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `namespace/name`.
    pub service: String,
    /// `ClusterIP`, `NodePort`, `ExternalIP` or `LoadBalancer`; with
    /// externalTrafficPolicy Local the entry external clients use (this
    /// node's endpoints only) is `NodePort/local` (`ExternalIP/local`,
    /// `LoadBalancer/local`).
    pub kind: String,
    /// Frontend address; `0.0.0.0` for a NodePort (every node address).
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub port_name: String,
    pub rev_nat_id: u32,
    pub backends: Vec<BackendInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatapathStatus {
    /// How the tc programs are attached: `tcx` or `tc` (clsact fallback).
    pub attach_mode: String,
    pub pin_dir: String,
    /// Devices serving NodePort.
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub node_name: String,
    pub version: String,
    pub pod_cidr: String,
    pub manifests: String,
    pub datapath: DatapathStatus,
    pub services: usize,
    pub frontends: usize,
    pub backends: usize,
    pub endpoints: usize,
    /// Unix seconds of the last successful sync to the maps.
    pub last_sync_unix: Option<u64>,
    /// Map writes of the last sync.
    pub last_sync_writes: usize,
    /// Map writes that failed (e.g. map full) since start.
    pub map_write_errors: u64,
    pub rejected: Vec<RejectedObject>,
    /// Services programmed only in part, and why (a frontend another
    /// Service owns, a targetPort name no selected pod declares, ...).
    #[serde(default)]
    pub service_warnings: Vec<String>,
    /// healthCheckNodePorts being served (eTP Local LoadBalancers).
    #[serde(default)]
    pub health_check_ports: Vec<u16>,
    /// Kernel features found at start.
    #[serde(default)]
    pub kernel: KernelFeatures,
    /// Flow events and metrics.
    #[serde(default)]
    pub events: EventStatus,
    /// Socket-level load balancing (cgroup hooks).
    #[serde(default)]
    pub socket_lb: SocketLbStatus,
    /// NetworkPolicy enforcement.
    #[serde(default)]
    pub policy: PolicyStatus,
}

/// NetworkPolicy at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PolicyStatus {
    /// NetworkPolicy and CiliumNetworkPolicy objects in force.
    pub policies: usize,
    pub identities: usize,
    /// Local endpoints selected by a policy in at least one direction.
    pub enforced_endpoints: usize,
    /// Entries in the policy map (all local endpoints).
    pub entries: usize,
    /// Bumped on every policy change the datapath received.
    pub revision: u32,
}

/// `GET /v1/identities`: one security identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityView {
    pub id: u32,
    /// `reserved`, `pod` or `cidr`.
    pub kind: String,
    /// Sorted `key=value` (namespace labels prefixed), or the CIDR.
    pub labels: Vec<String>,
    /// Local pods (`namespace/name`) that have this identity.
    #[serde(default)]
    pub pods: Vec<String>,
}

/// `GET /v1/policy/endpoints`: what one local pod enforces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointPolicyView {
    /// `namespace/name`.
    pub pod: String,
    pub ip: Ipv4Addr,
    pub identity: u32,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// Policies (`Kind namespace/name`) that select the pod, per direction.
    pub selected_by_ingress: Vec<String>,
    pub selected_by_egress: Vec<String>,
    pub entries: Vec<PolicyEntryView>,
}

/// One policy map entry of an endpoint, with the rule behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyEntryView {
    /// `ingress` or `egress`.
    pub direction: String,
    /// Peer identity; 0 = any peer.
    pub peer_identity: u32,
    /// The peer identity's labels in short form (`any` for 0).
    pub peer: String,
    /// `TCP`, `UDP`, `SCTP` or `any`.
    pub protocol: String,
    /// `80`, `8000-8255`, or `all`.
    pub ports: String,
    /// `allow` or `deny`.
    pub verdict: String,
    pub rule_id: u32,
    /// `namespace/policy ingress[0]`.
    pub rule: String,
}

/// `POST /v1/policy/trace`: would a connection be allowed?
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyTraceRequest {
    /// `namespace/pod` or an IPv4 address.
    pub from: String,
    /// `namespace/pod` or an IPv4 address.
    pub to: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyTraceResult {
    pub allowed: bool,
    /// The source's egress side, in words (`not selected: open`, `allowed by ...`).
    pub egress: String,
    /// The destination's ingress side, in words.
    pub ingress: String,
}

/// Socket-level load balancing: whether it is on, where, and which hooks work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SocketLbStatus {
    /// The node-wide switch (agent `--socket-lb`).
    #[serde(default)]
    pub enabled: bool,
    /// connect4 is attached: new connections to ClusterIPs from processes
    /// in the cgroup are balanced at the socket, not per packet.
    #[serde(default)]
    pub active: bool,
    /// The cgroup v2 directory the hooks are attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Hooks attached, e.g. `connect4`.
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Hooks that are not attached, and why.
    #[serde(default)]
    pub failed: Vec<SocketHookFailure>,
    /// Pods whose network namespace opted out (`sluice.io/socket-lb: "false"`).
    #[serde(default)]
    pub opted_out_pods: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketHookFailure {
    pub hook: String,
    pub reason: String,
}

/// Kernel features the datapath can use, as probed at agent start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct KernelFeatures {
    /// Kernel release.
    #[serde(default)]
    pub kernel: String,
    /// tcx links (Linux ≥ 6.6): preferred attach mode; clsact otherwise.
    #[serde(default)]
    pub tcx: bool,
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    #[serde(default)]
    pub btf: bool,
    /// BPF ring buffer (flow events).
    #[serde(default)]
    pub ringbuf: bool,
    /// XDP programs load (not used yet).
    #[serde(default)]
    pub xdp: bool,
    /// cgroup socket-address hooks (socket-level LB).
    #[serde(default)]
    pub socket_hooks: bool,
}

/// Flow events: what the agent received, lost, keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EventStatus {
    /// Events read from the ring buffer since start.
    #[serde(default)]
    pub received: u64,
    /// Events the kernel could not emit (ring buffer full), since the maps were created.
    #[serde(default)]
    pub lost: u64,
    /// Records that could not be decoded.
    #[serde(default)]
    pub decode_errors: u64,
    /// Flows kept in memory for `sluice observe --last` (bounded).
    #[serde(default)]
    pub history: usize,
    #[serde(default)]
    pub history_capacity: usize,
    /// An event for every translated packet (debugging), not only new flows.
    #[serde(default)]
    pub trace_per_packet: bool,
    /// The Prometheus endpoint, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// `PUT /v1/config/trace` body and answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceConfig {
    /// Emit an event for every translated packet, not only for new flows.
    pub per_packet: bool,
}

/// FORWARDED or DROPPED, as in `sluice observe --verdict`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Forwarded,
    Dropped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "FORWARDED" => Ok(Verdict::Forwarded),
            "DROPPED" => Ok(Verdict::Dropped),
            other => Err(format!("unknown verdict {other:?} (FORWARDED or DROPPED)")),
        }
    }
}

/// One side of a flow: address, and the pod behind it when known.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowPeer {
    pub ip: Ipv4Addr,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl FlowPeer {
    /// `namespace/pod`, when known.
    pub fn pod_name(&self) -> Option<String> {
        match (&self.namespace, &self.pod) {
            (Some(ns), Some(p)) => Some(format!("{ns}/{p}")),
            _ => None,
        }
    }
}

/// The Service a flow was addressed to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowService {
    /// `namespace/name`.
    pub name: String,
    #[serde(default)]
    pub port_name: String,
    /// The frontend (`0.0.0.0` for a NodePort).
    pub frontend_ip: Ipv4Addr,
    pub frontend_port: u16,
}

/// One flow event, enriched by the agent. Field names are stable (see
/// docs/observability.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flow {
    /// RFC 3339 UTC, millisecond precision.
    pub time: String,
    /// Unix nanoseconds.
    pub time_unix_ns: u64,
    pub verdict: Verdict,
    /// Why it was dropped (`no_service_backend`, ...); absent when forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// A drop answered with a TCP RST / ICMP port unreachable (no endpoint).
    #[serde(default)]
    pub refused: bool,
    /// The packet created the conntrack entry (first packet of the flow).
    #[serde(default)]
    pub new_flow: bool,
    /// A reply translated back to the Service address.
    #[serde(default)]
    pub reply: bool,
    /// `from-pod`, `to-pod` or `node-device`.
    pub observation_point: String,
    pub ifindex: u32,
    /// `TCP`, `UDP`, or the IP protocol number.
    pub protocol: String,
    /// TCP flags set (`SYN`, `ACK`, ...); empty for other protocols.
    #[serde(default)]
    pub tcp_flags: Vec<String>,
    /// Frame length in bytes.
    pub length: u32,
    /// As the packet arrived.
    pub source: FlowPeer,
    pub destination: FlowPeer,
    /// As the packet left (after DNAT / rev-NAT); equal when not translated.
    pub translated_source: FlowPeer,
    pub translated_destination: FlowPeer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<FlowService>,
    #[serde(default)]
    pub rev_nat_id: u32,
    #[serde(default)]
    pub backend_id: u32,
    /// Policy drops: the rule that denied (`x/deny-all ingressDeny[0]`), or
    /// `default deny (ingress)` when the pod is selected and no rule allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    /// Identities policy judged the flow with (after Service translation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_identity: Option<u32>,
}

/// Filters of `GET /v1/flows` (query parameters), as `sluice observe` takes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FlowQuery {
    /// At most this many past flows (the most recent); default 20, 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<usize>,
    /// Keep the response open and stream new flows (NDJSON).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// `namespace/name` on either side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_pod: Option<String>,
    /// Either side in this namespace (or a Service in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `namespace/name` of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Source or destination port, original or translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
}

fn pod_matches(peer: &FlowPeer, want: &str) -> bool {
    match want.split_once('/') {
        Some((ns, name)) => {
            peer.namespace.as_deref() == Some(ns) && peer.pod.as_deref() == Some(name)
        }
        // A bare name: the pod in any namespace.
        None => peer.pod.as_deref() == Some(want),
    }
}

impl FlowQuery {
    /// The query string (without `?`), values percent-encoded.
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |k: &str, v: String| parts.push(format!("{k}={}", percent_encode(&v)));
        if let Some(n) = self.last {
            add("last", n.to_string());
        }
        if self.follow {
            add("follow", "true".into());
        }
        for (k, v) in [
            ("pod", &self.pod),
            ("from_pod", &self.from_pod),
            ("to_pod", &self.to_pod),
            ("namespace", &self.namespace),
            ("service", &self.service),
            ("protocol", &self.protocol),
            ("drop_reason", &self.drop_reason),
        ] {
            if let Some(v) = v {
                add(k, v.clone());
            }
        }
        if let Some(p) = self.port {
            add("port", p.to_string());
        }
        if let Some(v) = self.verdict {
            add("verdict", v.as_str().into());
        }
        parts.join("&")
    }

    /// Whether `f` passes every filter given.
    pub fn matches(&self, f: &Flow) -> bool {
        let sides = [
            &f.source,
            &f.destination,
            &f.translated_source,
            &f.translated_destination,
        ];
        if let Some(p) = &self.pod {
            if !sides.iter().any(|s| pod_matches(s, p)) {
                return false;
            }
        }
        if let Some(p) = &self.from_pod {
            if !pod_matches(&f.source, p) {
                return false;
            }
        }
        if let Some(p) = &self.to_pod {
            if !pod_matches(&f.translated_destination, p) && !pod_matches(&f.destination, p) {
                return false;
            }
        }
        if let Some(ns) = &self.namespace {
            let svc_ns = f
                .service
                .as_ref()
                .and_then(|s| s.name.split_once('/'))
                .map(|(n, _)| n);
            if !sides.iter().any(|s| s.namespace.as_deref() == Some(ns)) && svc_ns != Some(ns) {
                return false;
            }
        }
        if let Some(svc) = &self.service {
            if f.service.as_ref().map(|s| s.name.as_str()) != Some(svc.as_str()) {
                return false;
            }
        }
        if let Some(port) = self.port {
            if !sides.iter().any(|s| s.port == port) {
                return false;
            }
        }
        if let Some(p) = &self.protocol {
            if !f.protocol.eq_ignore_ascii_case(p) {
                return false;
            }
        }
        if let Some(v) = self.verdict {
            if f.verdict != v {
                return false;
            }
        }
        if let Some(r) = &self.drop_reason {
            let want = r.to_ascii_lowercase().replace('-', "_");
            if f.drop_reason.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
