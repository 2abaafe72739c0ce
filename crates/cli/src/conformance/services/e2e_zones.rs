//! svc-035, trafficDistribution PreferClose, adapted to one node: the
//! client's zone is the agent's `--node-zone`, so each client zone of the
//! file gets its own world (this node in that zone) with the same Service
//! and the same hinted EndpointSlice. The runner plays the EndpointSlice
//! controller, which hints every serving endpoint for its own zone; where
//! the serving pods run does not change which one the client's node picks.

use super::super::cases::Protocol;
use super::cases::{seq, text_of, Behaviour, Source};
use super::e2e::in_world;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{Serve, Spec};
use super::Ctx;
use serde_json::{json, Value as Json};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Consecutive answers the file asks for ("10 consecutive answers").
const ANSWERS: usize = 10;
const T: Duration = Duration::from_millis(1500);

/// `serving-pod-in-zoneA` → `zoneA`.
fn zone_of(pod: &str) -> Option<String> {
    pod.rsplit_once("-in-").map(|(_, z)| z.to_string())
}

pub async fn prefer_close(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let setup = b.raw.get("setup");
    // The serving pods and their zones, from `placement`.
    let servers: Vec<(String, String)> = seq(setup.and_then(|s| s.get("placement")))
        .iter()
        .filter(|p| text_of(p.get("args")).ok() == Some("serve-hostname".to_string()))
        .filter_map(|p| {
            let name = text_of(p.get("pod")).ok()?;
            Some((zone_of(&name)?, name))
        })
        .collect();
    let client_zones: Vec<String> = seq(b.raw.get("expect"))
        .iter()
        .filter_map(|e| text_of(e.get("client_zone")).ok())
        .collect();
    if servers.is_empty() || client_zones.is_empty() {
        return BehaviourReport::unsupported(
            &b.id,
            &b.title,
            "the file names no serving pods with zones or no client zones",
        );
    }
    let vip = cluster_ip(ctx, 35);
    let Some(service) = sliced_service(b, vip, &[]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let name = service_name(&service);
    let (port, target) = first_port(&service);
    let backends: Vec<(Ipv4Addr, &str, &str)> = servers
        .iter()
        .enumerate()
        .map(|(i, (zone, pod))| (backend_ip(ctx, i as u8 + 1), zone.as_str(), pod.as_str()))
        .collect();
    let eps: Vec<Json> = backends
        .iter()
        .map(|(ip, zone, _)| {
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                   "hints": {"forZones": [{"name": zone}]}})
        })
        .collect();
    let slice = to_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": super::world::POD_NS, "name": format!("{name}-1"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": service["spec"]["ports"][0]["name"].clone(), "port": target, "protocol": "TCP"}],
    }));
    let client = client_ip(ctx);
    let mut r = BehaviourReport::new(&b.id, &b.title);
    r.notes.push(format!(
        "one node: each client zone is a world whose agent runs with --node-zone <zone>; serving pods {} are local pods; \
         the runner plays the EndpointSlice controller (each endpoint hinted for its own zone); ClusterIP {vip} assigned by the runner",
        backends
            .iter()
            .map(|(ip, zone, pod)| format!("{pod} = {ip} ({zone})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for zone in &client_zones {
        let mut spec = Spec::default();
        spec.local.insert(client, Serve::default());
        for (ip, _, _) in &backends {
            let mut s = Serve::default();
            s.add(Protocol::Tcp, target);
            spec.local.insert(*ip, s);
        }
        spec.docs = vec![to_value(service.clone()), slice.clone()];
        spec.agent_flags = vec![format!("--node-zone={zone}")];
        let same_zone: Vec<SocketAddrV4> = backends
            .iter()
            .filter(|(_, z, _)| z == zone)
            .map(|(ip, _, _)| SocketAddrV4::new(*ip, target))
            .collect();
        // No endpoint in this zone: every endpoint may answer.
        let (allowed, expected) = if same_zone.is_empty() {
            let all: Vec<SocketAddrV4> = backends
                .iter()
                .map(|(ip, _, _)| SocketAddrV4::new(*ip, target))
                .collect();
            (all, format!("{ANSWERS} answers, each from any serving pod"))
        } else {
            (
                same_zone,
                format!("{ANSWERS} consecutive answers from the {zone} pod"),
            )
        };
        in_world(ctx, &spec, &mut r, async |w, r| {
            let to = SocketAddrV4::new(vip, port);
            let seen = sequence(w, &Source::Pod(client), to, Protocol::Tcp, ANSWERS, T).await?;
            let ok = seen.len() == ANSWERS
                && seen.iter().all(|o| {
                    matches!(o, super::expect::Observed::Answer { backend, .. } if allowed.contains(backend))
                });
            r.flows.push(row(
                &format!("client in {zone}"),
                &format!("pod {client} on a node in {zone}"),
                &to.to_string(),
                Protocol::Tcp,
                &expected,
                &seen,
                ok,
                vec![],
            ));
            Ok(())
        })
        .await;
    }
    r.decide();
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn zone_comes_from_the_pod_name() {
        assert_eq!(
            super::zone_of("serving-pod-in-zoneA").as_deref(),
            Some("zoneA")
        );
        assert_eq!(super::zone_of("client"), None);
    }
}
