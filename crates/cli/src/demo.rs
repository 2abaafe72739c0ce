//! `sluice demo`: the embedded default. One command builds a sandbox node,
//! wires pods through the real CNI plugin, starts the agent on the demo's
//! Kubernetes YAML, and sends real traffic through the kernel.

use crate::output::table;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_api::ServiceInfo;
use sluice_core::{parse_documents, Object};
use sluice_testbed::{
    http_get, run_in_netns, udp_request, Pod, Sandbox, SandboxOptions, WorkloadPorts,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The demo's manifests, embedded so `sluice demo` works from any directory.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "pods.yaml",
        include_str!("../../../examples/demo/pods.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../../examples/demo/services.yaml"),
    ),
];

/// Ports of the built-in workload (see examples/demo/pods.yaml).
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;
const UDP_PORT: u16 = 5353;

#[derive(Args)]
pub struct DemoArgs {
    /// Leave the sandbox running; remove it later with `sluice sandbox down`.
    #[arg(long)]
    keep: bool,
    /// Use this directory of Kubernetes YAML instead of the built-in demo.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Requests to send to each Service.
    #[arg(long, default_value_t = 30)]
    requests: usize,
}

struct Steps {
    bar: ProgressBar,
}

impl Steps {
    fn start(msg: &str) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(80));
        bar.set_message(msg.to_string());
        Self { bar }
    }

    /// Spinners are hidden when stderr is not a terminal (CI, pipes): the
    /// step lines are printed plainly then, so a log still shows progress.
    fn done(self, msg: String) {
        if self.bar.is_hidden() {
            eprintln!("✔ {msg}");
        }
        self.bar.finish_with_message(format!("✔ {msg}"));
    }

    fn fail(self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("✘ {msg}");
        }
        self.bar.abandon_with_message(format!("✘ {msg}"));
    }
}

fn load_manifests(args: &DemoArgs) -> Result<Vec<(String, String)>> {
    match &args.manifests {
        None => Ok(EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()),
        Some(dir) => {
            let mut files = Vec::new();
            for e in
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let p = e?.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if matches!(ext, "yaml" | "yml" | "json") {
                    let name = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("?")
                        .to_string();
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    files.push((name, text));
                }
            }
            files.sort();
            Ok(files)
        }
    }
}

/// Pods named in the manifests, checked before anything is built so that a
/// bad file stops the demo with its name and field, not half-way through.
fn validate(files: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut pods = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in files {
        let out = parse_documents(name, text);
        errors.extend(out.rejections.iter().map(|r| r.to_string()));
        for (obj, key) in &out.objects {
            if let Object::Pod(_) = obj {
                pods.push((key.namespace.clone(), key.name.clone()));
            }
        }
    }
    if !errors.is_empty() {
        bail!("the manifests have errors:\n  {}", errors.join("\n  "));
    }
    Ok(pods)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if !sluice_testbed::is_root() {
        bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    let files = load_manifests(&args)?;
    let pod_names = validate(&files)?;

    let step = Steps::start("Creating a sandbox node (network namespaces, uplink, cgroup)");
    let mut sb = match Sandbox::create(SandboxOptions::default()) {
        Ok(sb) => sb,
        Err(e) => {
            step.fail("could not create the sandbox");
            return Err(e.into());
        }
    };
    step.done(format!(
        "Sandbox {} (node {} ↔ outside {})",
        sb.run_id(),
        sb.node_ip(),
        sb.outside_ip()
    ));

    // Any error from here on drops `sb`, which removes everything; Ctrl-C
    // stops the demo and removes it too.
    let result = tokio::select! {
        r = demo(&mut sb, &args, &files, &pod_names) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(()) if args.keep => {
            print_keep(&sb);
            // Skip the teardown: `sluice sandbox down` removes the run once
            // this process is gone.
            std::mem::forget(sb);
            Ok(())
        }
        Ok(()) => {
            let step = Steps::start("Removing the sandbox");
            sb.teardown()?;
            step.done("Sandbox removed".into());
            println!();
            println!("Try next:");
            println!("  sluice demo --keep      # leave the sandbox running and explore it");
            println!("  sluice demo --manifests DIR   # your own Pods and Services");
            Ok(())
        }
        Err(e) => {
            eprintln!("agent log: {}", sb.agent_log().display());
            if let Ok(log) = std::fs::read_to_string(sb.agent_log()) {
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                for l in tail.into_iter().rev() {
                    eprintln!("  | {l}");
                }
            }
            let _ = sb.teardown();
            Err(e)
        }
    }
}

async fn demo(
    sb: &mut Sandbox,
    args: &DemoArgs,
    files: &[(String, String)],
    pod_names: &[(String, String)],
) -> Result<()> {
    let sluice = std::env::current_exe().context("cannot find the sluice binary")?;
    let step = Steps::start("Starting sluice agent in the node namespace");
    sb.start_agent(&sluice, &[]).await?;
    step.done(format!(
        "Agent running (API {})",
        sb.agent_socket().display()
    ));

    let mut pods: Vec<Pod> = Vec::new();
    for (ns, name) in pod_names {
        let step = Steps::start(&format!("Pod {ns}/{name}: sluice-cni ADD"));
        let pod = sb.add_pod(ns, name).await?;
        sb.spawn_workload(
            &pod,
            WorkloadPorts {
                tcp: Some(TCP_PORT),
                udp: Some(UDP_PORT),
                http: Some(HTTP_PORT),
            },
        )
        .await?;
        step.done(format!(
            "Pod {}/{} at {} (workload: HTTP {HTTP_PORT}, TCP {TCP_PORT}, UDP {UDP_PORT})",
            pod.namespace, pod.name, pod.ip
        ));
        pods.push(pod);
    }

    let step = Steps::start("Handing the manifests to the agent");
    for (name, text) in files {
        std::fs::write(sb.manifests_dir().join(name), text)?;
    }
    let client = sluice_api::Client::new(sb.agent_socket());
    let services = wait_programmed(&client).await?;
    step.done(format!(
        "{} Service frontends programmed into eBPF maps",
        services.len()
    ));

    let Some(from) = pods
        .iter()
        .find(|p| p.name == "client")
        .or(pods.first())
        .cloned()
    else {
        bail!("the manifests define no Pod to send traffic from");
    };
    println!();
    println!("Traffic from pod {} ({}):", from.full_name(), from.ip);
    for svc in services.iter().filter(|s| s.kind == "ClusterIP") {
        let target = SocketAddr::from((svc.ip, svc.port));
        let counts = if svc.protocol == "UDP" {
            udp_round(&from, target, args.requests).await?
        } else {
            http_round(&from, target, args.requests).await?
        };
        print_counts(
            &format!("{} ({target}/{})", svc.service, svc.protocol),
            &counts,
        );
    }
    for svc in services.iter().filter(|s| s.kind == "NodePort") {
        let target = SocketAddr::from((sb.node_ip(), svc.port));
        let outside = sb.outside_netns();
        let n = args.requests;
        let counts = tokio::task::spawn_blocking(move || count_http(&outside, target, n)).await??;
        println!();
        println!(
            "Traffic from outside the node ({}) to NodePort {target}:",
            sb.outside_ip()
        );
        print_counts(&svc.service, &counts);
    }

    println!();
    print_services(&services);
    print_conntrack(sb.run_id())?;
    Ok(())
}

/// Waits until every selector Service has the backends the agent can derive.
async fn wait_programmed(client: &sluice_api::Client) -> Result<Vec<ServiceInfo>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = client.get::<Vec<ServiceInfo>>("/v1/services").await?;
        let status: sluice_api::Status = client.get("/v1/status").await?;
        if !status.rejected.is_empty() {
            let msgs: Vec<String> = status
                .rejected
                .iter()
                .map(|r| format!("{}: {}: {}", r.file, r.object, r.error))
                .collect();
            bail!("the agent rejected objects:\n  {}", msgs.join("\n  "));
        }
        if !last.is_empty()
            && last.iter().filter(|s| !s.backends.is_empty()).count() > 0
            && status.last_sync_unix.is_some()
        {
            // Give the watcher one more beat to pick up every file.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(client.get("/v1/services").await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if last.is_empty() {
        bail!("the agent programmed no Service within 20s");
    }
    Ok(last)
}

type Counts = BTreeMap<String, usize>;

fn count_http(netns: &std::path::Path, target: SocketAddr, n: usize) -> Result<Counts> {
    let netns = netns.to_path_buf();
    run_in_netns(&netns, move || {
        let mut counts = Counts::new();
        for _ in 0..n {
            let started = Instant::now();
            let key = match http_get(target, Duration::from_secs(2)) {
                Ok(body) => body.trim().to_string(),
                Err(e) if e.is_refused() => {
                    format!("refused in {:.1} ms", started.elapsed().as_secs_f64() * 1e3)
                }
                Err(e) => format!("error: {e}"),
            };
            // Group "refused in …" under one key with the first timing.
            let key = if key.starts_with("refused") {
                counts
                    .keys()
                    .find(|k| k.starts_with("refused"))
                    .cloned()
                    .unwrap_or(key)
            } else {
                key
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    })
    .map_err(Into::into)
}

async fn http_round(pod: &Pod, target: SocketAddr, n: usize) -> Result<Counts> {
    let netns = pod.netns.clone();
    tokio::task::spawn_blocking(move || count_http(&netns, target, n)).await?
}

async fn udp_round(pod: &Pod, target: SocketAddr, n: usize) -> Result<Counts> {
    let netns = pod.netns.clone();
    tokio::task::spawn_blocking(move || {
        run_in_netns(&netns, move || {
            let mut counts = Counts::new();
            for i in 0..n {
                let payload = format!("query {i}");
                let key = match udp_request(target, payload.as_bytes(), Duration::from_secs(2)) {
                    Ok(answer) if answer == payload.as_bytes() => "echoed".to_string(),
                    Ok(_) => "wrong answer".to_string(),
                    Err(e) if e.is_refused() => "refused (ICMP port unreachable)".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                *counts.entry(key).or_default() += 1;
            }
            counts
        })
        .map_err(anyhow::Error::from)
    })
    .await?
}

fn print_counts(what: &str, counts: &Counts) {
    println!("  {what}");
    let total: usize = counts.values().sum();
    for (k, v) in counts {
        let bar = "█".repeat((v * 30).div_ceil(total.max(1)));
        println!("    {k:<36} {v:>4}  {bar}");
    }
}

fn print_services(services: &[ServiceInfo]) {
    println!("Service table (sluice service list):");
    let mut t = table(&["SERVICE", "TYPE", "FRONTEND", "BACKENDS"]);
    for s in services {
        let b = if s.backends.is_empty() {
            "(none: refused)".to_string()
        } else {
            s.backends
                .iter()
                .map(|b| format!("{}:{} {}", b.ip, b.port, b.pod.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let fe = if s.ip == Ipv4Addr::UNSPECIFIED {
            format!("<node>:{}/{}", s.port, s.protocol)
        } else {
            format!("{}:{}/{}", s.ip, s.port, s.protocol)
        };
        t.add_row(vec![s.service.clone(), s.kind.clone(), fe, b]);
    }
    println!("{t}");
}

fn print_conntrack(node: &str) -> Result<()> {
    let pin = sluice_datapath::loader::pin_dir(std::path::Path::new("/sys/fs/bpf"), node);
    let maps = sluice_datapath::LbMaps::open(&pin)?;
    let rows = maps.ct_rows()?;
    println!();
    println!(
        "Conntrack (sluice bpf ct list), {} entries, first 6 forward:",
        rows.len()
    );
    let mut t = table(&["PROTO", "CLIENT", "SERVICE", "BACKEND"]);
    for r in rows.iter().filter(|r| !r.reply).take(6) {
        t.add_row(vec![
            if r.proto == 17 { "UDP" } else { "TCP" }.to_string(),
            format!("{}:{}", r.src.0, r.src.1),
            format!("{}:{}", r.dst.0, r.dst.1),
            format!("{}:{}", r.nat.0, r.nat.1),
        ]);
    }
    println!("{t}");
    let m = maps.metrics()?;
    let get = |i: usize| m.get(i).copied().unwrap_or(0);
    println!(
        "Datapath counters: {} new flows, {} translated from conntrack, {} replies reverse-translated, {} refused (no endpoint)",
        get(1) + get(11),
        get(2),
        get(3),
        get(4)
    );
    Ok(())
}

fn print_keep(sb: &Sandbox) {
    let client = sb
        .pods()
        .iter()
        .find(|p| p.name == "client")
        .or(sb.pods().first());
    println!();
    println!("The sandbox is still running (--keep). Try:");
    println!("  export SLUICE_SOCKET={}", sb.agent_socket().display());
    println!("  sluice status");
    println!("  sluice service list");
    println!("  sluice endpoint list");
    println!("  sluice bpf lb list --node {}", sb.run_id());
    println!("  sluice bpf ct list --node {}", sb.run_id());
    if let Some(p) = client {
        println!(
            "  nsenter --net={} bash    # a shell in pod {}",
            p.netns.display(),
            p.full_name()
        );
        println!(
            "  nsenter --net={} curl -s http://10.96.0.10/",
            p.netns.display()
        );
    }
    println!(
        "  edit {}/*.yaml         # the agent applies changes live",
        sb.manifests_dir().display()
    );
    println!("  sluice sandbox down     # remove everything");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifests_are_valid() {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let pods = validate(&files).unwrap_or_default();
        assert_eq!(pods.len(), 4, "client and three web pods");
    }

    #[test]
    fn a_bad_manifest_is_reported_with_file_and_field() {
        let files = vec![(
            "bad.yaml".to_string(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 70000}]\n".to_string(),
        )];
        let err = validate(&files)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("bad.yaml") && err.contains("spec.ports[0].port"),
            "{err}"
        );
    }
}
