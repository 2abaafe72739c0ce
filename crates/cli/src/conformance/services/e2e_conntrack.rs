//! svc-032, kube-proxy's conntrack cleanup rules, on real flows: instead of
//! a hand-made conntrack table, real TCP, UDP and SCTP flows to every
//! address of the file's Service reach all three endpoints; then the
//! endpoints change as the file's table says (one still serving, one not
//! serving, one deleted) and Sluice's conntrack map (`sl_ct`, read from
//! bpffs as `sluice bpf ct list` does) must have lost exactly the UDP flows
//! whose backend is no longer serving, and kept the rest.

use super::super::cases::Protocol;
use super::cases::{seq, text_of, Behaviour, Source};
use super::e2e::with_world;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{Serve, Spec};
use super::Ctx;
use serde_json::{json, Value as Json};
use std::net::{Ipv4Addr, SocketAddrV4};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// The slice endpoints of the file: address → serving condition.
fn endpoints(b: &Behaviour) -> Vec<(Ipv4Addr, bool)> {
    let slices = seq(b.raw.get("setup").and_then(|s| s.get("endpointSlices")));
    slices
        .iter()
        .flat_map(|s| seq(s.get("endpoints")).to_vec())
        .filter_map(|e| {
            let ip = seq(e.get("addresses"))
                .first()
                .and_then(|a| text_of(Some(a)).ok())?;
            let serving = e
                .get("conditions")
                .and_then(|c| c.get("serving"))
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            Some((ip.parse().ok()?, serving))
        })
        .collect()
}

/// The backend the file calls "deleted": mentioned in the table, absent
/// from the slice.
fn deleted_backend(b: &Behaviour) -> Option<Ipv4Addr> {
    let text = text_of(
        b.raw
            .get("setup")
            .and_then(|s| s.get("conntrack_table_before")),
    )
    .ok()?;
    let (before, _) = text.split_once("(deleted)")?;
    before
        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

pub async fn cleanup_rules(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(mut service) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let eps = endpoints(b);
    let Some(deleted) = deleted_backend(b) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "the file names no deleted endpoint");
    };
    let (serving, not_serving): (Vec<_>, Vec<_>) = eps.iter().partition(|(_, s)| *s);
    let (Some(&(keep, _)), Some(&(unserved, _))) = (serving.first(), not_serving.first()) else {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "the file's slice lacks a serving and a not-serving endpoint",
        );
    };
    // LoadBalancer, so the status's ingress IP and the nodePorts are
    // programmed (the unit test feeds them to the proxier regardless).
    service["spec"]["type"] = json!("LoadBalancer");
    service["metadata"]["namespace"] = json!(super::world::POD_NS);
    let name = service["metadata"]["name"]
        .as_str()
        .unwrap_or("svc")
        .to_string();
    let ports: Vec<(String, u16, Protocol, Option<u16>)> = service["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let proto = match p["protocol"].as_str().unwrap_or("TCP") {
                        "TCP" => Protocol::Tcp,
                        "UDP" => Protocol::Udp,
                        "SCTP" => Protocol::Sctp,
                        _ => return None,
                    };
                    Some((
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["port"].as_u64()? as u16,
                        proto,
                        p["nodePort"].as_u64().map(|n| n as u16),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let addrs: Vec<Ipv4Addr> = [&service["spec"]["clusterIP"]]
        .into_iter()
        .chain(
            service["spec"]["externalIPs"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .chain(
            service["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| &i["ip"]),
        )
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    let slice_ports: Json = ports
        .iter()
        .map(|(n, p, proto, _)| json!({"name": n, "port": p, "protocol": proto.as_str()}))
        .collect();
    let slice = |members: &[(Ipv4Addr, Json)]| {
        slice_doc(&name, &format!("{name}-0"), members, slice_ports.clone())
    };
    let all_ready: Vec<(Ipv4Addr, Json)> = [keep, unserved, deleted]
        .iter()
        .map(|ip| (*ip, json!({"ready": true})))
        .collect();
    let after: Vec<(Ipv4Addr, Json)> = vec![
        (keep, json!({"ready": true, "serving": true})),
        (unserved, json!({"ready": false, "serving": false})),
    ];
    let client = client_ip(ctx);
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    for ip in [keep, unserved, deleted] {
        let mut s = Serve::default();
        for (_, p, proto, _) in &ports {
            s.add(*proto, *p);
        }
        spec.local.insert(ip, s);
    }
    spec.docs = vec![to_value(service.clone()), slice(&all_ready)];
    let primary = ctx.conv.primary_ip;
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!(
            "real flows instead of a fabricated table: endpoints {keep} (stays serving), {unserved} (becomes not serving), {deleted} (deleted) are local pods, all ready while the flows are opened from pod {client}; \
             type LoadBalancer so the LB IP and nodePorts are programmed; SCTP through the nodePort is left out (its port differs from the backend's); \
             Sluice's conntrack holds translated flows only, so the table's non-DNATed and non-service-port rows have no entries to keep or flush"
        ));
        let want: Vec<Ipv4Addr> = vec![keep, unserved, deleted];
        let mut targets: Vec<(SocketAddrV4, Protocol, u16)> = Vec::new();
        for (_, port, proto, node_port) in &ports {
            for a in &addrs {
                targets.push((SocketAddrV4::new(*a, *port), *proto, *port));
            }
            if let (Some(np), false) = (node_port, *proto == Protocol::Sctp) {
                targets.push((SocketAddrV4::new(primary, *np), *proto, *port));
            }
        }
        for (to, proto, backend_port) in &targets {
            let backends: Vec<SocketAddrV4> = want.iter().map(|ip| SocketAddrV4::new(*ip, *backend_port)).collect();
            let seen = sample_until_all(w, &Source::Pod(client), *to, *proto, &backends, 6, 8).await?;
            let got = super::kit::backends(&seen);
            let ok = backends.iter().all(|b| got.contains(b));
            r.flows.push(row("flows opened while all three are ready", &format!("pod {client}"), &to.to_string(), *proto, "every endpoint answered", &seen, ok, vec![]));
        }
        w.apply(&[to_value(service.clone()), slice(&after)]).await?;
        let pin = std::path::Path::new("/sys/fs/bpf/sluice").join(w.sb.run_id());
        let rows = sluice_datapath::LbMaps::open(&pin)?.ct_rows()?;
        let count = |proto: u8, backend: Ipv4Addr| {
            rows.iter().filter(|r| !r.reply && r.proto == proto && r.nat.0 == backend).count()
        };
        for gone in [unserved, deleted] {
            let n = count(IPPROTO_UDP, gone);
            r.flows.push(fact(&format!("UDP flows to {gone} (no longer serving)"), "deleted (0 entries)", &format!("{n} entries"), n == 0));
            for (label, proto) in [("TCP", IPPROTO_TCP), ("SCTP", IPPROTO_SCTP)] {
                let n = count(proto, gone);
                r.flows.push(fact(&format!("{label} flows to {gone}"), "kept (> 0 entries)", &format!("{n} entries"), n > 0));
            }
        }
        let n = count(IPPROTO_UDP, keep);
        r.flows.push(fact(&format!("UDP flows to {keep} (still serving)"), "kept (> 0 entries)", &format!("{n} entries"), n > 0));
        Ok(())
    })
    .await
}
