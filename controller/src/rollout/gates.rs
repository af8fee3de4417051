//! An environment's gates, checked before a deploy into it is recorded: `requires`
//! (the release's digest succeeded in another environment, at least `soak` ago, and
//! was not rolled back there since) refuses the deploy, saying which gate and what
//! would open it; a spent error budget (`slo`) refuses it with the numbers (a rollback
//! is never held by it); `approval` records the deployment waiting for a second person.
//! An admin may open every gate with a reason, which history keeps.

use std::time::Duration;

use super::release::Chosen;
use super::{DeployError, DeployRequest, Deployer};
use crate::state::DeploymentKind;
use crate::store::{Deployment, Release, now_ms};

/// What the gates decided for a deploy that may go ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Admission {
    /// The deployment waits for `drover approve` before anything else.
    pub awaiting_approval: bool,
    /// What history keeps about the gates (an override and its reason).
    pub note: Option<String>,
}

impl Deployer {
    /// Checks the gates of `req`'s environment for the release `chosen`.
    pub(super) async fn check_gates(
        &self,
        req: &DeployRequest,
        chosen: &Chosen,
    ) -> Result<Admission, DeployError> {
        let gates = &req.gates;
        let mut held = Vec::new();
        if let Some(required) = &gates.requires {
            let release = &chosen.release;
            let successes = if release.digest.is_empty() {
                Vec::new()
            } else {
                self.shared
                    .store
                    .successes_since_digest(&release.service, required, &release.digest)
                    .await?
            };
            if let Some(why) = requires_holds(required, gates.soak, release, &successes, now_ms()) {
                held.push(why);
            }
        }
        if gates.slo.is_some()
            && let Some(budget) = self
                .shared
                .slo
                .budget(&req.spec.service.name, &req.environment)
                .await?
            && budget.spent
        {
            held.push(format!("gate `slo` holds: {}", budget.describe()));
        }
        if let Some(reason) = &req.override_reason {
            let mut opened = held;
            if gates.approval {
                opened.push("approval = \"required\"".to_string());
            }
            let note = if opened.is_empty() {
                format!(
                    "--override by {} (nothing was held): {reason}",
                    req.requested_by
                )
            } else {
                format!(
                    "gates overridden by {}: {reason} (opened: {})",
                    req.requested_by,
                    opened.join("; ")
                )
            };
            return Ok(Admission {
                awaiting_approval: false,
                note: Some(note),
            });
        }
        if let Some(why) = held.into_iter().next() {
            let hint = if why.contains("--override") {
                String::new()
            } else {
                "; an admin may deploy anyway with --override --reason \"...\"".to_string()
            };
            return Err(DeployError::Gate(format!("{why}{hint}")));
        }
        Ok(Admission {
            awaiting_approval: gates.approval,
            note: None,
        })
    }
}

/// Why `requires = "<required>"` (with `soak`) holds `release`, given the succeeded
/// deployments in the required environment from the newest one of the release's
/// digest on (oldest first; empty: the digest never succeeded there); `None` when it
/// is open.
pub(super) fn requires_holds(
    required: &str,
    soak: Duration,
    release: &Release,
    successes: &[Deployment],
    now_ms: u64,
) -> Option<String> {
    let gate = format!("gate `requires = {required:?}`");
    let name = format!(
        "release {} ({} {})",
        release.id, release.service, release.tag
    );
    if release.digest.is_empty() {
        return Some(format!(
            "{gate} holds: the digest of {name} is not known yet (the controller cannot ask its registry), so it cannot match what {required} ran; deploy with --from {required} or --release ID"
        ));
    }
    let Some(success) = successes.first() else {
        return Some(format!(
            "{gate} holds: {name}, {}, has no successful deployment in {required}; deploy it there first (`drover deploy --env {required} --release {}`)",
            short(&release.digest),
            release.id
        ));
    };
    if let Some(back) = successes[1..]
        .iter()
        .find(|d| d.kind == DeploymentKind::Rollback)
    {
        return Some(format!(
            "{gate} holds: {required} rolled {name} back since it succeeded there (rollback {} by {}); deploy a release that {required} keeps",
            back.id, back.requested_by
        ));
    }
    let done = success.finished_ms.unwrap_or(success.created_ms);
    let soaked = Duration::from_millis(now_ms.saturating_sub(done));
    if soaked < soak {
        let human = drover_shared::duration::human;
        return Some(format!(
            "gate `soak = \"{}\"` holds: {name} succeeded in {required} {} ago (deployment {}); it opens in {}",
            humantime::format_duration(soak),
            human(soaked),
            success.id,
            human(soak - soaked)
        ));
    }
    None
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(12, |i| i + 13).min(digest.len());
    &digest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DeploymentState;

    fn release(digest: &str) -> Release {
        Release {
            id: "r-1".into(),
            service: "web".into(),
            tag: "v2".into(),
            image: "127.0.0.1:5000/web".into(),
            digest: digest.into(),
            commit_sha: String::new(),
            commit_ms: None,
            created_by: "alice".into(),
            created_ms: 0,
        }
    }

    fn success(id: &str, kind: DeploymentKind, finished_ms: u64) -> Deployment {
        Deployment {
            environment: "staging".into(),
            kind,
            image: String::new(),
            spec: String::new(),
            state: DeploymentState::Succeeded,
            requested_by: "bob".into(),
            created_ms: finished_ms - 1_000,
            finished_ms: Some(finished_ms),
            ..Deployment::example(id, "web")
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_release_the_required_environment_never_ran_is_held() {
        let why = requires_holds("staging", HOUR, &release("sha256:abc"), &[], 10).unwrap();
        assert!(
            why.contains("no successful deployment in staging")
                && why.contains("--env staging --release r-1"),
            "{why}"
        );
    }

    #[test]
    fn a_release_rolled_back_in_the_required_environment_is_held() {
        let ran = [
            success("d-1", DeploymentKind::Deploy, 1_000_000),
            success("d-2", DeploymentKind::Rollback, 2_000_000),
        ];
        let why = requires_holds(
            "staging",
            Duration::ZERO,
            &release("sha256:abc"),
            &ran,
            9_000_000,
        )
        .unwrap();
        assert!(why.contains("rolled") && why.contains("d-2"), "{why}");
        // A later deploy of another release that succeeded does not hold it.
        let moved_on = [
            success("d-1", DeploymentKind::Deploy, 1_000_000),
            success("d-3", DeploymentKind::Deploy, 2_000_000),
        ];
        assert_eq!(
            requires_holds(
                "staging",
                Duration::ZERO,
                &release("sha256:abc"),
                &moved_on,
                9_000_000
            ),
            None
        );
    }

    #[test]
    fn the_soak_opens_once_long_enough_ago() {
        let ran = [success("d-1", DeploymentKind::Deploy, 1_000_000)];
        let r = release("sha256:abc");
        let now = 1_000_000 + 20 * 60_000;
        let why = requires_holds("staging", HOUR, &r, &ran, now).unwrap();
        assert!(
            why.contains("soak = \"1h\"") && why.contains("opens in 40 min"),
            "{why}"
        );
        assert_eq!(
            requires_holds("staging", HOUR, &r, &ran, 1_000_000 + 3_600_000),
            None
        );
    }

    #[test]
    fn an_unknown_digest_cannot_pass_requires() {
        let why = requires_holds("staging", HOUR, &release(""), &[], 0).unwrap();
        assert!(
            why.contains("not known yet") && why.contains("--from staging"),
            "{why}"
        );
    }
}
