//! `sluice conformance netpol --cases DIR`: one sandbox node for the whole
//! run (the agent, pods a, b, c in namespaces x, y, z wired by the CNI
//! plugin, each serving every port any selected case serves), then per
//! case and step: write the model and the policies into the agent's
//! manifest folder, wait until the agent applied them, probe the matrix.

use super::cases::{self, Case, Loaded, PortProto, Protocol, Step};
use super::manifests::{self, Cluster, MODEL_FILE, POLICY_FILE};
use super::matrix::{PodId, N};
use super::placeholders;
use super::probe::{until_expected, Prober, CONCURRENCY, UPSTREAM_RETRY};
use super::report::{CaseReport, Printer, ProbeReport, StepReport, Verdict};
use super::sync::{wait_applied, Want};
use crate::output::Output;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use sluice_testbed::{Sandbox, SandboxOptions, ServePorts};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the agent may take to apply one step's manifests.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Args)]
pub struct NetpolArgs {
    /// Directory of case files (every *.yaml in it, README excepted).
    #[arg(long, value_name = "DIR")]
    cases: PathBuf,
    /// Run only cases whose file name or name contains this (repeatable).
    #[arg(long = "case", value_name = "SUBSTRING")]
    filters: Vec<String>,
    /// Leave the sandbox and the last case's manifests in place; remove
    /// them later with `sluice sandbox down`.
    #[arg(long)]
    keep: bool,
    /// Output format: text, or one JSON object per case.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Which datapath path TCP/UDP probes take: `socket` (the agent's
    /// socket-level LB translates at connect(), as for real pods) or `tc`
    /// (socket LB off: every packet is translated on the veth). SCTP always
    /// takes the tc path (raw sockets skip the socket hooks).
    #[arg(long, value_enum, default_value_t = ProbePath::Socket)]
    path: ProbePath,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbePath {
    Socket,
    Tc,
}

pub async fn run(args: NetpolArgs) -> Result<()> {
    let started = Instant::now();
    let loaded: Vec<Loaded> = cases::load_dir(&args.cases)
        .with_context(|| format!("cannot read the cases in {}", args.cases.display()))?
        .into_iter()
        .filter(|l| l.matches(&args.filters))
        .collect();
    if loaded.is_empty() {
        bail!(
            "no case file in {} matches {:?}",
            args.cases.display(),
            args.filters
        );
    }
    let runnable: Vec<&Case> = loaded.iter().filter_map(|l| l.case.as_ref().ok()).collect();
    let served: BTreeSet<PortProto> = runnable
        .iter()
        .flat_map(|c| c.served.iter().copied())
        .collect();
    let mut printer = Printer::new(args.output);

    let mut sandbox = None;
    if !runnable.is_empty() {
        if !sluice_testbed::is_root() {
            bail!("the conformance run builds network namespaces and loads BPF programs: run it as root");
        }
        sandbox = Some(Sandbox::create(SandboxOptions::default())?);
    }
    // Any error from here on, and Ctrl-C or SIGTERM, still removes the
    // sandbox below.
    let work = run_all(
        sandbox.as_mut(),
        &loaded,
        &served,
        &mut printer,
        args.keep,
        args.path,
    );
    let (result, stopped) = tokio::select! {
        r = work => (r, false),
        _ = sluice_agent::shutdown_signal() => (Err(anyhow!("interrupted")), true),
    };
    if let Some(mut sb) = sandbox {
        match (&result, args.keep) {
            (Ok(()), true) => {
                print_keep(&sb);
                // `sluice sandbox down` removes the run once we are gone.
                std::mem::forget(sb);
            }
            _ => {
                if result.is_err() && !stopped {
                    print_agent_log(&sb);
                }
                sb.teardown().context("cannot remove the sandbox")?;
            }
        }
    }
    result?;
    printer.summary(started.elapsed());
    let (failed, skipped) = (printer.count(Verdict::Fail), printer.count(Verdict::Skip));
    if failed + skipped > 0 {
        bail!(
            "{failed} of {} cases failed, {skipped} skipped",
            printer.reports.len()
        );
    }
    Ok(())
}

async fn run_all(
    sandbox: Option<&mut Sandbox>,
    loaded: &[Loaded],
    served: &BTreeSet<PortProto>,
    printer: &mut Printer,
    keep: bool,
    path: ProbePath,
) -> Result<()> {
    let mut run = match sandbox {
        Some(sb) => Some(Run::start(sb, served, path).await?),
        None => None,
    };
    for (i, l) in loaded.iter().enumerate() {
        let name = l.name.as_deref().unwrap_or("(no name)");
        let report = match (&l.case, run.as_mut()) {
            (Err(reason), _) => CaseReport::without_steps(
                &l.file,
                name,
                Verdict::Fail,
                format!("malformed case file: {reason}"),
            ),
            (Ok(case), Some(run)) => run.case(case, keep && i + 1 == loaded.len()).await,
            (Ok(_), None) => bail!("internal error: a runnable case without a sandbox"),
        };
        printer.case(report);
    }
    Ok(())
}

/// The sandbox as the cases see it.
struct Run {
    api: sluice_api::Client,
    manifests: PathBuf,
    cluster: Cluster,
    prober: Prober,
    /// Of the last write; the markers carry it (1..=65535, wrapping).
    generation: u16,
    /// Why SCTP cannot be probed here, if it cannot.
    sctp_unavailable: Option<String>,
}

impl Run {
    async fn start(sb: &mut Sandbox, served: &BTreeSet<PortProto>, path: ProbePath) -> Result<Run> {
        let sluice = std::env::current_exe().context("cannot find the sluice binary")?;
        let agent_args: &[&str] = match path {
            ProbePath::Socket => &[],
            ProbePath::Tc => &["--socket-lb=false"],
        };
        sb.start_agent(&sluice, agent_args).await?;
        let mut pods = Vec::with_capacity(N);
        for p in PodId::all() {
            pods.push(sb.add_pod(p.namespace(), p.name()).await?);
        }
        let wants_sctp = served.iter().any(|p| p.protocol == Protocol::Sctp);
        let sctp_unavailable = if wants_sctp {
            sctp_check(&pods[0].netns).err()
        } else {
            None
        };
        let ports_of = |proto: Protocol| -> Vec<u16> {
            served
                .iter()
                .filter(|p| p.protocol == proto)
                .map(|p| p.port)
                .collect()
        };
        let ports = ServePorts {
            tcp: ports_of(Protocol::Tcp),
            udp: ports_of(Protocol::Udp),
            sctp: if sctp_unavailable.is_some() {
                Vec::new()
            } else {
                ports_of(Protocol::Sctp)
            },
        };
        let any_port = !(ports.tcp.is_empty() && ports.udp.is_empty() && ports.sctp.is_empty());
        if any_port {
            for pod in &pods {
                sb.spawn_servers(pod, &ports).await?;
            }
        }
        let list = |v: &[PortProto]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "sandbox {}: agent, 9 pods (x, y, z × a, b, c) serving {}",
            sb.run_id(),
            list(&served.iter().copied().collect::<Vec<_>>())
        );
        if let Some(why) = &sctp_unavailable {
            eprintln!("SCTP cannot be probed here: {why}");
        }
        let mut pod_ips = [std::net::Ipv4Addr::UNSPECIFIED; N];
        let mut netns: [PathBuf; N] = Default::default();
        for (i, p) in pods.iter().enumerate() {
            pod_ips[i] = p.ip;
            netns[i] = p.netns.clone();
        }
        Ok(Run {
            api: sluice_api::Client::new(sb.agent_socket()),
            manifests: sb.manifests_dir().to_path_buf(),
            cluster: Cluster { pod_ips },
            prober: Prober {
                sluice,
                cgroup: sb.cgroup_path().to_path_buf(),
                netns: Arc::new(netns),
                limit: Arc::new(tokio::sync::Semaphore::new(CONCURRENCY)),
            },
            generation: 0,
            sctp_unavailable,
        })
    }

    /// Runs every step until one fails; `keep_files` leaves the policies
    /// in place afterwards (the last case of a `--keep` run).
    async fn case(&mut self, case: &Case, keep_files: bool) -> CaseReport {
        let started = Instant::now();
        let needs_sctp = case.served.iter().any(|p| p.protocol == Protocol::Sctp);
        if let (true, Some(why)) = (needs_sctp, &self.sctp_unavailable) {
            return CaseReport::without_steps(
                &case.file,
                &case.name,
                Verdict::Skip,
                format!("SCTP probes impossible here: {why}"),
            );
        }
        let total = case.steps.len();
        let mut steps = Vec::new();
        let mut reason = None;
        for (i, step) in case.steps.iter().enumerate() {
            tracing::debug!(file = %case.file, step = i + 1, "step");
            match self.step(case, step).await {
                Ok(r) => {
                    let why = if !r.rejected.is_empty() {
                        Some("the agent rejected objects of this case".to_string())
                    } else if r.probes.iter().any(|p| !p.passed) {
                        Some("the observed matrix differs from the expected one".to_string())
                    } else {
                        None
                    };
                    steps.push(r);
                    if why.is_some() {
                        reason = why;
                        break;
                    }
                }
                Err(e) => {
                    reason = Some(format!("step {}/{total}: {e:#}", i + 1));
                    break;
                }
            }
        }
        if !keep_files {
            if let Err(e) = manifests::remove(&self.manifests, POLICY_FILE) {
                tracing::warn!(error = %e, "cannot remove the policies file");
            }
        }
        CaseReport {
            file: case.file.clone(),
            name: case.name.clone(),
            verdict: if reason.is_none() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            reason,
            steps_total: total,
            steps,
            duration: started.elapsed(),
        }
    }

    async fn step(&mut self, case: &Case, step: &Step) -> Result<StepReport> {
        self.generation = self.generation % u16::MAX + 1;
        let generation = self.generation;
        let docs = manifests::model_docs(&self.cluster, &case.served, &step.labels, generation);
        let model = manifests::to_yaml(&docs)?;
        let policies = step
            .policies
            .iter()
            .map(|p| placeholders::substitute(p, &self.cluster.pod_ips))
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?;
        let policy = manifests::policy_yaml(&policies, generation)?;
        // The model first: a policy naming a port or label of this step
        // then never meets the previous case's model. Nothing is probed
        // before both files are applied anyway.
        for (name, text) in [(MODEL_FILE, &model), (POLICY_FILE, &policy)] {
            manifests::write_atomic(&self.manifests, name, text)
                .with_context(|| format!("cannot write {name}"))?;
        }
        let want = Want {
            generation,
            cluster: &self.cluster,
            served: &case.served,
        };
        let rejected = wait_applied(&self.api, &want, APPLY_TIMEOUT).await?;
        // A rejected object is not enforced as written, so the step fails
        // whatever the probes show; one round still shows what the
        // dataplane does without it, and retrying cannot change the verdict.
        let retry = rejected.is_empty().then_some(UPSTREAM_RETRY);
        let mut report = StepReport {
            action: step.action.clone(),
            rejected,
            probes: Vec::new(),
        };
        for pe in &step.probes {
            let probe = pe.probe;
            let out = until_expected(&pe.expected, retry, || {
                let prober = self.prober.clone();
                async move { prober.round(probe).await }
            })
            .await
            .with_context(|| format!("probe {probe}"))?;
            report.probes.push(ProbeReport {
                probe,
                expected: pe.expected,
                observed: out.observed,
                passed: out.passed,
                rounds: out.rounds,
                elapsed: out.elapsed,
            });
            // As upstream: the first failing expectation ends the case.
            if !out.passed {
                break;
            }
        }
        Ok(report)
    }
}

/// Opens (and closes) the raw socket the SCTP probes need, inside a pod.
fn sctp_check(netns: &std::path::Path) -> Result<(), String> {
    sluice_testbed::run_in_netns(netns, || sluice_testbed::sctp::raw_socket().map(drop))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open a raw SCTP socket (AF_INET, SOCK_RAW, 132): {e}"))
}

fn print_agent_log(sb: &Sandbox) {
    eprintln!("agent log: {}", sb.agent_log().display());
    if let Ok(log) = std::fs::read_to_string(sb.agent_log()) {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        for l in tail.into_iter().rev() {
            eprintln!("  | {l}");
        }
    }
}

fn print_keep(sb: &Sandbox) {
    eprintln!();
    eprintln!("The sandbox is still running (--keep), with the last case's manifests:");
    eprintln!("  export SLUICE_SOCKET={}", sb.agent_socket().display());
    eprintln!("  sluice status; sluice service list");
    eprintln!("  ls {}", sb.manifests_dir().display());
    if let Some(p) = sb.pods().first() {
        eprintln!(
            "  nsenter --net={} bash    # a shell in pod {}",
            p.netns.display(),
            p.full_name()
        );
    }
    eprintln!("  sluice sandbox down     # remove everything");
}
