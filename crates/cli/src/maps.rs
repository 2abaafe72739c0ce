//! `sluice map list`: every pinned map of a node with its fill level, read
//! straight from bpffs (works while the agent is down, like `sluice bpf`).

use crate::bpf::MapArgs;
use crate::output::{json, table, Output};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_datapath::mapinfo::list_pinned;

#[derive(Subcommand)]
pub enum MapCmd {
    /// Each pinned map: type, entries, max entries, pressure, memory.
    List(MapListArgs),
}

#[derive(Args)]
pub struct MapListArgs {
    #[command(flatten)]
    target: MapArgs,
    /// Warn about maps fuller than this, percent.
    #[arg(long, default_value_t = 80.0)]
    warn_pressure: f64,
}

#[derive(Serialize)]
struct MapRow {
    name: String,
    #[serde(rename = "type")]
    map_type: String,
    /// Entries in use; absent for arrays (always full) and ring buffers.
    entries: Option<u64>,
    /// Capacity in entries (bytes for a ring buffer).
    max_entries: u32,
    pressure_percent: Option<f64>,
    memory_bytes: Option<u64>,
    key_size: u32,
    value_size: u32,
    warning: bool,
}

fn human_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f >= K * K * K {
        format!("{:.1} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{b} B")
    }
}

pub fn run(cmd: MapCmd) -> Result<()> {
    match cmd {
        MapCmd::List(a) => list(&a),
    }
}

fn list(a: &MapListArgs) -> Result<()> {
    let pin_dir = a.target.pin_dir()?;
    let rows: Vec<MapRow> = list_pinned(&pin_dir)?
        .into_iter()
        .map(|m| {
            let pressure = m.pressure_percent();
            MapRow {
                warning: pressure.is_some_and(|p| p >= a.warn_pressure),
                name: m.name,
                map_type: m.map_type,
                entries: m.entries,
                max_entries: m.max_entries,
                pressure_percent: pressure.map(|p| (p * 10.0).round() / 10.0),
                memory_bytes: m.memlock_bytes,
                key_size: m.key_size,
                value_size: m.value_size,
            }
        })
        .collect();
    for r in rows.iter().filter(|r| r.warning) {
        eprintln!(
            "warning: map {} is {:.1}% full ({} of {}; threshold {}%)",
            r.name,
            r.pressure_percent.unwrap_or(0.0),
            r.entries.unwrap_or(0),
            r.max_entries,
            a.warn_pressure
        );
    }
    if a.target.output() == Output::Json {
        return json(&rows);
    }
    let mut t = table(&["MAP", "TYPE", "ENTRIES", "MAX", "PRESSURE", "MEMORY", ""]);
    for r in &rows {
        t.add_row(vec![
            r.name.clone(),
            r.map_type.clone(),
            r.entries
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r.max_entries.to_string(),
            r.pressure_percent
                .map(|p| format!("{p:.1}%"))
                .unwrap_or_else(|| "-".into()),
            r.memory_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "?".into()),
            if r.warning { "WARN" } else { "" }.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
