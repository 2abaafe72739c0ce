//! `sluice agent`: one per node. Sources → store → compiler → reconciler →
//! maps, an endpoint registry and IPAM for the CNI plugin, and the HTTP/JSON
//! API the CLI uses.

pub mod api;
pub mod controller;
pub mod endpoints;
pub mod flows;
pub mod health;
pub mod ipam;
pub mod maglev_sync;
pub mod metrics;
pub mod net_sync;
pub mod netns;
pub mod node_addrs;
pub mod persist;
pub mod policy;
pub mod policy_sync;
pub mod reconciler;
pub mod sockdiag;
pub mod source;

use controller::{Command, Controller};
use ipnet::Ipv4Net;
use sluice_core::CompileConfig;
use sluice_datapath::loader::{CtTimeouts, MapSizes};
use sluice_datapath::{Datapath, DatapathConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub manifests: PathBuf,
    pub pod_cidr: Ipv4Net,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs_root: PathBuf,
    /// Node devices that serve NodePort.
    pub devices: Vec<String>,
    pub compile: CompileConfig,
    pub ct_timeouts: CtTimeouts,
    pub map_sizes: MapSizes,
    /// Serve Prometheus metrics here (`GET /metrics`); off when `None`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Flows kept in memory for `sluice observe --last`.
    pub flow_history: usize,
    /// Socket-level LB (cgroup hooks): the node-wide switch.
    pub socket_lb: bool,
    /// cgroup v2 directory whose processes get socket-level LB (normally
    /// the cgroup2 mount root: every pod on the node).
    pub cgroup: PathBuf,
    /// Maglev table size (prime), the same on every node.
    pub maglev_table_size: u32,
    /// The node's primary IP (masquerade source, default NodePort
    /// address). `None`: the first IPv4 address of the first device, else
    /// the first node address.
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Cluster CIDRs ("is the source a pod?"). Empty: the pod CIDR.
    pub cluster_cidrs: Vec<Ipv4Net>,
    /// `--nodeport-addresses`: NodePorts are served on node addresses
    /// inside these. Empty: `<node-ip>/32`.
    pub nodeport_addresses: Vec<Ipv4Net>,
}

impl AgentConfig {
    /// The node IP: given, else the first device's first IPv4 address,
    /// else the first node address.
    pub fn resolved_node_ip(&self) -> Option<std::net::Ipv4Addr> {
        if self.node_ip.is_some() {
            return self.node_ip;
        }
        let by_dev = node_addrs::ipv4_addrs_by_interface();
        self.devices
            .first()
            .and_then(|dev| by_dev.iter().find(|(i, _)| i == dev).map(|(_, ip)| *ip))
            .or_else(|| node_addrs::node_ipv4_addrs().first().copied())
    }

    /// Cluster CIDRs as configured, else the pod CIDR.
    pub fn resolved_cluster_cidrs(&self) -> Vec<Ipv4Net> {
        if self.cluster_cidrs.is_empty() {
            vec![self.pod_cidr.trunc()]
        } else {
            self.cluster_cidrs.iter().map(|n| n.trunc()).collect()
        }
    }

    /// NodePort address CIDRs as configured, else the node IP alone.
    pub fn resolved_nodeport_addresses(&self) -> Vec<Ipv4Net> {
        if !self.nodeport_addresses.is_empty() {
            return self.nodeport_addresses.clone();
        }
        self.resolved_node_ip()
            .and_then(|ip| Ipv4Net::new(ip, 32).ok())
            .into_iter()
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Datapath(#[from] sluice_datapath::DatapathError),
    #[error(transparent)]
    Maps(#[from] sluice_datapath::MapsError),
    #[error(transparent)]
    Reconcile(#[from] reconciler::ReconcileError),
    #[error("cannot restore IDs from the pinned maps: {0}")]
    Restore(String),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error(transparent)]
    State(#[from] persist::PersistError),
    #[error("cannot watch manifest directory {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error(transparent)]
    Flows(#[from] flows::FlowsError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot serve the API on {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn mkdir(path: &std::path::Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(path).map_err(|source| AgentError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the agent until SIGINT/SIGTERM. Programs and maps stay pinned when it
/// exits, so established traffic keeps flowing while it is down.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    mkdir(&cfg.state_dir)?;
    mkdir(&cfg.manifests)?;
    if let Some(parent) = cfg.socket.parent() {
        mkdir(parent)?;
    }
    let dp_cfg = DatapathConfig {
        bpffs_root: cfg.bpffs_root.clone(),
        node_name: cfg.node_name.clone(),
        ct_timeouts: cfg.ct_timeouts,
        map_sizes: cfg.map_sizes,
        maglev_table_size: cfg.maglev_table_size,
        socket_lb: cfg.socket_lb,
        net: sluice_datapath::loader::NetConfig {
            node_ip: cfg.resolved_node_ip(),
            cluster_cidrs: cfg
                .resolved_cluster_cidrs()
                .iter()
                .map(|n| (n.network(), n.prefix_len()))
                .collect(),
            host_netns_cookie: sluice_datapath::loader::own_netns_cookie().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the node's netns cookie: the node's own sockets get ClusterIPs only");
                0
            }),
        },
    };
    if dp_cfg.net.cluster_cidrs.len() > sluice_datapath::loader::MAX_CLUSTER_CIDRS {
        tracing::warn!(
            max = sluice_datapath::loader::MAX_CLUSTER_CIDRS,
            "more cluster CIDRs than the datapath checks: the rest are ignored"
        );
    }
    tracing::info!(
        node_ip = ?dp_cfg.net.node_ip,
        cluster_cidrs = ?cfg.resolved_cluster_cidrs(),
        nodeport_addresses = ?cfg.resolved_nodeport_addresses(),
        "network configuration"
    );
    let datapath = Datapath::load(&dp_cfg)?;
    let mut controller = Controller::start(cfg.clone(), datapath)?;
    let telemetry = controller.telemetry();
    // Reading events from the start: flows of the first sync are seen too.
    let _reader = flows::spawn_reader(telemetry.clone())?;
    if let Some(addr) = cfg.metrics_addr {
        metrics::serve(addr, telemetry.clone()).await?;
    }

    // First sync: everything in the directory, diffed against what the
    // pinned maps already hold, so a restart rewrites only what changed.
    let mut manifests = source::ManifestDir::new(cfg.manifests.clone());
    let initial = manifests.scan();
    tracing::info!(files = initial.len(), dir = %cfg.manifests.display(), "initial manifest scan");
    controller.handle(Command::Manifests(initial));
    controller.sync(Vec::new());

    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    // The controller does blocking map syscalls: give it a thread of its own.
    std::thread::Builder::new()
        .name("sluice-controller".into())
        .spawn(move || {
            while let Some(cmd) = rx.blocking_recv() {
                controller.handle(cmd);
            }
        })
        .map_err(|source| AgentError::Dir {
            path: cfg.state_dir.clone(),
            source,
        })?;

    let (files_tx, mut files_rx) = mpsc::channel(64);
    let _watcher = source::watch(manifests, files_tx).map_err(|source| AgentError::Watch {
        path: cfg.manifests.clone(),
        source,
    })?;
    let fwd = tx.clone();
    tokio::spawn(async move {
        while let Some(files) = files_rx.recv().await {
            if fwd.send(Command::Manifests(files)).await.is_err() {
                return;
            }
        }
    });
    let retry = tx.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(2));
        loop {
            t.tick().await;
            if retry.send(Command::Retry).await.is_err() {
                return;
            }
        }
    });

    let sock_err = |source| AgentError::Socket {
        path: cfg.socket.clone(),
        source,
    };
    // A socket file left by a killed agent would make bind fail.
    let _ = std::fs::remove_file(&cfg.socket);
    let listener = tokio::net::UnixListener::bind(&cfg.socket).map_err(sock_err)?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(sock_err)?;
    tracing::info!(socket = %cfg.socket.display(), node = %cfg.node_name, "agent ready");

    let app = api::router(tx, telemetry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(sock_err)?;
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("agent stopped; programs and maps stay pinned");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the agent stops on either, and
/// so does anything else that must clean up when asked to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
