//! One module per page; each reads through the operator service (or, for the wide
//! tables, the same store and inventory it reads) and renders with maud.

pub mod delivery;
pub mod deployment;
pub mod history;
pub mod hosts;
pub mod overview;
pub mod releases;
pub mod schedules;

use crate::state::DeploymentState;

/// A deployment state of the operator API as the domain's.
pub fn state_of(wire: i32) -> DeploymentState {
    DeploymentState::parse(&crate::cli::progress::state_name(wire))
}
