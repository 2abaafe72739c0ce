//! Behaviours whose cases vary the proxy's configuration or one field of
//! the Service (svc-012: --nodeport-addresses; svc-018: the LB ingress
//! ipMode): a world per case, the flow of the file judged per case.

use super::cases::{self, seq, text_of, Behaviour, Expect, Flow, Output};
use super::e2e::in_world;
use super::flows::{self, Planned};
use super::report::{BehaviourReport, FlowReport};
use super::table::{self, add_clients, pods_of_slices, service_addresses};
use super::world::{agent_accepts, Spec};
use super::Ctx;
use serde_norway::Value;
use std::net::SocketAddrV4;

/// The world of a table setup (services and slices, possibly borrowed
/// from the behaviour the prose names).
fn base_spec(
    ctx: &Ctx<'_>,
    b: &Behaviour,
    notes: &mut Vec<String>,
) -> Result<(Spec, Vec<Value>, Vec<Value>), String> {
    let services = table::setup_list(b, "services", ctx.all, notes)?;
    let mut slices = table::setup_list(b, "endpointSlices", ctx.all, notes)?;
    if slices.is_empty() {
        // "services: same as svc-011": its slices come with it.
        if let Some(Value::String(prose)) = b.raw.get("setup").and_then(|s| s.get("services")) {
            for id in prose.split_whitespace().filter(|w| w.starts_with("svc-")) {
                if let Some(other) = ctx.all.iter().find(|o| o.id.starts_with(id)) {
                    slices.extend(
                        seq(other.raw.get("setup").and_then(|s| s.get("endpointSlices")))
                            .iter()
                            .cloned(),
                    );
                    notes.push(format!("endpointSlices taken from {id} with its services"));
                }
            }
        }
    }
    let mut spec = Spec::default();
    spec.docs.extend(services.iter().cloned());
    spec.docs.extend(slices.iter().cloned());
    pods_of_slices(&slices, ctx.conv, &mut spec);
    spec.routed.extend(
        service_addresses(&services)
            .into_iter()
            .filter(|ip| !ctx.conv.node_ips.contains(ip) && !ctx.conv.service_cidr.contains(ip)),
    );
    Ok((spec, services, slices))
}

/// svc-012: `external → <secondary node IP>:<port>` per nodePortAddresses case.
pub async fn nodeport_addresses(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    let mut notes = Vec::new();
    let (spec, _, _) = match base_spec(ctx, b, &mut notes) {
        Ok(x) => x,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, e),
    };
    r.notes = notes;
    let secondary = b
        .raw
        .get("setup")
        .and_then(|s| s.get("node_ips"))
        .and_then(|n| n.get("secondary"))
        .and_then(|v| cases::ip(v).ok());
    let flow_row = seq(b.raw.get("action").and_then(|a| a.get("flows")))
        .first()
        .cloned();
    let (Some(secondary), Some(flow_row)) = (secondary, flow_row) else {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "no setup.node_ips.secondary or no flow",
        );
    };
    // "secondary node IP:3001": the address from setup.node_ips, the port as written.
    let to_text = text_of(flow_row.get("to")).unwrap_or_default();
    let Some(port) = to_text
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse::<u16>().ok())
    else {
        return BehaviourReport::unsupported(&b.id, &b.title, format!("destination {to_text:?}"));
    };
    let name = text_of(flow_row.get("name")).unwrap_or_default();
    let from = text_of(flow_row.get("from")).unwrap_or_default();
    let flow = Flow {
        name: name.clone(),
        source: cases::source(&from, &Default::default(), ctx.conv),
        from,
        to: SocketAddrV4::new(secondary, port),
        protocol: super::super::cases::Protocol::Tcp,
    };
    let sluice = std::env::current_exe().unwrap_or_default();
    for case in seq(b.raw.get("expect")) {
        let title = text_of(case.get("case")).unwrap_or_default();
        let label = format!("{title}: {name}");
        if title.to_ascii_lowercase().starts_with("ipv6") {
            r.flows.push(FlowReport::unsupported(
                &label,
                &flow.from,
                &to_text,
                "IPv6 is a separate issue (the sandbox and Sluice are IPv4 only)".into(),
            ));
            continue;
        }
        // "[192.168.0.0/24, 192.168.1.0/24, 2001:db8::/64]": this family's entries.
        let list: Option<Vec<String>> = title.split_once('[').and_then(|(_, rest)| {
            rest.split_once(']').map(|(inner, _)| {
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|c| c.parse::<ipnet::Ipv4Net>().is_ok())
                    .map(str::to_string)
                    .collect()
            })
        });
        let mut case_spec = spec.clone();
        let mut flow_notes = Vec::new();
        if let Some(list) = &list {
            if !agent_accepts(&sluice, "--nodeport-addresses") {
                r.flows.push(FlowReport::unsupported(
                    &label,
                    &flow.from,
                    &to_text,
                    "this agent has no --nodeport-addresses".into(),
                ));
                continue;
            }
            case_spec
                .agent_flags
                .push(format!("--nodeport-addresses={}", list.join(",")));
            flow_notes.push(format!(
                "agent run with --nodeport-addresses={}",
                list.join(",")
            ));
        } else {
            flow_notes.push("agent run without --nodeport-addresses (the default)".into());
        }
        let expect = cases::expect_of(case).map_err(|e| format!("{e:#}"));
        let mut f = flow.clone();
        f.name = label;
        add_clients(std::slice::from_ref(&f), ctx.conv, &mut case_spec);
        let planned = [Planned {
            flow: f,
            expect,
            note: Some(flow_notes.join("; ")),
        }];
        let built = in_world(ctx, &case_spec, &mut r, async |w, r| {
            r.flows.extend(flows::run(w, &planned).await);
            Ok(())
        })
        .await;
        if !built {
            break;
        }
    }
    r.decide();
    r
}

/// svc-018: is the LB IP captured, per ipMode case.
pub async fn lb_ipmode(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    let mut notes = Vec::new();
    let (spec, services, slices) = match base_spec(ctx, b, &mut notes) {
        Ok(x) => x,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, e),
    };
    r.notes = notes;
    let flows_ = match cases::flows(
        seq(b.raw.get("action").and_then(|a| a.get("flows"))),
        &Default::default(),
        ctx.conv,
    ) {
        Ok(f) => f,
        Err(e) => return BehaviourReport::unsupported(&b.id, &b.title, format!("{e:#}")),
    };
    let backends: Vec<SocketAddrV4> = {
        let mut v = Vec::new();
        for s in &slices {
            let ports: Vec<u16> = seq(s.get("ports"))
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_u64).map(|p| p as u16))
                .collect();
            for e in seq(s.get("endpoints")) {
                for a in seq(e.get("addresses")) {
                    if let Ok(ip) = cases::ip(a) {
                        v.extend(ports.iter().map(|p| SocketAddrV4::new(ip, *p)));
                    }
                }
            }
        }
        v
    };
    for case in seq(b.raw.get("expect")) {
        let title = text_of(case.get("case")).unwrap_or_default();
        let Some(captured) = case.get("lb_ip_captured_by_proxy").and_then(Value::as_bool) else {
            continue;
        };
        if title.contains("disabled") {
            r.notes.push(format!(
                "case {title:?} not run: a kube-proxy feature gate; Sluice always honours ipMode"
            ));
            continue;
        }
        let mode = if title.contains("ipMode Proxy") {
            Some("Proxy")
        } else if title.contains("ipMode VIP") {
            Some("VIP")
        } else if title.contains("unset") {
            None
        } else {
            r.notes
                .push(format!("case {title:?} not understood; not run"));
            continue;
        };
        let mut svcs = services.clone();
        for s in &mut svcs {
            set_ip_mode(s, mode);
        }
        let mut case_spec = spec.clone();
        case_spec.docs = svcs;
        case_spec.docs.extend(slices.iter().cloned());
        add_clients(&flows_, ctx.conv, &mut case_spec);
        let planned: Vec<Planned> = flows_
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f.name = format!("{title}: {}", f.name);
                Planned {
                    flow: f,
                    expect: Ok(Expect {
                        output: if captured {
                            Output::Captured(backends.clone())
                        } else {
                            Output::None
                        },
                        masq: None,
                    }),
                    note: Some(format!("lb_ip_captured_by_proxy: {captured}")),
                }
            })
            .collect();
        let built = in_world(ctx, &case_spec, &mut r, async |w, r| {
            r.flows.extend(flows::run(w, &planned).await);
            Ok(())
        })
        .await;
        if !built {
            break;
        }
    }
    r.decide();
    r
}

fn set_ip_mode(service: &mut Value, mode: Option<&str>) {
    let Some(Value::Sequence(ingress)) = service
        .get_mut("status")
        .and_then(|s| s.get_mut("loadBalancer"))
        .and_then(|lb| lb.get_mut("ingress"))
    else {
        return;
    };
    for i in ingress {
        if let Value::Mapping(m) = i {
            let key = Value::String("ipMode".into());
            match mode {
                Some(v) => {
                    m.insert(key, Value::String(v.into()));
                }
                None => {
                    m.remove(&key);
                }
            }
        }
    }
}
