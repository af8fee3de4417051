//! The PostgreSQL schema, as numbered migrations recorded in `drover_schema`
//! (`version`, `applied_ms`). Opening a store applies the ones a database lacks, in one
//! transaction holding an advisory lock, so two replicas starting together migrate
//! once; a database already at a version this build does not know is refused.
//!
//! Migration 1 is the whole schema of SQLite's version 3 (every integer a BIGINT,
//! blobs BYTEA) plus `drover_leader`, the leader lease HA replicas take (one row; its
//! holder and epoch are what [`super::Fence`] checks before every write).

use postgres::Client;

use super::{StoreError, now_ms};

/// The advisory lock key migrations hold (`drover` in ASCII).
const MIGRATION_LOCK: i64 = 0x6472_6f76_6572;

/// Every migration, in order: (version, DDL).
pub(super) const MIGRATIONS: &[(i64, &str)] = &[(1, MIGRATION_1)];

/// The highest version this build knows.
pub(super) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the database up to [`latest`], or refuses one newer than it.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS drover_schema (
            version BIGINT PRIMARY KEY,
            applied_ms BIGINT NOT NULL
        )",
    )?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM drover_schema", &[])?
        .get(0);
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: latest(),
        });
    }
    for (version, ddl) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(ddl)?;
        tx.execute(
            "INSERT INTO drover_schema (version, applied_ms) VALUES ($1, $2)",
            &[version, &(now_ms() as i64)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

const MIGRATION_1: &str = r#"
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    image TEXT NOT NULL,
    pinned TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    error TEXT,
    stage BIGINT NOT NULL DEFAULT 0,
    scheduled_ms BIGINT,
    hold TEXT,
    control TEXT NOT NULL DEFAULT '',
    promoted BIGINT NOT NULL DEFAULT -1,
    environment TEXT NOT NULL DEFAULT '',
    release_id TEXT NOT NULL DEFAULT '',
    gate_note TEXT
);
CREATE INDEX deployments_service ON deployments(service, created_ms);
CREATE INDEX deployments_environment ON deployments(service, environment, created_ms);
CREATE INDEX deployments_release ON deployments(release_id);
CREATE INDEX deployments_unfinished ON deployments(service) WHERE finished_ms IS NULL;
CREATE INDEX deployments_finished ON deployments(finished_ms);
CREATE INDEX deployments_env_digest ON deployments(service, environment, pinned, created_ms);

CREATE TABLE deployment_hosts (
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    batch BIGINT NOT NULL,
    stage BIGINT NOT NULL DEFAULT 0,
    phase TEXT NOT NULL,
    from_version TEXT NOT NULL DEFAULT '',
    to_version TEXT NOT NULL DEFAULT '',
    error TEXT,
    started_ms BIGINT,
    finished_ms BIGINT,
    PRIMARY KEY (deployment_id, host)
);
CREATE TABLE events (
    deployment_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    host TEXT NOT NULL,
    message TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (deployment_id, seq)
);
CREATE TABLE deploy_locks (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    PRIMARY KEY (service, environment)
);

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_ms BIGINT,
    used_by_host TEXT
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX certificates_host ON certificates(host);
CREATE TABLE enrolled_hosts (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL DEFAULT '{}',
    enrolled_ms BIGINT NOT NULL,
    join_token TEXT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT
);

CREATE TABLE secrets (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (service, name)
);

CREATE TABLE slo_targets (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    runtime TEXT NOT NULL,
    backend TEXT NOT NULL,
    availability_ppm BIGINT NOT NULL,
    window_ms BIGINT NOT NULL,
    watched_ms BIGINT NOT NULL,
    PRIMARY KEY (service, environment)
);
CREATE TABLE slo_samples (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    series TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    prev_at_ms BIGINT,
    d_requests BIGINT NOT NULL,
    d_errors BIGINT NOT NULL
);
CREATE INDEX slo_samples_window ON slo_samples(service, environment, at_ms);
CREATE INDEX slo_samples_series ON slo_samples(service, environment, series, at_ms);

CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    tag TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    commit_sha TEXT NOT NULL DEFAULT '',
    commit_ms BIGINT,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX releases_service ON releases(service, created_ms);

CREATE TABLE hook_runs (
    deployment_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    phase TEXT NOT NULL,
    host TEXT NOT NULL,
    outcome TEXT NOT NULL,
    exit_code BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);
CREATE TABLE hook_markers (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    digest TEXT NOT NULL,
    hook TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (service, environment, digest, hook)
);
CREATE TABLE hook_reruns (
    deployment_id TEXT PRIMARY KEY
);

CREATE TABLE host_steps (
    deployment_id TEXT NOT NULL,
    host TEXT NOT NULL,
    step TEXT NOT NULL,
    ms BIGINT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, host, step)
);

CREATE TABLE bakes (
    deployment_id TEXT NOT NULL,
    stage BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    measured_ms BIGINT NOT NULL,
    canary_hosts TEXT NOT NULL,
    baseline_hosts BIGINT NOT NULL,
    canary_requests BIGINT NOT NULL,
    canary_errors BIGINT NOT NULL,
    canary_response_ms BIGINT NOT NULL,
    canary_restarts BIGINT NOT NULL,
    baseline_requests BIGINT NOT NULL,
    baseline_errors BIGINT NOT NULL,
    baseline_response_ms BIGINT NOT NULL,
    limits TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (deployment_id, stage)
);

CREATE TABLE drover_leader (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
);
INSERT INTO drover_leader (id) VALUES (1) ON CONFLICT DO NOTHING;
"#;
