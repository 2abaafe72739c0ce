//! Link, address, route and neighbour changes, done with iproute2 for now.
//!
//! Everything goes through [`ip`] so this module can be swapped for a netlink
//! crate later without touching the plugin logic. Commands for the pod run
//! under `nsenter --net=PATH`: unlike `ip netns exec` it takes any netns path
//! (runtimes do not always use /run/netns) and does not remount /sys.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot run `{cmd}`: {source} (are iproute2 and util-linux installed?)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot parse the output of `{cmd}`: {reason}")]
    Parse { cmd: String, reason: String },
}

/// Where a command runs: the current namespace (the node) or a pod's netns.
#[derive(Debug, Clone, Copy)]
pub enum Ns<'a> {
    Current,
    Path(&'a Path),
}

fn command(ns: Ns<'_>, args: &[&str]) -> (Command, String) {
    match ns {
        Ns::Current => {
            let mut c = Command::new("ip");
            c.args(args);
            (c, format!("ip {}", args.join(" ")))
        }
        Ns::Path(p) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", p.display())).arg("ip").args(args);
            (
                c,
                format!("nsenter --net={} ip {}", p.display(), args.join(" ")),
            )
        }
    }
}

/// Runs `ip ARGS` (optionally with `stdin`), returning stdout.
pub fn ip(ns: Ns<'_>, args: &[&str], stdin: Option<&str>) -> Result<String, NetlinkError> {
    let (mut c, cmd) = command(ns, args);
    tracing::debug!(%cmd, "running");
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawn_err = |source| NetlinkError::Spawn {
        cmd: cmd.clone(),
        source,
    };
    let mut child = c.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetlinkError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl NetlinkError {
    /// iproute2's wording when a device is absent.
    pub fn is_missing_device(&self) -> bool {
        matches!(self, NetlinkError::Failed { stderr, .. }
            if stderr.contains("does not exist") || stderr.contains("Cannot find device"))
    }
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub mac: String,
    pub up: bool,
    pub addrs: Vec<String>,
}

/// `None` when the link does not exist.
pub fn link(ns: Ns<'_>, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
    let args = ["-j", "addr", "show", "dev", name];
    let out = match ip(ns, &args, None) {
        Ok(out) => out,
        Err(e) if e.is_missing_device() => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_link_json(&out)
        .map(Some)
        .map_err(|reason| NetlinkError::Parse {
            cmd: format!("ip {}", args.join(" ")),
            reason,
        })
}

fn parse_link_json(out: &str) -> Result<LinkInfo, String> {
    let v: serde_json::Value = serde_json::from_str(out).map_err(|e| e.to_string())?;
    let l = v.get(0).ok_or("empty link list")?;
    let name = l["ifname"].as_str().ok_or("no ifname")?.to_string();
    let mac = l["address"].as_str().unwrap_or_default().to_string();
    let up = l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"));
    let addrs = l["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| Some(format!("{}/{}", i["local"].as_str()?, i["prefixlen"])))
                .collect()
        })
        .unwrap_or_default();
    Ok(LinkInfo {
        name,
        mac,
        up,
        addrs,
    })
}

/// Creates a veth pair with the peer created straight inside `peer_netns`
/// under its final name: one atomic step, so a failure never leaves a
/// half-moved peer behind in the node.
pub fn create_veth(host: &str, peer: &str, peer_netns: &Path) -> Result<(), NetlinkError> {
    let ns = peer_netns.to_string_lossy();
    ip(
        Ns::Current,
        &[
            "link", "add", host, "type", "veth", "peer", "name", peer, "netns", &ns,
        ],
        None,
    )
    .map(drop)
}

/// Deletes a link; `Ok(false)` when it was already gone.
pub fn delete_link(ns: Ns<'_>, name: &str) -> Result<bool, NetlinkError> {
    match ip(ns, &["link", "del", "dev", name], None) {
        Ok(_) => Ok(true),
        Err(e) if e.is_missing_device() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs several `ip` commands in one process (`ip -batch -`).
pub fn batch(ns: Ns<'_>, commands: &[String]) -> Result<(), NetlinkError> {
    let script = commands.join("\n") + "\n";
    ip(ns, &["-batch", "-"], Some(&script)).map(drop)
}

/// Routes of the main table as `ip -j route` objects.
pub fn routes(ns: Ns<'_>) -> Result<Vec<serde_json::Value>, NetlinkError> {
    let out = ip(ns, &["-j", "route", "show"], None)?;
    serde_json::from_str(&out).map_err(|e| NetlinkError::Parse {
        cmd: "ip -j route show".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let out = r#"[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"address":"aa:bb:cc:dd:ee:ff",
            "addr_info":[{"family":"inet","local":"10.244.1.5","prefixlen":32}]}]"#;
        let l = parse_link_json(out).expect("parse");
        assert_eq!(l.name, "eth0");
        assert!(l.up);
        assert_eq!(l.mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(l.addrs, vec!["10.244.1.5/32".to_string()]);
    }

    #[test]
    fn missing_device_detection() {
        let e = NetlinkError::Failed {
            cmd: "ip".into(),
            stderr: "Device \"lxc1\" does not exist.".into(),
        };
        assert!(e.is_missing_device());
        let e = NetlinkError::Failed {
            cmd: "ip".into(),
            stderr: "Cannot find device \"lxc1\"".into(),
        };
        assert!(e.is_missing_device());
    }
}
