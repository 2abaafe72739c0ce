//! Which Services get a health-check node port on this node, and the count
//! it reports (kube-proxy's service health server): LoadBalancer Services
//! with `externalTrafficPolicy: Local` and a `healthCheckNodePort`. The
//! count is of this node's READY endpoints; serving-terminating ones, which
//! still take traffic as a fallback, do not count, so a node whose last
//! local pod is shutting down is drained by the load balancer.

use crate::index::{Key, Objects};
use crate::model::{Service, ServiceType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub local_endpoints: usize,
}

pub(crate) fn health_check(
    objects: &Objects,
    key: &Key,
    svc: &Service,
    node: Option<&str>,
) -> Option<HealthCheckSpec> {
    let port = svc.health_check_node_port?;
    if !svc.is_proxied()
        || svc.service_type != ServiceType::LoadBalancer
        || !svc.external_traffic_local
    {
        return None;
    }
    let local_endpoints = if objects.has_slices(key) {
        let addrs: BTreeSet<_> = objects
            .slices_of(key)
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.ready && node.is_some() && e.node_name.as_deref() == node)
            .filter_map(|e| e.addresses.first())
            .collect();
        addrs.len()
    } else {
        // Endpoints derived from selected pods have no node name and count
        // as local, as for the traffic policies (endpoints.rs).
        objects
            .selected_pods(svc)
            .filter(|p| p.ip.is_some() && (svc.publish_not_ready || (p.ready && !p.terminating)))
            .count()
    };
    Some(HealthCheckSpec {
        namespace: key.0.clone(),
        name: key.1.clone(),
        port,
        local_endpoints,
    })
}
