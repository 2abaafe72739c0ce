//! What the runner writes into the agent's manifest folder: the model
//! (Namespaces, Pods, per-pod Services and their EndpointSlices) in one
//! file and the step's policies in another, each with a marker Service
//! whose port is the write's generation, so the agent's service list shows
//! exactly which version of each file it has applied.

use super::cases::{Labels, PortProto};
use super::matrix::{PodId, N};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

pub const MODEL_FILE: &str = "model.yaml";
pub const POLICY_FILE: &str = "netpol.yaml";

/// Namespace of the marker Services: none of the model's pods live there,
/// so no policy or Service of a case can touch them.
pub const MARKER_NAMESPACE: &str = "sluice-conformance";
pub const MODEL_MARKER: &str = "model-applied";
pub const POLICY_MARKER: &str = "netpol-applied";
pub const MODEL_MARKER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 1);
pub const POLICY_MARKER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 2);

/// The model's addresses: pod IPs from the CNI, ClusterIPs chosen here.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub pod_ips: [Ipv4Addr; N],
}

impl Cluster {
    /// ClusterIP of `s-<ns>-<pod>`: fixed per pod, inside the sandbox's
    /// service range (10.96.0.0/12), clear of the markers.
    pub fn vip(pod: PodId) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, 1, 10 + pod.index() as u8)
    }

    pub fn service_name(pod: PodId) -> String {
        format!("s-{}-{}", pod.namespace(), pod.name())
    }
}

fn serve_name(p: &PortProto) -> String {
    format!("serve-{}-{}", p.port, p.protocol.lower())
}

fn service_port_name(p: &PortProto) -> String {
    format!("service-port-{}-{}", p.protocol.lower(), p.port)
}

fn marker(name: &str, ip: Ipv4Addr, generation: u16) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": MARKER_NAMESPACE},
        "spec": {
            "clusterIP": ip.to_string(),
            "ports": [{"name": "generation", "port": generation, "protocol": "TCP"}],
        },
    })
}

fn merged(base: [(&str, &str); 1], changes: Option<&BTreeMap<String, String>>) -> Json {
    let mut labels: BTreeMap<String, String> = base
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(c) = changes {
        labels.extend(c.clone());
    }
    json!(labels)
}

/// The model as the step sees it: labels are the model's plus the step's
/// changes; containers, Service ports and EndpointSlice ports list only
/// the case's served ports (named ports resolve against them).
pub fn model_docs(
    cluster: &Cluster,
    served: &[PortProto],
    labels: &Labels,
    generation: u16,
) -> Vec<Json> {
    let mut docs = Vec::new();
    for ns in super::matrix::NAMESPACES {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": merged([("kubernetes.io/metadata.name", ns)], labels.namespaces.get(ns)),
            },
        }));
    }
    for pod in PodId::all() {
        let (ns, name) = (pod.namespace(), pod.name());
        let ip = cluster.pod_ips[pod.index()].to_string();
        // One container per served port, as upstream's model builds pods.
        let containers: Vec<Json> = served
            .iter()
            .map(|p| {
                json!({
                    "name": format!("cont-{}-{}", p.port, p.protocol.lower()),
                    "image": "sluice/workload",
                    "ports": [{
                        "name": serve_name(p),
                        "containerPort": p.port,
                        "protocol": p.protocol.as_str(),
                    }],
                })
            })
            .collect();
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": merged([("pod", name)], labels.pods.get(&pod)),
            },
            "spec": {"containers": containers},
            "status": {"podIP": ip},
        }));
        let svc = Cluster::service_name(pod);
        let ports: Vec<Json> = served
            .iter()
            .map(|p| {
                json!({
                    "name": service_port_name(p),
                    "port": p.port,
                    "targetPort": p.port,
                    "protocol": p.protocol.as_str(),
                })
            })
            .collect();
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc, "namespace": ns},
            "spec": {
                "clusterIP": Cluster::vip(pod).to_string(),
                "selector": {"pod": name},
                "ports": ports,
            },
        }));
        let slice_ports: Vec<Json> = served
            .iter()
            .map(|p| {
                json!({
                    "name": service_port_name(p),
                    "port": p.port,
                    "protocol": p.protocol.as_str(),
                })
            })
            .collect();
        docs.push(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{svc}-1"),
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": svc},
            },
            "addressType": "IPv4",
            "ports": slice_ports,
            "endpoints": [{
                "addresses": [ip],
                "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": name},
            }],
        }));
    }
    docs.push(marker(MODEL_MARKER, MODEL_MARKER_IP, generation));
    docs
}

/// Multi-document YAML, each document serialized (so label values such
/// as "true" or "1" stay strings).
pub fn to_yaml<T: serde::Serialize>(docs: &[T]) -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(d)?);
    }
    Ok(out)
}

/// The step's policies (placeholders already filled) plus the marker.
pub fn policy_yaml(
    policies: &[serde_norway::Value],
    generation: u16,
) -> Result<String, serde_norway::Error> {
    let mut text = to_yaml(policies)?;
    text.push_str(&to_yaml(&[marker(
        POLICY_MARKER,
        POLICY_MARKER_IP,
        generation,
    )])?);
    Ok(text)
}

/// Writes `text` to `dir/name` as one step: a hidden temporary file (the
/// agent ignores dot files) renamed over the target, so the agent never
/// reads a half-written file and gets one rename event.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Removes `dir/name`; already gone is fine.
pub fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::cases::Protocol;
    use super::*;

    fn cluster() -> Cluster {
        let mut pod_ips = [Ipv4Addr::UNSPECIFIED; N];
        for (i, ip) in pod_ips.iter_mut().enumerate() {
            *ip = Ipv4Addr::new(10, 244, 3, 2 + i as u8);
        }
        Cluster { pod_ips }
    }

    /// The generated model must be what the agent accepts: parse it with
    /// the agent's own parser.
    #[test]
    fn the_model_parses_without_rejections() {
        let served = [
            PortProto {
                port: 80,
                protocol: Protocol::Tcp,
            },
            PortProto {
                port: 81,
                protocol: Protocol::Sctp,
            },
        ];
        let mut labels = Labels::default();
        labels.namespaces.insert(
            "y",
            [("ns2".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
        );
        labels.pods.insert(
            PodId::parse("x/b").unwrap(),
            [("pod2".to_string(), "updated".to_string())]
                .into_iter()
                .collect(),
        );
        let text = to_yaml(&model_docs(&cluster(), &served, &labels, 7)).unwrap();
        let out = sluice_core::parse_documents(MODEL_FILE, &text);
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        // 3 namespaces + 9 × (pod, service, slice) + marker
        assert_eq!(out.objects.len(), 3 + 27 + 1);
        assert!(
            text.contains("ns2: 'true'"),
            "label values stay strings:\n{text}"
        );
        assert!(text.contains("name: serve-81-sctp"), "{text}");
        assert!(text.contains("name: service-port-tcp-80"), "{text}");
        assert!(
            text.contains("clusterIP: 10.96.1.14"),
            "y/b's Service:\n{text}"
        );
        assert!(text.contains("port: 7"), "marker generation:\n{text}");
    }

    #[test]
    fn writes_atomically_and_removes() {
        let dir = std::env::temp_dir().join(format!("slc-conf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir, "netpol.yaml", "a: 1\n").unwrap();
        write_atomic(&dir, "netpol.yaml", "a: 2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("netpol.yaml")).unwrap(),
            "a: 2\n"
        );
        assert!(!dir.join(".netpol.yaml.tmp").exists());
        remove(&dir, "netpol.yaml").unwrap();
        remove(&dir, "netpol.yaml").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
