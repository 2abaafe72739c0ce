//! Scenario functions about ports and endpoint sources: named
//! targetPorts (svc-005), several user EndpointSlices (svc-006), one
//! NodePort per protocol (svc-040), SCTP endpoints (svc-044), the
//! service-proxy-name label (svc-031) and hostNetwork endpoints (svc-041).

use super::super::cases::Protocol;
use super::cases::{seq, text_of, Behaviour, Source};
use super::e2e::with_world;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{Serve, Spec, World};
use super::Ctx;
use anyhow::{anyhow, Result};
use serde_json::{json, Value as Json};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const T: Duration = Duration::from_millis(1500);

fn serve(p: Protocol, port: u16) -> Serve {
    let mut s = Serve::default();
    s.add(p, port);
    s
}

fn ok_from(seen: &[super::expect::Observed], want: &[SocketAddrV4]) -> bool {
    answered(seen)
        && backends(seen).iter().all(|b| want.contains(b))
        && !seen
            .iter()
            .any(|o| !matches!(o, super::expect::Observed::Answer { .. }))
}

fn list(v: &[SocketAddrV4]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("|")
}

/// svc-005: each service port reaches the pod whose container port has
/// the targetPort's name; removing pod1 leaves only port 81 served.
pub async fn named_ports(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(svc) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let pods = seq(b.raw.get("setup").and_then(|s| s.get("pods"))).to_vec();
    let vip = cluster_ip(ctx, 5);
    let service = place_service(svc, vip, &[]);
    let labels = service["spec"]["selector"].clone();
    let client = client_ip(ctx);
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    // pod1, pod2 of the file at backend addresses, with their container ports.
    let mut placed: Vec<(String, Ipv4Addr, Json, u16)> = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let name = text_of(p.get("name")).unwrap_or_default();
        let ports = serde_json::to_value(p.get("containerPorts")).unwrap_or(json!([]));
        let Some(port) = ports[0]["containerPort"].as_u64() else {
            continue;
        };
        let ip = backend_ip(ctx, i as u8 + 1);
        spec.local.insert(ip, serve(Protocol::Tcp, port as u16));
        placed.push((name, ip, ports, port as u16));
    }
    if placed.len() < 2 {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "setup.pods does not give two pods with container ports",
        );
    }
    let docs = |which: &[usize]| -> Vec<serde_norway::Value> {
        let mut d = vec![to_value(service.clone())];
        for &i in which {
            d.push(pod_doc(placed[i].1, labels.clone(), placed[i].2.clone()));
        }
        d
    };
    let svc_ports: Vec<u16> = service["spec"]["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["port"].as_u64().map(|p| p as u16))
                .collect()
        })
        .unwrap_or_default();
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!(
            "{} at {}, {} at {} (local pods with the file's container ports); ClusterIP {vip} assigned by the runner; the agent resolves named targetPorts from the Pods",
            placed[0].0, placed[0].1, placed[1].0, placed[1].1
        ));
        w.apply(&docs(&[0, 1])).await?;
        let src = Source::Pod(client);
        for (k, port) in svc_ports.iter().enumerate().take(2) {
            let to = SocketAddrV4::new(vip, *port);
            let want = [SocketAddrV4::new(placed[k].1, placed[k].3)];
            let seen = sample(w, &src, to, Protocol::Tcp, 4, T).await?;
            r.flows.push(row(&format!("port {port}"), &format!("pod {client}"), &to.to_string(), Protocol::Tcp,
                &format!("{} ({}:{})", placed[k].0, placed[k].1, placed[k].3), &seen, ok_from(&seen, &want), vec![]));
        }
        // "Deleting pod1 leaves only portname2->pod2:101".
        w.apply(&docs(&[1])).await?;
        w.remove_local(placed[0].1).await?;
        if let [p80, p81, ..] = svc_ports[..] {
            let to = SocketAddrV4::new(vip, p80);
            let seen = sample(w, &src, to, Protocol::Tcp, 1, T).await?;
            let refused = seen.iter().all(|o| matches!(o, super::expect::Observed::Refused));
            r.flows.push(row(&format!("port {p80} after pod1 deleted"), &format!("pod {client}"), &to.to_string(), Protocol::Tcp,
                "REJECT (no endpoints)", &seen, refused, vec![]));
            let to = SocketAddrV4::new(vip, p81);
            let want = [SocketAddrV4::new(placed[1].1, placed[1].3)];
            let seen = sample(w, &src, to, Protocol::Tcp, 3, T).await?;
            r.flows.push(row(&format!("port {p81} after pod1 deleted"), &format!("pod {client}"), &to.to_string(), Protocol::Tcp,
                &list(&want), &seen, ok_from(&seen, &want), vec![]));
        }
        r.notes.push("the add/remove-port update variant is not run".into());
        Ok(())
    })
    .await
}

/// Replaces `"<pod1 IP>"`-style placeholders.
fn fill(j: &mut Json, subs: &[(String, String)]) {
    match j {
        Json::String(s) => {
            for (k, v) in subs {
                if s.contains(k.as_str()) {
                    *s = s.replace(k.as_str(), v);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(|v| fill(v, subs)),
        Json::Object(m) => m.values_mut().for_each(|v| fill(v, subs)),
        _ => {}
    }
}

/// svc-006: one Service, ports spread over two user EndpointSlices.
pub async fn multiple_slices(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(svc) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let vip = cluster_ip(ctx, 6);
    let service = place_service(svc, vip, &[]);
    let name = service["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (p1, p2) = (backend_ip(ctx, 1), backend_ip(ctx, 2));
    let subs = vec![
        ("<pod1 IP>".to_string(), p1.to_string()),
        ("<pod2 IP>".to_string(), p2.to_string()),
    ];
    let mut slices: Vec<Json> = Vec::new();
    let mut spec = Spec::default();
    let client = client_ip(ctx);
    spec.local.insert(client, Serve::default());
    for (i, s) in seq(b.raw.get("setup").and_then(|s| s.get("endpointSlices")))
        .iter()
        .enumerate()
    {
        let mut j = serde_json::to_value(s).unwrap_or(Json::Null);
        fill(&mut j, &subs);
        j["metadata"]["namespace"] = json!(super::world::POD_NS);
        j["metadata"]["name"] = json!(format!("{name}-{i}"));
        if let Some(m) = j["metadata"].as_object_mut() {
            m.remove("generateName");
        }
        j["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] =
            json!("sluice-conformance");
        for e in j["endpoints"].as_array().cloned().unwrap_or_default() {
            for a in e["addresses"].as_array().cloned().unwrap_or_default() {
                let Some(ip) = a.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
                    continue;
                };
                for p in j["ports"].as_array().cloned().unwrap_or_default() {
                    if let Some(port) = p["port"].as_u64() {
                        spec.local
                            .entry(ip)
                            .or_default()
                            .add(Protocol::Tcp, port as u16);
                    }
                }
            }
        }
        slices.push(j);
    }
    spec.docs.push(to_value(service.clone()));
    spec.docs.extend(slices.iter().cloned().map(to_value));
    // The expectations, placeholders filled the same way.
    let mut rows: Vec<(String, SocketAddrV4, SocketAddrV4)> = Vec::new();
    for (f, e) in seq(b.raw.get("action").and_then(|a| a.get("flows")))
        .iter()
        .zip(seq(b.raw.get("expect")))
    {
        let fname = text_of(f.get("name")).unwrap_or_default();
        let to = text_of(f.get("to")).unwrap_or_default();
        let port: Option<u16> = to.rsplit(':').next().and_then(|p| p.parse().ok());
        let mut out = serde_json::to_value(e.get("output")).unwrap_or(Json::Null);
        fill(&mut out, &subs);
        let want = out[0].as_str().and_then(super::cases::parse_addr);
        if let (Some(port), Some(want)) = (port, want) {
            rows.push((fname, SocketAddrV4::new(vip, port), want));
        }
    }
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("<pod1 IP> = {p1}, <pod2 IP> = {p2} (local pods); slices named {name}-N instead of generateName; ClusterIP {vip} assigned by the runner; the one-pod two-container variant is not run"));
        if rows.is_empty() {
            return Err(anyhow!("no flow/expectation pairs understood"));
        }
        for (fname, to, want) in &rows {
            let seen = sample(w, &Source::Pod(client), *to, Protocol::Tcp, 4, T).await?;
            r.flows.push(row(fname, &format!("pod {client}"), &to.to_string(), Protocol::Tcp, &want.to_string(), &seen, ok_from(&seen, &[*want]), vec![]));
        }
        Ok(())
    })
    .await
}

/// svc-040: ClusterIP → NodePort (TCP) → NodePort TCP+UDP on the same port.
pub async fn nodeport_tcp_udp(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(svc) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let vip = cluster_ip(ctx, 40);
    let (np_tcp, np_udp) = (30040u16, 30041u16);
    let mut full = place_service(svc, vip, &[np_tcp, np_udp]);
    let labels = json!({"app": "nodeport-update-service"});
    full["spec"]["selector"] = labels.clone();
    let ports: Vec<Json> = full["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (Some(tcp_port), Some(udp_port)) = (
        ports.iter().find(|p| p["protocol"] == "TCP").cloned(),
        ports.iter().find(|p| p["protocol"] == "UDP").cloned(),
    ) else {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "the Service lacks a TCP or a UDP port",
        );
    };
    let port = tcp_port["port"].as_u64().unwrap_or(80) as u16;
    let target = tcp_port["targetPort"].as_u64().unwrap_or(u64::from(port)) as u16;
    let client = client_ip(ctx);
    let pods = [backend_ip(ctx, 1), backend_ip(ctx, 2)];
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    for p in pods {
        let mut s = serve(Protocol::Tcp, target);
        s.add(Protocol::Udp, target);
        spec.local.insert(p, s);
    }
    let want_of = |_: Protocol| -> Vec<SocketAddrV4> {
        pods.iter().map(|p| SocketAddrV4::new(*p, target)).collect()
    };
    let primary = ctx.conv.primary_ip;
    let doc = |kind: &str, ports: Vec<Json>| -> Vec<serde_norway::Value> {
        let mut s = full.clone();
        s["spec"]["type"] = json!(kind);
        s["spec"]["ports"] = json!(ports);
        let mut d: Vec<serde_norway::Value> = pods
            .iter()
            .map(|p| pod_doc(*p, labels.clone(), json!([])))
            .collect();
        d.push(to_value(s));
        d
    };
    let mut tcp_cip = tcp_port.clone();
    if let Some(m) = tcp_cip.as_object_mut() {
        m.remove("nodePort");
    }
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("2 local backends selected by the runner's label; ClusterIP {vip} and NodePorts {np_tcp}/TCP, {np_udp}/UDP assigned by the runner (\"allocated\" upstream)"));
        let src = Source::Pod(client);
        let probe = async |w: &World, r: &mut BehaviourReport, step: &str, to: SocketAddrV4, p: Protocol| -> Result<()> {
            let seen = sample(w, &src, to, p, 3, T).await?;
            let want = want_of(p);
            r.flows.push(row(step, &format!("pod {client}"), &to.to_string(), p, &list(&want), &seen, ok_from(&seen, &want), vec![]));
            Ok(())
        };
        w.apply(&doc("ClusterIP", vec![tcp_cip.clone()])).await?;
        probe(w, r, "start: ClusterIP (TCP)", SocketAddrV4::new(vip, port), Protocol::Tcp).await?;
        w.apply(&doc("NodePort", vec![tcp_port.clone()])).await?;
        probe(w, r, "step 1: NodePort tcp-port, via ClusterIP", SocketAddrV4::new(vip, port), Protocol::Tcp).await?;
        probe(w, r, "step 1: NodePort tcp-port, via nodeIP:nodePort", SocketAddrV4::new(primary, np_tcp), Protocol::Tcp).await?;
        w.apply(&doc("NodePort", vec![tcp_port.clone(), udp_port.clone()])).await?;
        let programmed = w.services().await?;
        let nps: Vec<String> = programmed.iter().filter(|s| s.kind == "NodePort").map(|s| format!("{}/{}", s.port, s.protocol)).collect();
        let two = nps.contains(&format!("{np_tcp}/TCP")) && nps.contains(&format!("{np_udp}/UDP"));
        r.flows.push(fact("step 2: one NodePort per protocol", &format!("{np_tcp}/TCP and {np_udp}/UDP"), &nps.join(", "), two));
        probe(w, r, "step 2: TCP via ClusterIP", SocketAddrV4::new(vip, port), Protocol::Tcp).await?;
        probe(w, r, "step 2: UDP via ClusterIP", SocketAddrV4::new(vip, port), Protocol::Udp).await?;
        probe(w, r, "step 2: TCP via nodeIP:nodePort", SocketAddrV4::new(primary, np_tcp), Protocol::Tcp).await?;
        probe(w, r, "step 2: UDP via nodeIP:nodePort", SocketAddrV4::new(primary, np_udp), Protocol::Udp).await?;
        Ok(())
    })
    .await
}

fn sctp_module_loaded() -> bool {
    std::path::Path::new("/sys/module/sctp").exists()
}

/// svc-044: SCTP endpoints appear with the pod and go with it; SCTP is
/// DNATed; the kernel's sctp module is not loaded by any of it.
pub async fn sctp(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(svc) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let Some(port) = svc["spec"]["ports"][0]["port"].as_u64().map(|p| p as u16) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "the Service has no port");
    };
    let vip = cluster_ip(ctx, 44);
    let mut service = place_service(svc, vip, &[]);
    let labels = json!({"app": "sctp-endpoint-test"});
    service["spec"]["selector"] = labels.clone();
    let client = client_ip(ctx);
    let pod1 = backend_ip(ctx, 1);
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    let before = sctp_module_loaded();
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("pod1 = local pod {pod1} serving SCTP {port} (raw-socket responder); the runner's selector; ClusterIP {vip}"));
        let mine = |list: &[sluice_api::ServiceInfo]| -> Vec<String> {
            list.iter().filter(|s| s.ip == vip).flat_map(|s| s.backends.iter().map(|b| format!("{}:{}", b.ip, b.port))).collect()
        };
        w.apply(&[to_value(service.clone())]).await?;
        let e = mine(&w.services().await?);
        r.flows.push(fact("step 1: service created, no pod yet", "no endpoints", &format!("{e:?}"), e.is_empty()));
        w.add_local_pod(pod1, &serve(Protocol::Sctp, port)).await?;
        w.apply(&[to_value(service.clone()), pod_doc(pod1, labels.clone(), json!([{"containerPort": port, "protocol": "SCTP"}]))]).await?;
        let e = mine(&w.services().await?);
        let want = format!("{pod1}:{port}");
        r.flows.push(fact("step 1: pod1 created", &format!("endpoint {want}"), &format!("{e:?}"), e == vec![want.clone()]));
        let to = SocketAddrV4::new(vip, port);
        let seen = sample(w, &Source::Pod(client), to, Protocol::Sctp, 3, T).await?;
        let w1 = [SocketAddrV4::new(pod1, port)];
        r.flows.push(row("step 1: SCTP to the ClusterIP", &format!("pod {client}"), &to.to_string(), Protocol::Sctp, &want, &seen, ok_from(&seen, &w1), vec![]));
        w.apply(&[to_value(service.clone())]).await?;
        w.remove_local(pod1).await?;
        let e = mine(&w.services().await?);
        r.flows.push(fact("step 2: pod1 deleted", "no endpoints", &format!("{e:?}"), e.is_empty()));
        let after = sctp_module_loaded();
        r.flows.push(fact(
            "sctp kernel module not loaded by the service",
            &format!("loaded: {before} (as before)"),
            &format!("loaded: {after}"),
            after == before,
        ));
        Ok(())
    })
    .await
}

/// svc-031: the service-proxy-name label turns a Service off, live.
pub async fn proxy_name(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let (Some(disabled), Some(toggled)) = (file_service(b, 0), file_service(b, 1)) else {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "two Services expected in setup.services",
        );
    };
    let label_key = disabled["metadata"]["labels"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_default();
    let label_val = disabled["metadata"]["labels"][&label_key].clone();
    let d = place_service(disabled, cluster_ip(ctx, 31), &[]);
    let t = place_service(toggled, cluster_ip(ctx, 32), &[]);
    let target = d["spec"]["ports"][0]["targetPort"].as_u64().unwrap_or(80) as u16;
    let port = d["spec"]["ports"][0]["port"].as_u64().unwrap_or(80) as u16;
    let client = client_ip(ctx);
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    let mut pods: Vec<(Ipv4Addr, Json)> = Vec::new();
    for (k, s) in [&d, &t].iter().enumerate() {
        for i in 0..3u8 {
            let ip = backend_ip(ctx, k as u8 * 10 + i + 1);
            spec.local.insert(ip, serve(Protocol::Tcp, target));
            pods.push((ip, s["spec"]["selector"].clone()));
        }
    }
    let docs = |toggled: &Json| -> Vec<serde_norway::Value> {
        let mut v: Vec<serde_norway::Value> = pods
            .iter()
            .map(|(ip, l)| pod_doc(*ip, l.clone(), json!([])))
            .collect();
        v.push(to_value(d.clone()));
        v.push(to_value(toggled.clone()));
        v
    };
    let t_pods: Vec<SocketAddrV4> = pods[3..]
        .iter()
        .map(|(ip, _)| SocketAddrV4::new(*ip, target))
        .collect();
    let primary = ctx.conv.primary_ip;
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push("3 local pods per Service; ClusterIPs assigned by the runner; probed from a pod and from the node".into());
        let check = async |w: &World, r: &mut BehaviourReport, step: &str| -> Result<()> {
            for c in [Source::Pod(client), Source::Node(primary)] {
                for (name, vip, up) in [("service-proxy-toggled", cluster_ip(ctx, 32), step != "step 2"), ("service-proxy-disabled", cluster_ip(ctx, 31), false)] {
                    let to = SocketAddrV4::new(vip, port);
                    let seen = if up {
                        sample_until_all(w, &c, to, Protocol::Tcp, &t_pods, 9, 3).await?
                    } else {
                        sample(w, &c, to, Protocol::Tcp, 1, T).await?
                    };
                    let got = backends(&seen);
                    let ok = if up { t_pods.iter().all(|p| got.contains(p)) } else { !answered(&seen) };
                    r.flows.push(row(&format!("{step}: {name}"), &c.to_string(), &to.to_string(), Protocol::Tcp,
                        if up { "all 3 backends answer" } else { "does not answer" }, &seen, ok, vec![]));
                }
            }
            Ok(())
        };
        w.apply(&docs(&t)).await?;
        check(w, r, "step 1").await?;
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][&label_key] = label_val.clone();
        w.apply(&docs(&labelled)).await?;
        check(w, r, "step 2").await?;
        let mut bare = t.clone();
        if let Some(m) = bare["metadata"].as_object_mut() {
            m.remove("labels");
        }
        w.apply(&docs(&bare)).await?;
        check(w, r, "step 3").await?;
        Ok(())
    })
    .await
}

/// svc-041: endpoints that are the node itself (hostNetwork pods).
pub async fn host_network(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    // netexec's defaults: http 8080, udp 8081; the runner's NodePorts.
    let (http, udp, np_http, np_udp) = (8080u16, 8081u16, 30043u16, 30044u16);
    let vip = cluster_ip(ctx, 41);
    let primary = ctx.conv.primary_ip;
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": super::world::POD_NS, "name": "hostnet"},
        "spec": {"type": "NodePort", "clusterIP": vip.to_string(), "ports": [
            {"name": "http", "port": 80, "targetPort": http, "protocol": "TCP", "nodePort": np_http},
            {"name": "udp", "port": 90, "targetPort": udp, "protocol": "UDP", "nodePort": np_udp}]}});
    let slice = slice_doc(
        "hostnet",
        "hostnet-1",
        &[(primary, json!({"ready": true}))],
        json!([{"name": "http", "port": http, "protocol": "TCP"}, {"name": "udp", "port": udp, "protocol": "UDP"}]),
    );
    let client = client_ip(ctx);
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.docs.push(to_value(service));
    spec.docs.push(slice);
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("the endpoint is this node ({primary}) with whoami servers in the node's namespace on {http}/TCP and {udp}/UDP (netexec's ports); Service, ClusterIP and NodePorts written by the runner; only this node"));
        let mut s = Serve::default();
        s.add(Protocol::Tcp, http);
        s.add(Protocol::Udp, udp);
        w.serve_on_node(&s).await?;
        let rows = [
            ("pod to ClusterIP:http", Source::Pod(client), SocketAddrV4::new(vip, 80), Protocol::Tcp, http),
            ("pod to ClusterIP:udp", Source::Pod(client), SocketAddrV4::new(vip, 90), Protocol::Udp, udp),
            ("node to ClusterIP:http", Source::Node(primary), SocketAddrV4::new(vip, 80), Protocol::Tcp, http),
            ("node to ClusterIP:udp", Source::Node(primary), SocketAddrV4::new(vip, 90), Protocol::Udp, udp),
            ("node to nodeIP:nodePort http", Source::Node(primary), SocketAddrV4::new(primary, np_http), Protocol::Tcp, http),
            ("node to nodeIP:nodePort udp", Source::Node(primary), SocketAddrV4::new(primary, np_udp), Protocol::Udp, udp),
        ];
        for (name, src, to, p, tp) in rows {
            let seen = sample(w, &src, to, p, 2, T).await?;
            let want = [SocketAddrV4::new(primary, tp)];
            r.flows.push(row(name, &src.to_string(), &to.to_string(), p, &list(&want), &seen, ok_from(&seen, &want), vec![]));
        }
        Ok(())
    })
    .await
}
