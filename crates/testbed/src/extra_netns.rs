//! Extra network namespaces of a sandbox run beyond the node, the
//! outside and the CNI pods (a second node, pods wired by hand on it),
//! and iproute2 inside them. Every name carries the run id and is recorded
//! in the run's state before it exists, so teardown and `sluice sandbox
//! down` remove it like the rest.

use crate::cmd;
use crate::error::Result;
use crate::sandbox::Sandbox;

impl Sandbox {
    /// Creates `<run id>-<suffix>` with `lo` up; returns its name.
    pub fn add_netns(&mut self, suffix: &str) -> Result<String> {
        self.live()?;
        let name = format!("{}-{suffix}", self.run_id());
        self.state.netns.push(name.clone());
        self.state.save(self.state_dir())?;
        cmd::ip(&["netns", "add", &name])?;
        cmd::ip_in(&name, &["link", "set", "lo", "up"])?;
        Ok(name)
    }
}

/// `ip -n NETNS ARGS` (a name under /run/netns), returning stdout.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    cmd::ip_in(netns, args)
}
