//! Scenario functions for the e2e behaviours, keyed by id: the Services
//! and ports come from the file; what an API server and controllers would
//! do (allocate ClusterIPs and NodePorts, publish EndpointSlices from
//! Pods) the runner or the agent does, and the report says so. Backends
//! are local pods unless the behaviour needs more than one node.

use super::super::cases::Protocol;
use super::cases::{Behaviour, Source};
use super::kit::*;
use super::report::{BehaviourReport, FlowReport};
use super::world::{Serve, Spec, World};
use super::Ctx;
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value as Json};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_millis(1500);

/// Runs `body` in a world built from `spec`; any error FAILS the
/// behaviour with the rows so far.
pub async fn with_world<F>(ctx: &Ctx<'_>, b: &Behaviour, spec: Spec, body: F) -> BehaviourReport
where
    F: for<'w> AsyncFnOnce(&'w mut World, &'w mut BehaviourReport) -> Result<()>,
{
    let mut r = BehaviourReport::new(&b.id, &b.title);
    in_world(ctx, &spec, &mut r, body).await;
    r.decide();
    r
}

/// Builds a world from `spec`, runs `body` in it and tears it down; every
/// error lands in `r` (so the behaviour FAILS). False when the world could
/// not be built (callers looping over worlds stop there).
pub async fn in_world<F>(ctx: &Ctx<'_>, spec: &Spec, r: &mut BehaviourReport, body: F) -> bool
where
    F: for<'w> AsyncFnOnce(&'w mut World, &'w mut BehaviourReport) -> Result<()>,
{
    match World::build(ctx.conv, ctx.path, spec).await {
        Err(e) => {
            r.error(&e);
            false
        }
        Ok(mut w) => {
            if let Err(e) = body(&mut w, r).await {
                r.error(&e);
            }
            if let Err(e) = w.teardown() {
                r.error(&e);
            }
            true
        }
    }
}

fn tcp_serve(port: u16) -> Serve {
    let mut s = Serve::default();
    s.add(Protocol::Tcp, port);
    s
}

/// The (port, targetPort) pairs of a file Service.
fn ports_of(s: &Json) -> Vec<(u16, u16, Protocol)> {
    s["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let port = p["port"].as_u64()? as u16;
                    let target = p["targetPort"].as_u64().map(|t| t as u16).unwrap_or(port);
                    let proto = match p["protocol"].as_str().unwrap_or("TCP") {
                        "UDP" => Protocol::Udp,
                        "SCTP" => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    };
                    Some((port, target, proto))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A selector Service of the file with `n` local backends selected by
/// its own selector, serving its targetPort, and one client pod.
struct Selected {
    service: Json,
    backends: Vec<Ipv4Addr>,
    client: Ipv4Addr,
    vip: SocketAddrV4,
    protocol: Protocol,
}

fn selected(ctx: &Ctx<'_>, b: &Behaviour, n: u8, vip_n: u8) -> Result<(Selected, Spec)> {
    let svc = file_service(b, 0).ok_or_else(|| anyhow!("no setup.services[0]"))?;
    let (port, target, protocol) = *ports_of(&svc)
        .first()
        .ok_or_else(|| anyhow!("the Service has no port"))?;
    let vip = cluster_ip(ctx, vip_n);
    let service = place_service(svc, vip, &[]);
    let labels = service["spec"]["selector"].clone();
    if !labels.is_object() {
        anyhow::bail!("the Service's selector is not a label map");
    }
    let mut spec = Spec::default();
    let backends: Vec<Ipv4Addr> = (1..=n).map(|i| backend_ip(ctx, i)).collect();
    for ip in &backends {
        let mut s = Serve::default();
        s.add(protocol, target);
        spec.local.insert(*ip, s);
        spec.docs.push(pod_doc(*ip, labels.clone(), json!([])));
    }
    let client = client_ip(ctx);
    spec.local.insert(client, Serve::default());
    spec.docs.push(to_value(service.clone()));
    Ok((
        Selected {
            service,
            backends,
            client,
            vip: SocketAddrV4::new(vip, port),
            protocol,
        },
        spec,
    ))
}

fn adapted(r: &mut BehaviourReport, s: &str) {
    r.notes.push(s.to_string());
}

/// svc-022: ClientIP affinity, ClusterIP and NodePort variants.
pub async fn affinity(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let (sel, mut spec) = match selected(ctx, b, 3, 22) {
        Ok(x) => x,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, format!("{e:#}")),
    };
    // The NodePort variant: the same Service as type NodePort.
    let node_port = 30000 + u16::from(22u8);
    let mut np = sel.service.clone();
    np["metadata"]["name"] = json!(format!(
        "{}-nodeport",
        sel.service["metadata"]["name"].as_str().unwrap_or("svc")
    ));
    np["spec"]["type"] = json!("NodePort");
    np["spec"]["clusterIP"] = json!(cluster_ip(ctx, 23).to_string());
    np["spec"]["ports"][0]["nodePort"] = json!(node_port);
    spec.docs.push(to_value(np));
    let primary = ctx.conv.primary_ip;
    with_world(ctx, b, spec, async |w, r| {
        adapted(r, "3 local serve-hostname-like backends selected by the Service's own selector; ClusterIPs and the NodePort assigned by the runner");
        let client = Source::Pod(sel.client);
        for (label, to) in [
            ("ClusterIP", sel.vip),
            ("NodePort variant", SocketAddrV4::new(primary, node_port)),
        ] {
            let seen = sequence(w, &client, to, sel.protocol, 16, T).await?;
            let run = longest_run(&seen);
            r.flows.push(row(
                &format!("{label}: 16 requests"),
                &format!("pod {}", sel.client),
                &to.to_string(),
                sel.protocol,
                "the last 15 consecutive answers from the same pod",
                &seen,
                run >= 15,
                vec![format!("longest run from one backend: {run}")],
            ));
        }
        Ok(())
    })
    .await
}

/// svc-023: the affinity timeout expires (scaled down, said so).
pub async fn affinity_timeout(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let (mut sel, mut spec) = match selected(ctx, b, 3, 23) {
        Ok(x) => x,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, format!("{e:#}")),
    };
    let file_timeout = sel.service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
        .as_u64()
        .unwrap_or(0);
    const SCALED: u64 = 3;
    sel.service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = json!(SCALED);
    spec.docs
        .retain(|d| d.get("kind").and_then(|k| k.as_str()) != Some("Service"));
    spec.docs.push(to_value(sel.service.clone()));
    with_world(ctx, b, spec, async |w, r| {
        adapted(r, &format!(
            "affinity timeout SCALED DOWN from the file's {file_timeout} s to {SCALED} s (and the idle sleep from {} s to {} s) to keep the run short",
            file_timeout + 5, SCALED + 2
        ));
        let client = Source::Pod(sel.client);
        let burst = sequence(w, &client, sel.vip, sel.protocol, 16, T).await?;
        let run = longest_run(&burst);
        r.flows.push(row("step 1: burst of 16", &format!("pod {}", sel.client), &sel.vip.to_string(), sel.protocol,
            "15 consecutive answers from one backend", &burst, run >= 15, vec![format!("longest run: {run}")]));
        let mut seen = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(SCALED + 2)).await;
            seen.extend(sequence(w, &client, sel.vip, sel.protocol, 1, T).await?);
            if backends(&seen).len() >= 2 {
                break;
            }
        }
        let distinct = backends(&seen).len();
        r.flows.push(row("step 2: single requests, idle past the timeout", &format!("pod {}", sel.client), &sel.vip.to_string(), sel.protocol,
            "at least two distinct backends", &seen, distinct >= 2, vec![format!("{} requests, {distinct} backends", seen.len())]));
        Ok(())
    })
    .await
}

/// svc-024: affinity switched off and on again, live.
pub async fn affinity_switch(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    // "as svc-022": its Service.
    let Some(src) = ctx.all.iter().find(|o| o.id.starts_with("svc-022")) else {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "svc-022 (its setup) is not in the file",
        );
    };
    let (sel, spec) = match selected(ctx, src, 3, 24) {
        Ok(x) => x,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, format!("{e:#}")),
    };
    with_world(ctx, b, spec, async |w, r| {
        adapted(
            r,
            "Service of svc-022 (\"as svc-022\") with 3 local backends",
        );
        let client = Source::Pod(sel.client);
        let docs = |affinity: &str| -> Vec<serde_norway::Value> {
            let mut s = sel.service.clone();
            s["spec"]["sessionAffinity"] = json!(affinity);
            let mut d: Vec<serde_norway::Value> = sel
                .backends
                .iter()
                .map(|ip| pod_doc(*ip, sel.service["spec"]["selector"].clone(), json!([])))
                .collect();
            d.push(to_value(s));
            d
        };
        w.apply(&docs("None")).await?;
        let seen = sequence(w, &client, sel.vip, sel.protocol, 16, T).await?;
        let n = backends(&seen).len();
        r.flows.push(row(
            "step 1: sessionAffinity None",
            &format!("pod {}", sel.client),
            &sel.vip.to_string(),
            sel.protocol,
            "responses from more than one backend",
            &seen,
            n > 1,
            vec![],
        ));
        w.apply(&docs("ClientIP")).await?;
        let seen = sequence(w, &client, sel.vip, sel.protocol, 16, T).await?;
        let run = longest_run(&seen);
        r.flows.push(row(
            "step 2: sessionAffinity ClientIP",
            &format!("pod {}", sel.client),
            &sel.vip.to_string(),
            sel.protocol,
            "15 consecutive responses from one backend",
            &seen,
            run >= 15,
            vec![format!("longest run: {run}")],
        ));
        Ok(())
    })
    .await
}

/// "within 1 min" of the file, shortened (the agent applies a change in
/// milliseconds; kube-proxy's minute covers its sync period).
const WINDOW: Duration = Duration::from_secs(15);

/// Sends from a fixed source port until `want` answers or `within` passes.
async fn udp_until(
    w: &World,
    source: &Source,
    to: SocketAddrV4,
    port: u16,
    want: Option<Ipv4Addr>,
    within: Duration,
) -> Result<(bool, Vec<super::expect::Observed>, Duration)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let out = w
            .probe(
                source,
                to,
                Protocol::Udp,
                1,
                Duration::from_millis(500),
                port,
            )
            .await?;
        let obs: Vec<_> = out.iter().map(super::expect::classify).collect();
        let hit = obs.iter().any(|o| match (o, want) {
            (super::expect::Observed::Answer { backend, .. }, Some(ip)) => *backend.ip() == ip,
            _ => false,
        });
        seen.extend(obs);
        if hit || start.elapsed() >= within {
            return Ok((hit, seen, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// svc-033: a UDP client on a fixed source port follows backend changes
/// (one node: client and servers are local pods; node clients too).
pub async fn udp_backend_change(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let svc = match file_service(b, 0) {
        Some(s) => s,
        None => return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]"),
    };
    let Some((port, target, _)) = ports_of(&svc).first().copied() else {
        return BehaviourReport::unsupported(&b.id, &b.title, "the Service has no port");
    };
    // "nc -u -p 12345": the fixed source port, from the placement prose.
    let src_port: u16 = super::cases::seq(b.raw.get("setup").and_then(|s| s.get("placement")))
        .iter()
        .filter_map(|p| p.get("command").and_then(|c| c.as_str()))
        .find_map(|c| {
            let mut w = c.split_whitespace();
            while let Some(x) = w.next() {
                if x == "-p" {
                    return w.next().and_then(|p| p.parse().ok());
                }
            }
            None
        })
        .unwrap_or(12345);
    let vip = cluster_ip(ctx, 33);
    let node_port = 30033;
    let mut service = place_service(svc, vip, &[node_port]);
    service["spec"]["type"] = json!("NodePort");
    // Both agents need the servers on node2: the EndpointSlice the
    // controller would publish, not a selector (each agent derives
    // selector endpoints from its own CNI pods only).
    if let Some(m) = service["spec"].as_object_mut() {
        m.remove("selector");
    }
    let name = service["metadata"]["name"]
        .as_str()
        .unwrap_or("svc-udp")
        .to_string();
    let port_name = service["spec"]["ports"][0]["name"].clone();
    let slice = |servers: &[Ipv4Addr]| -> serde_norway::Value {
        let eps: Vec<(Ipv4Addr, Json)> = servers
            .iter()
            .map(|s| (*s, json!({"ready": true})))
            .collect();
        let mut j = serde_json::to_value(slice_doc(
            &name,
            &format!("{name}-1"),
            &eps,
            json!([{"name": port_name, "port": target, "protocol": "UDP"}]),
        ))
        .unwrap_or(Json::Null);
        for i in 0..servers.len() {
            j["endpoints"][i]["nodeName"] = json!(super::world::NODE2_NAME);
        }
        to_value(j)
    };
    let client = client_ip(ctx);
    let (s1, s2) = (node2_pod_ip(ctx, 11), node2_pod_ip(ctx, 12));
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.node2_agent = true;
    spec.docs.push(to_value(service.clone()));
    let mut serve = Serve::default();
    serve.add(Protocol::Udp, target);
    let primary = ctx.conv.primary_ip;
    let node1 = super::world::N2_IP;
    with_world(ctx, b, spec, async |w, r| {
        adapted(r, &format!(
            "as upstream: client on node0 (this node), pod-server-1 ({s1}) and pod-server-2 ({s2}) on node1 = the sandbox's node2 running its own agent, created through its CNI; \
             the Service's selector is replaced by the EndpointSlice the controller would publish (with nodeName); \
             fixed source port {src_port} ({} for the NodePort variant, node1 InternalIP {node1}:{node_port}, which runs alongside from the same pod); 'within 1 min' shortened to 15 s; NodePort type so both variants share the Service",
            src_port + 1
        ));
        let variants = [
            ("ClusterIP", Source::Pod(client), SocketAddrV4::new(vip, port)),
            ("NodePort (node1)", Source::Pod(client), SocketAddrV4::new(node1, node_port)),
            ("ClusterIP, hostNetwork client", Source::Node(primary), SocketAddrV4::new(vip, port)),
        ];
        // Step 1: clients send before any backend exists.
        for (k, (label, src, to)) in variants.iter().enumerate() {
            let port = if k == 1 { src_port + 1 } else { src_port };
            let (_, seen, _) = udp_until(w, src, *to, port, None, Duration::from_millis(1)).await?;
            let ok = !answered(&seen);
            r.flows.push(row(&format!("{label}: step 1, no backend yet"), &src.to_string(), &to.to_string(), Protocol::Udp,
                "no answer", &seen, ok, vec![]));
        }
        // Step 2: pod-server-1.
        w.add_node2_pod_now(s1, &serve).await?;
        w.apply(&[to_value(service.clone()), slice(&[s1])]).await?;
        let step = async |w: &World, r: &mut BehaviourReport, what: &str, want: Ipv4Addr| -> Result<()> {
            // The variants wait side by side: a failing one costs its window once.
            // The two pod variants run at once from the same pod, so the
            // NodePort one uses the next port (one 5-tuple each).
            let (a, b2, c) = tokio::join!(
                udp_until(w, &variants[0].1, variants[0].2, src_port, Some(want), WINDOW),
                udp_until(w, &variants[1].1, variants[1].2, src_port + 1, Some(want), WINDOW),
                udp_until(w, &variants[2].1, variants[2].2, src_port, Some(want), WINDOW),
            );
            for ((label, src, to), res) in variants.iter().zip([a, b2, c]) {
                let (hit, seen, took) = res?;
                r.flows.push(row(&format!("{label}: {what}"), &src.to_string(), &to.to_string(), Protocol::Udp,
                    &format!("answers from {want}"), &seen, hit, vec![format!("after {:.1} s", took.as_secs_f64())]));
            }
            Ok(())
        };
        step(w, r, "step 2, pod-server-1 created", s1).await?;
        // Step 3: pod-server-2, then pod-server-1 deleted.
        w.add_node2_pod_now(s2, &serve).await?;
        w.apply(&[to_value(service.clone()), slice(&[s1, s2])]).await?;
        w.apply(&[to_value(service.clone()), slice(&[s2])]).await?;
        w.remove_node2_pod(s1).await?;
        step(w, r, "step 3, pod-server-2 created, pod-server-1 deleted", s2).await?;
        Ok(())
    })
    .await
}

/// svc-038: services up, down, recreated; the agent restarted.
pub async fn lifecycle(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    // "3 x serve-hostname service (port 80 -> 9376) with 3 replicas each: up-down-1, ..."
    let prose = super::cases::text_of(b.raw.get("setup").and_then(|s| s.get("services")))
        .unwrap_or_default();
    let (port, target) = prose
        .split_once("port ")
        .and_then(|(_, rest)| {
            let mut w = rest.split_whitespace();
            let p = w.next()?.parse().ok()?;
            let _arrow = w.next()?;
            let t = w.next()?.trim_end_matches(')').parse().ok()?;
            Some((p, t))
        })
        .unwrap_or((80u16, 9376u16));
    let names: Vec<String> = prose
        .split(|c: char| c == ',' || c.is_whitespace() || c == ':')
        .filter(|w| w.starts_with("up-down-"))
        .map(str::to_string)
        .collect();
    if names.len() < 3 {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            format!("cannot read three service names from {prose:?}"),
        );
    }
    let svc = |i: usize, name: &str| -> Json {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": super::world::POD_NS, "name": name},
               "spec": {"clusterIP": cluster_ip(ctx, 38 + i as u8).to_string(),
                        "selector": {"name": name},
                        "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}]}})
    };
    let mut spec = Spec::default();
    let client = client_ip(ctx);
    spec.local.insert(client, Serve::default());
    let mut pods: Vec<(usize, Ipv4Addr)> = Vec::new();
    for i in 0..3 {
        for k in 0..3u8 {
            let ip = backend_ip(ctx, (i as u8) * 10 + k + 1);
            spec.local.insert(ip, tcp_serve(target));
            pods.push((i, ip));
        }
    }
    // (service index, ClusterIP number)
    let docs_for = |services: &[(usize, u8)]| -> Vec<serde_norway::Value> {
        let mut d: Vec<serde_norway::Value> = pods
            .iter()
            .map(|(i, ip)| pod_doc(*ip, json!({"name": names[*i]}), json!([])))
            .collect();
        for &(i, n) in services {
            let mut s = svc(i, &names[i]);
            s["spec"]["clusterIP"] = json!(cluster_ip(ctx, n).to_string());
            d.push(to_value(s));
        }
        d
    };
    let want = |i: usize| -> Vec<SocketAddrV4> {
        pods.iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, ip)| SocketAddrV4::new(*ip, target))
            .collect()
    };
    let primary = ctx.conv.primary_ip;
    with_world(ctx, b, spec, async |w, r| {
        adapted(
            r,
            "3 local pods per service (selector name=<service>); ClusterIPs assigned by the runner",
        );
        let clients = [Source::Pod(client), Source::Node(primary)];
        let check = async |w: &World,
                           r: &mut BehaviourReport,
                           step: &str,
                           i: usize,
                           vip: Ipv4Addr,
                           up: bool|
               -> Result<()> {
            for c in &clients {
                let to = SocketAddrV4::new(vip, port);
                // Until every pod answered (random choice: a fixed count
                // would miss one now and then), or 60 attempts.
                let seen = if up {
                    sample_until_all(w, c, to, Protocol::Tcp, &want(i), 6, 10).await?
                } else {
                    sample(w, c, to, Protocol::Tcp, 2, Duration::from_secs(2)).await?
                };
                let got = backends(&seen);
                let (ok, expected) = if up {
                    (
                        want(i).iter().all(|b| got.contains(b))
                            && got.iter().all(|b| want(i).contains(b)),
                        format!(
                            "exactly its own 3 pods ({})",
                            want(i)
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                } else {
                    (!answered(&seen), "no answer".to_string())
                };
                r.flows.push(row(
                    &format!("{step}: {}", names[i]),
                    &c.to_string(),
                    &to.to_string(),
                    Protocol::Tcp,
                    &expected,
                    &seen,
                    ok,
                    vec![],
                ));
            }
            Ok(())
        };
        w.apply(&docs_for(&[(0, 38), (1, 39)])).await?;
        check(w, r, "step 1", 0, cluster_ip(ctx, 38), true).await?;
        check(w, r, "step 1", 1, cluster_ip(ctx, 39), true).await?;
        w.apply(&docs_for(&[(1, 39)])).await?;
        check(
            w,
            r,
            "step 2 (up-down-1 deleted)",
            0,
            cluster_ip(ctx, 38),
            false,
        )
        .await?;
        check(w, r, "step 2", 1, cluster_ip(ctx, 39), true).await?;
        w.apply(&docs_for(&[(1, 39), (2, 40)])).await?;
        check(
            w,
            r,
            "step 3 (up-down-3 created)",
            2,
            cluster_ip(ctx, 40),
            true,
        )
        .await?;
        check(w, r, "step 3", 1, cluster_ip(ctx, 39), true).await?;
        // Recreate variant: delete the Service only, recreate it.
        w.apply(&docs_for(&[(2, 40)])).await?;
        w.apply(&docs_for(&[(1, 49), (2, 40)])).await?;
        check(
            w,
            r,
            "recreated up-down-2 (new ClusterIP)",
            1,
            cluster_ip(ctx, 49),
            true,
        )
        .await?;
        // Restart variant.
        w.sb.restart_agent()
            .await
            .context("cannot restart the agent")?;
        check(w, r, "after an agent restart", 1, cluster_ip(ctx, 49), true).await?;
        check(w, r, "after an agent restart", 2, cluster_ip(ctx, 40), true).await?;
        Ok(())
    })
    .await
}

pub fn unsupported_row(name: &str, why: &str) -> FlowReport {
    FlowReport::unsupported(name, "", "", why.to_string())
}
