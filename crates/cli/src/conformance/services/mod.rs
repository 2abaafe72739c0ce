//! `sluice conformance services --cases FILE`: every behaviour of
//! services.yaml on real packets. Per behaviour (or case) a fresh sandbox
//! world (`world`), built from the behaviour's own objects; tables are
//! replayed flow by flow (`table`, `flows`), prose behaviours by a
//! scenario function per id built from the same primitives (`scenarios`).
//! PASS / FAIL / UNSUPPORTED per behaviour (`report`); exit 0 only when
//! nothing FAILED.

mod cases;
mod e2e;
mod e2e_conntrack;
mod e2e_invalid;
mod e2e_nodes;
mod e2e_ports;
mod e2e_ready;
mod e2e_zones;
mod expect;
mod flows;
mod inspect;
mod kit;
mod percase;
mod report;
mod scenarios;
mod table;
mod variants;
mod world;

use crate::output::Output;
use anyhow::{anyhow, bail, Context, Result};
use cases::{Behaviour, Conventions};
use clap::Args;
use report::{BehaviourReport, Printer, Verdict};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ServicesArgs {
    /// The behaviours file (tests/cases/services.yaml format).
    #[arg(long, value_name = "FILE")]
    cases: PathBuf,
    /// Run only this behaviour (full id or its `svc-NNN` prefix; repeatable).
    #[arg(long = "only", value_name = "ID")]
    only: Vec<String>,
    /// `tc`: pods opt out of socket-level LB (annotation
    /// `sluice.io/socket-lb: "false"`), so their packets are translated on
    /// the veth; node clients keep the socket hooks. `socket`: pods too
    /// are translated at connect().
    #[arg(long, value_enum, default_value_t = ProbePath::Tc)]
    path: ProbePath,
    /// Output format: text, or one JSON object per behaviour.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbePath {
    Socket,
    Tc,
}

/// What every behaviour runs with.
pub struct Ctx<'a> {
    pub conv: &'a Conventions,
    pub path: ProbePath,
    pub all: &'a [Behaviour],
}

pub async fn run(args: ServicesArgs) -> Result<()> {
    let started = Instant::now();
    let file = cases::load(&args.cases)?;
    let selected: Vec<&Behaviour> = file
        .behaviours
        .iter()
        .filter(|b| {
            args.only.is_empty()
                || args
                    .only
                    .iter()
                    .any(|o| b.id == *o || b.id.starts_with(&format!("{o}-")))
        })
        .collect();
    if selected.is_empty() {
        bail!(
            "no behaviour in {} matches {:?}",
            args.cases.display(),
            args.only
        );
    }
    if !sluice_testbed::is_root() {
        bail!("the services conformance run builds network namespaces and loads BPF programs: run it as root");
    }
    let sluice = std::env::current_exe().context("cannot find the sluice binary")?;
    let missing: Vec<&str> = ["--node-ip", "--cluster-cidr", "--nodeport-addresses"]
        .into_iter()
        .filter(|f| !world::agent_accepts(&sluice, f))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "note: this agent has no {}: behaviours that need them run without and may FAIL",
            missing.join(", ")
        );
    }
    let ctx = Ctx {
        conv: &file.conventions,
        path: args.path,
        all: &file.behaviours,
    };
    let mut printer = Printer::new(args.output);
    let work = async {
        for b in &selected {
            let t = Instant::now();
            let mut r = scenarios::run(&ctx, b).await;
            r.duration = t.elapsed();
            printer.behaviour(r);
        }
    };
    // Ctrl-C drops the running world, whose sandbox removes itself.
    tokio::select! {
        _ = work => {},
        _ = sluice_agent::shutdown_signal() => return Err(anyhow!("interrupted")),
    }
    printer.summary(started.elapsed());
    let failed = printer.count(Verdict::Fail);
    if failed > 0 {
        bail!("{failed} of {} behaviours FAILED", printer.reports.len());
    }
    Ok(())
}

/// A table behaviour in one fresh world.
pub async fn run_table(ctx: &Ctx<'_>, b: &Behaviour, plan: table::Plan) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    r.notes = plan.notes;
    e2e::in_world(ctx, &plan.spec, &mut r, async |w, r| {
        r.flows = flows::run(w, &plan.planned).await;
        Ok(())
    })
    .await;
    r.decide();
    r
}
