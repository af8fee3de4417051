//! The controller addresses an agent dials. One controller has one address; replicas
//! on PostgreSQL have several (`--controller https://a:7070,https://b:7070`), of which
//! one leads. A standby refuses with `UNAVAILABLE` and the leader's address in the
//! `drover-leader` metadata: the agent follows it at once, without a restart; an
//! address that cannot be reached hands over to the next one of the list. Shared (one
//! `Arc`) by the link, enrollment and renewal, so all of them use the address that
//! worked last.

use std::sync::{Arc, Mutex};

use tonic::{Code, Status};

/// The metadata key with which a standby controller names the leader (empty while
/// none leads); its presence marks a standby's refusal.
pub const LEADER_METADATA: &str = "drover-leader";

/// The addresses and which one to use now.
#[derive(Debug, Clone)]
pub struct Targets {
    /// As configured, in order.
    list: Vec<String>,
    /// The one in use: an index of `list`, or a leader a standby named.
    now: Arc<Mutex<Now>>,
}

/// See [`Targets::now`].
#[derive(Debug, Default)]
struct Now {
    /// Index into the list.
    index: usize,
    /// A leader named by a standby, used until it fails.
    leader: Option<String>,
}

/// What a refusal said about where to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// A standby named the leader: dial it now.
    Leader(String),
    /// A standby knows no leader yet: try the next address shortly.
    NoLeader,
}

impl PartialEq for Targets {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for Targets {}

impl Targets {
    /// The comma-separated addresses of `raw`, trimmed, empty ones dropped.
    pub fn split(raw: &str) -> Vec<String> {
        raw.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The targets of `raw` (see [`Targets::split`]).
    pub fn new(raw: &str) -> Self {
        Self {
            list: Self::split(raw),
            now: Arc::default(),
        }
    }

    fn now(&self) -> std::sync::MutexGuard<'_, Now> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address to dial now.
    pub fn current(&self) -> String {
        let now = self.now();
        match &now.leader {
            Some(l) => l.clone(),
            None => self.list.get(now.index).cloned().unwrap_or_default(),
        }
    }

    /// `url` could not be reached (or its stream broke): the next address from now on.
    pub fn unreachable(&self, url: &str) {
        let mut now = self.now();
        if now.leader.as_deref() == Some(url) {
            now.leader = None;
        } else if self.list.get(now.index).is_some_and(|u| u == url) && !self.list.is_empty() {
            now.index = (now.index + 1) % self.list.len();
        }
    }

    /// Where a refusal from `url` sends the agent, when it came from a standby (and
    /// the address to use is updated); `None` for any other status.
    pub fn redirected(&self, url: &str, status: &Status) -> Option<Redirect> {
        if status.code() != Code::Unavailable {
            return None;
        }
        // A standby always sends the metadata: the leader's address, or empty.
        let leader = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
        if leader.is_empty() {
            self.unreachable(url);
            return Some(Redirect::NoLeader);
        }
        let mut now = self.now();
        match self.list.iter().position(|u| u == leader) {
            Some(i) => {
                now.index = i;
                now.leader = None;
            }
            None => now.leader = Some(leader.to_owned()),
        }
        Some(Redirect::Leader(leader.to_owned()))
    }

    /// How many addresses are configured.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The configured addresses.
    pub fn all(&self) -> &[String] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(leader: Option<&str>) -> Status {
        let mut s = Status::unavailable("this controller is a standby replica");
        s.metadata_mut()
            .insert(LEADER_METADATA, leader.unwrap_or("").parse().unwrap());
        s
    }

    #[test]
    fn a_standby_sends_the_agent_to_the_leader_and_a_dead_address_to_the_next() {
        let t = Targets::new(" https://a:7070, https://b:7070 ,,https://c:7070");
        assert_eq!(
            t.all(),
            ["https://a:7070", "https://b:7070", "https://c:7070"]
        );
        assert_eq!(t.current(), "https://a:7070");
        assert_eq!(
            t.redirected("https://a:7070", &standby(Some("https://c:7070"))),
            Some(Redirect::Leader("https://c:7070".into()))
        );
        assert_eq!(t.current(), "https://c:7070");
        // The leader died: on to the next address, round the list.
        t.unreachable("https://c:7070");
        assert_eq!(t.current(), "https://a:7070");
        // A standby that knows no leader: the next address too.
        assert_eq!(
            t.redirected("https://a:7070", &standby(None)),
            Some(Redirect::NoLeader)
        );
        assert_eq!(t.current(), "https://b:7070");
        // A leader outside the list (another name for it) is followed until it fails.
        t.redirected("https://b:7070", &standby(Some("https://ctl-2:7070")));
        assert_eq!(t.current(), "https://ctl-2:7070");
        t.unreachable("https://ctl-2:7070");
        assert_eq!(t.current(), "https://b:7070");
        // Other refusals are not redirections.
        assert_eq!(
            t.redirected("https://b:7070", &Status::permission_denied("revoked")),
            None
        );
        assert_eq!(
            t.redirected("https://b:7070", &Status::unavailable("overloaded")),
            None
        );
    }

    #[test]
    fn clones_share_the_address_in_use() {
        let t = Targets::new("https://a:7070,https://b:7070");
        let renewal = t.clone();
        t.unreachable("https://a:7070");
        assert_eq!(renewal.current(), "https://b:7070");
        assert_eq!(t, renewal);
    }
}
