//! Raw manifests → validated model. Every error carries the field path.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::CompileConfig;
use crate::error::ObjectError;
use crate::model::LB_ALGORITHM_ANNOTATION;
use crate::model::{
    AddressType, ContainerPort, Endpoint, EndpointPort, EndpointSlice, Meta, Namespace, Pod,
    Protocol, Service, ServicePort, ServiceType, TargetPort, TargetRef, DEFAULT_AFFINITY_TIMEOUT,
    MAX_AFFINITY_TIMEOUT, SERVICE_NAME_LABEL,
};
use crate::raw::{
    IntOrString, RawEndpointSlice, RawMeta, RawNamespace, RawPod, RawService, RawServicePort,
};

type Result<T> = std::result::Result<T, ObjectError>;

pub(crate) fn meta(raw: RawMeta, namespaced: bool) -> Result<Meta> {
    let name = match raw.name {
        Some(n) if !n.is_empty() => n,
        _ => return Err(ObjectError::invalid("metadata.name", "is required")),
    };
    let namespace = if namespaced {
        match raw.namespace {
            Some(ns) if !ns.is_empty() => ns,
            _ => "default".to_string(),
        }
    } else {
        String::new()
    };
    Ok(Meta {
        name,
        namespace,
        labels: raw.labels,
        annotations: raw.annotations,
    })
}

pub(crate) fn port(path: &str, value: Option<i64>) -> Result<u16> {
    let v = value.ok_or_else(|| ObjectError::invalid(path, "is required"))?;
    match u16::try_from(v) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ObjectError::invalid(path, format!("{v} is out of range"))),
    }
}

pub(crate) fn protocol(path: &str, value: Option<&str>) -> Result<Protocol> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(s) => Protocol::parse_k8s(s).ok_or_else(|| {
            ObjectError::invalid(path, format!("{s:?} is not one of TCP, UDP, SCTP"))
        }),
    }
}

/// Parses an IPv4 address; IPv6 gets its own message because it is a known
/// gap, not a typo.
fn ipv4(path: &str, s: &str) -> Result<Ipv4Addr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err(ObjectError::invalid(
            path,
            format!("{s}: IPv6 not supported yet"),
        )),
        Err(_) => Err(ObjectError::invalid(
            path,
            format!("{s:?} is not an IPv4 address"),
        )),
    }
}

pub fn namespace(raw: RawNamespace) -> Result<Namespace> {
    Ok(Namespace {
        meta: meta(raw.metadata, false)?,
    })
}

pub fn pod(raw: RawPod) -> Result<Pod> {
    let meta = meta(raw.metadata, true)?;
    let mut ports = Vec::new();
    for (ci, c) in raw.spec.containers.into_iter().enumerate() {
        for (pi, p) in c.ports.into_iter().enumerate() {
            let base = format!("spec.containers[{ci}].ports[{pi}]");
            ports.push(ContainerPort {
                port: port(&format!("{base}.containerPort"), p.container_port)?,
                protocol: protocol(&format!("{base}.protocol"), p.protocol.as_deref())?,
                name: p.name.filter(|n| !n.is_empty()),
            });
        }
    }
    let ip = match raw.status.pod_ip.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ipv4("status.podIP", s)?),
    };
    Ok(Pod { meta, ports, ip })
}

fn service_type(s: Option<&str>) -> Result<ServiceType> {
    match s {
        None | Some("ClusterIP") => Ok(ServiceType::ClusterIp),
        Some("NodePort") => Ok(ServiceType::NodePort),
        Some("LoadBalancer") => Ok(ServiceType::LoadBalancer),
        Some("ExternalName") => Ok(ServiceType::ExternalName),
        Some(other) => Err(ObjectError::invalid(
            "spec.type",
            format!("{other:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        )),
    }
}

/// `None` means headless. A missing clusterIP is an error: in manifest mode
/// there is no apiserver to allocate one.
fn cluster_ip(ip: Option<&str>, ips: &[String]) -> Result<Option<Ipv4Addr>> {
    for (i, s) in ips.iter().enumerate() {
        if s != "None" {
            ipv4(&format!("spec.clusterIPs[{i}]"), s)?;
        }
    }
    let (path, value) = match (ip, ips.first()) {
        (Some(s), _) if !s.is_empty() => ("spec.clusterIP".to_string(), s),
        (_, Some(s)) => ("spec.clusterIPs[0]".to_string(), s.as_str()),
        _ => {
            return Err(ObjectError::invalid(
                "spec.clusterIP",
                "is required (no IP allocator in manifest mode; use \"None\" for headless)",
            ))
        }
    };
    if value == "None" {
        return Ok(None);
    }
    ipv4(&path, value).map(Some)
}

fn service_port(
    i: usize,
    raw: RawServicePort,
    node_ports: bool,
    cfg: &CompileConfig,
) -> Result<ServicePort> {
    let base = format!("spec.ports[{i}]");
    let p = port(&format!("{base}.port"), raw.port)?;
    let target_port = match raw.target_port {
        None => TargetPort::Number(p),
        Some(IntOrString::Int(v)) => {
            TargetPort::Number(port(&format!("{base}.targetPort"), Some(v))?)
        }
        Some(IntOrString::Str(s)) if s.is_empty() => TargetPort::Number(p),
        // Kubernetes accepts numeric strings ("8080") as numbers.
        Some(IntOrString::Str(s)) => match s.parse::<i64>() {
            Ok(v) => TargetPort::Number(port(&format!("{base}.targetPort"), Some(v))?),
            Err(_) => TargetPort::Name(s),
        },
    };
    let node_port = match raw.node_port {
        // Ports of a ClusterIP Service may carry a stale nodePort; ignore it.
        Some(v) if node_ports => {
            let path = format!("{base}.nodePort");
            let np = port(&path, Some(v))?;
            if !cfg.node_port_range.contains(&np) {
                return Err(ObjectError::invalid(
                    path,
                    format!(
                        "{np} is outside the node port range {}-{}",
                        cfg.node_port_range.start(),
                        cfg.node_port_range.end()
                    ),
                ));
            }
            Some(np)
        }
        _ => None,
    };
    Ok(ServicePort {
        name: raw.name.unwrap_or_default(),
        protocol: protocol(&format!("{base}.protocol"), raw.protocol.as_deref())?,
        port: p,
        target_port,
        node_port,
    })
}

pub fn service(raw: RawService, cfg: &CompileConfig) -> Result<Service> {
    let meta = meta(raw.metadata, true)?;
    let spec = raw.spec;
    let service_type = service_type(spec.service_type.as_deref())?;
    if service_type == ServiceType::ExternalName {
        // kube-proxy ignores these entirely; do not fail on fields we never use.
        return Ok(Service {
            meta,
            service_type,
            cluster_ip: None,
            selector: spec.selector,
            ports: Vec::new(),
            session_affinity_timeout: None,
            internal_traffic_local: false,
            maglev: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: false,
            prefer_close: false,
        });
    }
    let cluster_ip = cluster_ip(spec.cluster_ip.as_deref(), &spec.cluster_ips)?;
    let session_affinity_timeout = session_affinity(
        spec.session_affinity.as_deref(),
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds),
    )?;
    let internal_traffic_local = match spec.internal_traffic_policy.as_deref() {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            return Err(ObjectError::invalid(
                "spec.internalTrafficPolicy",
                format!("{other:?} is not one of Cluster, Local"),
            ))
        }
    };
    let maglev = match meta
        .annotations
        .get(LB_ALGORITHM_ANNOTATION)
        .map(|v| v.trim())
    {
        None => None,
        Some("maglev") => Some(true),
        Some("random") => Some(false),
        Some(other) => {
            return Err(ObjectError::invalid(
                format!("metadata.annotations[{LB_ALGORITHM_ANNOTATION:?}]"),
                format!("{other:?} is not one of maglev, random"),
            ))
        }
    };
    let mut external_ips = Vec::with_capacity(spec.external_ips.len());
    for (i, s) in spec.external_ips.iter().enumerate() {
        external_ips.push(ipv4(&format!("spec.externalIPs[{i}]"), s)?);
    }
    let mut load_balancer_ips = Vec::new();
    if service_type == ServiceType::LoadBalancer {
        for (i, ing) in raw.status.load_balancer.ingress.iter().enumerate() {
            let path = format!("status.loadBalancer.ingress[{i}]");
            match ing.ip_mode.as_deref() {
                None | Some("VIP") => {}
                Some("Proxy") => continue,
                Some(other) => {
                    return Err(ObjectError::invalid(
                        format!("{path}.ipMode"),
                        format!("{other:?} is not one of VIP, Proxy"),
                    ))
                }
            }
            // A hostname-only ingress has no address to program.
            if let Some(ip) = ing.ip.as_deref() {
                load_balancer_ips.push(ipv4(&format!("{path}.ip"), ip)?);
            }
        }
    }
    let node_ports = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let mut ports: Vec<ServicePort> = Vec::with_capacity(spec.ports.len());
    for (i, raw_port) in spec.ports.into_iter().enumerate() {
        let sp = service_port(i, raw_port, node_ports, cfg)?;
        if let Some(prev) = ports
            .iter()
            .position(|q| q.port == sp.port && q.protocol == sp.protocol)
        {
            return Err(ObjectError::invalid(
                format!("spec.ports[{i}]"),
                format!(
                    "port {}/{} duplicates spec.ports[{prev}]",
                    sp.port, sp.protocol
                ),
            ));
        }
        if let Some(prev) = ports.iter().position(|q| q.name == sp.name) {
            return Err(ObjectError::invalid(
                format!("spec.ports[{i}].name"),
                format!("{:?} duplicates spec.ports[{prev}].name", sp.name),
            ));
        }
        ports.push(sp);
    }
    let prefer_close =
        crate::topology::prefers_close(spec.traffic_distribution.as_deref(), &meta.annotations);
    Ok(Service {
        meta,
        service_type,
        cluster_ip,
        selector: spec.selector,
        ports,
        session_affinity_timeout,
        internal_traffic_local,
        maglev,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges: !spec.load_balancer_source_ranges.is_empty(),
        prefer_close,
    })
}

/// `sessionAffinity` and its timeout, as the API server validates them.
fn session_affinity(kind: Option<&str>, timeout: Option<i64>) -> Result<Option<u32>> {
    match kind {
        None | Some("None") => Ok(None),
        Some("ClientIP") => match timeout {
            None => Ok(Some(DEFAULT_AFFINITY_TIMEOUT)),
            Some(t) => match u32::try_from(t) {
                Ok(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => Ok(Some(t)),
                _ => Err(ObjectError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{t} is out of range (1..={MAX_AFFINITY_TIMEOUT})"),
                )),
            },
        },
        Some(other) => Err(ObjectError::invalid(
            "spec.sessionAffinity",
            format!("{other:?} is not one of None, ClientIP"),
        )),
    }
}

fn address_type(s: Option<&str>) -> Result<AddressType> {
    match s {
        Some("IPv4") => Ok(AddressType::Ipv4),
        Some("IPv6") => Ok(AddressType::Ipv6),
        Some("FQDN") => Ok(AddressType::Fqdn),
        Some(other) => Err(ObjectError::invalid(
            "addressType",
            format!("{other:?} is not one of IPv4, IPv6, FQDN"),
        )),
        None => Err(ObjectError::invalid("addressType", "is required")),
    }
}

pub fn endpoint_slice(raw: RawEndpointSlice) -> Result<EndpointSlice> {
    let meta = meta(raw.metadata, true)?;
    let service_name = match meta.labels.get(SERVICE_NAME_LABEL) {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            return Err(ObjectError::invalid(
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "is required",
            ))
        }
    };
    let address_type = address_type(raw.address_type.as_deref())?;
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, e) in raw.endpoints.into_iter().enumerate() {
        // Non-IPv4 slices are legal but unused (IPv4-only datapath); keep them
        // so listings show them, with no addresses.
        let addresses = if address_type == AddressType::Ipv4 {
            e.addresses
                .iter()
                .enumerate()
                .map(|(j, a)| ipv4(&format!("endpoints[{i}].addresses[{j}]"), a))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let c = e.conditions;
        endpoints.push(Endpoint {
            addresses,
            ready: c.ready.unwrap_or(true),
            serving: c.serving.unwrap_or(true),
            terminating: c.terminating.unwrap_or(false),
            target_ref: e.target_ref.map(|t| TargetRef {
                kind: t.kind.unwrap_or_default(),
                namespace: t.namespace.unwrap_or_default(),
                name: t.name.unwrap_or_default(),
            }),
            node_name: e.node_name,
            zone_hints: e
                .hints
                .map(|h| h.for_zones.into_iter().filter_map(|z| z.name).collect())
                .unwrap_or_default(),
        });
    }
    let mut ports = Vec::with_capacity(raw.ports.len());
    for (i, p) in raw.ports.into_iter().enumerate() {
        let path = format!("ports[{i}]");
        ports.push(EndpointPort {
            name: p.name.unwrap_or_default(),
            port: match p.port {
                None => None,
                v => Some(port(&format!("{path}.port"), v)?),
            },
            protocol: protocol(&format!("{path}.protocol"), p.protocol.as_deref())?,
        });
    }
    Ok(EndpointSlice {
        meta,
        service_name,
        address_type,
        endpoints,
        ports,
    })
}
