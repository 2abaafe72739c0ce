//! Waiting until the agent has applied what the runner wrote: both marker
//! Services at the generation just written (so these exact file versions
//! were read and compiled), and every model Service programmed with its
//! pod as the one backend. Rejections of objects in the runner's files are
//! handed back: they fail the case.

use super::cases::PortProto;
use super::manifests::{
    Cluster, MARKER_NAMESPACE, MODEL_FILE, MODEL_MARKER, POLICY_FILE, POLICY_MARKER,
};
use super::matrix::PodId;
use anyhow::{bail, Context, Result};
use sluice_api::{Client, ServiceInfo, Status};
use std::time::{Duration, Instant};

/// What one write is expected to produce.
pub struct Want<'a> {
    pub generation: u16,
    pub cluster: &'a Cluster,
    pub served: &'a [PortProto],
}

/// `file: object: error` for each rejected object of the runner's files.
pub type Rejections = Vec<String>;

pub async fn wait_applied(api: &Client, want: &Want<'_>, timeout: Duration) -> Result<Rejections> {
    let deadline = Instant::now() + timeout;
    loop {
        // An API error means the agent is gone: waiting longer cannot help.
        let services: Vec<ServiceInfo> = api
            .get("/v1/services")
            .await
            .context("cannot list the agent's services")?;
        let pending = pending(&services, want);
        let markers_current = !pending.iter().any(|p| p.contains("marker"));
        let timed_out = Instant::now() >= deadline;
        if markers_current || timed_out {
            let rejected = rejections(api).await?;
            // A rejected model object can keep a Service from appearing:
            // report the rejection rather than time out on its symptom.
            if markers_current && (!rejected.is_empty() || pending.is_empty()) {
                return Ok(rejected);
            }
            if timed_out {
                bail!(
                    "the agent did not apply the manifests within {}s; still waiting for: {}{}",
                    timeout.as_secs(),
                    pending.join("; "),
                    if rejected.is_empty() {
                        String::new()
                    } else {
                        format!("; rejected: {}", rejected.join("; "))
                    }
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rejections(api: &Client) -> Result<Rejections> {
    let status: Status = api
        .get("/v1/status")
        .await
        .context("cannot read the agent's status")?;
    Ok(status
        .rejected
        .iter()
        .filter(|r| r.file == MODEL_FILE || r.file == POLICY_FILE)
        .map(|r| format!("{}: {}: {}", r.file, r.object, r.error))
        .collect())
}

/// What is not there yet, in words (empty: all applied).
fn pending(services: &[ServiceInfo], want: &Want<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for name in [MODEL_MARKER, POLICY_MARKER] {
        let full = format!("{MARKER_NAMESPACE}/{name}");
        let at = services.iter().find(|s| s.service == full).map(|s| s.port);
        if at != Some(want.generation) {
            out.push(format!(
                "marker {full} at generation {} (now {at:?})",
                want.generation
            ));
        }
    }
    for pod in PodId::all() {
        let vip = Cluster::vip(pod);
        let ip = want.cluster.pod_ips[pod.index()];
        for p in want.served {
            let programmed = services.iter().any(|s| {
                s.ip == vip
                    && s.port == p.port
                    && s.protocol.eq_ignore_ascii_case(p.protocol.as_str())
                    && s.backends.len() == 1
                    && s.backends.iter().all(|b| b.ip == ip && b.port == p.port)
            });
            if !programmed {
                out.push(format!(
                    "{} {vip}:{p} → {ip}:{}",
                    Cluster::service_name(pod),
                    p.port
                ));
            }
        }
        // Ports of an earlier case must be gone: a probe of them would
        // otherwise still find a frontend.
        for s in services.iter().filter(|s| s.ip == vip) {
            let served = want
                .served
                .iter()
                .any(|p| p.port == s.port && s.protocol.eq_ignore_ascii_case(p.protocol.as_str()));
            if !served {
                out.push(format!("removal of {vip}:{}/{}", s.port, s.protocol));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::cases::Protocol;
    use super::super::matrix::N;
    use super::*;
    use sluice_api::BackendInfo;
    use std::net::Ipv4Addr;

    fn svc(
        name: &str,
        ip: Ipv4Addr,
        port: u16,
        proto: &str,
        backend: Option<Ipv4Addr>,
    ) -> ServiceInfo {
        ServiceInfo {
            service: name.into(),
            kind: "ClusterIP".into(),
            ip,
            port,
            protocol: proto.into(),
            port_name: String::new(),
            rev_nat_id: 1,
            backends: backend
                .map(|ip| BackendInfo {
                    id: 1,
                    ip,
                    port,
                    pod: None,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn applied_only_when_markers_and_every_service_are_current() {
        let mut pod_ips = [Ipv4Addr::UNSPECIFIED; N];
        for (i, ip) in pod_ips.iter_mut().enumerate() {
            *ip = Ipv4Addr::new(10, 244, 0, 2 + i as u8);
        }
        let cluster = Cluster { pod_ips };
        let served = [PortProto {
            port: 80,
            protocol: Protocol::Tcp,
        }];
        let want = Want {
            generation: 5,
            cluster: &cluster,
            served: &served,
        };
        let mut list: Vec<ServiceInfo> = PodId::all()
            .map(|p| svc("s", Cluster::vip(p), 80, "TCP", Some(pod_ips[p.index()])))
            .collect();
        list.push(svc(
            "sluice-conformance/model-applied",
            Ipv4Addr::LOCALHOST,
            5,
            "TCP",
            None,
        ));
        list.push(svc(
            "sluice-conformance/netpol-applied",
            Ipv4Addr::LOCALHOST,
            4,
            "TCP",
            None,
        ));
        let p = pending(&list, &want);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("netpol-applied"), "{p:?}");
        list.last_mut().into_iter().for_each(|s| s.port = 5);
        assert!(pending(&list, &want).is_empty());
        // A port of the previous case still programmed.
        let xa = PodId::parse("x/a").unwrap();
        list.push(svc("s", Cluster::vip(xa), 81, "TCP", None));
        assert!(pending(&list, &want)[0].contains("removal of 10.96.1.10:81/TCP"));
    }
}
