//! iproute2 invocations. Kept in one place so a netlink crate can replace it.

use crate::error::{Result, TestbedError};
use std::process::{Command, Stdio};

/// Runs `ip ARGS`, returning stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `ip -n NETNS ARGS` (a name under /run/netns).
pub(crate) fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    ip(&full)
}

pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String> {
    let cmd = format!("{prog} {}", args.join(" "));
    tracing::debug!(%cmd, "running");
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// iproute2's wording for a netns that is not there.
pub(crate) fn is_missing(e: &TestbedError) -> bool {
    matches!(e, TestbedError::Command { stderr, .. }
        if stderr.contains("No such file") || stderr.contains("does not exist") || stderr.contains("Cannot find device"))
}
