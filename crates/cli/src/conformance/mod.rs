//! `sluice conformance`: replays conformance cases on real packets in a
//! sandbox node and says, per case, whether the dataplane behaved as the
//! case expects.

mod cases;
mod manifests;
mod matrix;
mod netpol;
mod placeholders;
mod probe;
mod report;
mod services;
mod sync;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConformanceCmd {
    /// NetworkPolicy: the upstream-derived cases (tests/cases/netpol) on the
    /// 9-pod model, probed through each pod's Service ClusterIP.
    Netpol(netpol::NetpolArgs),
    /// Services: every behaviour of services.yaml (tests/cases/services.yaml)
    /// on real connections in a fresh sandbox world per behaviour.
    Services(services::ServicesArgs),
}

pub async fn run(cmd: ConformanceCmd) -> anyhow::Result<()> {
    match cmd {
        ConformanceCmd::Netpol(args) => netpol::run(args).await,
        ConformanceCmd::Services(args) => services::run(args).await,
    }
}
