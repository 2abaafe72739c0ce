//! `sluice bench`: Sluice against kube-proxy's iptables and nftables rule
//! shapes, side by side on the same kernel, in the same sandbox, same run.
//!
//! One sandbox node serves every mode: a client pod, two backend pods, the
//! agent. Sluice mode hands N Services to the agent; the baseline modes
//! install kube-proxy's rules for the same N Services in the node namespace
//! (the agent then has no Services, so its programs pass the traffic on).
//! Every number is measured from the client pod through the real kernel.
//!
//! After the mode × size comparison, two parts measure Sluice alone in the
//! same sandbox, once per run: the per-packet cost of NetworkPolicy
//! (`policy.rs`) and of flow events, with the event rate the agent sustains
//! (`events.rs`).

mod client;
mod events;
mod memory;
mod objects;
mod policy;
mod report;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sluice_baseline::{Baseline, Mode as BaselineMode};
use sluice_testbed::{Pod, Sandbox, SandboxOptions, WorkloadPorts};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// Numbers of Services to measure at (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100usize, 1000, 10000])]
    sizes: Vec<usize>,
    /// Extra sizes measured for Sluice only (the baselines' cost explodes there).
    #[arg(long, value_delimiter = ',')]
    sluice_only_sizes: Vec<usize>,
    /// Modes to run.
    #[arg(long, value_delimiter = ',', default_values_t = vec![Mode::Sluice, Mode::SluiceSocket, Mode::Iptables, Mode::Nftables])]
    modes: Vec<Mode>,
    /// New-connection samples per target.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Repetitions of each one-change measurement.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// Seconds of the connections-per-second run.
    #[arg(long, default_value_t = 3)]
    cps_seconds: u64,
    /// A mode whose full sync takes longer than this (seconds) is reported
    /// as "> budget" at that size and skipped at larger ones.
    #[arg(long, default_value_t = 120)]
    budget: u64,
    /// Small sizes and few samples: a smoke test that every mode produces numbers.
    #[arg(long)]
    quick: bool,
    /// Where to write results.json and the SVG plots.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// NetworkPolicy cost: entries in the policy table of the selected
    /// backend (one allowed port each; --quick: at most 100); 0 skips the part.
    #[arg(long, default_value_t = 10000)]
    policy_entries: usize,
    /// Skip the flow-event part (tracing on vs off, event throughput).
    #[arg(long)]
    skip_events: bool,
    /// Skip the mode × size comparison: only the NetworkPolicy and
    /// flow-event parts (which program the largest of --sizes Services).
    #[arg(long)]
    skip_comparison: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sluice's tc path: the client is threads outside the pod cgroup.
    Sluice,
    /// Sluice's socket-level LB: the client is a process in the pod cgroup.
    #[value(name = "sluice-socket")]
    #[serde(rename = "sluice-socket")]
    SluiceSocket,
    Iptables,
    Nftables,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Sluice => "sluice",
            Mode::SluiceSocket => "sluice-socket",
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        })
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub median_us: f64,
    pub p99_us: f64,
}

impl Latency {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self {
            median_us: client::percentile(&v, 0.5).as_secs_f64() * 1e6,
            p99_us: client::percentile(&v, 0.99).as_secs_f64() * 1e6,
        }
    }
}

/// Everything measured for one mode at one size.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub mode: String,
    pub services: usize,
    /// Set when the mode could not finish within the budget.
    pub over_budget: bool,
    pub full_sync_ms: f64,
    /// A pod IP, before anything is programmed ("no rules").
    pub floor: Latency,
    /// The same pod IP sampled in the same round-robin loop as the Services,
    /// with the mode's state loaded: the fair base for a ratio on a noisy
    /// machine (for iptables it also pays the KUBE-SERVICES walk).
    pub floor_loaded: Latency,
    pub first: Latency,
    pub middle: Latency,
    pub last: Latency,
    pub cps_last: f64,
    /// Submit → first working connection, per change kind.
    pub change_add: Latency,
    pub change_endpoints: Latency,
    pub change_delete: Latency,
    /// Rules in the kernel for the baselines, map entries for Sluice.
    pub objects_in_kernel: usize,
    pub bpf_map_bytes: u64,
    pub slab_delta_bytes: i64,
    pub agent_rss_bytes: u64,
}

struct Bed {
    sb: Sandbox,
    client: Pod,
    backends: Vec<Pod>,
    api: sluice_api::Client,
}

async fn build_bed() -> Result<Bed> {
    let mut sb = Sandbox::create(SandboxOptions::default())?;
    let sluice = std::env::current_exe().context("cannot find the sluice binary")?;
    sb.start_agent(&sluice, &[]).await?;
    let client = sb.add_pod("bench", "client").await?;
    let mut backends = Vec::new();
    for name in ["backend-a", "backend-b"] {
        let p = sb.add_pod("bench", name).await?;
        sb.spawn_workload(
            &p,
            WorkloadPorts {
                http: Some(objects::TARGET_PORT),
                ..Default::default()
            },
        )
        .await?;
        backends.push(p);
    }
    let api = sluice_api::Client::new(sb.agent_socket());
    Ok(Bed {
        sb,
        client,
        backends,
        api,
    })
}

/// What `results.json` holds: the comparison's rows, then the parts that
/// run once per invocation (absent when skipped).
#[derive(Serialize)]
struct Results<'a> {
    rows: &'a [Row],
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a policy::PolicyResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<&'a events::EventsResult>,
}

/// Writes a manifest atomically (a temporary name the agent ignores, then
/// a rename): the agent must never read a half-written policy or Service
/// list, which would program a partial table for a moment.
fn write_manifest(dir: &std::path::Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("cannot move {} into place", tmp.display()))
}

pub async fn run(mut args: BenchArgs) -> Result<()> {
    if !sluice_testbed::is_root() {
        bail!("the benchmark builds network namespaces and loads BPF programs: run it as root");
    }
    if args.quick {
        args.sizes = vec![10, 100];
        args.sluice_only_sizes.clear();
        args.samples = args.samples.min(200);
        args.changes = args.changes.min(3);
        args.cps_seconds = 1;
        args.policy_entries = args.policy_entries.min(100);
    }
    if args.policy_entries > policy::MAX_ENTRIES {
        bail!(
            "--policy-entries {}: at most {} (one TCP port per entry)",
            args.policy_entries,
            policy::MAX_ENTRIES
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut plan: Vec<(Mode, usize)> = Vec::new();
    if !args.skip_comparison {
        for &n in &args.sizes {
            for &m in &args.modes {
                plan.push((m, n));
            }
        }
        for &n in &args.sluice_only_sizes {
            for m in [Mode::Sluice, Mode::SluiceSocket] {
                if args.modes.contains(&m) {
                    plan.push((m, n));
                }
            }
        }
    }
    let parts = usize::from(args.policy_entries > 0) + usize::from(!args.skip_events);

    let bar = ProgressBar::new((plan.len() + parts) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("building the sandbox");
    let mut bed = build_bed().await?;
    let bed_ref = &mut bed;
    let result = tokio::select! {
        r = run_all(bed_ref, &args, &plan, &bar) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    bar.finish_and_clear();
    let failed = match &result {
        Ok(all) => {
            all.policy.as_ref().is_some_and(|r| r.is_err())
                || all.events.as_ref().is_some_and(|r| r.is_err())
        }
        Err(_) => true,
    };
    if failed {
        // The sandbox (and its log) is about to go: show why first.
        if let Ok(log) = std::fs::read_to_string(bed.sb.agent_log()) {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("agent log (last lines):");
            for l in tail.into_iter().rev() {
                eprintln!("  | {l}");
            }
        }
    }
    let teardown = bed.sb.teardown();
    let all = result?;
    teardown?;

    // A failed part is reported after the numbers that did come out.
    let (policy, policy_err) = split(all.policy);
    let (events, events_err) = split(all.events);
    let rows = all.rows;
    if !rows.is_empty() {
        report::print_table(&rows);
    }
    if let Some(p) = &policy {
        report::print_policy(p);
    }
    if let Some(e) = &events {
        report::print_events(e);
    }
    let json = args.out.join("results.json");
    let results = Results {
        rows: &rows,
        policy: policy.as_ref(),
        events: events.as_ref(),
    };
    std::fs::write(&json, serde_json::to_vec_pretty(&results)?)?;
    let plots = if rows.is_empty() {
        Vec::new()
    } else {
        report::plots(&rows, &args.out)?
    };
    println!("\nresults: {}", json.display());
    for p in plots {
        println!("plot:    {}", p.display());
    }
    if let Some(e) = policy_err {
        return Err(e.context("NetworkPolicy cost"));
    }
    if let Some(e) = events_err {
        return Err(e.context("flow events"));
    }
    if args.quick {
        if !args.skip_comparison {
            report::check_complete(&rows, &args.modes)?;
        }
        report::check_parts(policy.as_ref(), events.as_ref())?;
    }
    Ok(())
}

/// A part's outcome: not run, its numbers, or why it failed.
fn split<T>(part: Option<Result<T>>) -> (Option<T>, Option<anyhow::Error>) {
    match part {
        None => (None, None),
        Some(Ok(v)) => (Some(v), None),
        Some(Err(e)) => (None, Some(e)),
    }
}

/// Everything one run measured. A part that failed keeps its error, so
/// the comparison's numbers (which may have taken many minutes) are still
/// printed and written.
struct All {
    rows: Vec<Row>,
    policy: Option<Result<policy::PolicyResult>>,
    events: Option<Result<events::EventsResult>>,
}

async fn run_all(
    bed: &mut Bed,
    args: &BenchArgs,
    plan: &[(Mode, usize)],
    bar: &ProgressBar,
) -> Result<All> {
    let rows = run_plan(bed, args, plan, bar).await?;
    let policy = if args.policy_entries > 0 {
        bar.set_message(format!(
            "NetworkPolicy: {} entries vs none",
            args.policy_entries
        ));
        // Five times the per-target samples: two pods, one loop, and a
        // ratio near 1 to resolve.
        let r = policy::run(bed, args.policy_entries, args.samples * 5).await;
        bar.inc(1);
        Some(r)
    } else {
        None
    };
    let events = if args.skip_events {
        None
    } else {
        let n = args.sizes.iter().copied().max().unwrap_or(100);
        bar.set_message(format!(
            "flow events: tracing on/off at {n} Services, throughput"
        ));
        let r = events::run(bed, &events::Plan::new(n, args.samples, args.quick)).await;
        bar.inc(1);
        Some(r)
    };
    Ok(All {
        rows,
        policy,
        events,
    })
}

async fn run_plan(
    bed: &mut Bed,
    args: &BenchArgs,
    plan: &[(Mode, usize)],
    bar: &ProgressBar,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut over: Vec<Mode> = Vec::new();
    for &(mode, n) in plan {
        bar.set_message(format!("{mode} with {n} Services"));
        if over.contains(&mode) {
            rows.push(Row {
                mode: mode.to_string(),
                services: n,
                over_budget: true,
                ..Default::default()
            });
            bar.inc(1);
            continue;
        }
        let row = measure(bed, args, mode, n, bar)
            .await
            .with_context(|| format!("{mode} with {n} Services"))?;
        if row.over_budget {
            over.push(mode);
        }
        rows.push(row);
        bar.inc(1);
    }
    Ok(rows)
}

fn backend_ips(bed: &Bed) -> Vec<Ipv4Addr> {
    bed.backends.iter().map(|p| p.ip).collect()
}

fn target(i: usize) -> SocketAddr {
    SocketAddr::from((objects::vip(i), objects::SERVICE_PORT))
}

/// The kernel-side state of one mode: programmed, measured, removed.
enum Loaded {
    Sluice,
    Baseline(Box<Baseline>, sluice_core::DesiredState),
}

async fn measure(
    bed: &mut Bed,
    args: &BenchArgs,
    mode: Mode,
    n: usize,
    bar: &ProgressBar,
) -> Result<Row> {
    let eps = backend_ips(bed);
    let text = objects::services(n, &eps);
    let mut row = Row {
        mode: mode.to_string(),
        services: n,
        ..Default::default()
    };
    let slab_before = memory::slab_bytes();
    let budget = Duration::from_secs(args.budget);

    // The floor: a pod IP with nothing programmed yet. (With kube-proxy's
    // rules in place even pod-IP connections walk KUBE-SERVICES.)
    bar.set_message(format!("{mode} {n}: floor"));
    let floor = SocketAddr::from((eps[0], objects::TARGET_PORT));
    let ns = bed.client.netns.clone();
    let floor_v = if mode == Mode::SluiceSocket {
        pod_client(bed, &[floor], args.samples, Duration::ZERO)?
            .0
            .pop()
    } else {
        client::latencies(&ns, &[floor], args.samples)?.pop()
    };
    if let Some(v) = floor_v {
        row.floor = Latency::of(v);
    }

    // Full sync: from submitting N Services until a connection to the last works.
    bar.set_message(format!("{mode} {n}: full sync"));
    let t0 = Instant::now();
    let loaded = match mode {
        Mode::Sluice | Mode::SluiceSocket => {
            std::fs::write(bed.sb.manifests_dir().join("bench.yaml"), &text)?;
            Loaded::Sluice
        }
        Mode::Iptables | Mode::Nftables => {
            let desired = objects::desired(&text)?;
            let bm = if mode == Mode::Iptables {
                BaselineMode::Iptables
            } else {
                BaselineMode::Nftables
            };
            let mut b = Baseline::new(bm, bed.sb.node_netns())?;
            let views = sluice_baseline::views_from(&desired);
            b.full_sync(&views)?;
            row.objects_in_kernel = sluice_baseline::rule_count(bm, &views);
            Loaded::Baseline(Box::new(b), desired)
        }
    };
    let ready = client::time_until(&bed.client.netns, target(n - 1), budget, |r| r.is_ok(), t0)?;
    match ready {
        Some(d) => row.full_sync_ms = d.as_secs_f64() * 1e3,
        None => {
            row.over_budget = true;
            unload(bed, loaded, n).await?;
            return Ok(row);
        }
    }
    let slab_after = memory::slab_bytes();
    row.slab_delta_bytes = slab_after as i64 - slab_before as i64;
    if matches!(loaded, Loaded::Sluice) {
        // The agent runs in every mode (it wires the pods); its maps and RSS
        // are Sluice's cost, so they are reported for Sluice only.
        let pin =
            sluice_datapath::loader::pin_dir(std::path::Path::new("/sys/fs/bpf"), bed.sb.run_id());
        row.bpf_map_bytes = memory::bpf_map_bytes(&pin);
        row.agent_rss_bytes = bed.sb.agent_pid().map(memory::rss_bytes).unwrap_or(0);
        let st: sluice_api::Status = bed.api.get("/v1/status").await?;
        row.objects_in_kernel = st.frontends + st.backends;
    }

    // New-connection latency: the pod IP (floor), first, middle, last Service.
    bar.set_message(format!("{mode} {n}: latency"));
    let targets = [target(0), target(n / 2), target(n - 1), floor];
    let cps_run = Duration::from_secs(args.cps_seconds);
    let (lat, cps) = if mode == Mode::SluiceSocket {
        // Latencies and conn/s together: one pod process measures both.
        pod_client(bed, &targets, args.samples, cps_run)?
    } else {
        let lat = client::latencies(&ns, &targets, args.samples)?;
        bar.set_message(format!("{mode} {n}: connections/s"));
        let cps = client::connections_per_second(&ns, target(n - 1), 2, cps_run)?;
        (lat, cps)
    };
    let mut l = lat.into_iter();
    row.first = Latency::of(l.next().unwrap_or_default());
    row.middle = Latency::of(l.next().unwrap_or_default());
    row.last = Latency::of(l.next().unwrap_or_default());
    row.floor_loaded = Latency::of(l.next().unwrap_or_default());
    row.cps_last = cps;

    bar.set_message(format!("{mode} {n}: one change"));
    let mut loaded = loaded;
    let (add, change, delete) = changes(bed, &mut loaded, args.changes, n).await?;
    row.change_add = Latency::of(add);
    row.change_endpoints = Latency::of(change);
    row.change_delete = Latency::of(delete);

    unload(bed, loaded, n).await?;
    Ok(row)
}

/// Runs the benchmark client as a process of the client pod (its netns and
/// the pod cgroup, where the socket hooks are), as `sluice-socket` mode
/// needs: latencies per target, and conn/s to the last target.
fn pod_client(
    bed: &Bed,
    targets: &[SocketAddr],
    samples: usize,
    cps_run: Duration,
) -> Result<(Vec<Vec<Duration>>, f64)> {
    let exe = std::env::current_exe().context("cannot find the sluice binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["workload", "bench-client", "--samples"])
        .arg(samples.to_string())
        .arg("--cps-ms")
        .arg(cps_run.as_millis().to_string());
    for t in targets {
        cmd.arg(t.to_string());
    }
    let out = bed.sb.output_in_pod(&bed.client, cmd)?;
    if !out.status.success() {
        bail!(
            "pod client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rep: client::PodClientReport = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "pod client printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let lat = rep
        .latencies_ns
        .into_iter()
        .map(|v| v.into_iter().map(Duration::from_nanos).collect())
        .collect();
    Ok((lat, rep.cps))
}

/// `sluice workload bench-client`: runs inside the pod, prints one JSON line.
pub fn pod_client_main(targets: &[SocketAddr], samples: usize, cps_ms: u64) -> Result<()> {
    let rep = client::pod_client(targets, samples, Duration::from_millis(cps_ms))?;
    println!("{}", serde_json::to_string(&rep)?);
    Ok(())
}

/// Add a Service, move its endpoint to the other backend, delete it: each
/// timed from submitting the change until a new connection shows it.
async fn changes(
    bed: &mut Bed,
    loaded: &mut Loaded,
    reps: usize,
    n: usize,
) -> Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let (a, b) = (bed.backends[0].clone(), bed.backends[1].clone());
    let churn = bed.sb.manifests_dir().join("churn.yaml");
    let ns = bed.client.netns.clone();
    let limit = Duration::from_secs(10);
    let (mut add, mut change, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let i = n + 1 + rep;
        let name = format!("churn-{rep}");
        let svc_a = objects::service(&name, objects::vip(i), &[a.ip]);
        let svc_b = objects::service(&name, objects::vip(i), &[b.ip]);
        let t = target(i);
        let steps: [(&str, Option<&str>, String); 3] = [
            ("add", Some(svc_a.as_str()), a.full_name()),
            ("endpoints", Some(svc_b.as_str()), b.full_name()),
            ("delete", None, String::new()),
        ];
        for (kind, text, expect) in steps {
            let start = Instant::now();
            match loaded {
                Loaded::Sluice => match text {
                    Some(t) => std::fs::write(&churn, t)?,
                    None => std::fs::remove_file(&churn)?,
                },
                Loaded::Baseline(baseline, current) => {
                    // kube-proxy ≥ 1.28: compile, diff, partial restore.
                    let next = merge(current, text)?;
                    let before = sluice_baseline::views_from(current);
                    let after = sluice_baseline::views_from(&next);
                    baseline.apply_change(&before, &after)?;
                    *current = next;
                }
            }
            let done: client::Until = if expect.is_empty() {
                Box::new(|r| r.is_err())
            } else {
                Box::new(move |r| matches!(r, Ok((_, body)) if *body == expect))
            };
            let took = client::time_until(&ns, t, limit, done, start)?
                .with_context(|| format!("change {kind} of {name} not visible within {limit:?}"))?;
            match kind {
                "add" => add.push(took),
                "endpoints" => change.push(took),
                _ => delete.push(took),
            }
        }
    }
    Ok((add, change, delete))
}

/// The baseline's desired state with the churn Service set to `text` (or removed).
fn merge(
    base: &sluice_core::DesiredState,
    text: Option<&str>,
) -> Result<sluice_core::DesiredState> {
    let mut d = base.clone();
    d.services
        .retain(|_, s| !s.service.starts_with("bench/churn-"));
    if let Some(t) = text {
        let extra = objects::desired(t)?;
        let next_id = d.backends.keys().max().copied().unwrap_or(0) + 1;
        for (fe, mut svc) in extra.services {
            let mut ids = Vec::new();
            for (k, id) in svc.backend_ids.iter().enumerate() {
                if let Some(addr) = extra.backends.get(id) {
                    let nid = next_id + k as u32;
                    d.backends.insert(nid, *addr);
                    ids.push(nid);
                }
            }
            svc.backend_ids = ids;
            d.services.insert(fe, svc);
        }
    }
    Ok(d)
}

async fn unload(bed: &mut Bed, loaded: Loaded, _n: usize) -> Result<()> {
    match loaded {
        Loaded::Sluice => {
            let _ = std::fs::remove_file(bed.sb.manifests_dir().join("churn.yaml"));
            std::fs::remove_file(bed.sb.manifests_dir().join("bench.yaml"))?;
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let st: sluice_api::Status = bed.api.get("/v1/status").await?;
                if st.frontends == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("the agent did not remove the benchmark Services");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Loaded::Baseline(mut b, _) => {
            b.cleanup()?;
            Ok(())
        }
    }
}
