//! Scenario functions for e2e behaviours written for two nodes with an
//! agent each: node0 is this node, node1 the sandbox's node2 running its
//! own agent (its clients are CNI pods or processes there, proxied by
//! node2's datapath). Also svc-015 (health check), svc-037 (NodePort on
//! loopback), svc-039 and svc-042.

use super::super::cases::Protocol;
use super::cases::{seq, text_of, Behaviour, Source};
use super::e2e::with_world;
use super::expect::Observed;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{Serve, Spec, N2_IP};
use super::Ctx;
use anyhow::Result;
use serde_json::{json, Value as Json};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const T: Duration = Duration::from_millis(1500);

fn serve(p: Protocol, port: u16) -> Serve {
    let mut s = Serve::default();
    s.add(p, port);
    s
}

fn all_from(seen: &[Observed], want: &[SocketAddrV4]) -> bool {
    !seen.is_empty()
        && seen
            .iter()
            .all(|o| matches!(o, Observed::Answer { backend, .. } if want.contains(backend)))
}

/// The EndpointSlice the EndpointSlice controller would publish for
/// `service`'s first port: `endpoints` (address, conditions, node name).
fn slice_for(service: &Json, endpoints: &[(Ipv4Addr, Json, &str)]) -> serde_norway::Value {
    let name = service_name(service);
    let (_, target) = first_port(service);
    let p = &service["spec"]["ports"][0];
    let eps: Vec<(Ipv4Addr, Json)> = endpoints
        .iter()
        .map(|(ip, c, _)| (*ip, c.clone()))
        .collect();
    let s = slice_doc(
        &name,
        &format!("{name}-1"),
        &eps,
        json!([{"name": p["name"].clone(), "port": target, "protocol": p["protocol"].as_str().unwrap_or("TCP")}]),
    );
    let mut j = serde_json::to_value(&s).unwrap_or(Json::Null);
    for (i, (_, _, node)) in endpoints.iter().enumerate() {
        j["endpoints"][i]["nodeName"] = json!(node);
    }
    to_value(j)
}

/// What the two-node scenarios adapt, for the report.
const TWO_NODES: &str = "node0 = this node, node1 = the sandbox's node2 running its own agent (node name <run id>-n2, pods through its CNI); \
    the Service's selector is replaced by the EndpointSlice the EndpointSlice controller would publish (with nodeName), because each agent derives selector endpoints only from its own CNI pods";

fn peers(seen: &[Observed]) -> Vec<String> {
    seen.iter()
        .filter_map(|o| match o {
            Observed::Answer { peer, .. } => Some(peer.ip().to_string()),
            _ => None,
        })
        .collect()
}

/// svc-009: the backend sees exactly the client pod's address, from a
/// pause pod on node0 and one on node1 (node2, through its own agent).
pub async fn source_ip(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let vip = cluster_ip(ctx, 9);
    let Some(service) = sliced_service(b, vip, &[]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let (port, target) = first_port(&service);
    let (client, echo, client1) = (client_ip(ctx), backend_ip(ctx, 1), node2_pod_ip(ctx, 2));
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.local.insert(echo, serve(Protocol::Tcp, target));
    spec.node2.insert(client1, Serve::default());
    spec.docs.push(to_value(service.clone()));
    spec.docs.push(slice_for(
        &service,
        &[(echo, json!({"ready": true}), ctx.conv.node_name.as_str())],
    ));
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(TWO_NODES.into());
        r.notes.push(format!(
            "echo-sourceip = pod {echo} on node0; pause pod on node0 = pod {client}; pause pod on node1 = pod {client1} on node2"
        ));
        let to = SocketAddrV4::new(vip, port);
        for (name, c) in [("pause pod on node0", client), ("pause pod on node1", client1)] {
            let seen = sample(w, &Source::Pod(c), to, Protocol::Tcp, 3, T).await?;
            let ok = !seen.is_empty()
                && seen
                    .iter()
                    .all(|o| matches!(o, Observed::Answer { peer, .. } if *peer.ip() == c));
            r.flows.push(row(
                name,
                &format!("pod {c}"),
                &to.to_string(),
                Protocol::Tcp,
                &format!("echo-sourceip sees exactly {c}"),
                &seen,
                ok,
                vec![format!("client addresses seen: {:?}", peers(&seen))],
            ));
        }
        Ok(())
    })
    .await
}

/// svc-021: iTP Local, clients (pod and hostNetwork) on node0 and on
/// node1 (node2 with its own agent), pod and hostNetwork backends on node0.
pub async fn itp_local(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let vip = cluster_ip(ctx, 21);
    let Some(service) = sliced_service(b, vip, &[]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let (port, target) = first_port(&service);
    let (client, echo, client1) = (client_ip(ctx), backend_ip(ctx, 1), node2_pod_ip(ctx, 2));
    let primary = ctx.conv.primary_ip;
    let node0 = ctx.conv.node_name.clone();
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.local.insert(echo, serve(Protocol::Tcp, target));
    spec.node2.insert(client1, Serve::default());
    spec.docs.push(to_value(service.clone()));
    spec.docs.push(slice_for(
        &service,
        &[(echo, json!({"ready": true}), node0.as_str())],
    ));
    // Variant 3: the backend is the node itself on 10180.
    let host_port = 10180u16;
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(TWO_NODES.into());
        r.notes.push(format!("echo-hostname-0 = pod {echo} on node0; pause-pod-0 = pod {client} on node0; pause-pod-1 = pod {client1} on node2; hostNetwork clients: node0 = {primary}, node1 = node2's {N2_IP}"));
        let to = SocketAddrV4::new(vip, port);
        let want = [SocketAddrV4::new(echo, target)];
        let node1_clients = [("pod", Source::Pod(client1)), ("hostNetwork", Source::Node(N2_IP))];
        for (name, src) in [("same-node client (pod)", Source::Pod(client)), ("variant 2: same-node hostNetwork client", Source::Node(primary))] {
            let seen = sample(w, &src, to, Protocol::Tcp, 5, T).await?;
            r.flows.push(row(name, &src.to_string(), &to.to_string(), Protocol::Tcp, "echo-hostname-0", &seen, all_from(&seen, &want), vec![]));
        }
        for (kind, src) in &node1_clients {
            let name = if *kind == "pod" { "other-node client (pod)".to_string() } else { "variant 2: other-node hostNetwork client".to_string() };
            let seen = sample(w, src, to, Protocol::Tcp, 5, T).await?;
            r.flows.push(row(&name, &src.to_string(), &to.to_string(), Protocol::Tcp, "connection error (no local endpoint on node1)", &seen, !answered(&seen), vec![]));
        }
        // Variant 3.
        let mut hs = service.clone();
        hs["spec"]["ports"][0]["targetPort"] = json!(host_port);
        w.serve_on_node(&serve(Protocol::Tcp, host_port)).await?;
        w.apply(&[to_value(hs.clone()), slice_for(&hs, &[(primary, json!({"ready": true}), node0.as_str())])]).await?;
        let want = [SocketAddrV4::new(primary, host_port)];
        for (name, src) in [("variant 3 (hostNetwork backend): pod client on node0", Source::Pod(client)), ("variant 3: hostNetwork client on node0", Source::Node(primary))] {
            let seen = sample(w, &src, to, Protocol::Tcp, 3, T).await?;
            r.flows.push(row(name, &src.to_string(), &to.to_string(), Protocol::Tcp, &format!("node0 ({primary}:{host_port})"), &seen, all_from(&seen, &want), vec![]));
        }
        for (kind, src) in &node1_clients {
            let seen = sample(w, src, to, Protocol::Tcp, 3, T).await?;
            r.flows.push(row(&format!("variant 3: {kind} client on node1"), &src.to_string(), &to.to_string(), Protocol::Tcp, "connection error (no local endpoint on node1)", &seen, !answered(&seen), vec![]));
        }
        Ok(())
    })
    .await
}

/// A minimal HTTP GET from inside a namespace: (status, body).
fn http_get_in(netns: std::path::PathBuf, to: SocketAddrV4) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let r = sluice_testbed::run_in_netns(&netns, move || -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&to.into(), T)?;
        s.set_read_timeout(Some(T))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: hc\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, text))
    })?;
    Ok(r?)
}

/// svc-015: the health-check node port says 200 with a local ready
/// endpoint and 503 when it only terminates (still serving NodePort).
pub async fn health_check(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let vip = cluster_ip(ctx, 15);
    let (hc_port, node_port) = (30015u16, 30016u16);
    let Some(mut service) = sliced_service(b, vip, &[node_port]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    service["spec"]["healthCheckNodePort"] = json!(hc_port);
    let name = service_name(&service);
    let (_, target) = first_port(&service);
    let (client, echo) = (client_ip(ctx), backend_ip(ctx, 1));
    let primary = ctx.conv.primary_ip;
    let slice = |cond: Json| {
        let s = slice_doc(
            &name,
            &format!("{name}-1"),
            &[(echo, cond)],
            json!([{"name": service["spec"]["ports"][0]["name"].clone(), "port": target, "protocol": "TCP"}]),
        );
        let mut j = serde_json::to_value(&s).unwrap_or(Json::Null);
        j["endpoints"][0]["nodeName"] = json!(ctx.conv.node_name);
        to_value(j)
    };
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.local.insert(echo, serve(Protocol::Tcp, target));
    spec.docs.push(to_value(service.clone()));
    spec.docs.push(slice(json!({"ready": true})));
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!(
            "echo-hostname-0 = local pod {echo}, pause-pod-0 = local pod {client}; healthCheckNodePort {hc_port} and nodePort {node_port} assigned by the runner; \
             the pod's deletion is played by the runner as the EndpointSlice controller would: ready=false, serving=true, terminating=true"
        ));
        let netns = w.pods.get(&client).map(|p| p.netns.clone()).ok_or_else(|| anyhow::anyhow!("no client pod"))?;
        let hc = SocketAddrV4::new(primary, hc_port);
        let get = |want: u16| {
            let netns = netns.clone();
            async move {
                let got = tokio::task::spawn_blocking(move || http_get_in(netns, hc)).await?;
                anyhow::Ok((got.as_ref().map(|(s, _)| *s == want).unwrap_or(false), match got {
                    Ok((s, _)) => format!("HTTP {s}"),
                    Err(e) => format!("error: {e:#}"),
                }))
            }
        };
        let (ok, seen) = get(200).await?;
        r.flows.push(fact("step 1: GET /healthz while the backend is ready", "HTTP 200", &seen, ok));
        w.apply(&[to_value(service.clone()), slice(json!({"ready": false, "serving": true, "terminating": true}))]).await?;
        let (ok, seen) = get(503).await?;
        r.flows.push(fact("step 3: GET /healthz while it only terminates", "HTTP 503", &seen, ok));
        let to = SocketAddrV4::new(primary, node_port);
        let s = sample(w, &Source::Pod(client), to, Protocol::Tcp, 2, T).await?;
        let want = [SocketAddrV4::new(echo, target)];
        r.flows.push(row("step 3: NodePort still answered", &format!("pod {client}"), &to.to_string(), Protocol::Tcp, "echo-hostname-0 (serving terminating fallback)", &s, all_from(&s, &want), vec![]));
        Ok(())
    })
    .await
}

/// svc-027: a terminating, still serving only backend keeps receiving
/// traffic per traffic policy, from pause-pod-0 on node0 and pause-pod-1
/// on node1 (node2, through its own agent).
pub async fn terminating(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let vip = cluster_ip(ctx, 27);
    let node_port = 30027u16;
    let Some(mut base) = sliced_service(b, vip, &[]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    if let Some(m) = base["spec"].as_object_mut() {
        for k in ["type", "internalTrafficPolicy", "externalTrafficPolicy"] {
            m.remove(k);
        }
    }
    let (port, target) = first_port(&base);
    let (client, echo, client1) = (client_ip(ctx), backend_ip(ctx, 1), node2_pod_ip(ctx, 2));
    let primary = ctx.conv.primary_ip;
    let slice = slice_for(
        &base,
        &[(
            echo,
            json!({"ready": false, "serving": true, "terminating": true}),
            ctx.conv.node_name.as_str(),
        )],
    );
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.local.insert(echo, serve(Protocol::Tcp, target));
    spec.node2.insert(client1, Serve::default());
    let cases = seq(b.raw.get("expect")).to_vec();
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(TWO_NODES.into());
        r.notes.push(format!("echo-hostname-0 = pod {echo} on node0, published serving+terminating (as the EndpointSlice controller does for a deleted pod in its grace period); pause-pod-0 = pod {client} on node0; pause-pod-1 = pod {client1} on node2; node0 InternalIP = {primary}, node1 InternalIP = {N2_IP}; nodePort {node_port} by the runner; one round instead of 5 rounds 5 s apart"));
        for c in &cases {
            let title = text_of(c.get("case")).unwrap_or_default();
            let mut s = base.clone();
            for part in title.split(',').map(str::trim) {
                let mut words = part.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("NodePort"), _) => {
                        s["spec"]["type"] = json!("NodePort");
                        s["spec"]["ports"][0]["nodePort"] = json!(node_port);
                    }
                    (Some("iTP"), Some(v)) => s["spec"]["internalTrafficPolicy"] = json!(v),
                    (Some("eTP"), Some(v)) => s["spec"]["externalTrafficPolicy"] = json!(v),
                    _ => {}
                }
            }
            w.apply(&[to_value(s), slice.clone()]).await?;
            for p in seq(c.get("probes")) {
                let from = text_of(p.get("from")).unwrap_or_default();
                let to_s = text_of(p.get("to")).unwrap_or_default();
                let label = format!("{title}: {from} → {to_s}");
                let src = match from.as_str() {
                    "pause-pod-0" => Source::Pod(client),
                    "pause-pod-1" => Source::Pod(client1),
                    other => Source::Unsupported(format!("no client {other:?} in this scenario")),
                };
                let to = if to_s.starts_with("ClusterIP") {
                    Some(SocketAddrV4::new(vip, port))
                } else if to_s.starts_with("node0") {
                    Some(SocketAddrV4::new(primary, node_port))
                } else if to_s.starts_with("node1") {
                    Some(SocketAddrV4::new(N2_IP, node_port))
                } else {
                    None
                };
                let (Some(to), Some(_)) = (to, src.ip()) else {
                    r.flows.push(super::e2e::unsupported_row(&label, &format!("cannot place {from:?} → {to_s:?}")));
                    continue;
                };
                let seen = sample(w, &src, to, Protocol::Tcp, 3, T).await?;
                let want = [SocketAddrV4::new(echo, target)];
                let (expected, ok) = match p.get("output") {
                    Some(serde_norway::Value::Sequence(_)) => ("echo-hostname-0".to_string(), all_from(&seen, &want)),
                    _ => ("connection error".to_string(), !answered(&seen)),
                };
                r.flows.push(row(&label, &src.to_string(), &to.to_string(), Protocol::Tcp, &expected, &seen, ok, vec![]));
            }
        }
        Ok(())
    })
    .await
}

/// svc-037: a node process to 127.0.0.1:<nodePort>.
pub async fn localhost_nodeport(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut notes = Vec::new();
    let (services, slices) = match (
        super::table::setup_list(b, "services", ctx.all, &mut notes),
        super::table::setup_list(b, "endpointSlices", ctx.all, &mut notes),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return BehaviourReport::unsupported(&b.id, &b.title, e),
    };
    let flow = seq(b.raw.get("action").and_then(|a| a.get("flows")))
        .first()
        .cloned();
    let Some(to) = flow
        .as_ref()
        .and_then(|f| text_of(f.get("to")).ok())
        .and_then(|t| super::cases::parse_addr(&t))
    else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no flow destination");
    };
    let mut spec = Spec::default();
    spec.docs.extend(services.iter().cloned());
    spec.docs.extend(slices.iter().cloned());
    super::table::pods_of_slices(&slices, ctx.conv, &mut spec);
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push("Sluice's choice, as nftables kube-proxy (and iptables with localhostNodePorts=false): NodePorts are not served on loopback addresses; the flow checks exactly that".into());
        let src = Source::Node(*to.ip());
        let seen = sample(w, &src, to, Protocol::Tcp, 1, T).await?;
        r.flows.push(row("node to localhost nodePort", "process on the node (127.0.0.1)", &to.to_string(), Protocol::Tcp,
            "not served (no backend answers)", &seen, !answered(&seen), vec![]));
        Ok(())
    })
    .await
}

/// svc-039: two NodePort Services with the same selector, probed from an
/// endpoint pod; deleting one leaves the other working.
pub async fn same_selector(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let (http, np1, np2) = (8080u16, 30391u16, 30392u16);
    let labels = json!({"app": "netexec"});
    let svc = |name: &str, n: u8, np: u16| {
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": super::world::POD_NS, "name": name},
        "spec": {"type": "NodePort", "clusterIP": cluster_ip(ctx, n).to_string(), "selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": http, "protocol": "TCP", "nodePort": np}]}})
    };
    let eps = [backend_ip(ctx, 1), backend_ip(ctx, 2)];
    let mut spec = Spec::default();
    for e in eps {
        spec.local.insert(e, serve(Protocol::Tcp, http));
    }
    let pods: Vec<serde_norway::Value> = eps
        .iter()
        .map(|e| pod_doc(*e, labels.clone(), json!([])))
        .collect();
    let primary = ctx.conv.primary_ip;
    let want: Vec<SocketAddrV4> = eps.iter().map(|e| SocketAddrV4::new(*e, http)).collect();
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("endpoint pods {} and {} (local, netexec's http port {http}); svc1/svc2 NodePorts {np1}/{np2} and ClusterIPs by the runner; probed from endpoint pod 0 (answers may come from itself: hairpin)", eps[0], eps[1]));
        let mut docs = pods.clone();
        docs.push(to_value(svc("svc1", 39, np1)));
        docs.push(to_value(svc("svc2", 40, np2)));
        w.apply(&docs).await?;
        let src = Source::Pod(eps[0]);
        let targets = |with_svc1: bool| {
            let mut t = vec![];
            if with_svc1 {
                t.push(("svc1 ClusterIP:http", SocketAddrV4::new(cluster_ip(ctx, 39), 80)));
                t.push(("nodeIP:svc1 nodePort", SocketAddrV4::new(primary, np1)));
            }
            t.push(("svc2 ClusterIP:http", SocketAddrV4::new(cluster_ip(ctx, 40), 80)));
            t.push(("nodeIP:svc2 nodePort", SocketAddrV4::new(primary, np2)));
            t
        };
        for (name, to) in targets(true) {
            let seen = sample(w, &src, to, Protocol::Tcp, 6, T).await?;
            r.flows.push(row(name, &format!("endpoint pod {}", eps[0]), &to.to_string(), Protocol::Tcp, "an endpoint answers", &seen, all_from(&seen, &want), vec![]));
        }
        let mut docs = pods.clone();
        docs.push(to_value(svc("svc2", 40, np2)));
        w.apply(&docs).await?;
        for (name, to) in targets(false) {
            let seen = sample(w, &src, to, Protocol::Tcp, 6, T).await?;
            r.flows.push(row(&format!("after svc1 deleted: {name}"), &format!("endpoint pod {}", eps[0]), &to.to_string(), Protocol::Tcp, "an endpoint answers", &seen, all_from(&seen, &want), vec![]));
        }
        Ok(())
    })
    .await
}

/// svc-042: pod / node / endpoint clients × ClusterIP / NodePort ×
/// http, udp, sctp must reach every endpoint (local and on node2).
pub async fn matrix(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    // netexec: http 8080, udp 8081; sctp 5060 (the e2e's sctp port).
    let ports = [
        (Protocol::Tcp, 80u16, 8080u16, 30421u16),
        (Protocol::Udp, 90, 8081, 30422),
        (Protocol::Sctp, 5060, 5060, 30423),
    ];
    let vip = cluster_ip(ctx, 42);
    let (e0, e1, remote) = (backend_ip(ctx, 1), backend_ip(ctx, 2), backend_ip(ctx, 100));
    let client = client_ip(ctx);
    let primary = ctx.conv.primary_ip;
    let mut all = Serve::default();
    for (p, _, t, _) in ports {
        all.add(p, t);
    }
    let port_list: Vec<Json> = ports.iter().map(|(p, port, t, np)| json!({"name": p.lower(), "port": port, "targetPort": t, "protocol": p.as_str(), "nodePort": np})).collect();
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": super::world::POD_NS, "name": "netexec"},
        "spec": {"type": "NodePort", "clusterIP": vip.to_string(), "ports": port_list}});
    let slice_ports: Vec<Json> = ports
        .iter()
        .map(|(p, _, t, _)| json!({"name": p.lower(), "port": t, "protocol": p.as_str()}))
        .collect();
    let mut slice = serde_json::to_value(slice_doc(
        "netexec",
        "netexec-1",
        &[
            (e0, json!({"ready": true})),
            (e1, json!({"ready": true})),
            (remote, json!({"ready": true})),
        ],
        json!(slice_ports),
    ))
    .unwrap_or(Json::Null);
    slice["endpoints"][0]["nodeName"] = json!(ctx.conv.node_name);
    slice["endpoints"][1]["nodeName"] = json!(ctx.conv.node_name);
    slice["endpoints"][2]["nodeName"] = json!("node2");
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    spec.local.insert(e0, all.clone());
    spec.local.insert(e1, all.clone());
    spec.remote.insert(remote, all);
    let service2 = service.clone();
    spec.docs.push(to_value(service));
    spec.docs.push(to_value(slice));
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!("endpoints {e0}, {e1} (this node) and {remote} (node2); test pod {client}; endpoint pod {e0}; Service and NodePorts written by the runner; node clients probe http and udp only, as upstream"));
        let clients = [("test pod", Source::Pod(client)), ("node", Source::Node(primary)), ("endpoint pod", Source::Pod(e0))];
        let mut set = tokio::task::JoinSet::new();
        let mut meta = Vec::new();
        for (cname, src) in &clients {
            for (p, port, t, np) in ports {
                if *cname == "node" && p == Protocol::Sctp {
                    continue;
                }
                for (tname, to) in [("ClusterIP", SocketAddrV4::new(vip, port)), ("nodeIP:nodePort", SocketAddrV4::new(primary, np))] {
                    meta.push((format!("{cname} → {tname} {}", p.as_str()), src.to_string(), to, p, t, src.clone()));
                }
            }
        }
        let mut seen: Vec<Vec<Observed>> = vec![Vec::new(); meta.len()];
        let want_of = |t: u16| -> Vec<SocketAddrV4> { [e0, e1, remote].iter().map(|ip| SocketAddrV4::new(*ip, t)).collect() };
        // Rounds of 9 attempts per cell, all cells at once, until every
        // cell saw every endpoint (or failed), at most 3 rounds.
        for _ in 0..3 {
            let todo: Vec<usize> = (0..meta.len())
                .filter(|&i| {
                    let got = backends(&seen[i]);
                    let failed = seen[i].iter().any(|o| !matches!(o, Observed::Answer { .. }));
                    !failed && !want_of(meta[i].4).iter().all(|b| got.contains(b))
                })
                .collect();
            if todo.is_empty() {
                break;
            }
            for &idx in &todo {
                let (_, _, to, p, _, src) = &meta[idx];
                for _ in 0..9 {
                    let job = w.job(src, *to, *p, 1, T, 0)?;
                    set.spawn_blocking(move || (idx, job.run()));
                }
            }
            while let Some(j) = set.join_next().await {
                let (i, out) = j?;
                seen[i].extend(out?.iter().map(super::expect::classify));
            }
        }
        for ((name, from, to, p, t, _), s) in meta.iter().zip(&seen) {
            let want = want_of(*t);
            let got = backends(s);
            let ok = want.iter().all(|b| got.contains(b)) && all_from(s, &want);
            r.flows.push(row(name, from, &to.to_string(), *p, "every endpoint answers at least once (up to 27 tries)", s, ok, vec![]));
        }
        // "http request body of 2000 bytes and a UDP datagram of 2000
        // bytes are proxied intact": the backend reports what it received.
        for (p, port) in [(Protocol::Tcp, 80u16), (Protocol::Udp, 90)] {
            let to = SocketAddrV4::new(vip, port);
            let mut job = w.job(&Source::Pod(client), to, p, 3, T, 0)?;
            job.payload = 2000;
            let outs = tokio::task::spawn_blocking(move || job.run()).await??;
            let sizes: Vec<Option<usize>> = outs
                .iter()
                .map(|o| o.answer.as_deref().and_then(sluice_testbed::whoami::received))
                .collect();
            let seen: Vec<Observed> = outs.iter().map(super::expect::classify).collect();
            let ok = !sizes.is_empty() && sizes.iter().all(|n| *n == Some(2000));
            r.flows.push(row(&format!("test pod → ClusterIP {}: 2000-byte request", p.as_str()), &format!("pod {client}"), &to.to_string(), p,
                "every backend answer reports 2000 bytes received", &seen, ok, vec![format!("received: {sizes:?}")]));
        }
        // "after deleting one endpoint pod (replaced by its controller) the
        // service recovers and reaches the new set".
        let e2 = backend_ip(ctx, 3);
        let mut s2 = Serve::default();
        for (p, _, t, _) in ports {
            s2.add(p, t);
        }
        w.add_local_pod(e2, &s2).await?;
        let mut slice2 = serde_json::to_value(slice_doc("netexec", "netexec-1",
            &[(e0, json!({"ready": true})), (e2, json!({"ready": true})), (remote, json!({"ready": true}))], json!(slice_ports))).unwrap_or(Json::Null);
        slice2["endpoints"][0]["nodeName"] = json!(ctx.conv.node_name);
        slice2["endpoints"][1]["nodeName"] = json!(ctx.conv.node_name);
        slice2["endpoints"][2]["nodeName"] = json!("node2");
        w.apply(&[to_value(service2.clone()), to_value(slice2)]).await?;
        w.remove_local(e1).await?;
        let to = SocketAddrV4::new(vip, 80);
        let want: Vec<SocketAddrV4> = [e0, e2, remote].iter().map(|ip| SocketAddrV4::new(*ip, 8080)).collect();
        let seen = sample_until_all(w, &Source::Pod(client), to, Protocol::Tcp, &want, 9, 3).await?;
        let got = backends(&seen);
        r.flows.push(row(&format!("endpoint pod {e1} deleted, {e2} in its place"), &format!("pod {client}"), &to.to_string(), Protocol::Tcp,
            "every endpoint of the new set answers, never the deleted one", &seen, want.iter().all(|b| got.contains(b)) && all_from(&seen, &want), vec![]));
        Ok(())
    })
    .await
}
