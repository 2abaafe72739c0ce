//! Behaviours given as tables (setup objects, flows, expected outputs):
//! the world is derived from the EndpointSlices (nodeName = this node →
//! a local CNI pod, else a pod on node2) and the flows' sources, and every
//! flow is judged against its row.

use super::cases::{
    self, expect_of, match_rows, seq, text_of, Behaviour, Conventions, EndpointSpec, Expect, Flow,
    Output, Source,
};
use super::flows::Planned;
use super::world::{Serve, Spec};
use serde_norway::Value;
use std::net::Ipv4Addr;

/// A table behaviour, ready to run.
pub struct Plan {
    pub spec: Spec,
    pub planned: Vec<Planned>,
    pub notes: Vec<String>,
}

/// The list at `setup.<key>`, or — for `"as svc-001/svc-002 …"` /
/// `"same as svc-011"` — the lists of the behaviours it names, with
/// same-named objects merged (ports united).
pub fn setup_list(
    b: &Behaviour,
    key: &str,
    all: &[Behaviour],
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    match b.raw.get("setup").and_then(|s| s.get(key)) {
        Some(Value::Sequence(s)) => Ok(s.clone()),
        None => Ok(Vec::new()),
        Some(Value::String(prose)) => {
            let ids: Vec<&str> = prose
                .split(|c: char| c.is_whitespace() || c == '/' || c == ',')
                .filter(|w| w.starts_with("svc-"))
                .collect();
            if ids.is_empty() {
                return Err(format!("setup.{key} is prose: {prose:?}"));
            }
            let mut out: Vec<Value> = Vec::new();
            for id in &ids {
                let other = all
                    .iter()
                    .find(|o| o.id.starts_with(id))
                    .ok_or_else(|| format!("setup.{key} names {id}, which is not in the file"))?;
                for obj in seq(other.raw.get("setup").and_then(|s| s.get(key))) {
                    merge(&mut out, obj);
                }
            }
            notes.push(format!(
                "setup.{key} taken from {} ({prose:?})",
                ids.join(", ")
            ));
            Ok(out)
        }
        Some(other) => Err(format!("setup.{key} is {other:?}")),
    }
}

fn meta_key(v: &Value) -> (String, String) {
    let m = v.get("metadata");
    (
        text_of(m.and_then(|m| m.get("namespace"))).unwrap_or_default(),
        text_of(m.and_then(|m| m.get("name"))).unwrap_or_default(),
    )
}

/// Adds `obj`, or unites its ports into the same-named object.
fn merge(out: &mut Vec<Value>, obj: &Value) {
    let key = meta_key(obj);
    if let Some(existing) = out.iter_mut().find(|o| meta_key(o) == key) {
        let add = seq(obj.get("ports")).to_vec();
        if let Some(Value::Sequence(ports)) = existing.get_mut("ports") {
            for p in add {
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
    } else {
        out.push(obj.clone());
    }
}

/// Every address a Service makes the node answer for.
pub fn service_addresses(services: &[Value]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for s in services {
        let spec = s.get("spec");
        if let Some(ip) = spec
            .and_then(|sp| sp.get("clusterIP"))
            .and_then(|v| cases::ip(v).ok())
        {
            out.push(ip);
        }
        for v in seq(spec.and_then(|sp| sp.get("externalIPs"))) {
            out.extend(cases::ip(v).ok());
        }
        let ingress = s
            .get("status")
            .and_then(|st| st.get("loadBalancer"))
            .and_then(|lb| lb.get("ingress"));
        for i in seq(ingress) {
            out.extend(i.get("ip").and_then(|v| cases::ip(v).ok()));
        }
    }
    out
}

/// Pods and what they serve, from EndpointSlices: an endpoint whose
/// nodeName is this node's is local, any other (or none) is on node2.
pub fn pods_of_slices(slices: &[Value], c: &Conventions, spec: &mut Spec) {
    for s in slices {
        let ports: Vec<(super::super::cases::Protocol, u16)> = seq(s.get("ports"))
            .iter()
            .filter_map(|p| {
                let proto = cases::protocol(p.get("protocol")).ok()?;
                let port = p.get("port")?.as_u64()? as u16;
                Some((proto, port))
            })
            .collect();
        for e in seq(s.get("endpoints")) {
            let local = text_of(e.get("nodeName")).ok().as_deref() == Some(c.node_name.as_str());
            for a in seq(e.get("addresses")) {
                let Ok(ip) = cases::ip(a) else { continue };
                let map = if local {
                    &mut spec.local
                } else {
                    &mut spec.remote
                };
                let serve = map.entry(ip).or_insert_with(Serve::default);
                for (proto, port) in &ports {
                    serve.add(*proto, *port);
                }
            }
        }
    }
    // An address on both nodes (two non-serving endpoints, svc-026) is
    // made once, locally.
    let both: Vec<Ipv4Addr> = spec
        .remote
        .keys()
        .filter(|ip| spec.local.contains_key(ip))
        .copied()
        .collect();
    for ip in both {
        if let Some(s) = spec.remote.remove(&ip) {
            let l = spec.local.entry(ip).or_default();
            l.tcp.extend(s.tcp);
            l.udp.extend(s.udp);
            l.sctp.extend(s.sctp);
        }
    }
}

/// Client pods become local pods; VIP destinations are routed to the node.
pub fn add_clients(flows: &[Flow], c: &Conventions, spec: &mut Spec) {
    for f in flows {
        if let Source::Pod(ip) = f.source {
            if !spec.remote.contains_key(&ip) {
                spec.local.entry(ip).or_default();
            }
        }
        let to = *f.to.ip();
        if !c.node_ips.contains(&to) && !c.service_cidr.contains(&to) {
            spec.routed.insert(to);
        }
    }
}

/// The expectation rows and what they are: a plain list, the
/// `iptables_mode` table (Sluice follows iptables mode), or svc-010's
/// `base_case`.
fn rows(b: &Behaviour, notes: &mut Vec<String>) -> Result<(Vec<Value>, bool), String> {
    match b.raw.get("expect") {
        Some(Value::Sequence(r)) => Ok((r.clone(), false)),
        Some(Value::Mapping(m)) => {
            if let Some(Value::Sequence(r)) = m.get("iptables_mode") {
                notes.push(
                    "evaluated against iptables_mode: Sluice follows iptables mode (no \
                     cluster-ips-check; traffic to an unserved port or address is left to \
                     normal routing, which in the sandbox is an unreachable service range)"
                        .into(),
                );
                return Ok((r.clone(), true));
            }
            if let Some(Value::Sequence(r)) = m.get("base_case") {
                let variants: Vec<String> = m
                    .keys()
                    .filter_map(|k| text_of(Some(k)).ok())
                    .filter(|k| k != "base_case")
                    .collect();
                if !variants.is_empty() {
                    notes.push(format!(
                        "evaluated against base_case (the local-traffic detector is --cluster-cidr); \
                         not run: {} (kube-proxy configurations Sluice does not offer)",
                        variants.join(", ")
                    ));
                }
                return Ok((r.clone(), false));
            }
            Err("expect is a mapping without iptables_mode or base_case".into())
        }
        _ => Err("no expect table".into()),
    }
}

pub fn plan(b: &Behaviour, c: &Conventions, all: &[Behaviour]) -> Result<Plan, String> {
    let mut notes = Vec::new();
    let services = setup_list(b, "services", all, &mut notes)?;
    let slices = setup_list(b, "endpointSlices", all, &mut notes)?;
    let (rows, mode_table) = rows(b, &mut notes)?;
    let action = b.raw.get("action");
    let sources = cases::sources(action);
    let flow_rows = match action.and_then(|a| a.get("flows")) {
        Some(Value::Sequence(f)) => f.clone(),
        // svc-010: the rows carry their own from/to.
        _ => rows.clone(),
    };
    let flows = cases::flows(&flow_rows, &sources, c).map_err(|e| format!("{e:#}"))?;
    if flows.is_empty() {
        return Err("no flows".into());
    }
    let mut spec = Spec::default();
    spec.docs.extend(services.iter().cloned());
    spec.docs.extend(slices.iter().cloned());
    pods_of_slices(&slices, c, &mut spec);
    add_clients(&flows, c, &mut spec);
    spec.routed.extend(
        service_addresses(&services)
            .into_iter()
            .filter(|ip| !c.node_ips.contains(ip) && !c.service_cidr.contains(ip)),
    );
    let planned = flows
        .into_iter()
        .map(|flow| {
            let (expect, note) = match match_rows(&rows, &flow.name) {
                Some(r) => (
                    expect_of(r).map_err(|e| format!("expectation not interpretable: {e:#}")),
                    r.get("note").and_then(|n| text_of(Some(n)).ok()),
                ),
                None if mode_table => (
                    Ok(Expect {
                        output: Output::None,
                        masq: None,
                    }),
                    Some(
                        "no iptables_mode row: iptables mode installs nothing for it → NONE".into(),
                    ),
                ),
                None => (Err("no expectation row for this flow".to_string()), None),
            };
            Planned { flow, expect, note }
        })
        .collect();
    Ok(Plan {
        spec,
        planned,
        notes,
    })
}

/// EndpointSlice for case endpoints (svc-020/025/026): one slice named
/// `<service>-1` with the Service's ports as endpoint ports.
pub fn slice_for(service: &Value, endpoints: &[EndpointSpec], c: &Conventions) -> Value {
    let (ns, name) = meta_key(service);
    let ports: Vec<serde_json::Value> = seq(service.get("spec").and_then(|s| s.get("ports")))
        .iter()
        .map(|p| {
            let port = p
                .get("targetPort")
                .and_then(Value::as_u64)
                .or_else(|| p.get("port").and_then(Value::as_u64))
                .unwrap_or(0);
            serde_json::json!({
                "name": text_of(p.get("name")).unwrap_or_default(),
                "port": port,
                "protocol": text_of(p.get("protocol")).unwrap_or_else(|_| "TCP".into()),
            })
        })
        .collect();
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| {
            let mut cond = serde_json::Map::new();
            for (k, v) in [
                ("ready", e.ready),
                ("serving", e.serving),
                ("terminating", e.terminating),
            ] {
                if let Some(v) = v {
                    cond.insert(k.into(), serde_json::Value::Bool(v));
                }
            }
            let mut ep = serde_json::json!({"addresses": [e.ip.to_string()], "conditions": cond});
            if let Some(n) = &e.node {
                ep["nodeName"] = serde_json::Value::String(n.clone());
            }
            ep
        })
        .collect();
    let _ = c;
    let j = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": eps, "ports": ports,
    });
    serde_norway::to_value(j).unwrap_or(Value::Null)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_named_slices_merge_their_ports() {
        let a: Value = serde_norway::from_str(
            "{metadata: {name: s-1, namespace: n}, ports: [{name: http, port: 80}]}",
        )
        .unwrap();
        let b: Value = serde_norway::from_str(
            "{metadata: {name: s-1, namespace: n}, ports: [{name: https, port: 8443}]}",
        )
        .unwrap();
        let mut out = Vec::new();
        merge(&mut out, &a);
        merge(&mut out, &b);
        assert_eq!(out.len(), 1);
        assert_eq!(seq(out[0].get("ports")).len(), 2);
    }
}
