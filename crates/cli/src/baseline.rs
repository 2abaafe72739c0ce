//! `sluice baseline render`: what kube-proxy would install for the same
//! objects, in its iptables or nftables mode.

use anyhow::{Context, Result};
use clap::Args;
use sluice_api::{Client, EndpointInfo};
use sluice_baseline::{render, views_from, Mode, Options};
use sluice_core::{parse_documents, CompileConfig, Engine, Store};
use std::path::PathBuf;

#[derive(Args)]
pub struct RenderArgs {
    /// iptables (kube-proxy's default) or nftables.
    #[arg(long)]
    mode: Mode,
    /// The manifest folder (the agent's --manifests).
    #[arg(long, default_value = "/etc/sluice/manifests")]
    manifests: PathBuf,
    /// The cluster's pod CIDR: sources outside it are masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
}

/// Pod IPs come from the agent's endpoint registry when it runs (Services
/// with selectors need them), else from the Pods' `status.podIP`.
pub async fn render_cmd(client: &Client, a: RenderArgs) -> Result<()> {
    let mut store = Store::new();
    let mut changes = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.manifests)
        .with_context(|| format!("cannot read {}", a.manifests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let out = parse_documents(&name, &text);
        for r in &out.rejections {
            eprintln!("warning: {r}");
        }
        changes.extend(store.replace_file(&name, out));
    }
    if let Ok(eps) = client.get::<Vec<EndpointInfo>>("/v1/endpoints").await {
        for e in eps {
            changes.extend(store.set_pod_ip(&e.namespace, &e.pod, Some(e.ip)));
        }
    }
    let mut engine = Engine::new(CompileConfig::default());
    let plan = engine.apply(&changes);
    for e in &plan.errors {
        eprintln!("warning: {e}");
    }
    let opts = Options {
        cluster_cidr: Some(a.cluster_cidr),
        ..Options::default()
    };
    print!("{}", render(a.mode, &views_from(engine.desired()), &opts));
    Ok(())
}
