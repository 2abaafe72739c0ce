//! Raw manifests → validated model. Every error carries the field path.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

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
/// gap, not a typo. Tolerant like Kubernetes' legacy parser: surrounding
/// whitespace is ignored and leading zeros are decimal (`010` is 10, not
/// octal 8), because the API server once accepted such addresses and
/// objects carrying them still exist.
pub(crate) fn ipv4(path: &str, s: &str) -> Result<Ipv4Addr> {
    let t = s.trim();
    if let Some(ip) = ipv4_sloppy(t) {
        return Ok(ip);
    }
    match t.parse::<IpAddr>() {
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

/// Dotted quad with decimal octets that may carry leading zeros.
fn ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Parses an IPv4 CIDR as tolerantly as [`ipv4`] (the prefix length may
/// carry leading zeros too); host bits are cleared (`10.0.0.1/8` is
/// `10.0.0.0/8`), as Kubernetes' parser does.
pub(crate) fn ipv4_cidr(path: &str, s: &str) -> Result<Ipv4Net> {
    let t = s.trim();
    let bad = || ObjectError::invalid(path, format!("{s:?} is not an IPv4 CIDR"));
    let (addr, len) = t.split_once('/').ok_or_else(bad)?;
    let addr = ipv4(path, addr)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    Ipv4Net::new(addr, len)
        .map(|n| n.trunc())
        .map_err(|_| bad())
}

pub fn namespace(raw: RawNamespace) -> Result<Namespace> {
    Ok(Namespace {
        meta: meta(raw.metadata, false)?,
    })
}

pub fn pod(raw: RawPod) -> Result<Pod> {
    let terminating = raw.metadata.deletion_timestamp.is_some();
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
    let ready = raw.status.conditions.as_ref().is_none_or(|cs| {
        cs.iter().any(|c| {
            c.condition_type.as_deref() == Some("Ready") && c.status.as_deref() == Some("True")
        })
    });
    Ok(Pod {
        meta,
        ports,
        ip,
        ready,
        terminating,
    })
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
            load_balancer_source_ranges: Vec::new(),
            external_traffic_local: false,
            health_check_node_port: None,
            prefer_close: false,
            publish_not_ready: false,
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
    let external_traffic_local = match spec.external_traffic_policy.as_deref() {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            return Err(ObjectError::invalid(
                "spec.externalTrafficPolicy",
                format!("{other:?} is not one of Cluster, Local"),
            ))
        }
    };
    let health_check_node_port = match spec.health_check_node_port {
        None | Some(0) => None,
        v => Some(port("spec.healthCheckNodePort", v)?),
    };
    let mut load_balancer_source_ranges = Vec::new();
    for (i, s) in spec.load_balancer_source_ranges.iter().enumerate() {
        let net = ipv4_cidr(&format!("spec.loadBalancerSourceRanges[{i}]"), s)?;
        if !load_balancer_source_ranges.contains(&net) {
            load_balancer_source_ranges.push(net);
        }
    }
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
        load_balancer_source_ranges,
        external_traffic_local,
        health_check_node_port,
        prefer_close,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_leading_zeros_are_decimal_and_whitespace_is_ignored() {
        assert_eq!(
            ipv4("x", "172.30.0.041").unwrap(),
            Ipv4Addr::new(172, 30, 0, 41)
        );
        assert_eq!(
            ipv4("x", " 010.0.0.08 ").unwrap(),
            Ipv4Addr::new(10, 0, 0, 8)
        );
        assert!(ipv4("x", "1.2.3.256").is_err());
        assert!(ipv4("x", "1.2.3").is_err());
        assert!(ipv4("x", "1.2.3.0004").is_err());
        assert!(ipv4("x", "fd00::1")
            .unwrap_err()
            .to_string()
            .contains("IPv6"));
    }

    #[test]
    fn cidrs_are_tolerant_and_truncated() {
        let n = |s| ipv4_cidr("x", s).map(|n| n.to_string());
        assert_eq!(n("203.0.113.000/025").unwrap(), "203.0.113.0/25");
        assert_eq!(n(" 192.168.0.0/24").unwrap(), "192.168.0.0/24");
        assert_eq!(n("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "x/8"] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }
}
