//! Primitives for scenario behaviours (prose e2e tests): manifest
//! documents for Services, Pods and EndpointSlices, sampling a target
//! with many client attempts, and report rows.

use super::super::cases::Protocol;
use super::cases::{Behaviour, Source};
use super::expect::{classify, Observed};
use super::report::{FlowReport, Verdict};
use super::world::{pod_name, World, POD_NS};
use serde_json::{json, Value as Json};
use serde_norway::Value;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// ClusterIPs the runner assigns to e2e Services (no API server here):
/// `.100.n` of the service range.
pub fn cluster_ip(ctx: &super::Ctx<'_>, n: u8) -> Ipv4Addr {
    let base = u32::from(ctx.conv.service_cidr.network());
    Ipv4Addr::from(base + (100 << 8) + u32::from(n))
}

/// Backend pod addresses for e2e scenarios: `10.0.1.n` style, inside
/// the pod CIDR of the conventions.
pub fn backend_ip(ctx: &super::Ctx<'_>, n: u8) -> Ipv4Addr {
    let base = u32::from(ctx.conv.pod_cidr.network());
    Ipv4Addr::from(base + (1 << 8) + u32::from(n))
}

/// Pods on node2 (its own agent's pod CIDR, `10.0.2.n`).
pub fn node2_pod_ip(ctx: &super::Ctx<'_>, n: u8) -> Ipv4Addr {
    let base = u32::from(super::world::node2_pod_cidr(ctx.conv).network());
    Ipv4Addr::from(base + u32::from(n))
}

/// The client pod of e2e scenarios.
pub fn client_ip(ctx: &super::Ctx<'_>) -> Ipv4Addr {
    let base = u32::from(ctx.conv.pod_cidr.network());
    Ipv4Addr::from(base + 2)
}

pub fn to_value(j: Json) -> Value {
    serde_norway::to_value(j).unwrap_or(Value::Null)
}

/// The file's first Service of `setup.services`, as JSON.
pub fn file_service(b: &Behaviour, i: usize) -> Option<Json> {
    let s = super::cases::seq(b.raw.get("setup").and_then(|s| s.get("services"))).get(i)?;
    serde_json::to_value(s).ok()
}

/// Puts a Service in the pods' namespace with a ClusterIP (and nodePorts
/// when given), keeping everything else the file says.
pub fn place_service(mut s: Json, ip: Ipv4Addr, node_ports: &[u16]) -> Json {
    s["metadata"]["namespace"] = json!(POD_NS);
    s["spec"]["clusterIP"] = json!(ip.to_string());
    if let Some(ports) = s["spec"]["ports"].as_array_mut() {
        for (p, np) in ports.iter_mut().zip(node_ports) {
            p["nodePort"] = json!(np);
        }
    }
    s
}

/// The file's first Service placed at `vip` (and `node_ports`) without
/// its selector: the scenario publishes the EndpointSlices the
/// EndpointSlice controller would (no controller here).
pub fn sliced_service(b: &Behaviour, vip: Ipv4Addr, node_ports: &[u16]) -> Option<Json> {
    let mut s = place_service(file_service(b, 0)?, vip, node_ports);
    if let Some(m) = s["spec"].as_object_mut() {
        m.remove("selector");
    }
    Some(s)
}

pub fn service_name(s: &Json) -> String {
    s["metadata"]["name"].as_str().unwrap_or("svc").to_string()
}

/// (port, targetPort) of a Service's first port; a missing targetPort is the port.
pub fn first_port(s: &Json) -> (u16, u16) {
    let p = &s["spec"]["ports"][0];
    let port = p["port"].as_u64().unwrap_or(80) as u16;
    (
        port,
        p["targetPort"].as_u64().map(|t| t as u16).unwrap_or(port),
    )
}

/// A Pod object for a local pod at `ip`: labels and container ports
/// (`[{"name":..,"containerPort":..,"protocol":..}]`).
pub fn pod_doc(ip: Ipv4Addr, labels: Json, ports: Json) -> Value {
    to_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": POD_NS, "name": pod_name(ip), "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
    }))
}

/// One EndpointSlice for `service` with `endpoints` (address, conditions).
pub fn slice_doc(service: &str, name: &str, endpoints: &[(Ipv4Addr, Json)], ports: Json) -> Value {
    let eps: Vec<Json> = endpoints
        .iter()
        .map(|(ip, cond)| json!({"addresses": [ip.to_string()], "conditions": cond}))
        .collect();
    to_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": POD_NS, "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": eps, "ports": ports,
    }))
}

/// `n` attempts at once (each its own client), classified.
pub async fn sample(
    w: &World,
    source: &Source,
    to: SocketAddrV4,
    protocol: Protocol,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Observed>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let job = w.job(source, to, protocol, 1, timeout, 0)?;
        set.spawn_blocking(move || job.run());
    }
    let mut out = Vec::new();
    while let Some(j) = set.join_next().await {
        out.extend(j??.iter().map(classify));
    }
    Ok(out)
}

/// Batches of `batch` attempts until every backend of `want` answered
/// (or an attempt failed, or `max_batches` ran): "each endpoint seen at
/// least once" without a flaky fixed count.
pub async fn sample_until_all(
    w: &World,
    source: &Source,
    to: SocketAddrV4,
    protocol: Protocol,
    want: &[SocketAddrV4],
    batch: usize,
    max_batches: usize,
) -> anyhow::Result<Vec<Observed>> {
    let mut seen = Vec::new();
    for _ in 0..max_batches {
        seen.extend(sample(w, source, to, protocol, batch, Duration::from_millis(1500)).await?);
        let got = backends(&seen);
        let failed = seen.iter().any(|o| !matches!(o, Observed::Answer { .. }));
        if failed || want.iter().all(|b| got.contains(b)) {
            break;
        }
    }
    Ok(seen)
}

/// `n` attempts one after another from one client process (affinity:
/// the same client address every time).
pub async fn sequence(
    w: &World,
    source: &Source,
    to: SocketAddrV4,
    protocol: Protocol,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Observed>> {
    Ok(w.probe(source, to, protocol, n, timeout, 0)
        .await?
        .iter()
        .map(classify)
        .collect())
}

/// Backends that answered.
pub fn backends(seen: &[Observed]) -> BTreeSet<SocketAddrV4> {
    seen.iter()
        .filter_map(|o| match o {
            Observed::Answer { backend, .. } => Some(*backend),
            _ => None,
        })
        .collect()
}

pub fn answered(seen: &[Observed]) -> bool {
    seen.iter().any(|o| matches!(o, Observed::Answer { .. }))
}

pub fn summary(seen: &[Observed]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in seen {
        let t = match s {
            Observed::Answer { backend, .. } => backend.to_string(),
            o => o.to_string(),
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// A report row.
#[allow(clippy::too_many_arguments)]
pub fn row(
    name: &str,
    from: &str,
    to: &str,
    protocol: Protocol,
    expected: &str,
    seen: &[Observed],
    ok: bool,
    notes: Vec<String>,
) -> FlowReport {
    FlowReport {
        name: name.into(),
        from: from.into(),
        to: to.into(),
        protocol: protocol.as_str().into(),
        expected: expected.into(),
        observed: summary(seen),
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        notes,
    }
}

/// A row for a check that is not a probe.
pub fn fact(name: &str, expected: &str, observed: &str, ok: bool) -> FlowReport {
    FlowReport {
        name: name.into(),
        from: String::new(),
        to: String::new(),
        protocol: String::new(),
        expected: expected.into(),
        observed: vec![observed.into()],
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        notes: Vec::new(),
    }
}

/// The longest run of consecutive answers from one backend.
pub fn longest_run(seen: &[Observed]) -> usize {
    let mut best = 0;
    let mut cur = 0;
    let mut last: Option<SocketAddrV4> = None;
    for s in seen {
        match s {
            Observed::Answer { backend, .. } if Some(*backend) == last => cur += 1,
            Observed::Answer { backend, .. } => {
                last = Some(*backend);
                cur = 1;
            }
            _ => {
                last = None;
                cur = 0;
            }
        }
        best = best.max(cur);
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_one_backend() {
        let a = |b: &str| Observed::Answer {
            backend: b.parse().unwrap(),
            peer: "10.0.0.2:1".parse().unwrap(),
        };
        let seen = [
            a("10.0.1.1:80"),
            a("10.0.1.2:80"),
            a("10.0.1.2:80"),
            Observed::Timeout,
            a("10.0.1.2:80"),
        ];
        assert_eq!(longest_run(&seen), 2);
        assert_eq!(backends(&seen).len(), 2);
    }
}
