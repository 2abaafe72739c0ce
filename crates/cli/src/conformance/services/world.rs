//! The unit-test world in a sandbox, built fresh per behaviour (or case):
//!
//! ```text
//!  local pods (CNI, literal IPs) ── node ─ext0── outside ──── node2 ── remote pods
//!  192.168.0.2 (+.1.2, .99.11)      agent       203.0.113.2, .130 on lo   100.64.0.2
//! ```
//!
//! The outside routes the service range, the behaviour's VIPs and the
//! local pods via the node, and remote pods via node2; the node's and
//! node2's default routes go to the outside, so every reply goes to
//! whoever it is addressed to. Backends run the whoami servers.
//!
//! node2 has no agent unless the behaviour needs one (a client or server
//! on "node1" of the e2e wording that must be proxied there): then it
//! runs its own agent (node name `<run id>-n2`, its own state dir,
//! socket and cgroups, the same manifests), and its pods
//! ([`Spec::node2`]) are created through the real CNI against it, in the
//! pod CIDR [`node2_pod_cidr`]. Otherwise remote pods are plain netns
//! wired by hand ([`Spec::remote`]), as cheap as before.

use super::super::cases::Protocol;
use super::super::manifests::write_atomic;
use super::cases::{Conventions, Source};
use super::ProbePath;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use sluice_testbed::{ip_in, sysctl_in, Pod, ProbeKind, ProbeOutcome, Sandbox, SandboxOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const FILE: &str = "services.yaml";
const MARKER_NS: &str = "sluice-conformance";
const MARKER_NAME: &str = "services-applied";
/// The marker's ClusterIP: the top of the service range.
fn marker_ip(c: &Conventions) -> Ipv4Addr {
    c.service_cidr.broadcast().saturating_sub_one()
}
trait SubOne {
    fn saturating_sub_one(self) -> Ipv4Addr;
}
impl SubOne for Ipv4Addr {
    fn saturating_sub_one(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self).saturating_sub(1))
    }
}

/// The link between the outside and node2 (CGNAT space: no behaviour
/// uses it).
const N2_OUT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
pub const N2_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The name scenarios give node2 in `nodeName`; written as node2's
/// agent's node name (`<run id>-n2`).
pub const NODE2_NAME: &str = "node2";
const N2_SUFFIX: &str = "n2";
const N2_DEVICE: &str = "eth0";

/// node2's `--pod-cidr` (its IPAM range): the third /24 of the pod range
/// of the conventions (`10.0.2.0/24`); this node's pods are elsewhere.
pub fn node2_pod_cidr(c: &Conventions) -> ipnet::Ipv4Net {
    let base = u32::from(c.pod_cidr.network()) + (2 << 8);
    ipnet::Ipv4Net::new(Ipv4Addr::from(base), 24).unwrap_or(c.pod_cidr)
}
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a backend serves (whoami on each port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serve {
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
    pub sctp: BTreeSet<u16>,
}

impl Serve {
    pub fn add(&mut self, p: Protocol, port: u16) {
        match p {
            Protocol::Tcp => self.tcp.insert(port),
            Protocol::Udp => self.udp.insert(port),
            Protocol::Sctp => self.sctp.insert(port),
        };
    }

    fn args(&self, ip: Ipv4Addr) -> Vec<String> {
        let mut a = vec!["--whoami-ip".to_string(), ip.to_string()];
        for (flag, ports) in [
            ("--whoami-tcp", &self.tcp),
            ("--whoami-udp", &self.udp),
            ("--sctp", &self.sctp),
        ] {
            for p in ports {
                a.extend([flag.to_string(), p.to_string()]);
            }
        }
        a
    }

    fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && self.sctp.is_empty()
    }
}

/// Everything one world needs.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Services, EndpointSlices, Pods... as in the file (`nodeName` of
    /// this node is rewritten to the agent's node name when written).
    pub docs: Vec<serde_norway::Value>,
    /// Pods on this node (CNI, exact address) → what they serve.
    pub local: BTreeMap<Ipv4Addr, Serve>,
    /// Pods on node2 wired by hand (node2 without an agent) → what they
    /// serve.
    pub remote: BTreeMap<Ipv4Addr, Serve>,
    /// Pods on node2 created through the CNI of node2's own agent (which
    /// runs when this is non-empty or [`Spec::node2_agent`]).
    pub node2: BTreeMap<Ipv4Addr, Serve>,
    /// Run node2's own agent.
    pub node2_agent: bool,
    /// Addresses the outside routes to the node (VIPs, external IPs).
    pub routed: BTreeSet<Ipv4Addr>,
    /// Extra agent flags (beyond the sandbox's and the world's).
    pub agent_flags: Vec<String>,
}

pub struct World {
    pub sb: Sandbox,
    pub conv: Conventions,
    sluice: PathBuf,
    pub api: sluice_api::Client,
    path: ProbePath,
    pub pods: BTreeMap<Ipv4Addr, Pod>,
    remote: BTreeMap<Ipv4Addr, Pod>,
    node2: Option<String>,
    /// node2's agent, when it runs.
    agent2: Option<(sluice_testbed::SecondNode, sluice_api::Client)>,
    /// node2's CNI pods.
    pub pods2: BTreeMap<Ipv4Addr, Pod>,
    next_remote: u32,
    generation: u16,
}

/// The agent flags this binary accepts (another branch adds some).
pub fn agent_accepts(sluice: &std::path::Path, flag: &str) -> bool {
    std::process::Command::new(sluice)
        .args(["agent", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

pub fn pod_name(ip: Ipv4Addr) -> String {
    format!("pod-{}", ip.to_string().replace('.', "-"))
}
pub const POD_NS: &str = "pods";

impl World {
    pub async fn build(conv: &Conventions, path: ProbePath, spec: &Spec) -> Result<World> {
        let sluice = std::env::current_exe().context("cannot find the sluice binary")?;
        let sb = Sandbox::create(SandboxOptions::default())?;
        // Named on stderr so a test can check nothing of it remains.
        eprintln!("sandbox {}: services world", sb.run_id());
        let mut w = World {
            api: sluice_api::Client::new(sb.agent_socket()),
            sb,
            conv: conv.clone(),
            sluice,
            path,
            pods: BTreeMap::new(),
            remote: BTreeMap::new(),
            node2: None,
            agent2: None,
            pods2: BTreeMap::new(),
            next_remote: 0,
            generation: 0,
        };
        // The sandbox is torn down on drop if anything below fails.
        w.topology(spec)?;
        let mut flags: Vec<String> = vec![
            format!("--pod-cidr={}", conv.pod_cidr),
            "--nodeport-range=1-65535".into(),
        ];
        for (flag, value) in [
            ("--node-ip", conv.primary_ip.to_string()),
            ("--cluster-cidr", conv.pod_cidr.to_string()),
        ] {
            if agent_accepts(&w.sluice, flag) {
                flags.push(format!("{flag}={value}"));
            }
        }
        flags.extend(spec.agent_flags.iter().cloned());
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let sluice = w.sluice.clone();
        w.sb.start_agent(&sluice, &refs).await?;
        for (ip, serve) in &spec.local {
            w.add_local(*ip, serve).await?;
        }
        for (ip, serve) in &spec.remote {
            w.add_remote(*ip, serve).await?;
        }
        if spec.node2_agent || !spec.node2.is_empty() {
            w.start_node2_agent(&spec.agent_flags).await?;
        }
        for (ip, serve) in &spec.node2 {
            w.add_node2_pod(*ip, serve).await?;
        }
        w.apply(&spec.docs).await?;
        Ok(w)
    }

    fn node(&self) -> String {
        self.sb.node_netns_name()
    }
    fn out(&self) -> String {
        self.sb.outside_netns_name()
    }

    /// The outside's address on the node's link.
    fn gateway(&self) -> Ipv4Addr {
        let base = u32::from(self.conv.primary_ip) & !0xff;
        let gw = Ipv4Addr::from(base | 1);
        if gw == self.conv.primary_ip {
            Ipv4Addr::from(base | 254)
        } else {
            gw
        }
    }

    fn topology(&mut self, spec: &Spec) -> Result<()> {
        let (node, out) = (self.node(), self.out());
        let primary = self.conv.primary_ip;
        let gw = self.gateway();
        // The sandbox's own link addresses give way to the world's.
        ip_in(
            &node,
            &["addr", "flush", "dev", sluice_testbed::NODE_DEVICE],
        )?;
        ip_in(
            &out,
            &["addr", "flush", "dev", sluice_testbed::OUTSIDE_DEVICE],
        )?;
        ip_in(
            &node,
            &[
                "addr",
                "add",
                &format!("{primary}/24"),
                "dev",
                sluice_testbed::NODE_DEVICE,
            ],
        )?;
        for ip in self.conv.node_ips.iter().filter(|ip| **ip != primary) {
            ip_in(
                &node,
                &[
                    "addr",
                    "add",
                    &format!("{ip}/32"),
                    "dev",
                    sluice_testbed::NODE_DEVICE,
                ],
            )?;
        }
        ip_in(
            &out,
            &[
                "addr",
                "add",
                &format!("{gw}/24"),
                "dev",
                sluice_testbed::OUTSIDE_DEVICE,
            ],
        )?;
        ip_in(
            &node,
            &["route", "replace", "default", "via", &gw.to_string()],
        )?;
        // As on a cluster node: nothing answers for the service range
        // itself, so an address no Service captures is "unreachable".
        ip_in(
            &node,
            &[
                "route",
                "replace",
                "unreachable",
                &self.conv.service_cidr.to_string(),
            ],
        )?;
        for c in [self.conv.external_client, self.conv.blocked_client] {
            ip_in(&out, &["addr", "add", &format!("{c}/32"), "dev", "lo"])?;
        }
        let mut routed: BTreeSet<String> =
            spec.routed.iter().map(|ip| format!("{ip}/32")).collect();
        routed.insert(self.conv.service_cidr.to_string());
        for ip in self.conv.node_ips.iter().filter(|ip| **ip != primary) {
            routed.insert(format!("{ip}/32"));
        }
        for dst in &routed {
            ip_in(
                &out,
                &["route", "replace", dst, "via", &primary.to_string()],
            )?;
        }
        let outp = self.sb.outside_netns();
        sysctl_in(&outp, "net.ipv4.ip_forward", "1")?;
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            sysctl_in(&outp, key, "0")?;
        }
        Ok(())
    }

    async fn add_local(&mut self, ip: Ipv4Addr, serve: &Serve) -> Result<()> {
        let pod = self
            .sb
            .add_pod_at(POD_NS, &pod_name(ip), Some(ip))
            .await
            .with_context(|| format!("cannot create local pod {ip}"))?;
        ip_in(
            &self.out(),
            &[
                "route",
                "replace",
                &format!("{ip}/32"),
                "via",
                &self.conv.primary_ip.to_string(),
            ],
        )?;
        if !serve.is_empty() {
            self.sb.spawn_workload_args(&pod, serve.args(ip)).await?;
        }
        self.pods.insert(ip, pod);
        Ok(())
    }

    fn node2(&mut self) -> Result<String> {
        if let Some(n) = &self.node2 {
            return Ok(n.clone());
        }
        let n2 = self.sb.add_netns("n2")?;
        let out = self.out();
        ip_in(
            &out,
            &[
                "link", "add", "n2", "type", "veth", "peer", "name", "eth0", "netns", &n2,
            ],
        )?;
        ip_in(&out, &["addr", "add", &format!("{N2_OUT}/30"), "dev", "n2"])?;
        ip_in(&out, &["link", "set", "n2", "up"])?;
        ip_in(&n2, &["addr", "add", &format!("{N2_IP}/30"), "dev", "eth0"])?;
        ip_in(&n2, &["link", "set", "eth0", "up"])?;
        ip_in(
            &n2,
            &["route", "add", "default", "via", &N2_OUT.to_string()],
        )?;
        let p = sluice_testbed::netns_path(&n2);
        sysctl_in(&p, "net.ipv4.ip_forward", "1")?;
        // As on the node: ICMP errors are not rate-limited.
        sysctl_in(&p, "net.ipv4.icmp_ratelimit", "0")?;
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            sysctl_in(&p, key, "0")?;
        }
        self.node2 = Some(n2.clone());
        Ok(n2)
    }

    /// node2's own agent on its uplink, with the world's flags for its
    /// node and pod CIDR.
    async fn start_node2_agent(&mut self, extra: &[String]) -> Result<()> {
        let n2 = self.node2()?;
        let mut flags: Vec<String> = vec![
            format!("--pod-cidr={}", node2_pod_cidr(&self.conv)),
            "--nodeport-range=1-65535".into(),
        ];
        for (flag, value) in [
            ("--node-ip", N2_IP.to_string()),
            ("--cluster-cidr", self.conv.pod_cidr.to_string()),
        ] {
            if agent_accepts(&self.sluice, flag) {
                flags.push(format!("{flag}={value}"));
            }
        }
        flags.extend(extra.iter().cloned());
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let sluice = self.sluice.clone();
        let node = self
            .sb
            .start_second_node(N2_SUFFIX, &n2, &sluice, N2_DEVICE, &refs)
            .await
            .context("cannot start node2's agent")?;
        let api = sluice_api::Client::new(node.socket());
        self.agent2 = Some((node, api));
        Ok(())
    }

    /// The outside routes `ip` (a node2 pod) to node2.
    fn route_via_node2(&self, ip: Ipv4Addr) -> Result<()> {
        ip_in(
            &self.out(),
            &[
                "route",
                "replace",
                &format!("{ip}/32"),
                "via",
                &N2_IP.to_string(),
            ],
        )?;
        Ok(())
    }

    /// A pod on node2 through node2's agent's CNI (exact address); the
    /// outside routes it to node2.
    async fn add_node2_pod(&mut self, ip: Ipv4Addr, serve: &Serve) -> Result<()> {
        let node = self
            .agent2
            .as_ref()
            .map(|(n, _)| n.clone())
            .ok_or_else(|| anyhow!("node2 has no agent"))?;
        let pod = self
            .sb
            .add_pod_on(&node, POD_NS, &pod_name(ip), Some(ip))
            .await
            .with_context(|| format!("cannot create node2 pod {ip}"))?;
        self.route_via_node2(ip)?;
        if !serve.is_empty() {
            self.sb
                .spawn_workload_in(&pod, serve.args(ip), &node.pods_cgroup)
                .await?;
        }
        self.pods2.insert(ip, pod);
        Ok(())
    }

    pub async fn add_node2_pod_now(&mut self, ip: Ipv4Addr, serve: &Serve) -> Result<()> {
        self.add_node2_pod(ip, serve).await
    }

    /// Removes a node2 pod (CNI DEL against node2's agent).
    pub async fn remove_node2_pod(&mut self, ip: Ipv4Addr) -> Result<()> {
        let node = self
            .agent2
            .as_ref()
            .map(|(n, _)| n.clone())
            .ok_or_else(|| anyhow!("node2 has no agent"))?;
        let pod = self
            .pods2
            .remove(&ip)
            .ok_or_else(|| anyhow!("no node2 pod {ip}"))?;
        self.sb.remove_pod_on(&node, &pod).await?;
        Ok(())
    }

    /// A pod on node2: a netns with a veth to node2 (proxy ARP there),
    /// `/32` routes on node2 and the outside.
    async fn add_remote(&mut self, ip: Ipv4Addr, serve: &Serve) -> Result<()> {
        let n2 = self.node2()?;
        let k = self.next_remote;
        self.next_remote += 1;
        let ns = self.sb.add_netns(&format!("r{k}"))?;
        let host_if = format!("rp{k}");
        ip_in(
            &n2,
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        ip_in(&n2, &["link", "set", &host_if, "up"])?;
        sysctl_in(
            &sluice_testbed::netns_path(&n2),
            &format!("net.ipv4.conf.{host_if}.proxy_arp"),
            "1",
        )?;
        ip_in(&n2, &["route", "add", &format!("{ip}/32"), "dev", &host_if])?;
        ip_in(&ns, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        ip_in(&ns, &["link", "set", "eth0", "up"])?;
        ip_in(&ns, &["route", "add", "default", "dev", "eth0"])?;
        self.route_via_node2(ip)?;
        let pod = Pod {
            namespace: "node2".into(),
            name: pod_name(ip),
            container_id: String::new(),
            netns: sluice_testbed::netns_path(&ns),
            netns_name: ns,
            ip,
        };
        if !serve.is_empty() {
            self.sb.spawn_workload_args(&pod, serve.args(ip)).await?;
        }
        self.remote.insert(ip, pod);
        Ok(())
    }

    /// A hostNetwork backend: whoami servers in the node's namespace.
    pub async fn serve_on_node(&mut self, serve: &Serve) -> Result<()> {
        let pod = Pod {
            namespace: "node".into(),
            name: "host".into(),
            container_id: String::new(),
            netns: self.sb.node_netns(),
            netns_name: self.node(),
            ip: self.conv.primary_ip,
        };
        self.sb
            .spawn_workload_args(&pod, serve.args(self.conv.primary_ip))
            .await?;
        Ok(())
    }

    /// Writes `docs` (plus a Pod object per local pod and the marker) as
    /// the one manifest file and waits until the agent applied exactly
    /// that version. A rejected object is an error.
    pub async fn apply(&mut self, docs: &[serde_norway::Value]) -> Result<()> {
        self.generation = self.generation % u16::MAX + 1;
        let node_name = self.sb.run_id().to_string();
        let node2_name = format!("{node_name}-{N2_SUFFIX}");
        let mut out: Vec<Json> = Vec::new();
        for d in docs {
            let mut j = serde_json::to_value(d).context("a manifest is not JSON-able")?;
            rewrite_node_name(&mut j, &self.conv.node_name, &node_name);
            rewrite_node_name(&mut j, NODE2_NAME, &node2_name);
            out.push(j);
        }
        // Pods the behaviour defines itself get the opt-out too.
        if self.path == ProbePath::Tc {
            for d in out.iter_mut().filter(|d| d["kind"] == "Pod") {
                d["metadata"]["annotations"]["sluice.io/socket-lb"] = json!("false");
            }
        }
        for pod in self.pods.values().chain(self.pods2.values()) {
            let annotations = match self.path {
                ProbePath::Tc => json!({"sluice.io/socket-lb": "false"}),
                ProbePath::Socket => json!({}),
            };
            // Pods the behaviour defines itself (selectors, named ports) win.
            let defined = out
                .iter()
                .any(|d| d["kind"] == "Pod" && d["metadata"]["name"] == pod.name.as_str());
            if !defined {
                out.push(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"namespace": POD_NS, "name": pod.name, "annotations": annotations},
                    "spec": {"containers": [{"name": "c"}]},
                }));
            }
        }
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": MARKER_NAME, "namespace": MARKER_NS},
            "spec": {"clusterIP": marker_ip(&self.conv).to_string(),
                     "ports": [{"name": "generation", "port": self.generation, "protocol": "TCP"}]},
        }));
        let mut text = String::new();
        for d in &out {
            text.push_str("---\n");
            text.push_str(&serde_norway::to_string(d)?);
        }
        write_atomic(self.sb.manifests_dir(), FILE, &text)
            .with_context(|| format!("cannot write {FILE}"))?;
        self.wait_applied().await
    }

    /// Until every agent (this node's, node2's) applied this version.
    async fn wait_applied(&self) -> Result<()> {
        self.wait_applied_by(&self.api, "the agent").await?;
        if let Some((_, api2)) = &self.agent2 {
            self.wait_applied_by(api2, "node2's agent").await?;
        }
        Ok(())
    }

    async fn wait_applied_by(&self, api: &sluice_api::Client, who: &str) -> Result<()> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let full = format!("{MARKER_NS}/{MARKER_NAME}");
        loop {
            let services: Vec<sluice_api::ServiceInfo> = api
                .get("/v1/services")
                .await
                .with_context(|| format!("cannot list {who}'s services"))?;
            if services
                .iter()
                .any(|s| s.service == full && s.port == self.generation)
            {
                let status: sluice_api::Status = api.get("/v1/status").await?;
                let rejected: Vec<String> = status
                    .rejected
                    .iter()
                    .filter(|r| r.file == FILE)
                    .map(|r| format!("{}: {}", r.object, r.error))
                    .collect();
                if !rejected.is_empty() {
                    bail!("{who} rejected: {}", rejected.join("; "));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{who} did not apply {FILE} (generation {}) within {}s",
                    self.generation,
                    APPLY_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's services, the marker left out.
    pub async fn services(&self) -> Result<Vec<sluice_api::ServiceInfo>> {
        let all: Vec<sluice_api::ServiceInfo> = self.api.get("/v1/services").await?;
        let marker = format!("{MARKER_NS}/{MARKER_NAME}");
        Ok(all.into_iter().filter(|s| s.service != marker).collect())
    }

    /// Removes a local pod (CNI DEL) and its workload's netns.
    pub async fn remove_local(&mut self, ip: Ipv4Addr) -> Result<()> {
        let pod = self
            .pods
            .remove(&ip)
            .ok_or_else(|| anyhow!("no local pod {ip}"))?;
        self.sb.remove_pod(&pod).await?;
        Ok(())
    }

    pub async fn add_local_pod(&mut self, ip: Ipv4Addr, serve: &Serve) -> Result<()> {
        self.add_local(ip, serve).await
    }

    /// The client process for `count` attempts from `source` to `to`,
    /// ready to run on any thread.
    pub fn job(
        &self,
        source: &Source,
        to: SocketAddrV4,
        protocol: Protocol,
        count: usize,
        timeout: Duration,
        bind_port: u16,
    ) -> Result<ProbeJob> {
        let (netns, cgroup, bind) = match source {
            Source::Pod(ip) if self.pods2.contains_key(ip) => {
                let (node, _) = self
                    .agent2
                    .as_ref()
                    .ok_or_else(|| anyhow!("node2 has no agent"))?;
                let bind = (bind_port != 0).then(|| SocketAddr::from((*ip, bind_port)));
                (
                    self.pods2[ip].netns.clone(),
                    Some(node.pods_cgroup.clone()),
                    bind,
                )
            }
            // A process on node2, in its pods cgroup (its socket hooks).
            Source::Node(ip) if *ip == N2_IP && self.agent2.is_some() => {
                let node = self.agent2.as_ref().map(|(n, _)| n);
                (
                    sluice_testbed::netns_path(self.node2.as_deref().unwrap_or_default()),
                    node.map(|n| n.pods_cgroup.clone()),
                    Some(SocketAddr::from((*ip, bind_port))),
                )
            }
            Source::Pod(ip) => {
                let pod = self
                    .pods
                    .get(ip)
                    .or_else(|| self.remote.get(ip))
                    .ok_or_else(|| anyhow!("no pod {ip} in this world"))?;
                let bind = (bind_port != 0).then(|| SocketAddr::from((*ip, bind_port)));
                (
                    pod.netns.clone(),
                    Some(self.sb.cgroup_path().to_path_buf()),
                    bind,
                )
            }
            // In the pod cgroup, so the socket hooks see node processes.
            Source::Node(ip) => (
                self.sb.node_netns(),
                Some(self.sb.cgroup_path().to_path_buf()),
                Some(SocketAddr::from((*ip, bind_port))),
            ),
            Source::External(ip) => (
                self.sb.outside_netns(),
                None,
                Some(SocketAddr::from((*ip, bind_port))),
            ),
            Source::Unsupported(why) => bail!("{why}"),
        };
        let kind = match protocol {
            Protocol::Tcp => ProbeKind::TcpRead,
            Protocol::Udp => ProbeKind::UdpConnected,
            Protocol::Sctp => ProbeKind::Sctp,
        };
        Ok(ProbeJob {
            sluice: self.sluice.clone(),
            netns,
            cgroup,
            kind,
            bind,
            to,
            count,
            timeout,
            payload: 0,
        })
    }

    /// [`World::job`] run to completion.
    pub async fn probe(
        &self,
        source: &Source,
        to: SocketAddrV4,
        protocol: Protocol,
        count: usize,
        timeout: Duration,
        bind_port: u16,
    ) -> Result<Vec<ProbeOutcome>> {
        let job = self.job(source, to, protocol, count, timeout, bind_port)?;
        tokio::task::spawn_blocking(move || job.run())
            .await
            .context("the probe task panicked")?
    }

    pub fn teardown(mut self) -> Result<()> {
        self.sb.teardown().context("cannot remove the sandbox")
    }
}

/// One client process: `sluice workload probe` in a namespace.
pub struct ProbeJob {
    sluice: PathBuf,
    netns: PathBuf,
    cgroup: Option<PathBuf>,
    kind: ProbeKind,
    bind: Option<SocketAddr>,
    to: SocketAddrV4,
    count: usize,
    timeout: Duration,
    /// Bytes each attempt sends (0: a small request).
    pub payload: usize,
}

impl ProbeJob {
    /// Blocking.
    pub fn run(self) -> Result<Vec<ProbeOutcome>> {
        sluice_testbed::probe_in_bound(
            &self.sluice,
            &self.netns,
            self.cgroup.as_deref(),
            self.kind,
            self.bind,
            self.payload,
            &[SocketAddr::V4(self.to)],
            self.count,
            self.timeout,
        )
        .context("cannot run the probe")
    }
}

/// `nodeName: <this node>` anywhere in an EndpointSlice becomes the
/// agent's node name; nothing else changes.
pub fn rewrite_node_name(j: &mut Json, from: &str, to: &str) {
    match j {
        Json::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "nodeName" && v.as_str() == Some(from) {
                    *v = Json::String(to.to_string());
                } else {
                    rewrite_node_name(v, from, to);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(|v| rewrite_node_name(v, from, to)),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_name_is_rewritten() {
        let mut j = json!({"endpoints": [{"nodeName": "test-node"}, {"nodeName": "node2"}],
                           "metadata": {"name": "test-node"}});
        rewrite_node_name(&mut j, "test-node", "slc123456");
        assert_eq!(j["endpoints"][0]["nodeName"], "slc123456");
        assert_eq!(j["endpoints"][1]["nodeName"], "node2");
        assert_eq!(j["metadata"]["name"], "test-node");
    }

    #[test]
    fn whoami_args_list_every_port() {
        let mut s = Serve::default();
        s.add(Protocol::Tcp, 80);
        s.add(Protocol::Sctp, 53);
        assert_eq!(
            s.args(Ipv4Addr::new(10, 180, 0, 1)),
            [
                "--whoami-ip",
                "10.180.0.1",
                "--whoami-tcp",
                "80",
                "--sctp",
                "53"
            ]
        );
    }
}
