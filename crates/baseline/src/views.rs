//! What the baselines render from: one entry per Service port, the unit
//! kube-proxy programs (`ServicePortName` + protocol).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sluice_core::{DesiredState, FrontendKind, Protocol};

/// One endpoint of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointView {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A Service port as kube-proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortView {
    /// `namespace/name`.
    pub service: String,
    /// Empty for an unnamed (single-port) Service port.
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// In the compiler's slot order (sorted by address).
    pub endpoints: Vec<EndpointView>,
}

impl ServicePortView {
    pub fn namespace(&self) -> &str {
        self.service.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.service
            .split_once('/')
            .map_or(self.service.as_str(), |(_, n)| n)
    }

    /// kube-proxy's `ServicePortName` string: `ns/name:port`, or `ns/name`
    /// for an unnamed port. Used in comments and chain-name hashes.
    pub fn port_id(&self) -> String {
        if self.port_name.is_empty() {
            self.service.clone()
        } else {
            format!("{}:{}", self.service, self.port_name)
        }
    }

    /// `tcp` / `udp` / `sctp`, as iptables and nft spell protocols.
    pub fn proto_lower(&self) -> &'static str {
        proto_lower(self.protocol)
    }

    /// Identity of the Service port: what a change is diffed by.
    pub(crate) fn key(&self) -> (&str, &str, Protocol) {
        (&self.service, &self.port_name, self.protocol)
    }
}

pub(crate) fn proto_lower(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// Groups the compiler's frontends into Service ports, sorted by
/// (service, port name, protocol) so renders are deterministic.
///
/// A ClusterIP frontend and its NodePort frontend become one view. A group
/// without a ClusterIP frontend (only possible when the compiler refused
/// that frontend as a conflict) is left out: kube-proxy has no way to
/// express a Service port without a cluster IP.
pub fn views_from(desired: &DesiredState) -> Vec<ServicePortView> {
    #[derive(Default)]
    struct Group {
        cluster: Option<(Ipv4Addr, u16)>,
        node_port: Option<u16>,
        endpoints: Vec<EndpointView>,
    }
    let mut groups: BTreeMap<(String, String, Protocol), Group> = BTreeMap::new();
    for d in desired.services.values() {
        let g = groups
            .entry((d.service.clone(), d.port_name.clone(), d.frontend.proto))
            .or_default();
        match d.kind {
            FrontendKind::ClusterIp => {
                g.cluster = Some((d.frontend.ip, d.frontend.port));
                // Both frontends of a port carry the same backends; take them once.
                g.endpoints = endpoints_of(desired, &d.backend_ids);
            }
            FrontendKind::NodePort => g.node_port = Some(d.frontend.port),
            // The baselines render ClusterIP and NodePort rules only.
            FrontendKind::ExternalIp | FrontendKind::LoadBalancer => {}
        }
    }
    groups
        .into_iter()
        .filter_map(|((service, port_name, protocol), g)| {
            let (cluster_ip, port) = g.cluster?;
            Some(ServicePortView {
                service,
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port: g.node_port,
                endpoints: g.endpoints,
            })
        })
        .collect()
}

fn endpoints_of(desired: &DesiredState, ids: &[u32]) -> Vec<EndpointView> {
    ids.iter()
        .filter_map(|id| desired.backends.get(id))
        .map(|b| EndpointView {
            ip: b.ip,
            port: b.port,
        })
        .collect()
}

/// `n` TCP Services `bench/svc-<i>` (port 80, cluster IPs from 10.96.0.0/12
/// upwards, skipping .0 and .255) with `endpoints` endpoints each on
/// 10.244.0.0/16 port 8080: synthetic input for tests and quick
/// measurements that do not need the compiler.
pub fn synthetic_views(n: usize, endpoints: usize) -> Vec<ServicePortView> {
    let mut out: Vec<ServicePortView> = (0..n)
        .map(|i| {
            let vip = nth_host(u32::from(Ipv4Addr::new(10, 96, 0, 0)), i);
            ServicePortView {
                service: format!("bench/svc-{i}"),
                port_name: "http".into(),
                protocol: Protocol::Tcp,
                cluster_ip: vip,
                port: 80,
                node_port: None,
                endpoints: (0..endpoints)
                    .map(|e| EndpointView {
                        ip: nth_host(u32::from(Ipv4Addr::new(10, 244, 0, 0)), i * endpoints + e),
                        port: 8080,
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort();
    out
}

/// The i-th address after `base` whose last octet is neither 0 nor 255.
fn nth_host(base: u32, i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let offset = (i / 254) * 256 + (i % 254) + 1;
    Ipv4Addr::from(base.wrapping_add(offset))
}
