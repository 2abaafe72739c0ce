//! A further node of a sandbox run with its own agent: node name
//! `<run id>-<suffix>`, its own state dir, API socket and cgroups (pods,
//! for its socket hooks; agent), in a netns the caller created with
//! [`Sandbox::add_netns`] and wired. Its pods are created through the
//! real sluice-cni against its agent. Everything is recorded in the run's
//! state before it exists (cgroups, pins under the node name), so
//! teardown and `sluice sandbox down` remove it like the rest.

use crate::cgroup;
use crate::error::{io, Result, TestbedError};
use crate::netns::netns_path;
use crate::sandbox::{Pod, Sandbox};
use crate::spawn::{spawn_in, tail};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SecondNode {
    /// The agent's `--node-name`.
    pub node_name: String,
    /// The netns it runs in (under /run/netns).
    pub netns_name: String,
    /// Its pods' cgroup (its socket hooks attach here).
    pub pods_cgroup: PathBuf,
    pub state_dir: PathBuf,
}

impl SecondNode {
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }
    pub fn netns(&self) -> PathBuf {
        netns_path(&self.netns_name)
    }
}

impl Sandbox {
    /// Starts `<agent_bin> agent` for a further node in `netns_name`
    /// (node name `<run id>-<suffix>`, manifests: this run's directory,
    /// so both agents see the same objects) with `--device device` and
    /// `extra_args`; waits until it answers `GET /v1/status`.
    pub async fn start_second_node(
        &mut self,
        suffix: &str,
        netns_name: &str,
        agent_bin: &Path,
        device: &str,
        extra_args: &[&str],
    ) -> Result<SecondNode> {
        self.live()?;
        let node_name = format!("{}-{suffix}", self.run_id());
        let mount = cgroup::cgroup2_mount()?;
        let pods_cgroup = mount.join(&node_name);
        let agent_cgroup = mount.join(format!("{node_name}-agent"));
        let state_dir = self.state_dir().join(suffix);
        // Recorded before they exist.
        self.state.cgroups.push(pods_cgroup.clone());
        self.state.cgroups.push(agent_cgroup.clone());
        self.state.pin_nodes.push(node_name.clone());
        self.state.save(self.state_dir())?;
        std::fs::create_dir_all(&state_dir)
            .map_err(io(format!("cannot create {}", state_dir.display())))?;
        cgroup::create(&pods_cgroup)?;
        cgroup::create(&agent_cgroup)?;
        let node = SecondNode {
            node_name,
            netns_name: netns_name.to_string(),
            pods_cgroup,
            state_dir,
        };
        let log_path = node.log();
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("cannot create {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io("cannot duplicate the agent log handle"))?;
        let mut c = Command::new(agent_bin);
        c.arg("agent")
            .arg("--node-name")
            .arg(&node.node_name)
            .arg("--manifests")
            .arg(self.manifests_dir())
            .arg("--socket")
            .arg(node.socket())
            .arg("--state-dir")
            .arg(node.state_dir.join("agent"))
            .arg("--device")
            .arg(device)
            .arg("--cgroup")
            .arg(&node.pods_cgroup)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = spawn_in(c, &node.netns(), Some(&agent_cgroup))?;
        tracing::info!(pid = child.id(), node = %node.node_name, "second agent started");
        self.node_agents.push(child);
        let idx = self.node_agents.len() - 1;
        let client = sluice_api::Client::new(node.socket());
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.node_agents[idx].try_wait() {
                return Err(TestbedError::AgentExited {
                    status: status.to_string(),
                    log: node.log(),
                    tail: tail(&node.log(), 20),
                });
            }
            let last_error = match client.get::<sluice_api::Status>("/v1/status").await {
                Ok(_) => return Ok(node),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TestbedError::AgentNotReady {
                    secs: timeout.as_secs(),
                    last_error,
                    log: node.log(),
                    tail: tail(&node.log(), 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `sluice-cni ADD` in `node`'s netns against its agent (CNI_ARGS
    /// `IP=` when `ip` is given).
    pub async fn add_pod_on(
        &mut self,
        node: &SecondNode,
        namespace: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<Pod> {
        self.live()?;
        self.add_pod_via(node.netns(), &node.socket(), namespace, name, ip)
            .await
    }

    /// `sluice-cni DEL` against `node`'s agent, then the pod's netns goes.
    pub async fn remove_pod_on(&mut self, node: &SecondNode, pod: &Pod) -> Result<()> {
        self.live()?;
        self.remove_pod_via(node.netns(), &node.socket(), pod).await
    }
}
