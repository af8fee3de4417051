//! Drover's shared vocabulary: image references, label selectors, readiness probes,
//! retry backoff and telemetry setup. Used by both the agent and the controller.
//! Nothing here decides policy or talks to Docker; it only gives both sides one meaning
//! for each word.

pub mod backoff;
pub mod duration;
pub mod image;
pub mod labels;
pub mod probe;
pub mod telemetry;
pub mod tls;

pub use drover_proto::v1 as proto;

/// The version of this Drover build, sent in hellos and shown by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
