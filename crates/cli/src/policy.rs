//! `sluice identity list`, `sluice policy get`, `sluice policy trace`: what
//! the agent compiled NetworkPolicy into, and why a connection would pass.

use crate::output::{json, table, Output};
use anyhow::{bail, Context, Result};
use sluice_api::{Client, EndpointPolicyView, IdentityView, PolicyTraceRequest, PolicyTraceResult};

pub async fn identities(client: &Client, out: Output) -> Result<()> {
    let list: Vec<IdentityView> = client.get("/v1/identities").await?;
    if out == Output::Json {
        return json(&list);
    }
    let mut t = table(&["IDENTITY", "KIND", "LABELS", "LOCAL PODS"]);
    for i in &list {
        t.add_row(vec![
            i.id.to_string(),
            i.kind.clone(),
            i.labels.join("\n"),
            i.pods.join("\n"),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `pod`: `namespace/name`, or all local pods when `None`.
pub async fn get(client: &Client, pod: Option<&str>, out: Output) -> Result<()> {
    let all: Vec<EndpointPolicyView> = client.get("/v1/policy/endpoints").await?;
    let list: Vec<&EndpointPolicyView> = all
        .iter()
        .filter(|e| pod.is_none_or(|p| e.pod == p))
        .collect();
    if let (Some(p), true) = (pod, list.is_empty()) {
        bail!("{p}: not a pod on this node (local pods: {})", all.len());
    }
    if out == Output::Json {
        return json(&list);
    }
    for e in list {
        let side = |enforced: bool, by: &[String]| {
            if enforced {
                format!("enforced (selected by {})", by.join(", "))
            } else {
                "open (no policy selects it)".to_string()
            }
        };
        println!("{}  {}  identity {}", e.pod, e.ip, e.identity);
        println!(
            "  ingress: {}",
            side(e.ingress_enforced, &e.selected_by_ingress)
        );
        println!(
            "  egress:  {}",
            side(e.egress_enforced, &e.selected_by_egress)
        );
        if e.entries.is_empty() {
            println!(
                "  no entries{}",
                if e.ingress_enforced || e.egress_enforced {
                    ": everything in an enforced direction is denied"
                } else {
                    ""
                }
            );
            continue;
        }
        let mut t = table(&["DIRECTION", "PEER", "PROTOCOL", "PORTS", "VERDICT", "RULE"]);
        for x in &e.entries {
            t.add_row(vec![
                x.direction.clone(),
                x.peer.clone(),
                x.protocol.clone(),
                x.ports.clone(),
                x.verdict.clone(),
                x.rule.clone(),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

/// `port`: `PORT[/PROTOCOL]`, TCP when no protocol is given.
pub async fn trace(
    client: &Client,
    from: String,
    to: String,
    port: &str,
    out: Output,
) -> Result<()> {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "TCP"));
    let number: u16 = number
        .parse()
        .with_context(|| format!("--port {port:?}: {number:?} is not a port number"))?;
    let req = PolicyTraceRequest {
        from,
        to,
        port: number,
        protocol: protocol.to_string(),
    };
    let r: PolicyTraceResult = client.post("/v1/policy/trace", &req).await?;
    if out == Output::Json {
        return json(&r);
    }
    println!(
        "{} -> {} {}/{}: {}",
        req.from,
        req.to,
        req.port,
        req.protocol.to_ascii_uppercase(),
        if r.allowed { "ALLOWED" } else { "DENIED" }
    );
    println!("  egress of source:       {}", r.egress);
    println!("  ingress of destination: {}", r.ingress);
    Ok(())
}
