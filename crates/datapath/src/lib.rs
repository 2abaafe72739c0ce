//! The kernel-facing side of Sluice: the eBPF programs built from `bpf/`
//! (embedded in the binary), loading them, attaching them to interfaces,
//! pinning everything under one bpffs directory per node, and typed access
//! to the pinned maps.
//!
//! Only this crate talks to the kernel's BPF interfaces. Map writes go through
//! [`maps::LbMaps`], which the agent's reconciler alone uses; the CLI opens the
//! same pinned maps read-only to list them while the agent is down.

pub mod bindings;
pub mod bpffs;
pub mod events;
pub mod loader;
pub mod mapinfo;
pub mod maps;
pub mod policy_maps;

pub use events::{EventReader, FlowEvent, ObsMaps};
pub use loader::{AttachMode, Datapath, DatapathConfig, DatapathError, SockHook, SocketLbState};
pub use maps::{
    LbMaps, MaglevMap, MapsError, NodeAddrMap, SockOptOutMap, SockRevNatMap, SrcRange, SrcRangeMap,
};
pub use policy_maps::{EndpointValue, IpcacheKey, PolicyMaps, PolicyMatch, PolicyValue};
