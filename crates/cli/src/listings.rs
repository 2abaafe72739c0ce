//! Listings served by the agent's API.

use crate::output::{json, table, Output};
use anyhow::Result;
use sluice_api::{Client, EndpointInfo, EndpointState, ServiceInfo, Status};

pub async fn status(client: &Client, out: Output) -> Result<()> {
    let s: Status = client.get("/v1/status").await?;
    if out == Output::Json {
        return json(&s);
    }
    println!("Node:          {}", s.node_name);
    println!("Version:       {}", s.version);
    println!("Pod CIDR:      {}", s.pod_cidr);
    println!("Manifests:     {}", s.manifests);
    println!(
        "Datapath:      {} attach, pins in {}, NodePort on [{}]",
        s.datapath.attach_mode,
        s.datapath.pin_dir,
        s.datapath.devices.join(", ")
    );
    println!(
        "Programmed:    {} services, {} frontends, {} backends, {} endpoints",
        s.services, s.frontends, s.backends, s.endpoints
    );
    match s.last_sync_unix {
        Some(t) => {
            let ago = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs().saturating_sub(t))
                .unwrap_or(0);
            println!(
                "Last sync:     {ago}s ago, {} map writes",
                s.last_sync_writes
            );
        }
        None => println!("Last sync:     never"),
    }
    println!("Write errors:  {}", s.map_write_errors);
    let k = &s.kernel;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "Kernel:        {}; tcx {} ({}), BTF {}, ring buffer {}, XDP {}, socket hooks {}",
        if k.kernel.is_empty() { "?" } else { &k.kernel },
        yes(k.tcx),
        if k.tcx {
            "used for tc programs"
        } else {
            "clsact filters used instead"
        },
        yes(k.btf),
        yes(k.ringbuf),
        if k.xdp {
            "available, not used yet"
        } else {
            "no"
        },
        yes(k.socket_hooks),
    );
    let sl = &s.socket_lb;
    let state = if !sl.enabled {
        "off (agent --socket-lb=false): Service traffic is translated per packet (tc)".to_string()
    } else if sl.active {
        format!(
            "active on {} (hooks: {}), {} pod(s) opted out",
            sl.cgroup.as_deref().unwrap_or("?"),
            sl.hooks.join(", "),
            sl.opted_out_pods
        )
    } else {
        "inactive: connect4 not attached; Service traffic is translated per packet (tc)".to_string()
    };
    println!("Socket LB:     {state}");
    for f in &sl.failed {
        println!("  {} not attached: {}", f.hook, f.reason);
    }
    let e = &s.events;
    println!(
        "Flow events:   {} received, {} lost, {} kept (of {}), per-packet tracing {}",
        e.received,
        e.lost,
        e.history,
        e.history_capacity,
        if e.trace_per_packet { "on" } else { "off" }
    );
    println!(
        "Metrics:       {}",
        e.metrics_addr
            .as_deref()
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "off (agent --metrics-addr)".into())
    );
    let p = &s.policy;
    println!(
        "Policy:        {} policies, {} identities, {} of {} endpoints enforced, {} entries, revision {}",
        p.policies, p.identities, p.enforced_endpoints, s.endpoints, p.entries, p.revision
    );
    if s.rejected.is_empty() {
        println!("Rejected:      none");
    } else {
        println!("Rejected ({}):", s.rejected.len());
        for r in &s.rejected {
            println!("  {}: {}: {}", r.file, r.object, r.error);
        }
    }
    if !s.health_check_ports.is_empty() {
        println!("Health checks: ports {:?}", s.health_check_ports);
    }
    if !s.service_warnings.is_empty() {
        println!("Partly programmed ({}):", s.service_warnings.len());
        for w in &s.service_warnings {
            println!("  {w}");
        }
    }
    Ok(())
}

pub async fn services(client: &Client, out: Output) -> Result<()> {
    let list: Vec<ServiceInfo> = client.get("/v1/services").await?;
    if out == Output::Json {
        return json(&list);
    }
    let mut t = table(&[
        "SERVICE",
        "TYPE",
        "FRONTEND",
        "PORT NAME",
        "REV-NAT",
        "BACKENDS",
    ]);
    for s in &list {
        let backends = if s.backends.is_empty() {
            "(none: connections refused)".to_string()
        } else {
            s.backends
                .iter()
                .map(|b| match &b.pod {
                    Some(p) => format!("{}:{} ({p})", b.ip, b.port),
                    None => format!("{}:{}", b.ip, b.port),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        t.add_row(vec![
            s.service.clone(),
            s.kind.clone(),
            format!("{}:{}/{}", s.ip, s.port, s.protocol),
            s.port_name.clone(),
            s.rev_nat_id.to_string(),
            backends,
        ]);
    }
    println!("{t}");
    Ok(())
}

pub async fn endpoints(client: &Client, out: Output) -> Result<()> {
    let list: Vec<EndpointInfo> = client.get("/v1/endpoints").await?;
    if out == Output::Json {
        return json(&list);
    }
    let mut t = table(&["POD", "IP", "INTERFACE", "STATE", "CONTAINER"]);
    for e in &list {
        let state = match (e.state, &e.reason) {
            (EndpointState::Ready, _) => "ready".to_string(),
            (EndpointState::NotReady, Some(r)) => format!("not ready: {r}"),
            (EndpointState::NotReady, None) => "not ready".to_string(),
        };
        t.add_row(vec![
            format!("{}/{}", e.namespace, e.pod),
            e.ip.to_string(),
            e.host_ifname.clone(),
            state,
            e.container_id.chars().take(12).collect(),
        ]);
    }
    println!("{t}");
    Ok(())
}
