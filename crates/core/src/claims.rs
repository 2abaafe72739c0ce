//! Frontends a Service claims, used by the store to refuse a second
//! Service on an address that is already taken.

use std::fmt;

use crate::model::{Protocol, Service};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    ClusterIp(std::net::Ipv4Addr, u16, Protocol),
    NodePort(u16, Protocol),
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::ClusterIp(ip, port, proto) => write!(f, "{ip}:{port}/{proto}"),
            Claim::NodePort(port, proto) => write!(f, "nodePort {port}/{proto}"),
        }
    }
}

/// (field path, claim) for every frontend the Service would program.
/// Ignored Services claim nothing.
pub fn claims_of(svc: &Service) -> Vec<(String, Claim)> {
    let Some(ip) = svc.cluster_ip.filter(|_| svc.is_proxied()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, p) in svc.ports.iter().enumerate() {
        out.push((
            format!("spec.ports[{i}]"),
            Claim::ClusterIp(ip, p.port, p.protocol),
        ));
        // External and load-balancer addresses share the ClusterIP space:
        // the datapath matches all of them by address.
        for (j, ip) in svc.external_ips.iter().enumerate() {
            out.push((
                format!("spec.externalIPs[{j}] (port {})", p.port),
                Claim::ClusterIp(*ip, p.port, p.protocol),
            ));
        }
        for (j, ip) in svc.load_balancer_ips.iter().enumerate() {
            out.push((
                format!("status.loadBalancer.ingress[{j}].ip (port {})", p.port),
                Claim::ClusterIp(*ip, p.port, p.protocol),
            ));
        }
        if let Some(np) = p.node_port.filter(|_| svc.has_node_ports()) {
            out.push((
                format!("spec.ports[{i}].nodePort"),
                Claim::NodePort(np, p.protocol),
            ));
        }
    }
    out
}
