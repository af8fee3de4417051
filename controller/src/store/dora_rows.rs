//! The deploy history as the delivery metrics read it ([`crate::dora`]): the records of
//! a window, plus each of their digests' first deployment in its environment (which
//! decides whether a redeploy goes back to an older digest), in one query.

use super::sql::params;

use super::{Store, StoreError};
use crate::dora::{self, Dora, Record};
use crate::state::{DeploymentKind, DeploymentState};

/// The indexes the query uses: deployments finished since a time, and the first
/// deployment of a digest in an environment (created once the environment column exists).
pub(super) const SCHEMA: &str = r#"
CREATE INDEX IF NOT EXISTS deployments_finished ON deployments(finished_ms);
DROP INDEX IF EXISTS deployments_digest;
CREATE INDEX IF NOT EXISTS deployments_env_digest ON deployments(service, environment, pinned, created_ms);
"#;

/// `d` is the one place that says where each field comes from; the rest of the query
/// reads `d` only. `w`: the window's deployments (finished since ?1, or not finished),
/// of service ?2 and environment ?3 when given. Then, once per digest of `w`, its first
/// deployment in that environment when it finished before the window (else it is in
/// `w` already). `d` is a view (never copied); `w` is materialized: read once, used twice.
const RECORDS: &str = r#"
WITH d AS NOT MATERIALIZED (
    SELECT id, service, kind, state, pinned, created_ms, finished_ms,
        environment,
        (SELECT r.commit_ms FROM releases r WHERE r.id = deployments.release_id) AS commit_ms
    FROM deployments
),
w AS MATERIALIZED (
    SELECT * FROM d
    WHERE (finished_ms >= ?1 OR finished_ms IS NULL)
        AND (CAST(?2 AS TEXT) IS NULL OR service = ?2)
        AND (CAST(?3 AS TEXT) IS NULL OR environment = ?3)
)
SELECT id, service, environment, kind, state, pinned, created_ms, finished_ms, commit_ms FROM w
UNION ALL
SELECT f.id, f.service, f.environment, f.kind, f.state, f.pinned, f.created_ms, f.finished_ms, f.commit_ms
FROM (SELECT DISTINCT service, environment, pinned FROM w WHERE pinned <> '') k
JOIN d f ON f.id = (
    SELECT g.id FROM d g
    WHERE g.service = k.service AND g.environment = k.environment AND g.pinned = k.pinned
    ORDER BY g.created_ms LIMIT 1
) AND f.finished_ms < ?1
"#;

impl Store {
    /// The delivery metrics of the window `settings` gives, per service and
    /// environment, of `service` and `environment` when given: the records read in one
    /// query, the metrics computed off the runtime (a long history is a few ms of work).
    pub async fn dora(
        &self,
        settings: dora::Settings,
        service: Option<String>,
        environment: Option<String>,
    ) -> Result<Vec<Dora>, StoreError> {
        let records = self
            .dora_records(settings.start_ms, service, environment)
            .await?;
        tokio::task::spawn_blocking(move || dora::compute(&records, &settings))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
    }

    /// What [`crate::dora::compute`] needs for a window starting at `since_ms`:
    /// deployments finished since then (or not finished), of `service` and
    /// `environment` when given, and the first deployment of each of their digests.
    pub async fn dora_records(
        &self,
        since_ms: u64,
        service: Option<String>,
        environment: Option<String>,
    ) -> Result<Vec<Record>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(RECORDS)?;
            let rows = stmt.query_map(params![since_ms, service, environment], |r| {
                let pinned: String = r.get(5)?;
                Ok(Record {
                    id: r.get(0)?,
                    service: r.get(1)?,
                    environment: r.get(2)?,
                    kind: DeploymentKind::parse(&r.get::<_, String>(3)?),
                    state: DeploymentState::parse(&r.get::<_, String>(4)?),
                    digest: pinned
                        .rsplit_once('@')
                        .map_or(pinned.as_str(), |(_, d)| d)
                        .to_owned(),
                    created_ms: r.get(6)?,
                    finished_ms: r.get(7)?,
                    commit_ms: r.get(8)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a deployment row as history (no lock, no hosts).
    async fn put(s: &Store, id: &str, service: &str, pinned: &str, at: (u64, Option<u64>)) {
        let (id, service, pinned) = (id.to_owned(), service.to_owned(), pinned.to_owned());
        s.with(move |c| {
            c.execute(
                "INSERT INTO deployments (id, service, kind, version, image, pinned, spec, state, epoch, requested_by, created_ms, finished_ms)
                 VALUES (?1, ?2, 'deploy', 'v', 'i', ?3, '', ?4, 1, 'ops', ?5, ?6)",
                params![id, service, pinned, if at.1.is_some() { "succeeded" } else { "rolling" }, at.0, at.1],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    }

    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(the_window_with_each_digests_first_deployment);

    async fn the_window_with_each_digests_first_deployment(db: TestDb) {
        let s = db.open().await;
        put(&s, "old-a", "web", "r@sha256:a", (10, Some(20))).await;
        put(&s, "old-b", "web", "r@sha256:b", (30, Some(40))).await;
        put(&s, "old-c", "web", "r@sha256:c", (50, Some(60))).await;
        put(&s, "new-a", "web", "r@sha256:a", (100, Some(110))).await;
        put(&s, "new-c", "web", "r@sha256:c", (120, Some(130))).await;
        put(&s, "running", "web", "r@sha256:d", (140, None)).await;
        put(&s, "api", "api", "r@sha256:a", (100, Some(110))).await;
        let ids = |v: Vec<Record>| {
            let mut ids: Vec<String> = v.into_iter().map(|r| r.id).collect();
            ids.sort();
            ids
        };
        let web = s.dora_records(100, Some("web".into()), None).await.unwrap();
        assert!(web.iter().all(|r| r.environment.is_empty()));
        assert_eq!(
            web.iter().find(|r| r.id == "new-a").unwrap().digest,
            "sha256:a"
        );
        // old-b's digest is not deployed in the window: not needed.
        assert_eq!(ids(web), ["new-a", "new-c", "old-a", "old-c", "running"]);
        let all = s.dora_records(100, None, None).await.unwrap();
        assert_eq!(all.len(), 6);
        let none = s.dora_records(100, None, Some("production".into())).await;
        assert!(none.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_query_reads_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).await.unwrap();
        let plan = s
            .with(|c| {
                let c = c.sqlite().expect("a SQLite store");
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {RECORDS}"))?;
                let rows = stmt
                    .query_map(rusqlite::params![0, None::<String>, None::<String>], |r| {
                        r.get::<_, String>(3)
                    })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
            })
            .await
            .unwrap();
        assert!(plan.contains("deployments_finished"), "{plan}");
        assert!(plan.contains("deployments_env_digest"), "{plan}");
        assert!(!plan.contains("SCAN deployments\n"), "{plan}");
    }
}
