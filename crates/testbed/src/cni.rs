//! Calling sluice-cni the way a container runtime does: environment
//! variables, network config on stdin, result or error JSON on stdout.

use crate::error::{io, Result, TestbedError};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Invocation {
    pub cni_bin: PathBuf,
    /// The node netns the plugin runs in (the runtime's own namespace).
    pub node_netns: PathBuf,
    pub command: &'static str,
    pub container_id: String,
    pub pod_netns: PathBuf,
    pub ifname: String,
    pub namespace: String,
    pub pod: String,
    pub config: String,
    pub timeout: Duration,
    /// Ask for this address (CNI_ARGS `IP=`).
    pub ip: Option<Ipv4Addr>,
}

pub fn net_config(agent_socket: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "sluice",
        "type": "sluice-cni",
        "agentSocket": agent_socket,
    })
    .to_string()
}

/// Runs the plugin; returns its stdout on success.
pub fn invoke(inv: &Invocation) -> Result<String> {
    let mut cmd = Command::new(&inv.cni_bin);
    let cni_path = inv
        .cni_bin
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // Runtimes pass a clean environment; keep PATH so the plugin finds `ip`.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.pod_netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}{}",
                inv.namespace,
                inv.pod,
                inv.container_id,
                inv.ip.map(|ip| format!(";IP={ip}")).unwrap_or_default()
            ),
        )
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = std::env::var_os("SLUICE_CNI_LOG") {
        cmd.env("SLUICE_CNI_LOG", v);
    }
    let mut child = crate::spawn::spawn_in(cmd, &inv.node_netns, None)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(inv.config.as_bytes())
            .map_err(io("cannot write the CNI config to sluice-cni"))?;
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(inv.timeout) {
        Ok(out) => out.map_err(io("cannot wait for sluice-cni"))?,
        Err(_) => {
            // SAFETY: kill(2) on our own still-unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Err(TestbedError::Timeout {
                what: format!(
                    "sluice-cni {} for {}/{}",
                    inv.command, inv.namespace, inv.pod
                ),
                secs: inv.timeout.as_secs(),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        tracing::debug!(stderr = %stderr.trim(), "sluice-cni stderr");
    }
    if out.status.success() {
        return Ok(stdout);
    }
    let pod = format!("{}/{}", inv.namespace, inv.pod);
    match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(v) if v.get("code").is_some() => Err(TestbedError::Cni {
            command: inv.command.to_string(),
            pod,
            code: v["code"].as_u64().unwrap_or(0),
            msg: v["msg"].as_str().unwrap_or_default().to_string(),
            details: v["details"]
                .as_str()
                .filter(|d| !d.is_empty())
                .map(|d| format!("; {d}"))
                .unwrap_or_default(),
        }),
        _ => Err(TestbedError::CniOutput {
            command: inv.command.to_string(),
            pod,
            reason: format!(
                "exit {}, stdout {stdout:?}, stderr {:?}",
                out.status,
                stderr.trim()
            ),
        }),
    }
}

/// The pod's address from an ADD result.
pub fn result_ip(stdout: &str) -> std::result::Result<Ipv4Addr, String> {
    let v: serde_json::Value = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    let addr = v["ips"][0]["address"]
        .as_str()
        .ok_or("no ips[0].address in the result")?;
    addr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("ips[0].address {addr:?} is not an IPv4 CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_ip() {
        let r = r#"{"cniVersion":"1.1.0","ips":[{"address":"10.244.7.9/32","gateway":"169.254.1.1","interface":1}]}"#;
        assert_eq!(result_ip(r), Ok(Ipv4Addr::new(10, 244, 7, 9)));
        assert!(result_ip("{}").is_err());
        assert!(result_ip("junk").is_err());
    }

    #[test]
    fn config_points_at_socket() {
        let c = net_config(Path::new("/run/sluice-sandbox/x/agent.sock"));
        let v: serde_json::Value = serde_json::from_str(&c).expect("json");
        assert_eq!(v["agentSocket"], "/run/sluice-sandbox/x/agent.sock");
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
