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
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            node_port_range: 30000..=32767,
            node_name: None,
        }
    }
}
