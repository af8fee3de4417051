//! Releases as stored: immutable records of a service's image digest (resolved once,
//! when the release is made), the tag asked for, and the commit it was built from; and
//! the reads that environments' gates and `drover releases` make over deployments.

use super::sql::{Connection, OptionalExtension, Row, params};

use super::{Deployment, SELECT_DEPLOYMENT, Store, StoreError, deployment_row};
use crate::state::DeploymentState;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS releases (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    tag TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    commit_sha TEXT NOT NULL DEFAULT '',
    commit_ms INTEGER,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_service ON releases(service, created_ms);
"#;

/// Indexes over the columns of schema version 3 (created after its migration).
pub(super) const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS deployments_release ON deployments(release_id);
CREATE INDEX IF NOT EXISTS deployments_unfinished ON deployments(service) WHERE finished_ms IS NULL;
"#;

/// A release: what a deployment into any environment runs, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `r-` + 12 hex digits.
    pub id: String,
    /// The service.
    pub service: String,
    /// The tag asked for (`v2`).
    pub tag: String,
    /// The image repository (`registry:5000/team/web`).
    pub image: String,
    /// The digest the tag resolved to (`sha256:...`); empty only while a registry the
    /// controller cannot ask has not been pulled from yet (the first pull fills it).
    pub digest: String,
    /// The commit it was built from, if known.
    pub commit_sha: String,
    /// When that commit was made (Unix ms), if known: the start of DORA's lead time.
    pub commit_ms: Option<u64>,
    /// Who made the release.
    pub created_by: String,
    /// Unix ms.
    pub created_ms: u64,
}

impl Release {
    /// The digest-pinned reference (`repo@sha256:...`), when the digest is known.
    pub fn pinned(&self) -> Option<String> {
        (!self.digest.is_empty()).then(|| format!("{}@{}", self.image, self.digest))
    }
}

/// One deployment of a release, for `drover releases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDeployment {
    /// The release.
    pub release_id: String,
    /// The deployment.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// Deploy or rollback.
    pub kind: String,
    /// Where it ended (or stands).
    pub state: DeploymentState,
    /// Unix ms.
    pub created_ms: u64,
}

/// The oldest release of `service`'s `tag` at `digest`.
fn find(
    c: &Connection,
    service: &str,
    tag: &str,
    digest: &str,
) -> Result<Option<Release>, StoreError> {
    c.prepare_cached(&format!(
        "{SELECT_RELEASE} WHERE service = ?1 AND tag = ?2 AND digest = ?3 ORDER BY created_ms LIMIT 1"
    ))?
    .query_row(params![service, tag, digest], release_row)
    .optional()
}

/// Inserts `r` (in the caller's transaction).
pub(super) fn insert(c: &Connection, r: &Release) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO releases (id, service, tag, image, digest, commit_sha, commit_ms, created_by, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.id, r.service, r.tag, r.image, r.digest, r.commit_sha, r.commit_ms, r.created_by,
            r.created_ms
        ],
    )?;
    Ok(())
}

const SELECT_RELEASE: &str = "SELECT id, service, tag, image, digest, commit_sha, commit_ms, created_by, created_ms FROM releases";

fn release_row(r: &Row<'_>) -> Result<Release, StoreError> {
    Ok(Release {
        id: r.get(0)?,
        service: r.get(1)?,
        tag: r.get(2)?,
        image: r.get(3)?,
        digest: r.get(4)?,
        commit_sha: r.get(5)?,
        commit_ms: r.get(6)?,
        created_by: r.get(7)?,
        created_ms: r.get(8)?,
    })
}

impl Store {
    /// Records `release`, or returns the one already recorded for the same service, tag
    /// and digest (with its own id, commit and author): releases are immutable, and
    /// making one twice (a CI job run again) is not an error. The flag says whether it
    /// is new.
    pub async fn create_release(&self, release: Release) -> Result<(Release, bool), StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            if !release.digest.is_empty()
                && let Some(r) = find(&tx, &release.service, &release.tag, &release.digest)?
            {
                return Ok((r, false));
            }
            insert(&tx, &release)?;
            tx.commit()?;
            Ok((release.clone(), true))
        })
        .await
    }

    /// The release recorded for `service`'s `tag` at `digest`, if any.
    pub async fn find_release(
        &self,
        service: &str,
        tag: &str,
        digest: &str,
    ) -> Result<Option<Release>, StoreError> {
        let (service, tag, digest) = (service.to_string(), tag.to_string(), digest.to_string());
        self.with(move |c| find(c, &service, &tag, &digest)).await
    }

    /// A release by id.
    pub async fn release(&self, id: &str) -> Result<Release, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.prepare_cached(&format!("{SELECT_RELEASE} WHERE id = ?1"))?
                .query_row(params![id], release_row)
                .optional()?
                .ok_or_else(|| StoreError::NoRelease(id.clone()))
        })
        .await
    }

    /// A service's releases, newest first.
    pub async fn releases(&self, service: &str, limit: u32) -> Result<Vec<Release>, StoreError> {
        let service = service.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_RELEASE} WHERE service = ?1 ORDER BY created_ms DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![service, limit], release_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Fills a release's digest from its first pull, once: a digest already recorded is
    /// never changed.
    pub async fn set_release_digest(&self, id: &str, digest: &str) -> Result<(), StoreError> {
        let (id, digest) = (id.to_string(), digest.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE releases SET digest = ?2 WHERE id = ?1 AND digest = ''",
                params![id, digest],
            )?;
            Ok(())
        })
        .await
    }

    /// Every deployment of the releases `ids`, oldest first (one indexed query).
    pub async fn release_deployments(
        &self,
        ids: &[String],
    ) -> Result<Vec<ReleaseDeployment>, StoreError> {
        let ids = ids.to_vec();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT release_id, id, environment, kind, state, created_ms FROM deployments
                 WHERE release_id = ?1 ORDER BY created_ms, id",
            )?;
            let mut out = Vec::new();
            for id in &ids {
                let rows = stmt.query_map(params![id], |r| {
                    Ok(ReleaseDeployment {
                        release_id: r.get(0)?,
                        id: r.get(1)?,
                        environment: r.get(2)?,
                        kind: r.get(3)?,
                        state: DeploymentState::parse(&r.get::<_, String>(4)?),
                        created_ms: r.get(5)?,
                    })
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            Ok(out)
        })
        .await
    }

    /// What each environment of `service` runs now (its newest succeeded deployment),
    /// and the deployments of it that have not ended; by environment.
    pub async fn environment_states(
        &self,
        service: &str,
    ) -> Result<(Vec<Deployment>, Vec<Deployment>), StoreError> {
        let service = service.to_string();
        self.with(move |c| {
            let environments: Vec<String> = c
                .prepare_cached("SELECT DISTINCT environment FROM deployments WHERE service = ?1")?
                .query_map(params![service], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut newest = c.prepare_cached(&format!(
                "{SELECT_DEPLOYMENT} WHERE service = ?1 AND environment = ?2 AND state = 'succeeded' ORDER BY created_ms DESC, id DESC LIMIT 1"
            ))?;
            let mut running = Vec::new();
            for env in &environments {
                if let Some(d) = newest.query_row(params![service, env], deployment_row).optional()? {
                    running.push(d);
                }
            }
            let active: Vec<Deployment> = c
                .prepare_cached(&format!(
                    "{SELECT_DEPLOYMENT} WHERE service = ?1 AND finished_ms IS NULL ORDER BY environment, created_ms"
                ))?
                .query_map(params![service], deployment_row)?
                .collect::<Result<_, _>>()?;
            Ok((running, active))
        })
        .await
    }

    /// The newest deployment of `service` in `environment` that ended in `state`.
    pub async fn last_in(
        &self,
        service: &str,
        environment: &str,
        state: DeploymentState,
    ) -> Result<Option<Deployment>, StoreError> {
        let (service, environment) = (service.to_string(), environment.to_string());
        self.with(move |c| {
            c.prepare_cached(&format!(
                "{SELECT_DEPLOYMENT} WHERE service = ?1 AND environment = ?2 AND state = ?3 ORDER BY created_ms DESC, id DESC LIMIT 1"
            ))?
            .query_row(params![service, environment, state.as_str()], deployment_row)
            .optional()
        })
        .await
    }

    /// The succeeded deployments of `service` in `environment` since the newest one
    /// that pinned `digest` (that one first), oldest first; empty when `digest` never
    /// succeeded there. What the `requires` gate reads.
    pub async fn successes_since_digest(
        &self,
        service: &str,
        environment: &str,
        digest: &str,
    ) -> Result<Vec<Deployment>, StoreError> {
        let (service, environment) = (service.to_string(), environment.to_string());
        let pinned_suffix = format!("%@{digest}");
        self.with(move |c| {
            let since: Option<u64> = c
                .query_row(
                    "SELECT MAX(created_ms) FROM deployments WHERE service = ?1 AND environment = ?2
                     AND state = 'succeeded' AND pinned LIKE ?3",
                    params![service, environment, pinned_suffix],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let Some(since) = since else {
                return Ok(Vec::new());
            };
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_DEPLOYMENT} WHERE service = ?1 AND environment = ?2 AND state = 'succeeded'
                 AND created_ms >= ?3 ORDER BY created_ms, id"
            ))?;
            let rows = stmt.query_map(params![service, environment, since], deployment_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }
}
