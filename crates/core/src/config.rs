//! Knobs shared by validation and compilation.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileConfig {
    /// Allowed `nodePort` values (kube-apiserver's `--service-node-port-range`).
    pub node_port_range: RangeInclusive<u16>,
    /// This node's name: an EndpointSlice endpoint is local when its
    /// `nodeName` equals it (internalTrafficPolicy Local). `None`: no
    /// endpoint of a slice is local.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Backend selection for Services without the `sluice.io/lb-algorithm`
    /// annotation: Maglev when true, random otherwise.
    #[serde(default)]
    pub maglev_default: bool,
    /// This node's `topology.kubernetes.io/zone`: Services with
    /// trafficDistribution PreferClose keep traffic in it when they can.
    #[serde(default)]
    pub node_zone: Option<String>,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            node_port_range: 30000..=32767,
            node_name: None,
            maglev_default: false,
            node_zone: None,
        }
    }
}
