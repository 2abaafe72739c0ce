//! The on-disk record of a run, so a later process can clean up after a
//! crashed one (`sluice sandbox down`).

use crate::error::{io, Result, TestbedError};
use crate::{cgroup, cmd, names};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_ROOT: &str = "/run/sluice-sandbox";
const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub run_id: String,
    /// The process that created the run; the run is a leftover once it dies.
    pub pid: u32,
    /// Start time of `pid` (clock ticks since boot), so a recycled pid does
    /// not keep a dead run alive.
    pub pid_start: Option<u64>,
    pub netns: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    /// Node names of further agents (a [`crate::SecondNode`]) whose pins
    /// under [`BPFFS_PIN_ROOT`] go too; the run id's own always do.
    #[serde(default)]
    pub pin_nodes: Vec<String>,
}

impl State {
    pub fn save(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(|e| TestbedError::Io {
            what: "cannot encode sandbox state".into(),
            source: e.into(),
        })?;
        // Write-then-rename: a crash never leaves a truncated record.
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, body).map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE))
            .map_err(io(format!("cannot write state in {}", dir.display())))
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join(STATE_FILE);
        let text = std::fs::read(&p).map_err(io(format!("cannot read {}", p.display())))?;
        serde_json::from_slice(&text).map_err(|e| TestbedError::Io {
            what: format!("cannot parse {}", p.display()),
            source: e.into(),
        })
    }
}

/// Field 22 of /proc/PID/stat: when the process started.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and ')': parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn is_alive(pid: u32, start: Option<u64>) -> bool {
    match (process_start(pid), start) {
        (None, _) => false,
        (Some(now), Some(recorded)) => now == recorded,
        (Some(_), None) => true,
    }
}

/// Removes everything a run recorded (and any netns named after it).
/// Errors are collected, not fatal: clean as much as possible.
pub fn remove_run(state_dir: &Path, state: &State, problems: &mut Vec<String>) {
    for cg in &state.cgroups {
        if let Err(e) = cgroup::destroy(cg) {
            problems.push(e.to_string());
        }
    }
    let mut netns = state.netns.clone();
    netns.extend(netns_with_prefix(&format!("{}-", state.run_id)));
    netns.sort();
    netns.dedup();
    for ns in netns {
        if let Err(e) = delete_netns(&ns) {
            problems.push(e.to_string());
        }
    }
    // The agent pins its maps and links under the node name (= run id,
    // plus those of further nodes); unpinning releases them once the
    // namespaces are gone.
    let mut dirs: Vec<PathBuf> = std::iter::once(&state.run_id)
        .chain(&state.pin_nodes)
        .map(|n| Path::new(BPFFS_PIN_ROOT).join(n))
        .collect();
    dirs.push(state_dir.to_path_buf());
    for dir in &dirs {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("cannot remove {}: {e}", dir.display()));
            }
        }
    }
}

/// Where `sluice agent` pins per node (`<bpffs>/sluice/<node name>`).
pub const BPFFS_PIN_ROOT: &str = "/sys/fs/bpf/sluice";

pub fn delete_netns(name: &str) -> Result<()> {
    if !crate::netns::netns_path(name).exists() {
        return Ok(());
    }
    match cmd::ip(&["netns", "del", name]) {
        Err(e) if !cmd::is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the runs under `root` whose creator is dead. Returns their ids.
pub fn down_leftovers_in(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("cannot list {}", root.display()))(e)),
    };
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !names::is_run_id(&name) {
            continue;
        }
        let dir = entry.path();
        let state = match State::load(&dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a sandbox run without readable state");
                continue;
            }
        };
        if state.run_id != name || is_alive(state.pid, state.pid_start) {
            continue;
        }
        tracing::info!(run = %name, pid = state.pid, "removing leftovers of a dead sandbox run");
        remove_run(&dir, &state, &mut problems);
        removed.push(name);
    }
    if problems.is_empty() {
        Ok(removed)
    } else {
        Err(TestbedError::Teardown(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_start_is_checked() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some());
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start.map(|s| s + 1)));
        assert!(!is_alive(u32::MAX - 1, None));
    }

    #[test]
    fn state_round_trips() {
        let dir = std::env::temp_dir().join(format!("slc-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let s = State {
            run_id: "slc000001".into(),
            pid: 1,
            pid_start: Some(5),
            netns: vec!["slc000001-node".into()],
            cgroups: vec![],
            pin_nodes: vec!["slc000001-n2".into()],
        };
        s.save(&dir).expect("save");
        assert_eq!(State::load(&dir).expect("load"), s);
        // Records of older runs (no pin_nodes) still load.
        std::fs::write(
            dir.join(STATE_FILE),
            r#"{"run_id":"slc000001","pid":1,"pid_start":5,"netns":[],"cgroups":[]}"#,
        )
        .expect("write");
        assert!(State::load(&dir).expect("load old").pin_nodes.is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
