//! Topology-aware routing: `spec.trafficDistribution: PreferClose` (and the
//! older `service.kubernetes.io/topology-mode` annotation). The EndpointSlice
//! controller hints each endpoint with the zones it should serve; a node
//! keeps a Service's traffic on the endpoints hinted for its own zone, as
//! kube-proxy does, only when the hints can be trusted:
//! - the node knows its zone,
//! - every ready endpoint carries a hint (a half-hinted slice set is being
//!   rewritten by the controller; filtering on it could overload a few pods),
//! - at least one ready endpoint is hinted for this zone.
//!
//! Otherwise all ready endpoints are used. Topology never narrows the
//! serving-terminating fallback nor a Local traffic policy's set.

use crate::compile::BackendAddr;
use crate::endpoints::{from_slices, Scope};
use crate::index::{Key, Objects};
use crate::model::ServicePort;
use std::collections::BTreeMap;

/// Values of `spec.trafficDistribution` that ask for same-zone endpoints.
/// Others (future ones included) are ignored, as kube-proxy ignores them:
/// rejecting the Service would cut its traffic for a routing preference.
const PREFER_CLOSE_VALUES: [&str; 2] = ["PreferClose", "PreferSameZone"];
/// Older opt-in annotations; any value but empty or `disabled` turns it on.
const TOPOLOGY_ANNOTATIONS: [&str; 2] = [
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
];

pub(crate) fn prefers_close(
    traffic_distribution: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    if traffic_distribution.is_some_and(|t| PREFER_CLOSE_VALUES.contains(&t)) {
        return true;
    }
    TOPOLOGY_ANNOTATIONS.iter().any(|a| {
        annotations
            .get(*a)
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("disabled"))
    })
}

/// The ready endpoints hinted for `zone`, when the hints may be used;
/// `None` means "use every ready endpoint".
pub(crate) fn same_zone(
    objects: &Objects,
    key: &Key,
    port: &ServicePort,
    zone: &str,
) -> Option<Vec<BackendAddr>> {
    let unhinted = from_slices(objects, key, port, Scope::Cluster, |e| {
        e.ready && e.zone_hints.is_empty()
    });
    if !unhinted.is_empty() {
        return None;
    }
    let close = from_slices(objects, key, port, Scope::Cluster, |e| {
        e.ready && e.zone_hints.iter().any(|z| z == zone)
    });
    (!close.is_empty()).then_some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn opt_in_by_field_or_annotation() {
        let none = BTreeMap::new();
        assert!(prefers_close(Some("PreferClose"), &none));
        assert!(prefers_close(Some("PreferSameZone"), &none));
        assert!(!prefers_close(Some("SomethingNew"), &none));
        assert!(!prefers_close(None, &none));
        assert!(prefers_close(
            None,
            &ann("service.kubernetes.io/topology-mode", "Auto")
        ));
        assert!(!prefers_close(
            None,
            &ann("service.kubernetes.io/topology-mode", "Disabled")
        ));
        assert!(!prefers_close(
            None,
            &ann("service.kubernetes.io/topology-aware-hints", "")
        ));
    }
}
