//! Loading the embedded programs, attaching them, and keeping them attached
//! across agent restarts.
//!
//! With tcx (Linux ≥ 6.6) each attachment is a BPF link pinned under
//! `<pin dir>/links/<ingress|egress>:<ifname>`: a pinned link stays attached
//! when the agent dies, and a restarted agent swaps its freshly loaded program
//! into the same link atomically (`bpf_link_update`), so traffic never sees a
//! moment without a program. Kernels without tcx get a clsact filter instead
//! (netlink), which also outlives the process.

use crate::bpffs;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    TestRun,
};
use aya::{include_bytes_aligned, Ebpf, EbpfError, EbpfLoader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

static FROM_POD_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/from_pod.o"));
static TO_POD_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/to_pod.o"));
static NODEPORT_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodeport.o"));
static SOCK_OBJ: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.o"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("cannot prepare bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load BPF object {object}: {source}")]
    Load {
        object: &'static str,
        source: Box<EbpfError>,
    },
    #[error("program {0} missing from its object (build problem)")]
    MissingProgram(&'static str),
    #[error("cannot load program {program} into the kernel: {source}")]
    Verify {
        program: &'static str,
        source: Box<ProgramError>,
    },
    #[error("cannot attach {program} to {ifname} ({direction}): {detail}")]
    Attach {
        program: &'static str,
        ifname: String,
        direction: &'static str,
        detail: String,
    },
    #[error("test run of {program} failed: {source}")]
    TestRun {
        program: &'static str,
        source: Box<ProgramError>,
    },
}

/// Conntrack timeouts (defaults: kube-proxy's / the kernel's).
#[derive(Debug, Clone, Copy)]
pub struct CtTimeouts {
    pub tcp: Duration,
    pub tcp_close: Duration,
    pub udp: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self {
            tcp: Duration::from_secs(21600),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(60),
        }
    }
}

/// Map capacities. Hash maps are not preallocated, so memory follows use;
/// conntrack is an LRU and preallocated: `ct` × ~100 bytes is spent up front.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    pub services: u32,
    pub backends: u32,
    pub revnat: u32,
    pub ct: u32,
    /// Maglev table chunks (8 per Maglev frontend at M = 16381).
    pub maglev: u32,
    /// NetworkPolicy: ipcache prefixes, policy entries, judged flows.
    pub ipcache: u32,
    pub policy: u32,
    pub policy_ct: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        use crate::bindings::*;
        Self {
            services: SLUICE_SERVICES_MAX,
            backends: SLUICE_BACKENDS_MAX,
            revnat: SLUICE_REVNAT_MAX,
            ct: SLUICE_CT_MAX,
            maglev: SLUICE_MAGLEV_MAX,
            ipcache: SLUICE_IPCACHE_MAX,
            policy: SLUICE_POLICY_MAX,
            policy_ct: SLUICE_POLICY_CT_MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// Where bpffs is (mounted if missing), normally /sys/fs/bpf.
    pub bpffs_root: PathBuf,
    /// Pins go under `<bpffs_root>/sluice/<node_name>/`.
    pub node_name: String,
    pub ct_timeouts: CtTimeouts,
    pub map_sizes: MapSizes,
    /// Maglev table size (prime; `sluice_core::maglev::check_table_size`).
    pub maglev_table_size: u32,
    /// Load the socket-level LB programs (`bpf/sock.c`). Off: they are not
    /// loaded, and [`Datapath::detach_sockets`] removes earlier attachments.
    pub socket_lb: bool,
    /// Masquerade address, local-traffic detector, the node's netns.
    pub net: NetConfig,
}

/// Load-time network facts (`struct sluice_netcfg`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// The node's primary IP: the masquerade (SNAT) source. `None`: no
    /// masquerading at all.
    pub node_ip: Option<Ipv4Addr>,
    /// "Is the source a pod?" (kube-proxy's local-traffic detector): at
    /// most [`MAX_CLUSTER_CIDRS`], as (network address, prefix length).
    /// Empty: no detector, no source counts as a pod.
    pub cluster_cidrs: Vec<(Ipv4Addr, u8)>,
    /// Network namespace cookie of the node's own sockets (the agent's
    /// netns); 0: no socket counts as the node's.
    pub host_netns_cookie: u64,
}

/// How many cluster CIDRs the datapath checks.
pub const MAX_CLUSTER_CIDRS: usize = crate::bindings::SLUICE_MAX_CLUSTER_CIDRS as usize;

impl NetConfig {
    fn to_raw(&self) -> crate::bindings::sluice_netcfg {
        let mut raw = crate::bindings::sluice_netcfg {
            host_netns_cookie: self.host_netns_cookie,
            node_ip: self.node_ip.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
            ..Default::default()
        };
        for (i, (addr, len)) in self
            .cluster_cidrs
            .iter()
            .take(MAX_CLUSTER_CIDRS)
            .enumerate()
        {
            let mask = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from((*len).min(32)))
            };
            raw.cluster_cidr_addr[i] = (u32::from(*addr) & mask).to_be();
            raw.cluster_cidr_mask[i] = mask.to_be();
            raw.cluster_cidr_count = i as u32 + 1;
        }
        raw
    }
}

/// The network namespace cookie of the calling thread's netns
/// (SO_NETNS_COOKIE on a throwaway socket), as the socket hooks see it.
pub fn own_netns_cookie() -> std::io::Result<u64> {
    // SAFETY: plain socket syscalls on a descriptor we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SO_NETNS_COOKIE (Linux 5.14+).
        const SO_NETNS_COOKIE: libc::c_int = 71;
        let r = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
        Ok(cookie)
    }
}

impl DatapathConfig {
    pub fn new(bpffs_root: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        Self {
            bpffs_root: bpffs_root.into(),
            node_name: node_name.into(),
            ct_timeouts: CtTimeouts::default(),
            map_sizes: MapSizes::default(),
            maglev_table_size: 16381,
            socket_lb: true,
            net: NetConfig::default(),
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.bpffs_root, &self.node_name)
    }
}

/// The node's pin directory, also used by read-only tools.
pub fn pin_dir(bpffs_root: &Path, node_name: &str) -> PathBuf {
    bpffs_root.join("sluice").join(node_name)
}

/// An error with its causes, for messages that must say *why* (aya's
/// top-level messages often leave the errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How tc programs are attached on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links (Linux ≥ 6.6), pinned.
    Tcx,
    /// Classic clsact qdisc + direct-action filter (fallback).
    Tc,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Tc => "tc",
        }
    }
}

/// The programs, by attach point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    FromPod,
    ToPod,
    NodePort,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::FromPod => "sluice_from_pod",
            Program::ToPod => "sluice_to_pod",
            Program::NodePort => "sluice_nodeport",
        }
    }
}

/// The cgroup socket hooks of socket-level LB, one program each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockHook {
    Connect4,
    SendMsg4,
    RecvMsg4,
    GetPeerName4,
}

impl SockHook {
    pub const ALL: [SockHook; 4] = [
        SockHook::Connect4,
        SockHook::SendMsg4,
        SockHook::RecvMsg4,
        SockHook::GetPeerName4,
    ];

    /// The hook's name as the kernel and `sluice status` call it.
    pub fn as_str(self) -> &'static str {
        match self {
            SockHook::Connect4 => "connect4",
            SockHook::SendMsg4 => "sendmsg4",
            SockHook::RecvMsg4 => "recvmsg4",
            SockHook::GetPeerName4 => "getpeername4",
        }
    }

    fn program(self) -> &'static str {
        match self {
            SockHook::Connect4 => "sluice_sock_connect4",
            SockHook::SendMsg4 => "sluice_sock_sendmsg4",
            SockHook::RecvMsg4 => "sluice_sock_recvmsg4",
            SockHook::GetPeerName4 => "sluice_sock_getpeername4",
        }
    }
}

/// Where socket-level LB stands after [`Datapath::attach_sockets`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketLbState {
    /// The cgroup v2 directory the hooks are attached to.
    pub cgroup: Option<PathBuf>,
    /// Hooks attached (pinned links).
    pub attached: Vec<SockHook>,
    /// Hooks that could not be loaded or attached, and why.
    pub failed: Vec<(SockHook, String)>,
}

pub struct Datapath {
    pin_dir: PathBuf,
    from_pod: Ebpf,
    to_pod: Ebpf,
    nodeport: Ebpf,
    /// The socket hooks' object, when socket LB is on and the object loaded.
    sock: Option<Ebpf>,
    /// Why socket hooks could not be loaded (object or per program).
    sock_load_failures: Vec<(SockHook, String)>,
    mode: Option<AttachMode>,
}

fn load_object(
    object: &'static str,
    bytes: &[u8],
    program: &'static str,
    cfg: &DatapathConfig,
    pin_dir: &Path,
) -> Result<Ebpf, DatapathError> {
    let t = cfg.ct_timeouts;
    let tcp = t.tcp.as_nanos() as u64;
    let tcp_close = t.tcp_close.as_nanos() as u64;
    let udp = t.udp.as_nanos() as u64;
    let net = cfg.net.to_raw();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries("sl_services", cfg.map_sizes.services)
        .map_max_entries("sl_backends", cfg.map_sizes.backends)
        .map_max_entries("sl_revnat", cfg.map_sizes.revnat)
        .map_max_entries("sl_ct", cfg.map_sizes.ct)
        .map_max_entries("sl_maglev", cfg.map_sizes.maglev)
        .override_global("maglev_table_size", &cfg.maglev_table_size, true)
        .map_max_entries("sl_ipcache", cfg.map_sizes.ipcache)
        .map_max_entries("sl_policy", cfg.map_sizes.policy)
        .map_max_entries("sl_pol_ct", cfg.map_sizes.policy_ct)
        .override_global("ct_timeout_tcp_ns", &tcp, true)
        .override_global("ct_timeout_tcp_close_ns", &tcp_close, true)
        .override_global("ct_timeout_udp_ns", &udp, true)
        .override_global("netcfg", &net, true)
        .load(bytes)
        .map_err(|source| DatapathError::Load {
            object,
            source: Box::new(source),
        })?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(program)
        .ok_or(DatapathError::MissingProgram(program))?
        .try_into()
        .map_err(|source| DatapathError::Verify {
            program,
            source: Box::new(source),
        })?;
    prog.load().map_err(|source| DatapathError::Verify {
        program,
        source: Box::new(source),
    })?;
    Ok(ebpf)
}

/// Loads `sock.o` and each of its programs. A program the kernel refuses
/// (an older kernel without that hook) is reported, not fatal: the others
/// still work and the tc path serves what they do not.
fn load_sock_object(
    cfg: &DatapathConfig,
    pin_dir: &Path,
) -> (Option<Ebpf>, Vec<(SockHook, String)>) {
    let net = cfg.net.to_raw();
    let loaded = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries("sl_services", cfg.map_sizes.services)
        .map_max_entries("sl_backends", cfg.map_sizes.backends)
        .map_max_entries("sl_revnat", cfg.map_sizes.revnat)
        .map_max_entries("sl_ct", cfg.map_sizes.ct)
        .map_max_entries("sl_maglev", cfg.map_sizes.maglev)
        .override_global("maglev_table_size", &cfg.maglev_table_size, true)
        .override_global("netcfg", &net, true)
        .load(SOCK_OBJ);
    let mut ebpf = match loaded {
        Ok(e) => e,
        Err(e) => {
            let why = format!("cannot load sock.o: {}", chain(&e));
            let failed = SockHook::ALL.iter().map(|h| (*h, why.clone())).collect();
            return (None, failed);
        }
    };
    let mut failed = Vec::new();
    for hook in SockHook::ALL {
        let r = ebpf
            .program_mut(hook.program())
            .ok_or_else(|| "missing from sock.o (build problem)".to_string())
            .and_then(|p| {
                let p: &mut CgroupSockAddr = p.try_into().map_err(|e| chain(&e))?;
                p.load().map_err(|e| chain(&e))
            });
        if let Err(why) = r {
            tracing::warn!(hook = hook.as_str(), error = %why, "socket hook not available");
            failed.push((hook, why));
        }
    }
    (Some(ebpf), failed)
}

/// A conntrack map pinned by an agent with another `ct_entry` layout would
/// make loading fail: it is unpinned (the programs create a new one), which
/// resets conntrack. Established flows through Services lose their
/// translation once; new ones work at once.
fn replace_incompatible_ct(pin_dir: &Path) {
    let path = pin_dir.join("sl_ct");
    let Ok(info) = crate::mapinfo::describe(&path) else {
        return;
    };
    let key = std::mem::size_of::<crate::bindings::ct_key>() as u32;
    let value = std::mem::size_of::<crate::bindings::ct_entry>() as u32;
    if info.key_size == key && info.value_size == value {
        return;
    }
    tracing::warn!(
        old_value_size = info.value_size,
        new_value_size = value,
        "pinned conntrack map has an older layout: conntrack was reset"
    );
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::error!(pin = %path.display(), error = %e, "cannot unpin the old conntrack map");
    }
}

/// The pin name prefix of socket hook links.
const SOCK_PIN_PREFIX: &str = "sock:";

impl Datapath {
    /// Loads the programs; maps are created and pinned, or reused if already
    /// pinned (after an agent restart, with everything they hold).
    pub fn load(cfg: &DatapathConfig) -> Result<Self, DatapathError> {
        let pin_dir = cfg.pin_dir();
        bpffs::ensure_mounted(&cfg.bpffs_root).map_err(|source| DatapathError::Bpffs {
            path: cfg.bpffs_root.clone(),
            source,
        })?;
        std::fs::create_dir_all(pin_dir.join("links")).map_err(|source| DatapathError::Bpffs {
            path: pin_dir.clone(),
            source,
        })?;
        replace_incompatible_ct(&pin_dir);
        let (sock, sock_load_failures) = if cfg.socket_lb {
            load_sock_object(cfg, &pin_dir)
        } else {
            (None, Vec::new())
        };
        Ok(Self {
            from_pod: load_object(
                "from_pod.o",
                FROM_POD_OBJ,
                Program::FromPod.name(),
                cfg,
                &pin_dir,
            )?,
            to_pod: load_object("to_pod.o", TO_POD_OBJ, Program::ToPod.name(), cfg, &pin_dir)?,
            nodeport: load_object(
                "nodeport.o",
                NODEPORT_OBJ,
                Program::NodePort.name(),
                cfg,
                &pin_dir,
            )?,
            sock,
            sock_load_failures,
            pin_dir,
            mode: None,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The attach mode in use (known after the first attachment).
    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.mode
    }

    fn program_mut(&mut self, p: Program) -> Result<&mut SchedClassifier, DatapathError> {
        let ebpf = match p {
            Program::FromPod => &mut self.from_pod,
            Program::ToPod => &mut self.to_pod,
            Program::NodePort => &mut self.nodeport,
        };
        ebpf.program_mut(p.name())
            .ok_or(DatapathError::MissingProgram(p.name()))?
            .try_into()
            .map_err(|source| DatapathError::Verify {
                program: p.name(),
                source: Box::new(source),
            })
    }

    /// Attaches the pod programs to the host side of a pod's veth.
    pub fn attach_pod(&mut self, host_ifname: &str) -> Result<(), DatapathError> {
        self.attach(Program::FromPod, host_ifname, TcAttachType::Ingress)?;
        self.attach(Program::ToPod, host_ifname, TcAttachType::Egress)
    }

    /// Attaches the NodePort program to a node device.
    pub fn attach_device(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach(Program::NodePort, ifname, TcAttachType::Ingress)
    }

    /// Removes the pinned links of an interface (its programs detach). A
    /// deleted interface takes its attachments with it; this clears the pins.
    pub fn detach(&mut self, ifname: &str) {
        for dir in ["ingress", "egress"] {
            let pin = self.link_pin(ifname, dir);
            if let Ok(link) = PinnedLink::from_pin(&pin) {
                if let Err(e) = link.unpin() {
                    tracing::warn!(pin = %pin.display(), error = %e, "cannot unpin link");
                }
            }
        }
    }

    /// bpffs refuses names with a dot, which interface names may have
    /// (VLANs: `eth0.100`); a colon never appears in an interface name.
    fn link_pin(&self, ifname: &str, dir: &str) -> PathBuf {
        self.pin_dir
            .join("links")
            .join(format!("{dir}:{}", ifname.replace('.', ":")))
    }

    fn attach(&mut self, p: Program, ifname: &str, at: TcAttachType) -> Result<(), DatapathError> {
        let direction = match at {
            TcAttachType::Ingress => "ingress",
            _ => "egress",
        };
        let pin = self.link_pin(ifname, direction);
        let err = |detail: String| DatapathError::Attach {
            program: p.name(),
            ifname: ifname.to_string(),
            direction,
            detail,
        };

        // An agent restart: swap the new program into the pinned link.
        if let Ok(old) = PinnedLink::from_pin(&pin) {
            let replaced = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| chain(&e))
                .and_then(|link| {
                    let prog = self.program_mut(p).map_err(|e| chain(&e))?;
                    prog.attach_to_link(link).map_err(|e| chain(&e))
                });
            match replaced {
                Ok(id) => {
                    // The pin keeps the link; dropping our fd does not detach it.
                    let prog = self.program_mut(p)?;
                    drop(prog.take_link(id).map_err(|e| err(chain(&e)))?);
                    self.mode = Some(AttachMode::Tcx);
                    tracing::debug!(ifname, direction, "replaced program in pinned tcx link");
                    return Ok(());
                }
                Err(e) => {
                    // The interface went away and came back: the old link is defunct.
                    tracing::debug!(ifname, direction, error = %e, "stale link pin, attaching afresh");
                    let _ = std::fs::remove_file(&pin);
                }
            }
        }

        let prog = self.program_mut(p)?;
        match prog.attach_with_options(ifname, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
        {
            Ok(id) => {
                let link = prog.take_link(id).map_err(|e| err(chain(&e)))?;
                let fd_link = FdLink::try_from(link).map_err(|e| err(chain(&e)))?;
                fd_link.pin(&pin).map_err(|e| err(chain(&e)))?;
                self.mode = Some(AttachMode::Tcx);
                Ok(())
            }
            Err(tcx_err) => {
                tracing::info!(ifname, error = %tcx_err, "tcx attach failed, falling back to clsact");
                // EEXIST: the qdisc is already there, which is what we want.
                let _ = tc::qdisc_add_clsact(ifname);
                let id = prog
                    .attach_with_options(ifname, at, TcAttachOptions::Netlink(NlOptions::default()))
                    .map_err(|e| err(format!("tcx: {}; clsact: {}", chain(&tcx_err), chain(&e))))?;
                let link = prog.take_link(id).map_err(|e| err(chain(&e)))?;
                // A netlink filter stays on the interface after we exit; dropping
                // the link object would remove it.
                std::mem::forget(link);
                self.mode = Some(AttachMode::Tc);
                Ok(())
            }
        }
    }

    /// Attaches the socket hooks to the cgroup v2 directory `cgroup` (all
    /// processes below it get socket-level LB) and pins the links under
    /// `links/sock:<hook>:<cgroup inode>`.
    ///
    /// After an agent restart the pinned link of the same cgroup is replaced
    /// by attaching the new program first and releasing the old link after
    /// (multi-attach), so no connect() goes untranslated in between; a
    /// connect() seen by both programs is translated once, as the second
    /// one finds a backend address, not a frontend. Links for another
    /// cgroup (the flag changed) are released. A hook that fails is
    /// reported in the result; the others keep working.
    pub fn attach_sockets(&mut self, cgroup: &Path) -> SocketLbState {
        let mut state = SocketLbState {
            cgroup: Some(cgroup.to_path_buf()),
            attached: Vec::new(),
            failed: self.sock_load_failures.clone(),
        };
        let fail_all = |state: &mut SocketLbState, why: String| {
            for hook in SockHook::ALL {
                if !state.failed.iter().any(|(h, _)| *h == hook) {
                    state.failed.push((hook, why.clone()));
                }
            }
        };
        let dir = match std::fs::File::open(cgroup) {
            Ok(f) => f,
            Err(e) => {
                fail_all(
                    &mut state,
                    format!("cannot open cgroup {}: {e}", cgroup.display()),
                );
                return state;
            }
        };
        let ino = match dir.metadata() {
            Ok(m) => std::os::unix::fs::MetadataExt::ino(&m),
            Err(e) => {
                fail_all(
                    &mut state,
                    format!("cannot stat cgroup {}: {e}", cgroup.display()),
                );
                return state;
            }
        };
        let links = self.pin_dir.join("links");
        let Some(ebpf) = self.sock.as_mut() else {
            return state;
        };
        for hook in SockHook::ALL {
            if state.failed.iter().any(|(h, _)| *h == hook) {
                continue;
            }
            let pin = links.join(format!("{SOCK_PIN_PREFIX}{}:{ino}", hook.as_str()));
            let tmp = links.join(format!("{SOCK_PIN_PREFIX}{}:{ino}:new", hook.as_str()));
            let r = (|| -> Result<(), String> {
                let prog: &mut CgroupSockAddr = ebpf
                    .program_mut(hook.program())
                    .ok_or("missing from sock.o")?
                    .try_into()
                    .map_err(|e: ProgramError| chain(&e))?;
                // A cgroup *link* is always multi-attach (the kernel refuses
                // flags on link_create: "Single" is the zero flag), so other
                // cgroup programs keep running and the old link can be
                // replaced without a gap.
                let id = prog
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| chain(&e))?;
                let link = prog.take_link(id).map_err(|e| chain(&e))?;
                let fd_link = FdLink::try_from(link).map_err(|e| chain(&e))?;
                let _ = std::fs::remove_file(&tmp);
                fd_link.pin(&tmp).map_err(|e| chain(&e))?;
                // Releasing the old pin detaches the old program (no other
                // reference holds its link); the rename is atomic.
                let _ = std::fs::remove_file(&pin);
                std::fs::rename(&tmp, &pin).map_err(|e| format!("cannot rename pin: {e}"))
            })();
            match r {
                Ok(()) => state.attached.push(hook),
                Err(why) => {
                    tracing::warn!(hook = hook.as_str(), error = %why, "socket hook not attached");
                    state.failed.push((hook, why));
                }
            }
        }
        // Links of another cgroup (an earlier --cgroup): release them.
        let current = format!(":{ino}");
        self.release_sock_pins(|name| !name.ends_with(&current));
        state
    }

    /// Releases every socket hook link (socket LB switched off).
    pub fn detach_sockets(&mut self) {
        self.release_sock_pins(|_| true);
    }

    fn release_sock_pins(&self, pred: impl Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(self.pin_dir.join("links")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(SOCK_PIN_PREFIX) && pred(&name) {
                tracing::info!(pin = %name, "releasing socket hook link");
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!(pin = %name, error = %err, "cannot remove link pin");
                }
            }
        }
    }

    /// Runs a program once on `packet` through BPF_PROG_TEST_RUN; returns the
    /// verdict and the packet as the program left it.
    pub fn test_run(&mut self, p: Program, packet: &[u8]) -> Result<(u32, Vec<u8>), DatapathError> {
        let prog = self.program_mut(p)?;
        let mut out = vec![0u8; packet.len() + 256];
        let opts = aya::programs::TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let res = prog
            .test_run(opts)
            .map_err(|source| DatapathError::TestRun {
                program: p.name(),
                source: Box::new(source),
            })?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value, out))
    }
}
