//! The Drover controller: the daemon behind `drover serve` (agent hub, operator API) and
//! the operator CLI. The binary only parses flags and dispatches to [`cli`].

pub mod auth;
pub mod cli;
pub mod dora;
pub mod enroll;
pub mod hub;
pub mod lb;
pub mod leader;
pub mod logtail;
pub mod metrics;
pub mod operator;
pub mod registry_api;
pub mod registry_auth;
pub mod rollout;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod slo;
pub mod spec;
pub mod state;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod web;
