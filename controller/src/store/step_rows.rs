//! How long each step of a host's rollout took (drain, create, stop, start, ready, UP),
//! one row per host and step, written once per batch for all its hosts. The latest run
//! of a step replaces an earlier one (a resumed or rolled-back host).

use super::sql::params;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS host_steps (
    deployment_id TEXT NOT NULL,
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    ms INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, host, step)
);
"#;

/// A step of a host's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// Waiting for the drained server's sessions to end.
    Drain,
    /// Creating the new container.
    Create,
    /// Stopping the old container.
    Stop,
    /// Starting the new container.
    Start,
    /// From the start until the readiness probe passed.
    Ready,
    /// From the re-enable until every load balancer reported the server UP.
    Up,
}

impl StepKind {
    /// Every step, in the order a host goes through them.
    pub const ALL: [StepKind; 6] = [
        StepKind::Drain,
        StepKind::Create,
        StepKind::Stop,
        StepKind::Start,
        StepKind::Ready,
        StepKind::Up,
    ];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Drain => "drain",
            StepKind::Create => "create",
            StepKind::Stop => "stop",
            StepKind::Start => "start",
            StepKind::Ready => "ready",
            StepKind::Up => "up",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One step of one host, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStep {
    /// The host.
    pub host: String,
    /// Which step.
    pub kind: StepKind,
    /// How long it took.
    pub ms: u64,
    /// What the operator should know about it (empty: nothing).
    pub note: String,
}

impl HostStep {
    /// A step of `host` that took `ms`, with nothing to note.
    pub fn new(host: &str, kind: StepKind, ms: u64) -> Self {
        Self {
            host: host.to_string(),
            kind,
            ms,
            note: String::new(),
        }
    }
}

impl Store {
    /// Records `steps` of deployment `id`, in one transaction.
    pub async fn record_steps(&self, id: &str, steps: Vec<HostStep>) -> Result<(), StoreError> {
        if steps.is_empty() {
            return Ok(());
        }
        let id = id.to_string();
        let now = super::now_ms();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO host_steps (deployment_id, host, step, ms, note, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (deployment_id, host, step) DO UPDATE SET ms = excluded.ms,
                        note = excluded.note, at_ms = excluded.at_ms",
                )?;
                for s in &steps {
                    stmt.execute(params![id, s.host, s.kind.as_str(), s.ms, s.note, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every recorded step of deployment `id`, by host, in step order.
    pub async fn host_steps(&self, id: &str) -> Result<Vec<HostStep>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT host, step, ms, note FROM host_steps WHERE deployment_id = ?1",
            )?;
            let mut steps: Vec<HostStep> = stmt
                .query_map(params![id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .filter_map(|row| {
                    let (host, step, ms, note) = match row {
                        Ok(r) => r,
                        Err(e) => return Some(Err(e)),
                    };
                    // A step this build does not know (a newer controller wrote it): skipped.
                    let kind = StepKind::parse(&step)?;
                    Some(Ok(HostStep {
                        host,
                        kind,
                        ms,
                        note,
                    }))
                })
                .collect::<Result<_, _>>()?;
            steps.sort_by(|a, b| (&a.host, a.kind).cmp(&(&b.host, b.kind)));
            Ok(steps)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(steps_are_kept_per_host_in_order_and_a_rerun_replaces);

    async fn steps_are_kept_per_host_in_order_and_a_rerun_replaces(db: TestDb) {
        let store = db.open().await;
        let mut killed = HostStep::new("h1", StepKind::Stop, 10_000);
        killed.note = "killed".into();
        store
            .record_steps(
                "d1",
                vec![
                    HostStep::new("h2", StepKind::Drain, 5),
                    HostStep::new("h1", StepKind::Up, 200),
                    killed,
                ],
            )
            .await
            .unwrap();
        store
            .record_steps("d1", vec![HostStep::new("h1", StepKind::Up, 210)])
            .await
            .unwrap();
        let got: Vec<(String, StepKind, u64, String)> = store
            .host_steps("d1")
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.host, s.kind, s.ms, s.note))
            .collect();
        assert_eq!(
            got,
            [
                ("h1".into(), StepKind::Stop, 10_000, "killed".into()),
                ("h1".into(), StepKind::Up, 210, String::new()),
                ("h2".into(), StepKind::Drain, 5, String::new()),
            ]
        );
        assert!(store.host_steps("d2").await.unwrap().is_empty());
    }
}
