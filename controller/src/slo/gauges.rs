//! The error-budget gauges on `/metrics`, one series per watched (service,
//! environment), set after every sampling round and rendered with the rest.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Budget;

/// The numbers of one target's last budget.
#[derive(Debug, Clone, Copy)]
struct Last {
    /// `Budget::remaining_ratio`.
    remaining_ratio: f64,
    /// `Budget::availability`: none without requests.
    availability: Option<f64>,
    /// The SLO's target.
    target: f64,
}

/// (service, environment) to its last numbers.
type ByTarget = BTreeMap<(String, String), Last>;

/// The last budget numbers of every watched target.
#[derive(Debug, Default)]
pub struct SloGauges {
    last: Mutex<ByTarget>,
}

impl SloGauges {
    /// Records `b` as the current budget of its target.
    pub fn set(&self, b: &Budget) {
        let last = Last {
            remaining_ratio: b.remaining_ratio,
            availability: b.availability,
            target: b.spec.target(),
        };
        self.lock()
            .insert((b.service.clone(), b.environment.clone()), last);
    }

    /// The target is no longer watched: its series go.
    pub fn forget(&self, service: &str, environment: &str) {
        self.lock()
            .remove(&(service.to_string(), environment.to_string()));
    }

    /// Registers the gauges in `reg`.
    pub fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        let last = self.lock();
        let series = |reg: &mut _, name: &str, help: &str, value: fn(&Last) -> Option<f64>| {
            let values = last.iter().filter_map(|((service, environment), v)| {
                let labels =
                    crate::metrics::labels(&[("service", service), ("environment", environment)]);
                Some((labels, value(v)?))
            });
            crate::metrics::gauges(reg, name, help, values);
        };
        series(
            reg,
            "drover_slo_error_budget_remaining_ratio",
            "Error budget left over the SLO window: 1 untouched, 0 spent, below 0 overspent.",
            |v| Some(v.remaining_ratio),
        );
        series(
            reg,
            "drover_slo_availability_ratio",
            "Share of requests not answered 5xx over the SLO window (absent without requests).",
            |v| v.availability,
        );
        series(
            reg,
            "drover_slo_availability_target_ratio",
            "The SLO's availability target.",
            |v| Some(v.target),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByTarget> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::{Increase, SloSpec};

    fn rendered(g: &SloGauges) -> String {
        let mut reg = prometheus_client::registry::Registry::default();
        g.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn renders_one_series_per_target_and_forgets() {
        let g = SloGauges::default();
        let spec = SloSpec::parse("99.5%", "30d").unwrap();
        let counted = Increase {
            requests: 5_000,
            errors: 12,
        };
        g.set(&Budget::compute("web", "production", spec, counted, None));
        g.set(&Budget::compute(
            "web",
            "staging",
            spec,
            Increase::default(),
            None,
        ));
        let out = rendered(&g);
        for line in [
            "# TYPE drover_slo_error_budget_remaining_ratio gauge",
            "drover_slo_error_budget_remaining_ratio{service=\"web\",environment=\"production\"} 0.52",
            "drover_slo_error_budget_remaining_ratio{service=\"web\",environment=\"staging\"} 1.0",
            "drover_slo_availability_ratio{service=\"web\",environment=\"production\"} 0.9976",
            "drover_slo_availability_target_ratio{service=\"web\",environment=\"production\"} 0.995",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(
            !out.contains("drover_slo_availability_ratio{service=\"web\",environment=\"staging\"}"),
            "{out}"
        );
        g.forget("web", "production");
        let out = rendered(&g);
        assert!(!out.contains("production"), "{out}");
    }
}
