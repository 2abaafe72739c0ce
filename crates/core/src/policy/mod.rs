//! NetworkPolicy and CiliumNetworkPolicy: the validated model, security
//! identities, and a pure compiler from policies to the tables the
//! datapath enforces, with a direct evaluator to check them against.

mod cluster;
mod compile;
mod engine;
mod entries;
mod evaluate;
mod fields;
pub mod identity;
mod lookup;
pub mod model;
pub mod ports;
pub(crate) mod raw;
mod resolve;
mod rules;
mod state;
mod validate_cilium;
mod validate_k8s;

pub use engine::PolicyEngine;
pub use identity::{
    IdentityInfo, IdentityKind, ID_ANY, ID_HEALTH, ID_HOST, ID_REMOTE_NODE, ID_WORLD,
};
pub use lookup::TableVerdict;
pub use model::{
    CidrBlock, CiliumNetworkPolicy, CiliumRule, Entity, LabelSelector, NetworkPolicy,
    NetworkPolicyPeer, NetworkPolicyRule, PolicyPort, PolicyType, PortMatch, SelectorOperator,
    SelectorRequirement,
};
pub use state::{
    Direction, DirectionVerdict, EndpointPolicy, Peer, PolicyEntry, PolicyKey, PolicyState,
    RuleRef, Verdict, RULE_ID_HOST,
};
pub(crate) use validate_cilium::cilium_network_policy;
pub(crate) use validate_k8s::network_policy;
