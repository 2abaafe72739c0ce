//! NetworkPolicy control-plane benchmark, through real pinned BPF maps:
//!
//! YAML → `parse_documents` → `Store` → `PolicyEngine::apply` →
//! `PolicyEngine::compile` (for every pod as a local endpoint) →
//! `PolicyReconciler::apply` into the maps `Datapath::load` created.
//!
//! Measures, for P pods (1k, 10k) and 1k policies:
//! 1. cold start: compile everything and program empty maps (entries,
//!    identities, time per phase);
//! 2. one policy edited (a port changed): recompile + the diff's writes;
//! 3. one pod relabelled: recompile + writes.
//!
//! The world: P pods in P/10 namespaces (`env` prod or dev), labels `app`
//! (50 values) and `tier` (frontend/backend). Policies, one per namespace
//! in turn: most allow the namespace's frontends to one app on one port;
//! every 50th allows frontends of all prod namespaces (a large peer set);
//! every 10th is egress to an ipBlock with an except.
//!
//! Needs root. Run: `cargo bench -p sluice-agent --bench policy_plane`
//! (`-- --pods 1000,10000 --policies 1000 --iters 20`). Without `--bench`
//! it runs a small smoke pass, and skips when not root.

use anyhow::{bail, ensure, Context, Result};
use sluice_agent::policy_sync::PolicyReconciler;
use sluice_core::policy::PolicyEngine;
use sluice_core::{parse_documents, Store};
use sluice_datapath::{Datapath, DatapathConfig};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BPFFS: &str = "/sys/fs/bpf";

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 1)) + i as u32)
}

fn world(pods: usize, relabel: Option<usize>) -> String {
    let mut s = String::new();
    let namespaces = pods.div_ceil(10);
    for n in 0..namespaces {
        let env = if n.is_multiple_of(2) { "prod" } else { "dev" };
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{env: {env}}}}}\n"
        );
    }
    for i in 0..pods {
        let tier = if i.is_multiple_of(3) {
            "frontend"
        } else {
            "backend"
        };
        let app = if relabel == Some(i) {
            "relabelled".to_string()
        } else {
            format!("app-{}", i % 50)
        };
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{i}, namespace: ns-{ns}, labels: {{app: {app}, tier: {tier}}}}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 8080}}\nstatus: {{podIP: {ip}}}\n",
            ns = i / 10,
            ip = pod_ip(i),
        );
    }
    s
}

fn policy(j: usize, namespaces: usize, port_bump: u16) -> String {
    let ns = j % namespaces;
    let app = format!("app-{}", (j * 7) % 50);
    let port = 8080 + (j % 5) as u16 + port_bump;
    if j % 10 == 9 {
        return format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: pol-{j}, namespace: ns-{ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [10.{j}.0.0/16]}}\n    ports: [{{port: 53, protocol: UDP}}]\n",
            j = j % 200 + 1,
        );
    }
    let from = if j.is_multiple_of(50) {
        "    - namespaceSelector: {matchLabels: {env: prod}}\n      podSelector: {matchLabels: {tier: frontend}}\n"
    } else {
        "    - podSelector: {matchLabels: {tier: frontend}}\n"
    };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: pol-{j}, namespace: ns-{ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  ingress:\n  - from:\n{from}    ports: [{{port: {port}}}, {{port: http}}]\n"
    )
}

fn policies(n: usize, namespaces: usize, edited: Option<usize>) -> String {
    (0..n)
        .map(|j| policy(j, namespaces, u16::from(edited == Some(j)) * 100))
        .collect()
}

/// Removes the pin directory on drop, also on panic.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Bed {
    store: Store,
    engine: PolicyEngine,
    reconciler: PolicyReconciler,
    local: BTreeSet<Ipv4Addr>,
    _datapath: Datapath,
    _pins: PinGuard,
}

#[derive(Default, Clone, Copy)]
struct Step {
    ingest: Duration,
    compile: Duration,
    write: Duration,
    writes: usize,
}

impl Bed {
    fn new(tag: &str, pods: usize) -> Result<Self> {
        let node = format!("slcbench-{}-{tag}", std::process::id());
        let cfg = DatapathConfig::new(BPFFS, node);
        let pins = PinGuard(cfg.pin_dir());
        let datapath = Datapath::load(&cfg).context("loading the datapath")?;
        let reconciler = PolicyReconciler::open(datapath.pin_dir())?;
        Ok(Self {
            store: Store::new(),
            engine: PolicyEngine::new(vec![Ipv4Addr::new(192, 168, 0, 2)]),
            reconciler,
            local: (0..pods).map(pod_ip).collect(),
            _datapath: datapath,
            _pins: pins,
        })
    }

    fn file(&mut self, name: &str, text: &str) -> Result<Step> {
        let t0 = Instant::now();
        let outcome = parse_documents(name, text);
        ensure!(
            outcome.rejections.is_empty(),
            "rejected: {:?}",
            outcome.rejections.first()
        );
        let changes = self.store.replace_file(name, outcome);
        self.engine.apply(&changes);
        let t1 = Instant::now();
        let state = self.engine.compile(&self.local);
        let t2 = Instant::now();
        let writes = self.reconciler.apply(&state)?;
        let t3 = Instant::now();
        Ok(Step {
            ingest: t1 - t0,
            compile: t2 - t1,
            write: t3 - t2,
            writes,
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// "compile+program ms (+ ingest ms)", medians.
fn change(v: &[(Duration, Duration)]) -> String {
    let ingest = median(v.iter().map(|p| p.0).collect());
    let work = median(v.iter().map(|p| p.1).collect());
    format!("{} ms (+ {} ms)", ms(work), ms(ingest))
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if bench {
            bail!("the policy benchmark loads BPF programs and needs root");
        }
        eprintln!("policy_plane: not root, skipping the smoke run");
        return Ok(());
    }
    let list = |name: &str, default: Vec<usize>| -> Vec<usize> {
        arg(&args, name)
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or(default)
    };
    let (pod_sizes, n_policies, iters) = if bench {
        (list("--pods", vec![1_000, 10_000]), 1_000, 10)
    } else {
        (list("--pods", vec![200]), 50, 2)
    };
    let n_policies = arg(&args, "--policies")
        .and_then(|s| s.parse().ok())
        .unwrap_or(n_policies);
    let iters: usize = arg(&args, "--iters")
        .and_then(|s| s.parse().ok())
        .unwrap_or(iters);

    println!("| pods | policies | identities | endpoints enforced | entries | cold: compile | cold: program | one policy edit (median) | one pod relabel (median) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, &pods) in pod_sizes.iter().enumerate() {
        let namespaces = pods.div_ceil(10);
        let mut bed = Bed::new(&k.to_string(), pods)?;
        bed.file("pods.yaml", &world(pods, None))?;
        let cold = bed.file("policies.yaml", &policies(n_policies, namespaces, None))?;
        let state = bed.engine.compile(&bed.local);
        let enforced = state
            .endpoints
            .values()
            .filter(|e| e.ingress_enforced || e.egress_enforced)
            .count();
        let mut edit = Vec::new();
        let mut relabel = Vec::new();
        for i in 0..iters {
            // Alternate between the edited and the original text so every
            // iteration is a real change; policy 0 selects pod-0 (app-0 in
            // ns-0), so its edit always changes entries.
            let edited = (i % 2 == 0).then_some(0);
            let s = bed.file("policies.yaml", &policies(n_policies, namespaces, edited))?;
            ensure!(s.writes > 0 || edited.is_none(), "an edit wrote nothing");
            edit.push((s.ingest, s.compile + s.write));
            let who = (i % 2 == 0).then_some((i * 37) % pods);
            let s = bed.file("pods.yaml", &world(pods, who))?;
            relabel.push((s.ingest, s.compile + s.write));
        }
        println!(
            "| {pods} | {n_policies} | {} | {enforced} | {} | {} ms | {} ms ({} writes) | {} | {} |",
            state.identities.len(),
            state.entries.len(),
            ms(cold.compile),
            ms(cold.write),
            cold.writes,
            change(&edit),
            change(&relabel),
        );
    }
    println!(
        "\nA change: compile + map writes (median), plus (+) re-reading the whole rewritten file (parse + store + engine input)."
    );
    Ok(())
}
