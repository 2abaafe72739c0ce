//! Read-only listings straight from the pinned maps: they work while the
//! agent is down, which is when an operator needs them most.

use crate::output::{json, table};
use crate::OutputArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_datapath::maps::ServiceRow;
use sluice_datapath::LbMaps;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BpfCmd {
    /// Load-balancer maps: frontends, their backend slots, backends.
    #[command(subcommand)]
    Lb(ListCmd),
    /// Conntrack entries of translated flows.
    #[command(subcommand)]
    Ct(ListCmd),
}

#[derive(Subcommand)]
pub enum ListCmd {
    List(MapArgs),
}

#[derive(Args)]
pub struct MapArgs {
    /// Node whose maps to read (default: the only node pinned here).
    #[arg(long, env = "SLUICE_NODE_NAME")]
    node: Option<String>,
    /// Where bpffs is mounted.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
}

impl MapArgs {
    pub(crate) fn output(&self) -> crate::output::Output {
        self.out.output
    }

    pub(crate) fn pin_dir(&self) -> Result<PathBuf> {
        let root = self.bpffs.join("sluice");
        if let Some(n) = &self.node {
            return Ok(sluice_datapath::loader::pin_dir(&self.bpffs, n));
        }
        let nodes: Vec<String> = std::fs::read_dir(&root)
            .with_context(|| {
                format!(
                    "no Sluice maps under {} (has an agent run on this machine?)",
                    root.display()
                )
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        match nodes.as_slice() {
            [one] => Ok(root.join(one)),
            [] => bail!("no Sluice maps under {}", root.display()),
            many => bail!(
                "several nodes pinned under {}: {}; choose one with --node",
                root.display(),
                many.join(", ")
            ),
        }
    }
}

pub fn run(cmd: BpfCmd) -> Result<()> {
    match cmd {
        BpfCmd::Lb(ListCmd::List(a)) => lb_list(&a),
        BpfCmd::Ct(ListCmd::List(a)) => ct_list(&a),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

#[derive(Serialize)]
struct LbEntry {
    frontend: String,
    rev_nat_id: u32,
    nodeport: bool,
    /// Session affinity timeout in seconds (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    affinity_seconds: Option<u32>,
    count: u16,
    /// Slot number → backend (`ip:port`, or `missing id N`).
    slots: BTreeMap<u16, String>,
}

fn lb_list(a: &MapArgs) -> Result<()> {
    let maps = LbMaps::open(&a.pin_dir()?)?;
    let backends: BTreeMap<u32, String> = maps
        .backend_rows()?
        .into_iter()
        .map(|(id, b)| (id, format!("{}:{}", b.ip, b.port)))
        .collect();
    let mut entries: BTreeMap<(Ipv4Addr, u16, u8, u8), LbEntry> = BTreeMap::new();
    let rows = maps.service_rows()?;
    for row in &rows {
        if let ServiceRow::Master {
            frontend: f,
            count,
            rev_nat_id,
            flags,
            affinity_timeout,
        } = *row
        {
            entries.insert(
                (f.ip, f.port, f.proto, f.scope),
                LbEntry {
                    // Scope 1: the entry external clients of an
                    // externalTrafficPolicy Local frontend use.
                    frontend: format!(
                        "{}:{}/{}{}",
                        f.ip,
                        f.port,
                        proto_name(f.proto),
                        if f.scope == 0 {
                            ""
                        } else {
                            " (eTP Local: external clients)"
                        }
                    ),
                    rev_nat_id,
                    nodeport: flags & 1 != 0,
                    affinity_seconds: (affinity_timeout > 0).then_some(affinity_timeout),
                    count,
                    slots: BTreeMap::new(),
                },
            );
        }
    }
    for row in &rows {
        if let ServiceRow::Slot {
            frontend: f,
            slot,
            backend_id,
        } = *row
        {
            if let Some(e) = entries.get_mut(&(f.ip, f.port, f.proto, f.scope)) {
                let b = backends
                    .get(&backend_id)
                    .cloned()
                    .unwrap_or_else(|| format!("missing backend id {backend_id}"));
                e.slots.insert(slot, format!("{b} (id {backend_id})"));
            }
        }
    }
    let list: Vec<&LbEntry> = entries.values().collect();
    if a.out.output == crate::output::Output::Json {
        return json(&list);
    }
    let mut t = table(&["FRONTEND", "REV-NAT", "TYPE", "BACKENDS (slot: address)"]);
    for e in list {
        let slots = if e.count == 0 {
            "(none: new connections are refused)".to_string()
        } else {
            e.slots
                .iter()
                .map(|(s, b)| format!("{s}: {b}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        t.add_row(vec![
            e.frontend.clone(),
            e.rev_nat_id.to_string(),
            match (e.nodeport, e.affinity_seconds) {
                (true, None) => "NodePort".to_string(),
                (false, None) => "ClusterIP".to_string(),
                (np, Some(s)) => format!(
                    "{}\naffinity {s}s",
                    if np { "NodePort" } else { "ClusterIP" }
                ),
            },
            slots,
        ]);
    }
    println!("{t}");
    Ok(())
}

#[derive(Serialize)]
struct CtEntry {
    direction: &'static str,
    protocol: String,
    source: String,
    destination: String,
    /// Forward entries: the backend; reply entries: the frontend restored as source.
    nat: String,
    /// Masqueraded flows: forward entries the source the backend sees
    /// (node address and port), reply entries the client restored as
    /// destination. None when the client's address is kept.
    masquerade: Option<String>,
    backend_id: u32,
    rev_nat_id: u32,
    closing: bool,
    idle_seconds: u64,
    age_seconds: u64,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn ct_list(a: &MapArgs) -> Result<()> {
    let maps = LbMaps::open(&a.pin_dir()?)?;
    let now = monotonic_ns();
    let list: Vec<CtEntry> = maps
        .ct_rows()?
        .into_iter()
        .map(|r| CtEntry {
            direction: if r.reply { "reply" } else { "forward" },
            protocol: proto_name(r.proto),
            source: format!("{}:{}", r.src.0, r.src.1),
            destination: format!("{}:{}", r.dst.0, r.dst.1),
            nat: format!("{}:{}", r.nat.0, r.nat.1),
            masquerade: (u32::from(r.flags) & sluice_datapath::bindings::CT_FLAG_SNAT != 0)
                .then(|| format!("{}:{}", r.peer.0, r.peer.1)),
            backend_id: r.backend_id,
            rev_nat_id: r.rev_nat_id,
            closing: r.flags & 0b11 != 0,
            idle_seconds: now.saturating_sub(r.last_seen_ns) / 1_000_000_000,
            age_seconds: now.saturating_sub(r.created_ns) / 1_000_000_000,
        })
        .collect();
    if a.out.output == crate::output::Output::Json {
        return json(&list);
    }
    let mut t = table(&[
        "DIR",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "NAT",
        "MASQ",
        "BACKEND",
        "IDLE",
        "AGE",
        "STATE",
    ]);
    for e in &list {
        t.add_row(vec![
            e.direction.to_string(),
            e.protocol.clone(),
            e.source.clone(),
            e.destination.clone(),
            e.nat.clone(),
            e.masquerade.clone().unwrap_or_else(|| "-".into()),
            e.backend_id.to_string(),
            format!("{}s", e.idle_seconds),
            format!("{}s", e.age_seconds),
            if e.closing { "closing" } else { "open" }.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
