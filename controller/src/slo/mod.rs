//! Error budgets: an availability target (SLO) per (service, environment), measured
//! from HAProxy's own backend counters, so that a deploy into an environment whose
//! budget is spent can be held.
//!
//! - [`spec`]: `slo = { availability = "99.5%", window = "30d" }`, parsed once.
//! - [`budget`]: the pure arithmetic (counter increases across reloads, budget left).
//! - [`SloMonitor`]: the sampler `drover serve` runs, and the budget queries the
//!   operator API and the deploy gate ask. Samples live in the store
//!   (`store/slo_rows.rs`), so a restarted controller keeps its history and targets.
//! - [`SloGauges`]: the budget on `/metrics`.

mod budget;
mod gauges;
mod monitor;
mod spec;

pub use budget::{Budget, Generation, Increase, Sample, increase, step, thousands};
pub use gauges::SloGauges;
pub use monitor::{SampleFailure, SampleRound, SloMonitor, SloSettings};
pub use spec::{RawSlo, SloSpec, SloSpecError};

use crate::lb::{LbError, RuntimeAddr};
use crate::spec::LoadBalancerSection;

/// What is watched: one service in one environment, behind these HAProxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloTarget {
    /// The service.
    pub service: String,
    /// The environment (`production`).
    pub environment: String,
    /// One runtime API per HAProxy in front of it; each is one series of samples.
    pub runtime: Vec<RuntimeAddr>,
    /// The backend holding the service's servers, the same name on every HAProxy.
    pub backend: String,
    /// The target and its window.
    pub spec: SloSpec,
}

impl SloTarget {
    /// The target of `service` in `environment` behind the spec's load balancer.
    pub fn new(
        service: &str,
        environment: &str,
        load_balancer: &LoadBalancerSection,
        spec: SloSpec,
    ) -> Result<Self, LbError> {
        Ok(Self {
            service: service.to_string(),
            environment: environment.to_string(),
            runtime: load_balancer
                .runtime
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()?,
            backend: load_balancer.backend.clone(),
            spec,
        })
    }
}
