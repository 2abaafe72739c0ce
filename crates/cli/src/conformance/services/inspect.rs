//! Behaviours whose action is "sync the proxy and inspect what it
//! programs" (svc-029, svc-030, svc-043): the agent's own service list
//! (`GET /v1/services`, what the reconciler wrote into the maps) is the
//! observation, plus any probe the file names.

use super::cases::{self, seq, text_of, Behaviour, Expect, Flow, Output, Source, DEFAULT_POD};
use super::flows::{self, Planned};
use super::report::{BehaviourReport, FlowReport, Verdict};
use super::table::{self, pods_of_slices};
use super::world::{Spec, World};
use super::Ctx;
use serde_norway::Value;
use std::net::{Ipv4Addr, SocketAddrV4};

fn row(
    name: &str,
    expected: String,
    observed: Vec<String>,
    ok: bool,
    notes: Vec<String>,
) -> FlowReport {
    FlowReport {
        name: name.into(),
        from: "agent".into(),
        to: "GET /v1/services".into(),
        protocol: String::new(),
        expected,
        observed,
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        notes,
    }
}

fn name_of(s: &Value) -> String {
    let m = s.get("metadata");
    format!(
        "{}/{}",
        text_of(m.and_then(|m| m.get("namespace"))).unwrap_or_else(|_| "default".into()),
        text_of(m.and_then(|m| m.get("name"))).unwrap_or_default()
    )
}

/// svc-029 / svc-030: the setup's Services must program nothing.
pub async fn ignored(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    let services = seq(b.raw.get("setup").and_then(|s| s.get("services"))).to_vec();
    let names: Vec<String> = services.iter().map(name_of).collect();
    let mut spec = Spec {
        docs: services.clone(),
        ..Default::default()
    };
    // svc-030's "probe 172.30.55.4:1235/UDP": the ClusterIP and port the
    // Service carries, from the unit tests' pod.
    let mut probes = Vec::new();
    if text_of(b.raw.get("action").and_then(|a| a.get("do")))
        .unwrap_or_default()
        .contains("probe")
    {
        for s in &services {
            let sp = s.get("spec");
            let Some(ip) = sp
                .and_then(|sp| sp.get("clusterIP"))
                .and_then(|v| cases::ip(v).ok())
            else {
                continue;
            };
            for p in seq(sp.and_then(|sp| sp.get("ports"))) {
                let Some(port) = p.get("port").and_then(Value::as_u64) else {
                    continue;
                };
                let Ok(protocol) = cases::protocol(p.get("protocol")) else {
                    continue;
                };
                probes.push(Planned {
                    flow: Flow {
                        name: format!("pod to {} ClusterIP", name_of(s)),
                        from: format!("pod {DEFAULT_POD}"),
                        source: Source::Pod(DEFAULT_POD),
                        to: SocketAddrV4::new(ip, port as u16),
                        protocol,
                    },
                    expect: Ok(Expect {
                        output: Output::None,
                        masq: None,
                    }),
                    note: Some("\"nothing handles it\"".into()),
                });
                spec.local.entry(DEFAULT_POD).or_default();
            }
        }
    }
    let w = match World::build(ctx.conv, ctx.path, &spec).await {
        Ok(w) => w,
        Err(e) => {
            r.error(&e);
            r.decide();
            return r;
        }
    };
    let observed = async {
        let list = w.services().await?;
        let status: sluice_api::Status = w.api.get("/v1/status").await?;
        anyhow::Ok((list, status.health_check_ports))
    };
    match observed.await {
        Err(e) => r.error(&e),
        Ok((list, health_ports)) => {
            let programmed: Vec<String> = list
                .iter()
                .filter(|s| names.contains(&s.service))
                .map(|s| format!("{} {}:{}/{}", s.service, s.ip, s.port, s.protocol))
                .collect();
            for check in seq(b.raw.get("expect")) {
                let what = text_of(check.get("check")).unwrap_or_default();
                let want = check.get("value").and_then(Value::as_u64);
                let (n, observed): (usize, Vec<String>) = if what.contains("health") {
                    (
                        health_ports.len(),
                        health_ports.iter().map(|p| format!("port {p}")).collect(),
                    )
                } else {
                    (programmed.len(), programmed.clone())
                };
                r.flows.push(row(
                    &what,
                    format!(
                        "{what} = {}",
                        want.map(|v| v.to_string()).unwrap_or("?".into())
                    ),
                    if observed.is_empty() {
                        vec!["none".into()]
                    } else {
                        observed
                    },
                    want == Some(n as u64),
                    Vec::new(),
                ));
            }
        }
    }
    r.flows.extend(flows::run(&w, &probes).await);
    if let Err(e) = w.teardown() {
        r.error(&e);
    }
    r.decide();
    r
}

/// svc-043: every address of the setup, written with leading zeros, must
/// be programmed as its decimal value.
pub async fn tolerant(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    let mut notes = Vec::new();
    let (services, slices) = match (
        table::setup_list(b, "services", ctx.all, &mut notes),
        table::setup_list(b, "endpointSlices", ctx.all, &mut notes),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return BehaviourReport::unsupported(&b.id, &b.title, e),
    };
    let mut spec = Spec::default();
    spec.docs.extend(services.iter().cloned());
    spec.docs.extend(slices.iter().cloned());
    pods_of_slices(&slices, ctx.conv, &mut spec);
    // The expected frontends and backends, parsed the tolerant way.
    let frontends: Vec<Ipv4Addr> = table::service_addresses(&services);
    let mut backends: Vec<SocketAddrV4> = Vec::new();
    for s in &slices {
        let ports: Vec<u16> = seq(s.get("ports"))
            .iter()
            .filter_map(|p| p.get("port").and_then(Value::as_u64).map(|p| p as u16))
            .collect();
        for e in seq(s.get("endpoints")) {
            for a in seq(e.get("addresses")) {
                if let Ok(ip) = cases::ip(a) {
                    backends.extend(ports.iter().map(|p| SocketAddrV4::new(ip, *p)));
                }
            }
        }
    }
    for ip in table::service_addresses(&services) {
        if !ctx.conv.node_ips.contains(&ip) && !ctx.conv.service_cidr.contains(&ip) {
            spec.routed.insert(ip);
        }
    }
    let ports: Vec<u16> = services
        .iter()
        .flat_map(|s| seq(s.get("spec").and_then(|sp| sp.get("ports"))).to_vec())
        .filter_map(|p| p.get("port").and_then(Value::as_u64).map(|p| p as u16))
        .collect();
    let w = match World::build(ctx.conv, ctx.path, &spec).await {
        Ok(w) => w,
        Err(e) => {
            r.error(&e);
            r.decide();
            return r;
        }
    };
    match w.services().await {
        Err(e) => r.error(&e),
        Ok(list) => {
            for ip in &frontends {
                for port in &ports {
                    let found = list.iter().find(|s| s.ip == *ip && s.port == *port);
                    let observed: Vec<String> = match found {
                        Some(s) => s
                            .backends
                            .iter()
                            .map(|b| format!("{}:{}", b.ip, b.port))
                            .collect(),
                        None => vec!["not programmed".into()],
                    };
                    let ok = found.is_some_and(|s| {
                        let got: Vec<SocketAddrV4> = s
                            .backends
                            .iter()
                            .map(|b| SocketAddrV4::new(b.ip, b.port))
                            .collect();
                        got.len() == backends.len() && backends.iter().all(|b| got.contains(b))
                    });
                    r.flows.push(row(
                        &format!("frontend {ip}:{port}"),
                        format!(
                            "programmed with {}",
                            backends
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        observed,
                        ok,
                        Vec::new(),
                    ));
                }
            }
        }
    }
    // The source range, on packets: an external client inside it reaches
    // the LB IP, the one the conventions block does not.
    let ranges: Vec<String> = services
        .iter()
        .flat_map(|s| {
            seq(s
                .get("spec")
                .and_then(|sp| sp.get("loadBalancerSourceRanges")))
            .to_vec()
        })
        .filter_map(|v| text_of(Some(&v)).ok())
        .collect();
    let lb_ips: Vec<Ipv4Addr> = services
        .iter()
        .flat_map(|s| {
            seq(s
                .get("status")
                .and_then(|st| st.get("loadBalancer"))
                .and_then(|lb| lb.get("ingress")))
            .to_vec()
        })
        .filter_map(|i| i.get("ip").and_then(|v| cases::ip(v).ok()))
        .collect();
    let mut probes = Vec::new();
    if !ranges.is_empty() {
        for lb in &lb_ips {
            for port in &ports {
                for (client, output) in [
                    (ctx.conv.external_client, Output::Backends(backends.clone())),
                    (ctx.conv.blocked_client, Output::Drop),
                ] {
                    probes.push(Planned {
                        flow: Flow {
                            name: format!(
                                "external {client} to LB {lb}:{port} (source ranges {ranges:?})"
                            ),
                            from: format!("external {client}"),
                            source: Source::External(client),
                            to: SocketAddrV4::new(*lb, *port),
                            protocol: super::super::cases::Protocol::Tcp,
                        },
                        expect: Ok(Expect { output, masq: None }),
                        note: None,
                    });
                }
            }
        }
    }
    r.flows.extend(flows::run(&w, &probes).await);
    r.notes = notes;
    r.notes.push(
        "addresses expected as the file's values read as decimal (leading zeros are not octal)"
            .into(),
    );
    if let Err(e) = w.teardown() {
        r.error(&e);
    }
    r.decide();
    r
}
