//! Deploy hooks as stored: each run of a hook with its outcome and output tail (kept
//! with the deployment, shown by `drover status` and `drover history`), the marker that
//! a `before_rollout` hook ran for a (service, environment, digest), and which
//! deployments were asked to run them again (`--rerun-hooks`).
//!
//! A successful `before_rollout` run and its marker are written in one transaction, so
//! a controller that dies right after the hook finds the marker when it resumes.

use super::sql::{OptionalExtension, params};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hook_runs (
    deployment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    phase TEXT NOT NULL,
    host TEXT NOT NULL,
    outcome TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
CREATE TABLE IF NOT EXISTS hook_markers (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    digest TEXT NOT NULL,
    hook TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (service, environment, digest, hook)
);
CREATE TABLE IF NOT EXISTS hook_reruns (
    deployment_id TEXT PRIMARY KEY
);
"#;

/// How one run of a hook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exited 0, or the HTTP check passed.
    Succeeded,
    /// Exited non-zero, or the HTTP check failed every try.
    Failed,
    /// Killed at its timeout.
    TimedOut,
    /// Could not be run (image, Docker, agent lost).
    Error,
    /// Not run: it already ran for this digest.
    Skipped,
}

impl HookOutcome {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "skipped" => Self::Skipped,
            _ => Self::Error,
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> drover_proto::v1::HookOutcome {
        use drover_proto::v1::HookOutcome as P;
        match self {
            Self::Succeeded => P::Succeeded,
            Self::Failed => P::Failed,
            Self::TimedOut => P::TimedOut,
            Self::Error => P::Error,
            Self::Skipped => P::Skipped,
        }
    }
}

/// One run of a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// The hook's name.
    pub name: String,
    /// `before_rollout`, `after_batch` or `after_rollout`.
    pub phase: String,
    /// Where it ran (empty: the controller's HTTP check).
    pub host: String,
    /// How it ended.
    pub outcome: HookOutcome,
    /// Its exit code (0 when it has none).
    pub exit_code: i64,
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms.
    pub finished_ms: u64,
    /// The last 64 KiB of its output, secrets redacted.
    pub output: String,
}

/// Where a hook already ran for a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookMarker {
    /// The deployment that ran it.
    pub deployment_id: String,
    /// When it finished, Unix ms.
    pub at_ms: u64,
}

/// What a marker is for.
#[derive(Debug, Clone, Copy)]
pub struct MarkerKey<'a> {
    /// The service.
    pub service: &'a str,
    /// Its environment.
    pub environment: &'a str,
    /// The image digest deployed.
    pub digest: &'a str,
    /// The hook's name.
    pub hook: &'a str,
}

impl Store {
    /// Records a run of a hook of deployment `id`; with `marker`, also that the hook
    /// ran for that digest, in the same transaction.
    pub async fn record_hook(
        &self,
        id: &str,
        run: HookRun,
        marker: Option<MarkerKey<'_>>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        let marker = marker.map(|m| {
            (
                m.service.to_owned(),
                m.environment.to_owned(),
                m.digest.to_owned(),
                m.hook.to_owned(),
            )
        });
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO hook_runs (deployment_id, seq, name, phase, host, outcome, exit_code, started_ms, finished_ms, output)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM hook_runs WHERE deployment_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id, run.name, run.phase, run.host, run.outcome.as_str(), run.exit_code,
                    run.started_ms, run.finished_ms, run.output
                ],
            )?;
            if let Some((service, environment, digest, hook)) = &marker {
                tx.execute(
                    "INSERT INTO hook_markers (service, environment, digest, hook, deployment_id, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (service, environment, digest, hook) DO UPDATE
                       SET deployment_id = excluded.deployment_id, at_ms = excluded.at_ms",
                    params![service, environment, digest, hook, id, run.finished_ms],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The runs of deployment `id`'s hooks, in the order they ran.
    pub async fn hook_runs(&self, id: &str) -> Result<Vec<HookRun>, StoreError> {
        let mut all = self.hook_runs_of(vec![id.to_owned()]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// The hook runs of each of `ids`, in that order, each in the order they ran: one
    /// query however many deployments a listing shows.
    pub async fn hook_runs_of(&self, ids: Vec<String>) -> Result<Vec<Vec<HookRun>>, StoreError> {
        self.with(move |c| {
            let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
            let mut st = c.prepare_cached(&format!(
                "SELECT deployment_id, name, phase, host, outcome, exit_code, started_ms, finished_ms, output
                 FROM hook_runs WHERE deployment_id IN ({})
                 ORDER BY deployment_id, seq",
                super::id_list(c)
            ))?;
            let rows = st.query_map(params![list], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    HookRun {
                        name: r.get(1)?,
                        phase: r.get(2)?,
                        host: r.get(3)?,
                        outcome: HookOutcome::parse(&r.get::<_, String>(4)?),
                        exit_code: r.get(5)?,
                        started_ms: r.get(6)?,
                        finished_ms: r.get(7)?,
                        output: r.get(8)?,
                    },
                ))
            })?;
            let mut by_id: std::collections::HashMap<String, Vec<HookRun>> =
                std::collections::HashMap::new();
            for row in rows {
                let (id, run) = row?;
                by_id.entry(id).or_default().push(run);
            }
            Ok(ids
                .iter()
                .map(|id| by_id.remove(id).unwrap_or_default())
                .collect())
        })
        .await
    }

    /// Where the hook of `key` already ran for its digest, if it did.
    pub async fn hook_marker(&self, key: MarkerKey<'_>) -> Result<Option<HookMarker>, StoreError> {
        let (s, e, d, h) = (
            key.service.to_owned(),
            key.environment.to_owned(),
            key.digest.to_owned(),
            key.hook.to_owned(),
        );
        self.with(move |c| {
            c.query_row(
                "SELECT deployment_id, at_ms FROM hook_markers
                 WHERE service = ?1 AND environment = ?2 AND digest = ?3 AND hook = ?4",
                params![s, e, d, h],
                |r| {
                    Ok(HookMarker {
                        deployment_id: r.get(0)?,
                        at_ms: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records that deployment `id` runs its `before_rollout` hooks even where they ran.
    pub async fn set_rerun_hooks(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.execute(
                "INSERT INTO hook_reruns (deployment_id) VALUES (?1) ON CONFLICT DO NOTHING",
                params![id],
            )?;
            Ok(())
        })
        .await
    }

    /// Whether deployment `id` was asked to run its hooks again.
    pub async fn reruns_hooks(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM hook_reruns WHERE deployment_id = ?1)",
                params![id],
                |r| r.get(0),
            )
        })
        .await
    }
}
