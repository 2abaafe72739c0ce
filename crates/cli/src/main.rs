//! `sluice`: the agent, the CLI people use, and the sandbox demo.

mod baseline;
mod bench;
mod bpf;
mod conformance;
mod demo;
mod listings;
mod maps;
mod observe;
mod output;
mod policy;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use output::Output;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "eBPF Service load balancing for Kubernetes"
)]
struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "SLUICE_SOCKET", default_value = sluice_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the per-node agent.
    Agent(AgentArgs),
    /// Agent status: datapath, counts, last sync, rejected objects.
    Status(OutputArgs),
    /// Services as the agent programmed them.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Pods wired to this node by the CNI plugin.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Read the pinned BPF maps directly (works while the agent is down).
    #[command(subcommand)]
    Bpf(bpf::BpfCmd),
    /// Security identities NetworkPolicy sees (label sets, CIDRs, reserved).
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// NetworkPolicy as compiled for this node's pods, and why a connection would pass.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Flow events: what the datapath forwarded and dropped, and why.
    Observe(observe::ObserveArgs),
    /// Pinned BPF maps: type, entries, capacity, pressure, memory.
    #[command(subcommand)]
    Map(maps::MapCmd),
    /// Build a sandbox node with pods, run the agent, send real traffic.
    Demo(demo::DemoArgs),
    /// Sluice vs kube-proxy's iptables and nftables modes, side by side in the sandbox.
    Bench(bench::BenchArgs),
    /// kube-proxy's rules for the same objects.
    #[command(subcommand)]
    Baseline(BaselineCmd),
    /// Manage sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Replay conformance cases on real packets in a sandbox.
    #[command(subcommand)]
    Conformance(conformance::ConformanceCmd),
    /// The sandbox's built-in workload (started inside pod namespaces).
    #[command(subcommand, hide = true)]
    Workload(WorkloadCmd),
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// List Service frontends and their backends.
    List(OutputArgs),
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// List registered pods: pod, IP, interface, state.
    List(OutputArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LbAlgorithm {
    Random,
    Maglev,
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// List identities: number, kind, labels, local pods.
    List(OutputArgs),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// The policy entries of a local pod (all local pods without POD), with the rules behind them.
    Get {
        /// namespace/name
        pod: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Would a connection be allowed? Evaluated with the agent's compiler.
    Trace {
        /// namespace/pod or IPv4 address
        #[arg(long)]
        from: String,
        /// namespace/pod or IPv4 address
        #[arg(long)]
        to: String,
        /// PORT/PROTOCOL, e.g. 80/TCP (protocol defaults to TCP)
        #[arg(long)]
        port: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(Subcommand)]
enum BaselineCmd {
    /// Print what kube-proxy would install (iptables-restore or nft -f input).
    Render(baseline::RenderArgs),
}

#[derive(Subcommand)]
enum SandboxCmd {
    /// Remove sandboxes left behind by runs that are no longer alive.
    Down,
}

#[derive(Subcommand)]
enum WorkloadCmd {
    Serve {
        /// Answer of the HTTP server, conventionally namespace/pod.
        #[arg(long)]
        name: String,
        /// TCP echo port (repeatable).
        #[arg(long)]
        tcp: Vec<u16>,
        /// UDP echo port (repeatable).
        #[arg(long)]
        udp: Vec<u16>,
        #[arg(long)]
        http: Option<u16>,
        /// Port whose SCTP INITs get an INIT-ACK, via a raw socket (repeatable).
        #[arg(long)]
        sctp: Vec<u16>,
        /// TCP port answering `<backend ip:port> <peer ip:port>` on accept (repeatable).
        #[arg(long)]
        whoami_tcp: Vec<u16>,
        /// UDP port answering `<whoami-ip:port> <peer ip:port>` (repeatable).
        #[arg(long)]
        whoami_udp: Vec<u16>,
        /// The pod's address, named in UDP whoami answers.
        #[arg(long)]
        whoami_ip: Option<std::net::Ipv4Addr>,
    },
    /// The benchmark's client as a pod process (sluice-socket mode).
    BenchClient {
        #[arg(long)]
        samples: usize,
        /// Milliseconds of the connections/s run to the last target (0: none).
        #[arg(long, default_value_t = 0)]
        cps_ms: u64,
        #[arg(required = true)]
        targets: Vec<std::net::SocketAddr>,
    },
    /// A client run inside a pod (its cgroup): one JSON line per attempt.
    Probe {
        /// http, udp-connected, udp-unconnected, connect, udp-held or sctp.
        #[arg(long)]
        kind: String,
        /// Attempts per target.
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Source address (and port, unless 0) of the client's socket.
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        /// Bytes tcp-read and the UDP kinds send (0: a small request).
        #[arg(long, default_value_t = 0)]
        payload_bytes: usize,
        /// Targets, tried round-robin.
        #[arg(required = true)]
        targets: Vec<std::net::SocketAddr>,
    },
}

#[derive(Args, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Args)]
struct AgentArgs {
    /// This node's name (also names its bpffs pin directory).
    #[arg(long, env = "SLUICE_NODE_NAME")]
    node_name: String,
    /// This node's zone (its `topology.kubernetes.io/zone` label):
    /// Services with trafficDistribution PreferClose keep traffic in it.
    #[arg(long, env = "SLUICE_NODE_ZONE")]
    node_zone: Option<String>,
    /// Directory of Kubernetes YAML (Namespace, Pod, Service, EndpointSlice), watched.
    #[arg(long, default_value = "/etc/sluice/manifests")]
    manifests: PathBuf,
    /// The node's pod CIDR (IPAM hands out addresses from it). Given twice,
    /// the last one wins (wrappers may append their own).
    #[arg(long, default_value = "10.244.0.0/24", overrides_with = "pod_cidr")]
    pod_cidr: ipnet::Ipv4Net,
    /// State directory (IPAM allocations, endpoint registry).
    #[arg(long, default_value = "/var/lib/sluice")]
    state_dir: PathBuf,
    /// Where bpffs is mounted (mounted by the agent if missing).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// A node device that serves NodePort (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Allowed nodePort range, as kube-apiserver's --service-node-port-range.
    #[arg(long, default_value = "30000-32767")]
    nodeport_range: String,
    /// Conntrack timeout of established TCP flows, seconds.
    #[arg(long, default_value_t = 21600)]
    ct_tcp_timeout: u64,
    /// Conntrack timeout of closing TCP flows (FIN/RST seen), seconds.
    #[arg(long, default_value_t = 10)]
    ct_tcp_close_timeout: u64,
    /// Conntrack timeout of UDP flows, seconds.
    #[arg(long, default_value_t = 60)]
    ct_udp_timeout: u64,
    /// Capacity of the conntrack map (LRU), entries; two per flow.
    #[arg(long, default_value_t = sluice_datapath::loader::MapSizes::default().ct)]
    ct_map_size: u32,
    /// Capacity of the services map (one entry per frontend plus one per backend slot).
    #[arg(long, default_value_t = sluice_datapath::loader::MapSizes::default().services)]
    services_map_size: u32,
    /// Backend selection for Services without the `sluice.io/lb-algorithm`
    /// annotation: random, or maglev (consistent hashing: every node picks
    /// the same backend for a flow, a backend change moves few flows).
    #[arg(long, value_enum, default_value_t = LbAlgorithm::Random)]
    lb_algorithm: LbAlgorithm,
    /// Maglev table size: a prime, the same on every node; ≥ 100× the
    /// largest backend count (2 bytes per entry per Maglev Service).
    #[arg(long, default_value_t = sluice_core::maglev::DEFAULT_TABLE_SIZE)]
    maglev_table_size: u32,
    /// Serve Prometheus metrics on HOST:PORT (`GET /metrics`); off unless given.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Flows kept in memory for `sluice observe --last`.
    #[arg(long, default_value_t = sluice_agent::flows::DEFAULT_HISTORY)]
    flow_history: usize,
    /// Socket-level load balancing (cgroup connect/sendmsg/recvmsg/getpeername
    /// hooks): pod-to-Service connections get their backend at connect().
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    socket_lb: bool,
    /// cgroup v2 directory for the socket hooks; default: the cgroup2 mount
    /// root from /proc/self/mountinfo (every process on the node).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// The node's primary IP: masquerade source and default NodePort
    /// address. Default: the first IPv4 address of the first --device,
    /// else the first node address.
    #[arg(long, value_name = "IPV4")]
    node_ip: Option<std::net::Ipv4Addr>,
    /// Cluster CIDR (repeatable or comma-separated): sources inside are
    /// pods (kube-proxy's local-traffic detector). Default: --pod-cidr.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    cluster_cidr: Vec<ipnet::Ipv4Net>,
    /// Serve NodePorts only on node addresses inside these CIDRs
    /// (repeatable or comma-separated; IPv6 entries are ignored).
    /// Default: <node-ip>/32.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
}

/// `--nodeport-addresses`: IPv4 CIDRs kept, other-family entries ignored
/// (as each per-family kube-proxy does).
fn nodeport_cidrs(list: &[String]) -> Result<Vec<ipnet::Ipv4Net>> {
    let mut out = Vec::new();
    for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match s.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(n)) => out.push(n.trunc()),
            Ok(ipnet::IpNet::V6(_)) => {}
            Err(e) => anyhow::bail!("--nodeport-addresses {s:?}: {e}"),
        }
    }
    Ok(out)
}

fn parse_range(s: &str) -> Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s.split_once('-').with_context(|| {
        format!("--nodeport-range {s:?}: expected FIRST-LAST, e.g. 30000-32767")
    })?;
    let a: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("--nodeport-range {s:?}: bad first port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("--nodeport-range {s:?}: bad last port"))?;
    anyhow::ensure!(a >= 1 && a <= b, "--nodeport-range {s:?}: empty range");
    Ok(a..=b)
}

async fn run_agent(socket: PathBuf, a: AgentArgs) -> Result<()> {
    let compile = sluice_core::CompileConfig {
        node_port_range: parse_range(&a.nodeport_range)?,
        // EndpointSlice endpoints with this nodeName are local to this node.
        node_name: Some(a.node_name.clone()),
        maglev_default: a.lb_algorithm == LbAlgorithm::Maglev,
        node_zone: a.node_zone.clone().filter(|z| !z.is_empty()),
    };
    sluice_core::maglev::check_table_size(a.maglev_table_size)
        .map_err(|e| anyhow::anyhow!("--maglev-table-size: {e}"))?;
    let map_sizes = sluice_datapath::loader::MapSizes {
        ct: a.ct_map_size,
        services: a.services_map_size,
        ..Default::default()
    };
    let cgroup = match a.cgroup {
        Some(p) => p,
        // Not necessarily /sys/fs/cgroup: hybrid hosts mount v2 at .../unified.
        None => sluice_testbed::cgroup::cgroup2_mount()
            .context("no cgroup2 mount found; give --cgroup or --socket-lb=false")?,
    };
    let cfg = sluice_agent::AgentConfig {
        node_name: a.node_name,
        manifests: a.manifests,
        pod_cidr: a.pod_cidr,
        socket,
        state_dir: a.state_dir,
        bpffs_root: a.bpffs,
        devices: a.devices,
        compile,
        ct_timeouts: sluice_datapath::loader::CtTimeouts {
            tcp: Duration::from_secs(a.ct_tcp_timeout),
            tcp_close: Duration::from_secs(a.ct_tcp_close_timeout),
            udp: Duration::from_secs(a.ct_udp_timeout),
        },
        map_sizes,
        metrics_addr: a.metrics_addr,
        flow_history: a.flow_history,
        socket_lb: a.socket_lb,
        maglev_table_size: a.maglev_table_size,
        cgroup,
        node_ip: a.node_ip,
        cluster_cidrs: a.cluster_cidr,
        nodeport_addresses: nodeport_cidrs(&a.nodeport_addresses)?,
    };
    sluice_agent::run(cfg).await.context("agent failed")
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Agent(_) => "info",
        _ => "warn",
    };
    init_tracing(default_log);
    let client = sluice_api::Client::new(&cli.socket);
    let result = match cli.command {
        Command::Agent(a) => run_agent(cli.socket.clone(), a).await,
        Command::Status(o) => listings::status(&client, o.output).await,
        Command::Service(ServiceCmd::List(o)) => listings::services(&client, o.output).await,
        Command::Endpoint(EndpointCmd::List(o)) => listings::endpoints(&client, o.output).await,
        Command::Bpf(cmd) => bpf::run(cmd),
        Command::Identity(IdentityCmd::List(o)) => policy::identities(&client, o.output).await,
        Command::Policy(PolicyCmd::Get { pod, out }) => {
            policy::get(&client, pod.as_deref(), out.output).await
        }
        Command::Policy(PolicyCmd::Trace {
            from,
            to,
            port,
            out,
        }) => policy::trace(&client, from, to, &port, out.output).await,
        Command::Observe(args) => observe::run(&client, args).await,
        Command::Map(cmd) => maps::run(cmd),
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Baseline(BaselineCmd::Render(a)) => baseline::render_cmd(&client, a).await,
        Command::Sandbox(SandboxCmd::Down) => sandbox_down(),
        Command::Conformance(cmd) => conformance::run(cmd).await,
        Command::Workload(WorkloadCmd::Serve {
            name,
            tcp,
            udp,
            http,
            sctp,
            whoami_tcp,
            whoami_udp,
            whoami_ip,
        }) => sluice_testbed::serve_workload(sluice_testbed::WorkloadOptions {
            name,
            tcp,
            udp,
            http,
            sctp,
            whoami_tcp,
            whoami_udp,
            whoami_ip,
        })
        .await
        .context("workload failed"),
        Command::Workload(WorkloadCmd::Probe {
            kind,
            count,
            timeout_ms,
            bind,
            payload_bytes,
            targets,
        }) => probe(&kind, count, timeout_ms, bind, payload_bytes, &targets),
        Command::Workload(WorkloadCmd::BenchClient {
            samples,
            cps_ms,
            targets,
        }) => bench::pod_client_main(&targets, samples, cps_ms),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn probe(
    kind: &str,
    count: usize,
    timeout_ms: u64,
    bind: Option<std::net::SocketAddr>,
    payload: usize,
    targets: &[std::net::SocketAddr],
) -> Result<()> {
    let kind = sluice_testbed::ProbeKind::parse(kind)
        .with_context(|| format!("unknown probe kind {kind:?}"))?;
    let outcomes = sluice_testbed::run_probe_bound(
        kind,
        bind,
        payload,
        targets,
        count,
        Duration::from_millis(timeout_ms),
    );
    for o in outcomes {
        println!("{}", serde_json::to_string(&o)?);
    }
    Ok(())
}

fn sandbox_down() -> Result<()> {
    let removed = sluice_testbed::Sandbox::down_leftovers().context("cannot remove leftovers")?;
    if removed.is_empty() {
        println!("no leftover sandboxes");
    } else {
        for r in removed {
            println!("removed sandbox {r}");
        }
    }
    Ok(())
}
