//! Pure logic: no I/O, no kernel.
//!
//! Kubernetes YAML → validated objects ([`parse`]) → a [`store::Store`] that
//! keeps the last good version of each object → an incremental compiler
//! ([`compile::Engine`]) producing desired datapath tables → ordered map
//! operations ([`plan`]) that the agent writes to the eBPF maps.
//! NetworkPolicy and CiliumNetworkPolicy take a parallel path: the same
//! changes feed [`policy::PolicyEngine`], which compiles identities, the
//! ipcache and per-endpoint policy entries.

pub mod config;
pub mod error;
pub mod model;
pub mod parse;
mod raw;
mod validate;

pub use config::CompileConfig;
pub use error::ObjectError;
pub use model::{Kind, Object, ObjectRef, Protocol};
pub use parse::{parse_documents, parse_documents_with, ParseOutcome, Rejection};

pub mod compile;
mod endpoints;
pub mod ids;
mod index;
pub mod maglev;
pub mod plan;
pub mod policy;

pub use compile::{
    BackendAddr, CompileError, DesiredService, DesiredState, Engine, Frontend, FrontendKind,
    FrontendScope, Plan,
};
pub use ids::{IdAllocator, IdError};
pub use model::Change;
pub use plan::{plan_full, AppliedState, MapOp, Master};
pub use policy::{PolicyEngine, PolicyState};
mod claims;
pub mod health;
pub mod store;
mod topology;
pub use health::HealthCheckSpec;
pub use store::Store;
