//! Which action buttons a page shows, and why one is disabled: the role decides whether
//! a button is there at all (the same [`requirement`] table as the gRPC gate), the
//! deployment's state whether it is enabled (the same state machine that will judge the
//! request). Pure.

use crate::auth::{Principal, requirement};
use crate::rollout::machine::{Event, next};
use crate::spec::Environment;
use crate::state::DeploymentState;

/// An operator action on one deployment: the rollout engine's own [`Action`], with what
/// the pages need of it (its word, its wire form, whether a state takes it).
pub use crate::rollout::Action as Control;

impl Control {
    /// Every control, in the order the buttons are shown.
    pub const ALL: [Control; 6] = [
        Control::Promote,
        Control::Approve,
        Control::Pause,
        Control::Resume,
        Control::Cancel,
        Control::Abort,
    ];

    /// The word in URLs, `data-action` and the CLI (`drover promote ID`).
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Promote => "promote",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Abort => "abort",
            Control::Cancel => "cancel",
            Control::Approve => "approve",
        }
    }

    /// The control named `s` in a URL.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The operator API's action.
    pub fn proto(self) -> drover_proto::v1::ControlAction {
        use drover_proto::v1::ControlAction as A;
        match self {
            Control::Promote => A::Promote,
            Control::Pause => A::Pause,
            Control::Resume => A::Resume,
            Control::Abort => A::Abort,
            Control::Cancel => A::Cancel,
            Control::Approve => A::Approve,
        }
    }

    /// Whether a deployment in `state` takes this control, or why not, in words.
    pub fn available(self, state: DeploymentState) -> Result<(), String> {
        let allowed = match self {
            Control::Promote => next(state, Event::Promote).is_some(),
            Control::Pause => next(state, Event::Pause).is_some(),
            Control::Resume => next(state, Event::Resume).is_some(),
            Control::Cancel => next(state, Event::Cancel).is_some(),
            Control::Approve => next(state, Event::Approve).is_some(),
            Control::Abort => {
                next(state, Event::BeginRollback).is_some() || state == DeploymentState::Preparing
            }
        };
        if allowed {
            return Ok(());
        }
        // Short: the page shows the state next to the buttons.
        Err(match self {
            _ if state.is_terminal() => format!("the deployment has ended ({})", state.as_str()),
            Control::Promote => "no stage waits for a promotion".to_owned(),
            Control::Pause => "pauses only while rolling or baking".to_owned(),
            Control::Resume => "not paused".to_owned(),
            Control::Cancel => "has started: abort instead".to_owned(),
            Control::Approve => "no approval pending".to_owned(),
            Control::Abort => "has not started: cancel instead".to_owned(),
        })
    }
}

/// Whether `who` may use operator method `method` (so its buttons are shown at all).
pub fn may(who: &Principal, method: &str) -> bool {
    who.role.allows(requirement(method).role)
}

/// Whether a deploy into `env` asks the operator to type its name: an approval gate, or
/// a production environment (its name, or a `production` label value in its targets).
pub fn needs_confirmation(env: &Environment) -> bool {
    let prod = |s: &str| s == "production" || s == "prod";
    env.gates.approval
        || prod(&env.name)
        || env
            .spec
            .targets
            .selector
            .to_string()
            .split([',', '=', ' '])
            .any(prod)
}

/// Whether the typed confirmation matches.
pub fn confirmed(env: &Environment, typed: &str) -> bool {
    !needs_confirmation(env) || typed.trim() == env.name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use crate::spec::SpecFile;
    use DeploymentState::*;
    use drover_shared::tls::Role;

    #[test]
    fn each_control_is_offered_in_the_states_the_machine_takes_it() {
        assert!(Control::Promote.available(AwaitingPromotion).is_ok());
        assert!(Control::Pause.available(Rolling).is_ok());
        assert!(Control::Resume.available(Paused).is_ok());
        assert!(Control::Abort.available(Rolling).is_ok());
        assert!(Control::Abort.available(Preparing).is_ok());
        assert!(Control::Cancel.available(Scheduled).is_ok());
        assert!(Control::Approve.available(AwaitingApproval).is_ok());
        assert_eq!(
            Control::Promote.available(Rolling).unwrap_err(),
            "no stage waits for a promotion"
        );
        assert_eq!(
            Control::Abort.available(Succeeded).unwrap_err(),
            "the deployment has ended (succeeded)"
        );
        assert_eq!(
            Control::Cancel.available(Rolling).unwrap_err(),
            "has started: abort instead"
        );
        for c in Control::ALL {
            assert_eq!(Control::parse(c.as_str()), Some(c));
        }
        assert_eq!(Control::parse("rollback"), None);
    }

    #[test]
    fn a_viewer_sees_no_action_and_a_deployer_does() {
        let who = |role| Principal {
            name: "n".into(),
            role,
            method: AuthMethod::Token,
        };
        for method in ["Control", "Deploy", "Rollback"] {
            assert!(!may(&who(Role::Viewer), method));
            assert!(may(&who(Role::Deployer), method));
            assert!(may(&who(Role::Admin), method));
        }
        assert!(may(&who(Role::Viewer), "GetDeployment"));
    }

    #[test]
    fn production_and_approval_environments_ask_for_their_name() {
        let spec = r#"
[service]
name = "web"
image = "reg.local/web"
port = 8080
[targets]
selector = "role=web"
[env.staging]
targets = { selector = "role=web,env=staging" }
[env.live]
targets = { selector = "role=web,env=production" }
[env.eu]
approval = "required"
targets = { selector = "role=web,env=eu" }
"#;
        let file = SpecFile::parse(spec).unwrap();
        let env = |n| file.environment(Some(n)).unwrap();
        assert!(!needs_confirmation(&env("staging")));
        assert!(confirmed(&env("staging"), ""));
        assert!(needs_confirmation(&env("live")));
        assert!(needs_confirmation(&env("eu")));
        assert!(!confirmed(&env("live"), "production"));
        assert!(confirmed(&env("live"), " live "));
    }
}
