//! Control-plane benchmark through the real pipeline into real kernel maps:
//!
//! YAML text → `parse_documents_with` → `Store::replace_file` →
//! `Engine::apply` (incremental) → `Reconciler::apply` → pinned BPF maps
//! created by `Datapath::load`.
//!
//! Measures, for N = 1k / 10k / 100k Services (2 ready endpoints each):
//! 1. one Service change (add / change endpoints / delete), from "the
//!    file's content changed" to "map writes done": median, p99, max;
//! 2. a full sync of N Services into empty maps (what a cold agent does:
//!    parse + store + compile + `plan_full` against the read-back maps +
//!    writes), with the map-write share;
//! 3. kernel memory of the maps after the largest sync (`memlock` from
//!    `/proc/self/fdinfo/<fd>` of each pinned map).
//!
//! Needs root (BPF). Run: `cargo bench -p sluice-agent --bench control_plane`
//! Options (after `--`): `--sizes 1000,10000,100000`, `--iters 2000`.
//! Without `--bench` (e.g. `cargo test --benches`) it runs a quick smoke
//! pass, and skips when not root.
//! Pins live under /sys/fs/bpf/sluice/slcbench-<pid>-<n> and are removed on
//! exit and on panic; pins left by a killed run are removed by the next run.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sluice_agent::reconciler::{read_applied, Reconciler};
use sluice_core::{parse_documents_with, plan_full, CompileConfig, Engine, Store};
use sluice_datapath::{Datapath, DatapathConfig, LbMaps};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BPFFS: &str = "/sys/fs/bpf";
const PREFIX: &str = "slcbench-";
const PER_FILE: u32 = 1000;
const WARMUP: usize = 50;
const MAPS: [&str; 5] = [
    "sl_services",
    "sl_backends",
    "sl_revnat",
    "sl_ct",
    "sl_metrics",
];

// ---------------------------------------------------------------- manifests

/// Service `i`'s clusterIP, in 10.96.0.0/12 (the Kubernetes default range;
/// 100k Services do not fit in 10.96.0.0/16).
fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i)
}

/// Endpoint `e`: a pod IP in 10.244.0.0/16 and a target port. 200k unique
/// backends do not fit in a /16, so the port moves up every 65534 pods;
/// endpoints 2i and 2i+1 share the port (65534 is even), as one slice needs.
fn endpoint(e: u32) -> (Ipv4Addr, u16) {
    let host = e % 65534 + 1;
    let port = 8080 + u16::try_from(e / 65534).expect("fewer than 4M endpoints");
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + host),
        port,
    )
}

fn push_service(out: &mut String, name: &str, ip: Ipv4Addr, eps: [Ipv4Addr; 2], port: u16) {
    let _ = write!(
        out,
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: bench
spec:
  type: ClusterIP
  clusterIP: {ip}
  selector: {{app: {name}}}
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x7k2p
  namespace: bench
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
- addresses: [{a}]
  conditions: {{ready: true, serving: true, terminating: false}}
- addresses: [{b}]
  conditions: {{ready: true, serving: true, terminating: false}}
ports:
- {{name: http, port: {port}, protocol: TCP}}
",
        a = eps[0],
        b = eps[1],
    );
}

/// The N base Services, `PER_FILE` per file.
fn base_files(n: u32) -> Vec<(String, String)> {
    (0..n.div_ceil(PER_FILE))
        .map(|f| {
            let mut text = String::new();
            for i in f * PER_FILE..((f + 1) * PER_FILE).min(n) {
                let (a, port) = endpoint(2 * i);
                let (b, _) = endpoint(2 * i + 1);
                push_service(&mut text, &format!("svc-{i}"), cluster_ip(i), [a, b], port);
            }
            (format!("base-{f:04}.yaml"), text)
        })
        .collect()
}

const CHURN_FILE: &str = "churn.yaml";

/// The changing Service, alone in its file. `variant` 0 and 1 differ only in
/// their two endpoints; both differ from every base backend (port 9000).
fn churn_file(iter: u32, variant: u32) -> String {
    let e = |k: u32| endpoint((4 * iter + 2 * variant + k) % 60000).0;
    let mut text = String::new();
    push_service(
        &mut text,
        "churn",
        Ipv4Addr::new(10, 111, 255, 254),
        [e(0), e(1)],
        9000,
    );
    text
}

// ---------------------------------------------------------------- pipeline

/// Removes a pin directory on drop, also on panic.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Removes pins of earlier runs that were killed (their pid is gone).
fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir(Path::new(BPFFS).join("sluice")) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!("removing stale {}", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Everything a cold agent owns on the manifest path. Field order is drop
/// order: map fds are closed before the pins are removed.
struct Pipeline {
    cfg: CompileConfig,
    store: Store,
    engine: Engine,
    reconciler: Reconciler,
    datapath: Datapath,
    _pins: PinGuard,
}

#[derive(Default, Clone, Copy)]
struct Phases {
    parse: Duration,
    store: Duration,
    engine: Duration,
    write: Duration,
    writes: usize,
}

impl Phases {
    fn total(&self) -> Duration {
        self.parse + self.store + self.engine + self.write
    }
}

impl Pipeline {
    fn new(tag: &str) -> Result<Self> {
        let node = format!("{PREFIX}{}-{tag}", std::process::id());
        let dcfg = DatapathConfig::new(BPFFS, node.clone());
        let pins = PinGuard(dcfg.pin_dir());
        let datapath = Datapath::load(&dcfg).context("loading the datapath")?;
        let maps = LbMaps::open(datapath.pin_dir())?;
        let cfg = CompileConfig::default();
        // As Controller::start: restore IDs from the (empty) maps.
        let applied = read_applied(&maps)?;
        ensure!(applied.masters.is_empty(), "fresh pin dir is not empty");
        let engine = Engine::restore(cfg.clone(), &applied)?;
        let reconciler = Reconciler::open(maps)?;
        Ok(Self {
            cfg,
            store: Store::new(),
            engine,
            reconciler,
            datapath,
            _pins: pins,
        })
    }

    /// One manifest event, as Controller::handle(Manifests) does it:
    /// `Some(text)` = file written, `None` = file deleted. Incremental plan.
    fn file_changed(&mut self, name: &str, text: Option<&str>) -> Result<Phases> {
        let t0 = Instant::now();
        let outcome = text.map(|t| parse_documents_with(name, t, &self.cfg));
        let t1 = Instant::now();
        let changes = match outcome {
            Some(o) => {
                ensure!(o.rejections.is_empty(), "rejected: {:?}", o.rejections);
                self.store.replace_file(name, o)
            }
            None => self.store.remove_file(name),
        };
        let t2 = Instant::now();
        let plan = self.engine.apply(&changes);
        let t3 = Instant::now();
        let writes = self.reconciler.apply(&plan.ops)?;
        let t4 = Instant::now();
        ensure!(plan.errors.is_empty(), "compile errors: {:?}", plan.errors);
        Ok(Phases {
            parse: t1 - t0,
            store: t2 - t1,
            engine: t3 - t2,
            write: t4 - t3,
            writes,
        })
    }

    /// Cold start: all files at once into empty maps, as the controller's
    /// first sync does it (dirty → `plan_full` against the read-back maps).
    fn full_sync(&mut self, files: &[(String, String)]) -> Result<(Phases, Duration)> {
        let t0 = Instant::now();
        let outcomes: Vec<_> = files
            .iter()
            .map(|(name, text)| (name, parse_documents_with(name, text, &self.cfg)))
            .collect();
        let t1 = Instant::now();
        let mut changes = Vec::new();
        for (name, o) in outcomes {
            ensure!(o.rejections.is_empty(), "rejected: {:?}", o.rejections);
            changes.extend(self.store.replace_file(name, o));
        }
        let t2 = Instant::now();
        let plan = self.engine.apply(&changes);
        ensure!(plan.errors.is_empty(), "compile errors: {:?}", plan.errors);
        let tc = Instant::now();
        let ops = plan_full(self.engine.desired(), self.reconciler.applied());
        let t3 = Instant::now();
        let writes = self.reconciler.apply(&ops)?;
        let t4 = Instant::now();
        Ok((
            Phases {
                parse: t1 - t0,
                store: t2 - t1,
                engine: t3 - t2,
                write: t4 - t3,
                writes,
            },
            t3 - tc,
        ))
    }

    /// The kernel maps hold exactly what the reconciler's mirror says,
    /// `services` frontends, and no packet-visible inconsistency.
    fn verify(&self, services: usize) -> Result<()> {
        let kernel = read_applied(self.reconciler.maps())?;
        ensure!(
            &kernel == self.reconciler.applied(),
            "kernel maps differ from the mirror"
        );
        ensure!(
            kernel.masters.len() == services,
            "{} frontends programmed, expected {services}",
            kernel.masters.len()
        );
        ensure!(kernel.backends.len() == 2 * services, "backend count");
        let v = kernel.invariant_violations();
        ensure!(
            v.is_empty(),
            "invariant violations: {:?}",
            &v[..v.len().min(5)]
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- memory

struct MapMem {
    name: &'static str,
    map_type: String,
    max_entries: u64,
    memlock: u64,
}

/// `memlock` as the kernel reports it in /proc/self/fdinfo for a map fd
/// (since Linux 6.4 this is the map's actual memory use, `map_mem_usage`).
fn map_memory(pin_dir: &Path) -> Result<Vec<MapMem>> {
    MAPS.iter()
        .map(|&name| {
            let data = aya::maps::MapData::from_pin(pin_dir.join(name))
                .with_context(|| format!("opening pinned {name}"))?;
            let fd = data.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                    .with_context(|| format!("{k} missing from fdinfo of {name}"))
            };
            let map_type = match field("map_type:")?.as_str() {
                "1" => "hash".to_string(),
                "6" => "percpu_array".to_string(),
                "9" => "lru_hash".to_string(),
                other => other.to_string(),
            };
            Ok(MapMem {
                name,
                map_type,
                max_entries: field("max_entries:")?.parse()?,
                memlock: field("memlock:")?.parse()?,
            })
        })
        .collect()
}

/// Resident memory of this process, after handing freed heap back to the
/// kernel (glibc keeps it otherwise, and parse temporaries would count).
fn rss_kib() -> u64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Cumulative µs some task waited for a CPU (/proc/pressure/cpu, `some`).
fn cpu_pressure_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    s.lines()
        .find(|l| l.starts_with("some"))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Involuntary context switches of this process so far.
fn involuntary_switches() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_nivcsw
    }
}

// ---------------------------------------------------------------- stats

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Stats {
    median: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

struct OpResult {
    op: &'static str,
    total: Stats,
    parse: f64,
    store: f64,
    engine: f64,
    write: f64,
    writes: usize,
    over_1ms: usize,
    /// For the samples over 1 ms: which phase took longest, counted.
    slow_phase: String,
}

/// The phase that dominated one sample.
fn dominant(p: &Phases) -> &'static str {
    [
        ("parse", p.parse),
        ("store", p.store),
        ("engine", p.engine),
        ("write", p.write),
    ]
    .into_iter()
    .max_by_key(|(_, d)| *d)
    .map_or("-", |(n, _)| n)
}

fn summarize(op: &'static str, samples: &[Phases]) -> OpResult {
    let med = |f: fn(&Phases) -> Duration| stats(samples.iter().map(|p| us(f(p))).collect()).median;
    OpResult {
        op,
        total: stats(samples.iter().map(|p| us(p.total())).collect()),
        parse: med(|p| p.parse),
        store: med(|p| p.store),
        engine: med(|p| p.engine),
        write: med(|p| p.write),
        writes: samples.first().map_or(0, |p| p.writes),
        over_1ms: samples
            .iter()
            .filter(|p| p.total() > Duration::from_millis(1))
            .count(),
        slow_phase: {
            let mut counts = std::collections::BTreeMap::<&str, usize>::new();
            for p in samples
                .iter()
                .filter(|p| p.total() > Duration::from_millis(1))
            {
                *counts.entry(dominant(p)).or_default() += 1;
            }
            counts
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

// ---------------------------------------------------------------- main

/// Map memory when empty and after the sync, entries per map (in `MAPS`
/// order) after the sync, and the process RSS in KiB.
struct Memory {
    empty: Vec<MapMem>,
    full: Vec<MapMem>,
    entries: [usize; 5],
    rss: u64,
}

struct SizeResult {
    n: u32,
    sync: Phases,
    plan_full: Duration,
    ops: Vec<OpResult>,
    memory: Option<Memory>,
}

fn run_size(n: u32, iters: u32, measure_memory: bool) -> Result<SizeResult> {
    eprintln!("N = {n}: generating manifests");
    let files = base_files(n);
    let mut p = Pipeline::new(&n.to_string())?;
    let empty = if measure_memory {
        Some(map_memory(p.datapath.pin_dir())?)
    } else {
        None
    };

    eprintln!("N = {n}: full sync");
    let (sync, plan_full) = p.full_sync(&files)?;
    drop(files);
    p.verify(n as usize)?;
    let memory = match empty {
        Some(empty) => {
            let a = p.reconciler.applied();
            let entries = [
                a.masters.len() + a.slots.len(),
                a.backends.len(),
                a.rev_nat.len(),
                0,
                0,
            ];
            Some(Memory {
                empty,
                full: map_memory(p.datapath.pin_dir())?,
                entries,
                rss: rss_kib(),
            })
        }
        None => None,
    };

    eprintln!("N = {n}: {iters} add/change/delete cycles");
    let mut samples: [Vec<Phases>; 3] = Default::default();
    for k in 0..iters + WARMUP as u32 {
        let a = p.file_changed(CHURN_FILE, Some(&churn_file(k, 0)))?;
        let b = p.file_changed(CHURN_FILE, Some(&churn_file(k, 1)))?;
        let c = p.file_changed(CHURN_FILE, None)?;
        if k as usize >= WARMUP {
            for (s, x) in samples.iter_mut().zip([a, b, c]) {
                s.push(x);
            }
        }
    }
    p.verify(n as usize)?;
    let [a, b, c] = samples;
    Ok(SizeResult {
        n,
        sync,
        plan_full,
        ops: vec![
            summarize("add", &a),
            summarize("change endpoints", &b),
            summarize("delete", &c),
        ],
        memory,
    })
}

fn render(results: &[SizeResult], iters: u32) -> (String, Value) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### One Service change (µs, {iters} iterations each; parse/store/engine/write are medians)\n"
    );
    let _ = writeln!(
        md,
        "| Services | change | median | p99 | max | > 1 ms | (slowest phase) | parse | store | engine | map writes | writes |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    );
    for r in results {
        for o in &r.ops {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {} |",
                r.n,
                o.op,
                o.total.median,
                o.total.p99,
                o.total.max,
                o.over_1ms,
                if o.slow_phase.is_empty() { "–" } else { o.slow_phase.as_str() },
                o.parse,
                o.store,
                o.engine,
                o.write,
                o.writes
            );
        }
    }
    let _ = writeln!(md, "\n### Full sync into empty maps (seconds)\n");
    let _ = writeln!(
        md,
        "| Services | parse | store | compile + plan_full | of which plan_full | map writes | total | map-write share | writes |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let s = &r.sync;
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} % | {} |",
            r.n,
            s.parse.as_secs_f64(),
            s.store.as_secs_f64(),
            s.engine.as_secs_f64(),
            r.plan_full.as_secs_f64(),
            s.write.as_secs_f64(),
            s.total().as_secs_f64(),
            100.0 * s.write.as_secs_f64() / s.total().as_secs_f64(),
            s.writes
        );
    }
    let mut mem_json = Value::Null;
    if let Some(r) = results.iter().rev().find(|r| r.memory.is_some()) {
        if let Some(Memory {
            empty,
            full,
            entries,
            rss,
        }) = &r.memory
        {
            let _ = writeln!(
                md,
                "\n### BPF map memory (`memlock` from /proc/self/fdinfo), empty vs. after syncing {} Services\n",
                r.n
            );
            let _ = writeln!(
                md,
                "| map | type | max_entries | entries | empty (KiB) | after sync (KiB) | growth (KiB) | bytes/entry |"
            );
            let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
            let mut rows = Vec::new();
            for ((e, f), &n) in empty.iter().zip(full).zip(entries) {
                let grown = f.memlock.saturating_sub(e.memlock);
                let per = if n > 0 {
                    format!("{:.0}", grown as f64 / n as f64)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    f.name,
                    f.map_type,
                    f.max_entries,
                    n,
                    e.memlock / 1024,
                    f.memlock / 1024,
                    grown / 1024,
                    per
                );
                rows.push(json!({
                    "map": f.name, "map_type": f.map_type, "max_entries": f.max_entries,
                    "entries": n, "memlock_empty_bytes": e.memlock,
                    "memlock_after_sync_bytes": f.memlock,
                }));
            }
            let te: u64 = empty.iter().map(|m| m.memlock).sum();
            let tf: u64 = full.iter().map(|m| m.memlock).sum();
            let _ = writeln!(
                md,
                "| total | | | | {} | {} | {} | |",
                te / 1024,
                tf / 1024,
                tf.saturating_sub(te) / 1024
            );
            let _ = writeln!(
                md,
                "\nBench process RSS after the sync (manifest text dropped, `malloc_trim`ed): {} MiB — store + engine + reconciler mirror",
                rss / 1024
            );
            mem_json = json!({ "services": r.n, "maps": rows, "rss_kib_after_sync": rss });
        }
    }
    let json = json!({
        "iterations": iters,
        "change": results.iter().flat_map(|r| r.ops.iter().map(move |o| json!({
            "services": r.n, "change": o.op, "median_us": o.total.median, "p99_us": o.total.p99,
            "max_us": o.total.max, "over_1ms": o.over_1ms, "over_1ms_slowest_phase": o.slow_phase, "parse_median_us": o.parse,
            "store_median_us": o.store, "engine_median_us": o.engine,
            "write_median_us": o.write, "map_writes": o.writes,
        }))).collect::<Vec<_>>(),
        "full_sync": results.iter().map(|r| json!({
            "services": r.n, "parse_s": r.sync.parse.as_secs_f64(),
            "store_s": r.sync.store.as_secs_f64(),
            "compile_and_plan_s": r.sync.engine.as_secs_f64(),
            "plan_full_s": r.plan_full.as_secs_f64(),
            "write_s": r.sync.write.as_secs_f64(), "total_s": r.sync.total().as_secs_f64(),
            "map_writes": r.sync.writes,
        })).collect::<Vec<_>>(),
        "memory": mem_json,
    });
    (md, json)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if bench {
            bail!("the control-plane benchmark loads BPF programs and needs root");
        }
        eprintln!("control_plane: not root, skipping the smoke run");
        return Ok(());
    }
    let (default_sizes, default_iters) = if bench {
        (vec![1_000, 10_000, 100_000], 5_000)
    } else {
        (vec![1_000], 20)
    };
    let sizes: Vec<u32> = arg::<String>(&args, "--sizes")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or(default_sizes);
    let iters: u32 = arg(&args, "--iters").unwrap_or(default_iters);
    ensure!(!sizes.is_empty() && iters > 0, "nothing to measure");

    remove_stale_pins();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let started = Instant::now();
    let pressure0 = cpu_pressure_us();
    let nivcsw0 = involuntary_switches();
    let mut results = Vec::new();
    for &n in &sizes {
        results.push(run_size(n, iters, n == largest)?);
    }
    let wall = started.elapsed();
    let (md, mut json) = render(&results, iters);
    println!("{md}");
    // Other work on the machine shows up as outliers: say how much there was.
    let pressure = pressure0
        .zip(cpu_pressure_us())
        .map(|(a, b)| 100.0 * (b - a) as f64 / us(wall));
    let nivcsw = involuntary_switches() - nivcsw0;
    println!(
        "Run: {:.1} s wall, CPU pressure (some task waiting for a CPU) {} of the time, {nivcsw} involuntary context switches of this process.\n",
        wall.as_secs_f64(),
        pressure.map_or_else(|| "n/a".to_string(), |p| format!("{p:.0} %")),
    );
    json["run"] = json!({
        "wall_s": wall.as_secs_f64(),
        "cpu_pressure_some_pct": pressure,
        "involuntary_context_switches": nivcsw,
    });
    println!("```json\n{}\n```", serde_json::to_string_pretty(&json)?);
    if let Ok(path) = std::env::var("SLUICE_BENCH_JSON") {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
        eprintln!("JSON written to {path}");
    }
    Ok(())
}
