//! svc-028: not-ready pods are not endpoints; `publishNotReadyAddresses`
//! makes unready and terminating pods usable. Sluice derives a selector
//! Service's endpoints from its Pods when no EndpointSlice exists (as the
//! EndpointSlice controller would), so the rule is replayed through Pod
//! objects: the Ready condition and `deletionTimestamp` as the kubelet and
//! the API server would set them.

use super::super::cases::Protocol;
use super::cases::{Behaviour, Source};
use super::e2e::with_world;
use super::expect::Observed;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{pod_name, Serve, Spec, POD_NS};
use super::Ctx;
use serde_json::{json, Value as Json};
use std::net::SocketAddrV4;
use std::time::Duration;

const T: Duration = Duration::from_millis(1500);
const TRIES: usize = 3;

pub async fn publish_not_ready(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let Some(svc) = file_service(b, 0) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let vip = cluster_ip(ctx, 28);
    let mut service = place_service(svc, vip, &[]);
    let (port, target) = first_port(&service);
    // The file's selector is a placeholder ("<labels>"): the runner's own.
    let labels = json!({"app": "tolerate-unready"});
    service["spec"]["selector"] = labels.clone();
    let (client, server) = (client_ip(ctx), backend_ip(ctx, 1));
    let pod = |deleting: bool| {
        let mut meta =
            json!({"namespace": POD_NS, "name": pod_name(server), "labels": labels.clone()});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        to_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": target}]}]},
            // The readiness probe always fails (/bin/false).
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }))
    };
    let publish = |on: bool| {
        let mut s: Json = service.clone();
        s["spec"]["publishNotReadyAddresses"] = json!(on);
        to_value(s)
    };
    let mut spec = Spec::default();
    spec.local.insert(client, Serve::default());
    let mut s = Serve::default();
    s.add(Protocol::Tcp, target);
    spec.local.insert(server, s);
    spec.docs = vec![publish(true), pod(false)];
    let to = SocketAddrV4::new(vip, port);
    let want = [SocketAddrV4::new(server, target)];
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!(
            "slow-terminating-unready-pod = local pod {server} whose Pod object says Ready=False; scaling to 0 is played as its deletionTimestamp; \
             no EndpointSlice: Sluice derives the endpoints from the Pod, as the EndpointSlice controller would; ClusterIP {vip} assigned by the runner"
        ));
        let src = Source::Pod(client);
        let answered_by_server = |seen: &[Observed]| {
            !seen.is_empty()
                && seen
                    .iter()
                    .all(|o| matches!(o, Observed::Answer { backend, .. } if want.contains(backend)))
        };
        let seen = sample(w, &src, to, Protocol::Tcp, TRIES, T).await?;
        let ok = answered_by_server(&seen);
        r.flows.push(row("step 1: publishNotReadyAddresses true, pod never ready", &format!("pod {client}"), &to.to_string(), Protocol::Tcp, &format!("answered by {server}"), &seen, ok, vec![]));

        w.apply(&[publish(false), pod(true)]).await?;
        let seen = sample(w, &src, to, Protocol::Tcp, TRIES, T).await?;
        // No endpoint left: the Service refuses (svc-007).
        let ok = !seen.is_empty() && seen.iter().all(|o| matches!(o, Observed::Refused));
        r.flows.push(row("step 2: terminating and unready, publishNotReadyAddresses false", &format!("pod {client}"), &to.to_string(), Protocol::Tcp, "connection fails (refused: no endpoint)", &seen, ok, vec![]));

        w.apply(&[publish(true), pod(true)]).await?;
        let seen = sample(w, &src, to, Protocol::Tcp, TRIES, T).await?;
        let ok = answered_by_server(&seen);
        r.flows.push(row("step 3: publishNotReadyAddresses true again", &format!("pod {client}"), &to.to_string(), Protocol::Tcp, &format!("answered by {server} (terminating pod reachable)"), &seen, ok, vec![]));
        Ok(())
    })
    .await
}
