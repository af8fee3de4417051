//! The states of a deployment and of each host in it, the same words in the database,
//! the operator API and the CLI. Which state may follow which is decided by the state machine
//! (`rollout::machine`) and nowhere else.

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal,)+ } fallback $fb:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant,)+ }
        impl $name {
            /// The stored and displayed form.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s,)+ }
            }
            /// Reads the stored form; unknown text (a newer schema) maps to the fallback.
            pub fn parse(s: &str) -> Self {
                match s { $($s => Self::$variant,)+ _ => Self::$fb }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where a deployment stands.
    DeploymentState {
        /// Recorded, not started.
        Pending => "pending",
        /// Pulling the image on every target.
        Preparing => "preparing",
        /// Moving batches.
        Rolling => "rolling",
        /// Returning changed hosts to their previous version after a failure.
        RollingBack => "rolling_back",
        /// Stopped at a safe point (by an operator, or after a failure with
        /// `on_failure = "pause"`); hosts already done stay; `drover resume` continues.
        Paused => "paused",
        /// Not started: waiting for its start time (`--at`) or for a deploy window to
        /// open before its first stage. Nothing has been touched; cancelling is safe.
        Scheduled => "scheduled",
        /// Not started: the environment wants a second person's approval
        /// (`drover approve ID`). Nothing has been touched; cancelling is safe.
        AwaitingApproval => "awaiting_approval",
        /// Started, and held between stages by a closed deploy window. Hosts have changed
        /// and the service stays locked; an abort rolls them back.
        Held => "held",
        /// A stage is done; its canary hosts are being watched against the rest.
        Baking => "baking",
        /// A stage is done and baked; waiting for `drover promote`.
        AwaitingPromotion => "awaiting_promotion",
        /// Cancelled before it started.
        Cancelled => "cancelled",
        /// Its start time passed while the controller was down, and the spec says skip.
        Skipped => "skipped",
        /// Every host runs the new version and is enabled.
        Succeeded => "succeeded",
        /// Failed; the hosts section says what each host runs.
        Failed => "failed",
        /// Failed, and every changed host was returned to its previous version.
        RolledBack => "rolled_back",
    } fallback Failed
}

impl DeploymentState {
    /// Nothing more will happen to it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::RolledBack | Self::Cancelled | Self::Skipped
        )
    }

    /// Hosts may be moving (a rollout task is acting on the fleet).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Preparing | Self::Rolling | Self::RollingBack)
    }
}

string_enum! {
    /// Where one host of a deployment stands.
    HostPhase {
        /// Not touched yet.
        Pending => "pending",
        /// The image is on the host.
        Prepared => "prepared",
        /// Out of rotation on every load balancer, waiting for sessions to end.
        Draining => "draining",
        /// The agent is swapping containers.
        Swapping => "swapping",
        /// New version ready; being put back in rotation.
        Enabling => "enabling",
        /// Runs the new version and is in rotation.
        Done => "done",
        /// Failed; restored to its previous version where the agent could.
        Failed => "failed",
        /// Being returned to its previous version.
        RollingBack => "rolling_back",
        /// Back on its previous version and in rotation.
        RolledBack => "rolled_back",
        /// Left drained: the controller could not put it back (see the error).
        LeftDrained => "left_drained",
    } fallback Failed
}

impl HostPhase {
    /// The host's swap has begun.
    pub fn is_started(self) -> bool {
        !matches!(self, Self::Pending | Self::Prepared)
    }

    /// The host will not change again in this deployment.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::RolledBack | Self::LeftDrained
        )
    }

    /// The host runs the new version (or may: its swap began) and would need rolling back.
    pub fn is_changed(self) -> bool {
        matches!(self, Self::Swapping | Self::Enabling | Self::Done)
    }
}

string_enum! {
    /// Why a deployment exists.
    DeploymentKind {
        /// A new version.
        Deploy => "deploy",
        /// `drover rollback`: back to the previous successful version.
        Rollback => "rollback",
    } fallback Deploy
}

string_enum! {
    /// An operator's standing request to a running deployment.
    Control {
        /// Nothing asked.
        None => "",
        /// Stop at the next safe point.
        Pause => "pause",
        /// Stop and roll back every changed host.
        Abort => "abort",
    } fallback None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "pending",
            "preparing",
            "rolling",
            "rolling_back",
            "paused",
            "succeeded",
            "failed",
            "rolled_back",
        ] {
            assert_eq!(DeploymentState::parse(s).as_str(), s);
        }
        for s in [
            "pending",
            "prepared",
            "draining",
            "swapping",
            "enabling",
            "done",
            "failed",
            "rolling_back",
            "rolled_back",
            "left_drained",
        ] {
            assert_eq!(HostPhase::parse(s).as_str(), s);
        }
    }

    #[test]
    fn terminal_and_active() {
        use DeploymentState::*;
        assert!(Succeeded.is_terminal() && !Rolling.is_terminal() && !Paused.is_terminal());
        assert!(!Held.is_terminal() && !Held.is_active());
        assert_eq!(DeploymentState::parse("held"), Held);
    }
}
