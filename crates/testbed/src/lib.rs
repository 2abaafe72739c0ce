//! The network-namespace sandbox: a node namespace running the agent, an
//! outside namespace, pods wired by the real sluice-cni, a cgroup for pod
//! processes, a built-in workload and blocking client helpers.
//!
//! Everything created is named `slc<6 hex>…`, recorded under
//! `/run/sluice-sandbox/<run id>/` and removed on drop or by
//! [`Sandbox::down_leftovers`] once the creating process is dead.

mod bins;
pub mod cgroup;
mod client;
mod cmd;
mod cni;
mod error;
mod extra_netns;
mod names;
mod netns;
mod probe;
mod sandbox;
pub mod sctp;
mod second_node;
mod spawn;
pub mod state;
pub mod tcp_inject;
pub mod whoami;
mod workload;

pub use bins::find_binary;
pub use client::{http_get, http_get_path, tcp_request, udp_request, RequestError};
pub use error::{Result, TestbedError};
pub use extra_netns::ip_in;
pub use names::{is_run_id, PREFIX};
pub use netns::{netns_path, run_in_netns, sysctl_in};
pub use probe::{probe_in, probe_in_bound, run_probe, run_probe_bound, ProbeKind, ProbeOutcome};
pub use sandbox::{
    Pod, Sandbox, SandboxOptions, ServePorts, WorkloadPorts, NODE_DEVICE, OUTSIDE_DEVICE,
    POD_IFNAME, SERVICE_CIDR,
};
pub use second_node::SecondNode;
pub use workload::{serve_workload, WorkloadOptions, READY_LINE};

/// True when running as root (the sandbox needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
