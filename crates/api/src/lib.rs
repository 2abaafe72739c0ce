//! The agent's HTTP/JSON API: the types both sides speak and a client that
//! talks to the agent over its unix socket.
//!
//! Routes (all JSON):
//! - `GET    /v1/status`                      → [`Status`]
//! - `GET    /v1/services`                    → `Vec<ServiceInfo>`
//! - `GET    /v1/endpoints`                   → `Vec<EndpointInfo>`
//! - `POST   /v1/ipam/allocate`  [`IpamRequest`] → [`IpamAllocation`] (idempotent per container id)
//! - `POST   /v1/ipam/release`   [`IpamRelease`] → `{}` (releasing an unknown id succeeds)
//! - `PUT    /v1/endpoints/{container_id}` [`EndpointRegistration`] → [`EndpointInfo`]
//! - `DELETE /v1/endpoints/{container_id}`    → `{}` (deleting an unknown id succeeds)
//! - `GET    /v1/flows?[FlowQuery]`          → newline-delimited [`Flow`] JSON; with
//!   `follow=true` the response stays open and streams new flows
//! - `GET    /v1/config/trace`                → [`TraceConfig`]
//! - `PUT    /v1/config/trace`   [`TraceConfig`] → [`TraceConfig`]
//! - `GET    /v1/identities`                  → `Vec<IdentityView>`
//! - `GET    /v1/policy/endpoints`            → `Vec<EndpointPolicyView>` (local pods)
//! - `POST   /v1/policy/trace`  [`PolicyTraceRequest`] → [`PolicyTraceResult`]
//!
//! Errors come back with a non-2xx status and an [`ApiError`] body.

mod client;
mod types;

pub use client::{Client, ClientError, DEFAULT_SOCKET};
pub use types::*;
