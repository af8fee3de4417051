//! The Drover wire protocol, package `drover.v1`.
//!
//! Two services: `AgentChannel` (one long-lived stream opened by each agent) and
//! `Operator` (the API behind the `drover` CLI). The `.proto` files under
//! `proto/drover/v1/` are the one source of truth; this crate only compiles them.

#![allow(clippy::all, missing_docs)]

/// Generated types and services of `drover.v1`.
pub mod v1 {
    tonic::include_proto!("drover.v1");
}
