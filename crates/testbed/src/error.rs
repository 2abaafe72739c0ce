use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "cannot find the `{name}` binary (looked in {searched}); build it or set SLUICE_BIN_DIR"
    )]
    BinaryNotFound { name: String, searched: String },
    #[error("no cgroup v2 mount in /proc/self/mountinfo; the sandbox needs cgroup v2")]
    NoCgroup2,
    #[error("sluice-cni {command} for pod {pod} failed (code {code}): {msg}{details}")]
    Cni {
        command: String,
        pod: String,
        code: u64,
        msg: String,
        /// `; details` or empty.
        details: String,
    },
    #[error(
        "sluice-cni {command} for pod {pod} printed something that is not a CNI result: {reason}"
    )]
    CniOutput {
        command: String,
        pod: String,
        reason: String,
    },
    #[error("{what} did not finish within {secs}s")]
    Timeout { what: String, secs: u64 },
    #[error("the agent exited ({status}) before it was ready; its log {log}:\n{tail}")]
    AgentExited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the agent did not answer GET /v1/status within {secs}s ({last_error}); its log {log}:\n{tail}")]
    AgentNotReady {
        secs: u64,
        last_error: String,
        log: PathBuf,
        tail: String,
    },
    #[error("no agent was started in this sandbox")]
    NoAgent,
    #[error("the workload for {pod} did not report ready: {reason}")]
    WorkloadNotReady { pod: String, reason: String },
    #[error("the sandbox was already torn down")]
    TornDown,
    #[error("teardown left problems behind: {}", .0.join("; "))]
    Teardown(Vec<String>),
    #[error("invalid workload option: {0}")]
    InvalidOption(String),
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}
