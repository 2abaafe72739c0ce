//! A node (network namespace running the agent), an "outside" namespace
//! standing for the rest of the network, pods, and a cgroup for pod
//! processes. Everything is named `slc<6 hex>-…` and removed on drop.

use crate::cni::{self, Invocation};
use crate::error::{io, Result, TestbedError};
use crate::netns::{netns_path, sysctl_in};
use crate::spawn::{kill_and_reap, spawn_in, tail};
use crate::state::{self, State, DEFAULT_STATE_ROOT};
use crate::workload::READY_LINE;
use crate::{bins, cgroup, cmd, names};
use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Device name of the node's uplink (inside the node netns); the agent
/// serves NodePorts on it.
pub const NODE_DEVICE: &str = "ext0";
/// Device name of the outside namespace's end of the uplink.
pub const OUTSIDE_DEVICE: &str = "eth0";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Where run records live (`sluice sandbox down` looks here).
    pub state_root: PathBuf,
    /// Manifest directory for the agent; default: an empty `manifests/`
    /// in the state dir.
    pub manifests: Option<PathBuf>,
    /// sluice-cni binary; default: `find_binary("sluice-cni")`.
    pub cni_bin: Option<PathBuf>,
    /// `sluice` binary (for workloads); default: `find_binary("sluice")`.
    pub sluice_bin: Option<PathBuf>,
    pub agent_ready_timeout: Duration,
    pub cni_timeout: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            state_root: PathBuf::from(DEFAULT_STATE_ROOT),
            manifests: None,
            cni_bin: None,
            sluice_bin: None,
            agent_ready_timeout: Duration::from_secs(30),
            cni_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    /// Name under /run/netns.
    pub netns_name: String,
    /// Path of the netns (what CNI_NETNS got).
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
}

impl Pod {
    /// `namespace/name`: also the body the pod's HTTP workload answers.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Ports for [`Sandbox::spawn_workload`]; `None` leaves a protocol off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadPorts {
    pub tcp: Option<u16>,
    pub udp: Option<u16>,
    pub http: Option<u16>,
}

/// Ports for [`Sandbox::spawn_servers`]: any number per protocol (TCP and
/// UDP echo, SCTP INIT answered with an INIT-ACK).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServePorts {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    pub sctp: Vec<u16>,
}

struct AgentProc {
    child: Child,
    bin: PathBuf,
    args: Vec<String>,
}

pub struct Sandbox {
    run_id: String,
    octet: u8,
    state_dir: PathBuf,
    pub(crate) state: State,
    pods_cgroup: PathBuf,
    agent_cgroup: PathBuf,
    manifests: PathBuf,
    opts: SandboxOptions,
    pods: Vec<Pod>,
    next_pod: u32,
    agent: Option<AgentProc>,
    pub(crate) workloads: Vec<Child>,
    /// Agents of further nodes ([`crate::SecondNode`]).
    pub(crate) node_agents: Vec<Child>,
    torn_down: bool,
}

impl Sandbox {
    /// Builds the node and outside namespaces, the uplink between them and
    /// the cgroups. Leftovers of dead runs are removed first. On error,
    /// whatever was already created is removed again.
    pub fn create(opts: SandboxOptions) -> Result<Sandbox> {
        if let Err(e) = state::down_leftovers_in(&opts.state_root) {
            tracing::warn!(error = %e, "could not remove every leftover of earlier runs");
        }
        std::fs::create_dir_all(&opts.state_root)
            .map_err(io(format!("cannot create {}", opts.state_root.display())))?;
        let mount = cgroup::cgroup2_mount()?;
        // create_dir fails if the id is taken, which makes the choice atomic.
        let (run_id, state_dir) = loop {
            let id = names::new_run_id();
            let dir = opts.state_root.join(&id);
            if netns_path(&names::node_netns(&id)).exists() || mount.join(&id).exists() {
                continue;
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => break (id, dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(format!("cannot create {}", dir.display()))(e)),
            }
        };
        let pid = std::process::id();
        let pods_cgroup = mount.join(&run_id);
        let agent_cgroup = mount.join(format!("{run_id}-agent"));
        let state = State {
            run_id: run_id.clone(),
            pid,
            pid_start: state::process_start(pid),
            netns: vec![names::node_netns(&run_id), names::outside_netns(&run_id)],
            cgroups: vec![pods_cgroup.clone(), agent_cgroup.clone()],
            pin_nodes: Vec::new(),
        };
        let manifests = opts
            .manifests
            .clone()
            .unwrap_or_else(|| state_dir.join("manifests"));
        let mut sb = Sandbox {
            octet: names::subnet_octet(&run_id),
            run_id,
            state_dir,
            state,
            pods_cgroup,
            agent_cgroup,
            manifests,
            opts,
            pods: Vec::new(),
            next_pod: 0,
            agent: None,
            workloads: Vec::new(),
            node_agents: Vec::new(),
            torn_down: false,
        };
        // From here on, Drop cleans up if building fails half-way.
        sb.state.save(&sb.state_dir)?;
        sb.build()?;
        tracing::info!(run = %sb.run_id, "sandbox ready");
        Ok(sb)
    }

    fn build(&mut self) -> Result<()> {
        if self.opts.manifests.is_none() {
            std::fs::create_dir_all(&self.manifests)
                .map_err(io(format!("cannot create {}", self.manifests.display())))?;
        }
        cgroup::create(&self.pods_cgroup)?;
        cgroup::create(&self.agent_cgroup)?;
        let node = names::node_netns(&self.run_id);
        let out = names::outside_netns(&self.run_id);
        cmd::ip(&["netns", "add", &node])?;
        cmd::ip(&["netns", "add", &out])?;
        // Created inside the node netns from the start: the machine's own
        // namespace never sees the device.
        cmd::ip_in(
            &node,
            &[
                "link",
                "add",
                NODE_DEVICE,
                "type",
                "veth",
                "peer",
                "name",
                OUTSIDE_DEVICE,
                "netns",
                &out,
            ],
        )?;
        let node_cidr = format!("{}/24", self.node_ip());
        let out_cidr = format!("{}/24", self.outside_ip());
        let node_ip = self.node_ip().to_string();
        let pod_cidr = self.pod_cidr();
        for (ns, dev, cidr) in [
            (&node, NODE_DEVICE, &node_cidr),
            (&out, OUTSIDE_DEVICE, &out_cidr),
        ] {
            cmd::ip_in(ns, &["link", "set", "lo", "up"])?;
            cmd::ip_in(ns, &["addr", "add", cidr, "dev", dev])?;
            cmd::ip_in(ns, &["link", "set", dev, "up"])?;
        }
        // Via a next hop, not a device route: otherwise the outside ARPs for
        // each VIP and the packet never reaches the node's tc programs.
        for dst in [pod_cidr.as_str(), SERVICE_CIDR] {
            cmd::ip_in(
                &out,
                &["route", "add", dst, "via", &node_ip, "dev", OUTSIDE_DEVICE],
            )?;
        }
        // Nothing on the node answers for the service range itself: a VIP
        // that no Service (or no longer any) translates gets "unreachable"
        // at once instead of a silent drop, as on a cluster node.
        cmd::ip_in(&node, &["route", "add", "unreachable", SERVICE_CIDR])?;
        let node_path = netns_path(&node);
        sysctl_in(&node_path, "net.ipv4.ip_forward", "1")?;
        // The kernel rate-limits ICMP errors to one a second by default:
        // clients polling a VIP would see timeouts instead of "unreachable".
        sysctl_in(&node_path, "net.ipv4.icmp_ratelimit", "0")?;
        // Replies to pods leave through a different device than the one the
        // request came in on; strict rp_filter would drop them.
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            sysctl_in(&node_path, key, "0")?;
        }
        Ok(())
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    pub fn node_netns_name(&self) -> String {
        names::node_netns(&self.run_id)
    }
    pub fn node_netns(&self) -> PathBuf {
        netns_path(&names::node_netns(&self.run_id))
    }
    pub fn outside_netns_name(&self) -> String {
        names::outside_netns(&self.run_id)
    }
    pub fn outside_netns(&self) -> PathBuf {
        netns_path(&names::outside_netns(&self.run_id))
    }
    /// The node's address on its uplink (NodePort target from outside).
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 31, self.octet, 1)
    }
    pub fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(172, 31, self.octet, 2)
    }
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.octet)
    }
    /// cgroup v2 directory holding pod processes (attach cgroup programs here).
    pub fn cgroup_path(&self) -> &Path {
        &self.pods_cgroup
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }
    /// The running agent's pid (for RSS readings), if one runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.child.id())
    }
    pub fn manifests_dir(&self) -> &Path {
        &self.manifests
    }
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub(crate) fn live(&self) -> Result<()> {
        if self.torn_down {
            Err(TestbedError::TornDown)
        } else {
            Ok(())
        }
    }

    /// Starts `<agent_bin> agent …` in the node netns (plus `extra_args`)
    /// and waits until it answers `GET /v1/status`.
    pub async fn start_agent(&mut self, agent_bin: &Path, extra_args: &[&str]) -> Result<()> {
        self.live()?;
        if self.agent.is_some() {
            self.kill_agent()?;
        }
        let args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        self.spawn_agent(agent_bin.to_path_buf(), args)?;
        self.wait_agent_ready().await
    }

    fn spawn_agent(&mut self, bin: PathBuf, extra: Vec<String>) -> Result<()> {
        let log_path = self.agent_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io("cannot duplicate the agent log handle"))?;
        let sock = self.agent_socket();
        // A stale socket from a killed agent would answer "connection
        // refused" and hide the new one's progress.
        let _ = std::fs::remove_file(&sock);
        let mut c = Command::new(&bin);
        c.arg("agent")
            .arg("--node-name")
            .arg(&self.run_id)
            .arg("--manifests")
            .arg(&self.manifests)
            .arg("--pod-cidr")
            .arg(self.pod_cidr())
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(self.state_dir.join("agent"))
            .arg("--device")
            .arg(NODE_DEVICE)
            // Socket LB for the sandbox's pods only, never the machine's.
            .arg("--cgroup")
            .arg(&self.pods_cgroup)
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = spawn_in(c, &self.node_netns(), Some(&self.agent_cgroup))?;
        tracing::info!(pid = child.id(), "agent started");
        self.agent = Some(AgentProc {
            child,
            bin,
            args: extra,
        });
        Ok(())
    }

    async fn wait_agent_ready(&mut self) -> Result<()> {
        let client = sluice_api::Client::new(self.agent_socket());
        let timeout = self.opts.agent_ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let agent = self.agent.as_mut().ok_or(TestbedError::NoAgent)?;
            if let Ok(Some(status)) = agent.child.try_wait() {
                self.agent = None;
                return Err(TestbedError::AgentExited {
                    status: status.to_string(),
                    log: self.agent_log(),
                    tail: tail(&self.agent_log(), 20),
                });
            }
            let last_error = match client.get::<sluice_api::Status>("/v1/status").await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestbedError::AgentNotReady {
                    secs: timeout.as_secs(),
                    last_error,
                    log: self.agent_log(),
                    tail: tail(&self.agent_log(), 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would: pinned maps and programs stay.
    pub fn kill_agent(&mut self) -> Result<()> {
        let agent = self.agent.as_mut().ok_or(TestbedError::NoAgent)?;
        kill_and_reap(&mut agent.child);
        Ok(())
    }

    /// Kills the agent (if running) and starts it again with the same
    /// arguments, waiting until it answers.
    pub async fn restart_agent(&mut self) -> Result<()> {
        self.live()?;
        let agent = self.agent.as_mut().ok_or(TestbedError::NoAgent)?;
        kill_and_reap(&mut agent.child);
        let (bin, args) = (agent.bin.clone(), agent.args.clone());
        self.spawn_agent(bin, args)?;
        self.wait_agent_ready().await
    }

    /// Creates a pod netns and runs `sluice-cni ADD` for it from the node
    /// netns, exactly as a runtime would.
    pub async fn add_pod(&mut self, namespace: &str, name: &str) -> Result<Pod> {
        self.add_pod_at(namespace, name, None).await
    }

    /// Like [`Sandbox::add_pod`]; `ip` asks the CNI plugin for exactly
    /// that address (CNI_ARGS `IP=`), which the agent's IPAM grants if it
    /// is inside its pod CIDR and free.
    pub async fn add_pod_at(
        &mut self,
        namespace: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<Pod> {
        self.live()?;
        let (node_netns, socket) = (self.node_netns(), self.agent_socket());
        self.add_pod_via(node_netns, &socket, namespace, name, ip)
            .await
    }

    /// `sluice-cni ADD` from `node_netns` against the agent at `socket`
    /// (this node's, or a [`crate::SecondNode`]'s).
    pub(crate) async fn add_pod_via(
        &mut self,
        node_netns: PathBuf,
        socket: &Path,
        namespace: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<Pod> {
        let n = self.next_pod;
        self.next_pod += 1;
        let netns_name = names::pod_netns(&self.run_id, n);
        // Recorded before it exists, so a crash right after still cleans it.
        self.state.netns.push(netns_name.clone());
        self.state.save(&self.state_dir)?;
        cmd::ip(&["netns", "add", &netns_name])?;
        let container_id = format!("{}-p{n}", self.run_id);
        let mut inv = self.invocation(
            node_netns,
            socket,
            "ADD",
            &container_id,
            &netns_name,
            namespace,
            name,
        )?;
        inv.ip = ip;
        let res = tokio::task::spawn_blocking(move || cni::invoke(&inv)).await;
        let stdout = match res {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                // CNI rolled its own changes back; the netns is ours.
                let _ = state::delete_netns(&netns_name);
                return Err(e);
            }
            Err(join) => {
                let _ = state::delete_netns(&netns_name);
                return Err(io("the CNI call panicked")(std::io::Error::other(
                    join.to_string(),
                )));
            }
        };
        let ip = cni::result_ip(&stdout).map_err(|reason| TestbedError::CniOutput {
            command: "ADD".into(),
            pod: format!("{namespace}/{name}"),
            reason,
        })?;
        let pod = Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            container_id,
            netns: netns_path(&netns_name),
            netns_name,
            ip,
        };
        tracing::info!(pod = %pod.full_name(), %ip, "pod added");
        self.pods.push(pod.clone());
        Ok(pod)
    }

    #[allow(clippy::too_many_arguments)]
    fn invocation(
        &self,
        node_netns: PathBuf,
        socket: &Path,
        command: &'static str,
        container_id: &str,
        netns_name: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Invocation> {
        let cni_bin = match &self.opts.cni_bin {
            Some(p) => p.clone(),
            None => bins::find_binary("sluice-cni")?,
        };
        Ok(Invocation {
            cni_bin,
            node_netns,
            command,
            container_id: container_id.to_string(),
            pod_netns: netns_path(netns_name),
            ifname: POD_IFNAME.to_string(),
            namespace: namespace.to_string(),
            pod: name.to_string(),
            config: cni::net_config(socket),
            timeout: self.opts.cni_timeout,
            ip: None,
        })
    }

    /// `sluice-cni DEL`, then removes the pod's netns (killing what runs
    /// in it is the caller's business; teardown kills everything).
    pub async fn remove_pod(&mut self, pod: &Pod) -> Result<()> {
        self.live()?;
        let (node_netns, socket) = (self.node_netns(), self.agent_socket());
        self.remove_pod_via(node_netns, &socket, pod).await
    }

    pub(crate) async fn remove_pod_via(
        &mut self,
        node_netns: PathBuf,
        socket: &Path,
        pod: &Pod,
    ) -> Result<()> {
        let inv = self.invocation(
            node_netns,
            socket,
            "DEL",
            &pod.container_id,
            &pod.netns_name,
            &pod.namespace,
            &pod.name,
        )?;
        tokio::task::spawn_blocking(move || cni::invoke(&inv))
            .await
            .map_err(|e| io("the CNI call panicked")(std::io::Error::other(e.to_string())))??;
        state::delete_netns(&pod.netns_name)?;
        self.pods.retain(|p| p.container_id != pod.container_id);
        self.state.netns.retain(|n| n != &pod.netns_name);
        self.state.save(&self.state_dir)
    }

    /// Runs `<sluice> workload serve --name ns/pod …` inside the pod's netns
    /// and the sandbox cgroup; returns its pid once it reports ready.
    pub async fn spawn_workload(&mut self, pod: &Pod, ports: WorkloadPorts) -> Result<u32> {
        let mut args = Vec::new();
        for (flag, port) in [
            ("--tcp", ports.tcp),
            ("--udp", ports.udp),
            ("--http", ports.http),
        ] {
            if let Some(p) = port {
                args.extend([flag.to_string(), p.to_string()]);
            }
        }
        self.spawn_workload_args(pod, args).await
    }

    /// Like [`Sandbox::spawn_workload`] with several ports per protocol and
    /// SCTP (what the NetworkPolicy conformance model needs).
    pub async fn spawn_servers(&mut self, pod: &Pod, ports: &ServePorts) -> Result<u32> {
        let mut args = Vec::new();
        for (flag, list) in [
            ("--tcp", &ports.tcp),
            ("--udp", &ports.udp),
            ("--sctp", &ports.sctp),
        ] {
            for p in list {
                args.extend([flag.to_string(), p.to_string()]);
            }
        }
        self.spawn_workload_args(pod, args).await
    }

    /// Runs `<sluice> workload serve --name ns/pod ARGS` like [`Sandbox::spawn_workload`].
    pub async fn spawn_workload_args(&mut self, pod: &Pod, args: Vec<String>) -> Result<u32> {
        let cgroup = self.pods_cgroup.clone();
        self.spawn_workload_in(pod, args, &cgroup).await
    }

    /// Like [`Sandbox::spawn_workload_args`] in another pods cgroup (a
    /// [`crate::SecondNode`]'s).
    pub async fn spawn_workload_in(
        &mut self,
        pod: &Pod,
        args: Vec<String>,
        cgroup: &Path,
    ) -> Result<u32> {
        self.live()?;
        let bin = match &self.opts.sluice_bin {
            Some(p) => p.clone(),
            None => bins::find_binary("sluice")?,
        };
        let log_path = self
            .state_dir
            .join(format!("workload-{}.log", pod.netns_name));
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("cannot create {}", log_path.display())))?;
        let mut c = Command::new(bin);
        c.args(["workload", "serve", "--name", &pod.full_name()]);
        c.args(&args);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = spawn_in(c, &pod.netns, Some(cgroup))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        self.workloads.push(child);
        let pod_name = pod.full_name();
        let not_ready = |reason: String| TestbedError::WorkloadNotReady {
            pod: pod_name.clone(),
            reason,
        };
        let stdout = stdout.ok_or_else(|| not_ready("no stdout pipe".into()))?;
        let wait = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let mut r = std::io::BufReader::new(stdout);
            r.read_line(&mut line).map(|_| line)
        });
        match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(Ok(line))) if line.trim() == READY_LINE => Ok(pid),
            Ok(Ok(Ok(line))) => Err(not_ready(format!(
                "it printed {line:?}; log {}:\n{}",
                log_path.display(),
                tail(&log_path, 10)
            ))),
            Ok(Ok(Err(e))) => Err(not_ready(e.to_string())),
            Ok(Err(e)) => Err(not_ready(e.to_string())),
            Err(_) => Err(not_ready("no ready line within 10s".into())),
        }
    }

    /// Runs the probe client as a process inside `pod`'s netns and the pod
    /// cgroup, so its sockets go through the cgroup socket hooks as a real
    /// pod's would (blocking).
    pub fn probe(
        &self,
        pod: &Pod,
        kind: crate::ProbeKind,
        targets: &[std::net::SocketAddr],
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<crate::ProbeOutcome>> {
        self.live()?;
        let bin = match &self.opts.sluice_bin {
            Some(p) => p.clone(),
            None => bins::find_binary("sluice")?,
        };
        crate::probe_in(
            &bin,
            &pod.netns,
            Some(&self.pods_cgroup),
            kind,
            targets,
            count,
            timeout,
        )
    }

    /// Runs `cmd` to completion inside `pod`'s netns and the pod cgroup (a
    /// process of the pod, as far as the cgroup socket hooks can tell).
    pub fn output_in_pod(&self, pod: &Pod, mut cmd: Command) -> Result<std::process::Output> {
        self.live()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        spawn_in(cmd, &pod.netns, Some(&self.pods_cgroup))?
            .wait_with_output()
            .map_err(io("cannot wait for a pod process"))
    }

    /// Removes everything; the errors say what could not be removed.
    /// Calling it again (or dropping afterwards) is a no-op.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        if let Some(mut agent) = self.agent.take() {
            kill_and_reap(&mut agent.child);
        }
        for mut w in self.workloads.drain(..) {
            kill_and_reap(&mut w);
        }
        for mut a in self.node_agents.drain(..) {
            kill_and_reap(&mut a);
        }
        let mut problems = Vec::new();
        state::remove_run(&self.state_dir, &self.state, &mut problems);
        if problems.is_empty() {
            tracing::info!(run = %self.run_id, "sandbox removed");
            Ok(())
        } else {
            Err(TestbedError::Teardown(problems))
        }
    }

    /// Removes leftovers of runs whose creating process is dead (under the
    /// default state root). Returns their run ids.
    pub fn down_leftovers() -> Result<Vec<String>> {
        state::down_leftovers_in(Path::new(DEFAULT_STATE_ROOT))
    }

    /// Like [`Sandbox::down_leftovers`] for another state root.
    pub fn down_leftovers_in(root: &Path) -> Result<Vec<String>> {
        state::down_leftovers_in(root)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "sandbox teardown incomplete; run `sluice sandbox down`");
        }
    }
}
