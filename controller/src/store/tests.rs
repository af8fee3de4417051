use super::test_db::{TestDb, on_both_backends};
use super::*;
use crate::rollout::machine::{self, Event};

fn deployment(id: &str, service: &str) -> Deployment {
    Deployment::example(id, service)
}

fn host(name: &str, batch: u32) -> DeploymentHost {
    DeploymentHost::example(name, batch)
}

on_both_backends!(
    lock_is_held_until_terminal,
    a_stale_transition_is_refused_and_nothing_is_written,
    of_two_concurrent_transitions_exactly_one_wins,
    hosts_events_and_reopen,
    a_batch_of_host_changes_and_events_is_written_together_in_order,
    a_join_token_enrolls_once,
    racing_enrollments_consume_a_token_once,
    an_expired_join_token_is_refused,
    a_name_with_a_valid_certificate_is_taken_until_removed,
    api_tokens_round_trip_and_revoke,
    each_environment_has_its_own_lock,
    a_release_is_recorded_once_per_tag_and_digest,
    successes_since_a_digest_start_at_its_newest_success,
    a_listing_reads_every_deployments_hosts_and_newest_event_at_once,
    recent_events_are_the_newest_in_order
);

async fn lock_is_held_until_terminal(db: TestDb) {
    let s = db.open().await;
    s.create(deployment("d-1", "web"), vec![host("a", 0)])
        .await
        .unwrap();
    let err = s
        .create(deployment("d-2", "web"), vec![])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("d-1") && msg.contains("ops@box"), "{msg}");
    // Another service is not affected.
    s.create(deployment("d-3", "api"), vec![]).await.unwrap();
    step(&s, "d-1", Event::Roll).await.unwrap();
    // A transition that does not end the deployment keeps the lock.
    s.create(deployment("d-2", "web"), vec![])
        .await
        .unwrap_err();
    step(&s, "d-1", Event::Succeed).await.unwrap();
    s.create(deployment("d-2", "web"), vec![]).await.unwrap();
}

/// Applies `event` to the deployment's current state, as the rollout task does.
async fn step(s: &Store, id: &str, event: Event) -> Result<(), StoreError> {
    let (d, _) = s.get(id).await?;
    let t = machine::apply(d.state, event).expect("allowed by the machine");
    s.transition(id, t, None, &format!("{event:?}")).await
}

async fn a_stale_transition_is_refused_and_nothing_is_written(db: TestDb) {
    let s = db.open().await;
    s.create(deployment("d-1", "web"), vec![]).await.unwrap();
    // Computed while the deployment was pending...
    let cancel = machine::apply(DeploymentState::Pending, Event::Cancel).unwrap();
    // ...but the rollout moved it on first.
    step(&s, "d-1", Event::Prepare).await.unwrap();
    let err = s
        .transition("d-1", cancel, None, "cancel")
        .await
        .unwrap_err();
    match &err {
        StoreError::Stale {
            expected,
            actual,
            wanted,
            ..
        } => {
            assert_eq!(*expected, DeploymentState::Pending);
            assert_eq!(*actual, DeploymentState::Preparing);
            assert_eq!(*wanted, DeploymentState::Cancelled);
        }
        other => panic!("expected a stale refusal, got {other}"),
    }
    assert!(err.to_string().contains("drover status d-1"), "{err}");
    let (d, _) = s.get("d-1").await.unwrap();
    assert_eq!(d.state, DeploymentState::Preparing);
    assert_eq!(d.finished_ms, None);
    // The refused terminal transition did not release the lock.
    s.create(deployment("d-2", "web"), vec![])
        .await
        .unwrap_err();
}

async fn of_two_concurrent_transitions_exactly_one_wins(db: TestDb) {
    let s = db.open().await;
    for i in 0..200 {
        let id = format!("d-{i}");
        s.create(deployment(&id, &format!("svc-{i}")), vec![])
            .await
            .unwrap();
        // An operator's cancel and the rollout's first step, both computed from Pending.
        let cancel = machine::apply(DeploymentState::Pending, Event::Cancel).unwrap();
        let prepare = machine::apply(DeploymentState::Pending, Event::Prepare).unwrap();
        let (a, b) = tokio::join!(
            s.transition(&id, cancel, None, "cancel"),
            s.transition(&id, prepare, None, "prepare"),
        );
        assert!(a.is_ok() != b.is_ok(), "iteration {i}: {a:?} / {b:?}");
        let loser = a.err().or(b.err()).unwrap();
        assert!(matches!(loser, StoreError::Stale { .. }), "{loser}");
        let (d, _) = s.get(&id).await.unwrap();
        let lock_free = s
            .create(
                deployment(&format!("{id}-next"), &format!("svc-{i}")),
                vec![],
            )
            .await
            .is_ok();
        match d.state {
            // Cancel won: the lock went with it.
            DeploymentState::Cancelled => assert!(lock_free, "iteration {i}"),
            // The rollout won: the deployment keeps its lock.
            DeploymentState::Preparing => assert!(!lock_free, "iteration {i}"),
            other => panic!("iteration {i}: unexpected state {other}"),
        }
    }
}

async fn hosts_events_and_reopen(db: TestDb) {
    {
        let s = db.open().await;
        s.create(deployment("d-1", "web"), vec![host("a", 0), host("b", 1)])
            .await
            .unwrap();
        s.set_hosts("d-1", &["a".into()], HostPhase::Swapping, None, "swapping")
            .await
            .unwrap();
        s.event("d-1", "a", "swapping").await.unwrap();
        let e = s.event("d-1", "", "second").await.unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(s.bump_epoch("d-1").await.unwrap(), 2);
    }
    let s = db.open().await;
    let (d, hosts) = s.get("d-1").await.unwrap();
    assert_eq!(d.epoch, 2);
    assert_eq!(hosts[0].phase, HostPhase::Swapping);
    assert!(hosts[0].started_ms.is_some());
    let events = s.events("d-1", 1).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        s.events("d-1", 0).await.unwrap()[0].phase,
        Some(HostPhase::Swapping)
    );
    assert_eq!(s.unfinished().await.unwrap().len(), 1);
    assert_eq!(s.last_seq("d-1").await.unwrap(), 3);
    assert_eq!(s.last_seq("nope").await.unwrap(), 0);
    assert!(matches!(s.get("nope").await, Err(StoreError::NotFound(_))));
}

async fn a_batch_of_host_changes_and_events_is_written_together_in_order(db: TestDb) {
    let s = db.open().await;
    let hosts: Vec<DeploymentHost> = (0..500).map(|i| host(&format!("h{i:03}"), 0)).collect();
    s.create(deployment("d-1", "web"), hosts).await.unwrap();
    let mut changes: Vec<HostChange> = (0..500)
        .map(|i| {
            let msg = format!("v2 ready after {i} ms");
            HostChange::new(&format!("h{i:03}"), HostPhase::Enabling, None, &msg)
        })
        .collect();
    changes[7] = HostChange::new("h007", HostPhase::Failed, Some("boom".into()), "h007: boom");
    s.change_hosts("d-1", changes).await.unwrap();
    let (_, rows) = s.get("d-1").await.unwrap();
    assert_eq!(rows[7].phase, HostPhase::Failed);
    assert_eq!(rows[7].error.as_deref(), Some("boom"));
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, r)| i == 7 || (r.phase == HostPhase::Enabling && r.error.is_none()))
    );
    let events = s.events("d-1", 0).await.unwrap();
    assert_eq!(events.len(), 500);
    assert_eq!(events[3].host, "h003");
    assert_eq!(events[3].message, "v2 ready after 3 ms");
    assert_eq!(events[7].phase, Some(HostPhase::Failed));
    s.add_events(
        "d-1",
        vec![
            ("h001".into(), "drained".into()),
            ("".into(), "batch".into()),
        ],
    )
    .await
    .unwrap();
    let more = s.events("d-1", 500).await.unwrap();
    assert_eq!(
        more.iter()
            .map(|e| (e.seq, e.message.as_str()))
            .collect::<Vec<_>>(),
        [(501, "drained"), (502, "batch")]
    );
}

fn join_token(expires_in_ms: i64) -> (crate::tokens::NewToken, JoinToken) {
    let new = crate::tokens::generate(crate::tokens::TokenKind::Join);
    let t = JoinToken {
        id: new.id.clone(),
        secret_hash: new.secret_hash.clone(),
        labels: [("role".to_string(), "web".to_string())].into(),
        created_by: "admin".into(),
        expires_ms: (now_ms() as i64 + expires_in_ms) as u64,
    };
    (new, t)
}

fn cert(serial: &str, host: &str) -> IssuedCertificate {
    IssuedCertificate {
        serial: serial.into(),
        host: host.into(),
        not_after_ms: now_ms() + 3_600_000,
        revoked_ms: None,
    }
}

async fn a_join_token_enrolls_once(db: TestDb) {
    let s = db.open().await;
    let (new, t) = join_token(60_000);
    s.create_join_token(t.clone()).await.unwrap();
    assert_eq!(
        s.check_join_token(&t.id, &t.secret_hash).await.unwrap(),
        Ok(())
    );
    let labels = s
        .enroll(&t.id, &t.secret_hash, cert("0a", "web-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(s.enrolled_labels("web-1").await.unwrap(), Some(labels));
    // Used: refused, naming who used it (for the log), whatever name is asked for.
    let again = s
        .enroll(&t.id, &t.secret_hash, cert("0b", "web-2"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&again, JoinRefusal::AlreadyUsed { host, .. } if host == "web-1"),
        "{again}"
    );
    assert!(matches!(
        s.check_join_token(&t.id, &t.secret_hash).await.unwrap(),
        Err(JoinRefusal::AlreadyUsed { .. })
    ));
    assert!(s.certificate("0b").await.unwrap().is_none());
    // A wrong secret for a known id is just unknown.
    let other = crate::tokens::generate(crate::tokens::TokenKind::Join);
    assert_eq!(
        s.check_join_token(&t.id, &other.secret_hash).await.unwrap(),
        Err(JoinRefusal::Unknown)
    );
    assert_eq!(
        s.check_join_token(&other.id, &other.secret_hash)
            .await
            .unwrap(),
        Err(JoinRefusal::Unknown)
    );
    drop(new);
}

async fn racing_enrollments_consume_a_token_once(db: TestDb) {
    let s = db.open().await;
    let (_new, t) = join_token(60_000);
    s.create_join_token(t.clone()).await.unwrap();
    let tries = (0..8).map(|i| {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            s.enroll(
                &t.id,
                &t.secret_hash,
                cert(&format!("c{i}"), &format!("h{i}")),
            )
            .await
            .unwrap()
        })
    });
    let results = futures::future::join_all(tries).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count(), 1);
}

async fn an_expired_join_token_is_refused(db: TestDb) {
    let s = db.open().await;
    let (_new, t) = join_token(-1);
    s.create_join_token(t.clone()).await.unwrap();
    let r = s
        .enroll(&t.id, &t.secret_hash, cert("0a", "web-1"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(r, JoinRefusal::Expired { .. }), "{r}");
    assert!(s.enrolled_labels("web-1").await.unwrap().is_none());
}

async fn a_name_with_a_valid_certificate_is_taken_until_removed(db: TestDb) {
    let s = db.open().await;
    let (_a, first) = join_token(60_000);
    let (_b, second) = join_token(60_000);
    s.create_join_token(first.clone()).await.unwrap();
    s.create_join_token(second.clone()).await.unwrap();
    s.enroll(&first.id, &first.secret_hash, cert("0a", "web-1"))
        .await
        .unwrap()
        .unwrap();
    s.record_certificate(cert("0c", "web-1")).await.unwrap();
    let taken = s
        .enroll(&second.id, &second.secret_hash, cert("0b", "web-1"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        taken,
        JoinRefusal::NameTaken {
            host: "web-1".into()
        }
    );
    // The refused attempt did not consume the second token.
    assert_eq!(
        s.check_join_token(&second.id, &second.secret_hash)
            .await
            .unwrap(),
        Ok(())
    );
    let removal = s.remove_host("web-1").await.unwrap();
    assert_eq!(
        removal,
        HostRemoval {
            revoked: 2,
            was_enrolled: true
        }
    );
    assert!(
        s.certificate("0a")
            .await
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_some()
    );
    assert!(s.enrolled_labels("web-1").await.unwrap().is_none());
    assert_eq!(
        s.remove_host("web-1").await.unwrap(),
        HostRemoval {
            revoked: 0,
            was_enrolled: true
        }
    );
    assert_eq!(
        s.remove_host("never-seen").await.unwrap(),
        HostRemoval {
            revoked: 0,
            was_enrolled: false
        }
    );
    s.enroll(&second.id, &second.secret_hash, cert("0b", "web-1"))
        .await
        .unwrap()
        .unwrap();
}

async fn api_tokens_round_trip_and_revoke(db: TestDb) {
    use drover_shared::tls::Role;
    let s = db.open().await;
    let t = ApiToken {
        id: "00112233445566aa".into(),
        name: "ci".into(),
        role: Role::Deployer,
        secret_hash: "ab".repeat(32),
        created_by: "admin".into(),
        expires_ms: None,
        revoked_ms: None,
    };
    s.create_api_token(t.clone()).await.unwrap();
    assert_eq!(s.api_token(&t.id).await.unwrap(), Some(t.clone()));
    let second = ApiToken {
        id: "00112233445566bb".into(),
        ..t.clone()
    };
    let other = ApiToken {
        id: "00112233445566cc".into(),
        name: "alice".into(),
        ..t.clone()
    };
    s.create_api_token(second.clone()).await.unwrap();
    s.create_api_token(other.clone()).await.unwrap();
    assert_eq!(s.api_tokens().await.unwrap().len(), 3);
    // By id: only that token.
    assert_eq!(s.revoke_api_tokens(&t.id).await.unwrap(), 1);
    assert!(
        s.api_token(&t.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_some()
    );
    assert!(
        s.api_token(&second.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_none()
    );
    // By name: every unrevoked token of that name, and nobody else's.
    assert_eq!(s.revoke_api_tokens("ci").await.unwrap(), 1);
    assert!(
        s.api_token(&second.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_some()
    );
    assert!(
        s.api_token(&other.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_ms
            .is_none()
    );
    // Twice, or unknown: nothing more.
    assert_eq!(s.revoke_api_tokens("ci").await.unwrap(), 0);
    assert_eq!(s.revoke_api_tokens("nope").await.unwrap(), 0);
    assert!(s.api_token("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn an_older_database_gains_the_security_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A database as the previous release left it: deployments only, version 0.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute(
            "INSERT INTO deployments (id, service, kind, version, image, spec, state, epoch, requested_by, created_ms)
             VALUES ('d-old', 'web', 'deploy', 'v1', 'i', '', 'succeeded', 1, 'ops', 1)",
            [],
        )
        .unwrap();
    }
    let s = Store::open(&path).await.unwrap();
    assert_eq!(s.get("d-old").await.unwrap().0.version, "v1");
    assert_eq!(s.secret_count().await.unwrap(), 0);
    let (_new, t) = join_token(60_000);
    s.create_join_token(t).await.unwrap();
    let version: i64 = s
        .with(|c| {
            let c = c.sqlite().expect("a SQLite store");
            Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)
        })
        .await
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

fn in_env(id: &str, environment: &str) -> Deployment {
    Deployment {
        environment: environment.into(),
        ..deployment(id, "web")
    }
}

async fn each_environment_has_its_own_lock(db: TestDb) {
    let store = db.open().await;
    store
        .create(in_env("d-s", "staging"), vec![])
        .await
        .unwrap();
    // Production of the same service is not held by staging's deployment...
    store
        .create(in_env("d-p", "production"), vec![])
        .await
        .unwrap();
    // ...but a second production deployment is, naming the environment.
    let e = store
        .create(in_env("d-p2", "production"), vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Locked { ref deployment, .. } if deployment == "d-p"),
        "{e}"
    );
    assert!(
        e.to_string().contains("in environment \"production\""),
        "{e}"
    );
    assert!(store.check_unlocked("web", "").await.is_ok());
    assert!(store.check_unlocked("web", "staging").await.is_err());
    // Ending production's deployment frees production only.
    let t = machine::apply(DeploymentState::Pending, Event::Cancel).unwrap();
    store.transition("d-p", t, None, "cancelled").await.unwrap();
    store
        .create(in_env("d-p3", "production"), vec![])
        .await
        .unwrap();
    assert!(store.check_unlocked("web", "staging").await.is_err());
}

#[tokio::test]
async fn a_version_2_database_keeps_its_deployments_and_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(
            "CREATE TABLE service_locks (service TEXT PRIMARY KEY, deployment_id TEXT NOT NULL, holder TEXT NOT NULL, since_ms INTEGER NOT NULL);
             INSERT INTO deployments (id, service, kind, version, image, spec, state, epoch, requested_by, created_ms)
                 VALUES ('d-old', 'web', 'deploy', 'v1', 'reg/web:v1', '', 'rolling', 1, 'ops', 1);
             INSERT INTO service_locks VALUES ('web', 'd-old', 'ops', 1);
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    let d = store.deployment("d-old").await.unwrap();
    assert_eq!((d.environment.as_str(), d.release_id.as_str()), ("", ""));
    let e = store
        .create(deployment("d-new", "web"), vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Locked { ref deployment, .. } if deployment == "d-old"),
        "{e}"
    );
    drop(store);
    // Opening again does not migrate twice.
    let store = Store::open(&path).await.unwrap();
    assert!(store.check_unlocked("web", "").await.is_err());
}

fn release(id: &str, tag: &str, digest: &str) -> Release {
    Release {
        id: id.into(),
        service: "web".into(),
        tag: tag.into(),
        image: "reg/web".into(),
        digest: digest.into(),
        commit_sha: String::new(),
        commit_ms: None,
        created_by: "ci".into(),
        created_ms: now_ms(),
    }
}

async fn a_release_is_recorded_once_per_tag_and_digest(db: TestDb) {
    let store = db.open().await;
    let (first, new) = store
        .create_release(release("r-1", "v2", "sha256:aa"))
        .await
        .unwrap();
    assert!(new);
    let (again, new) = store
        .create_release(release("r-2", "v2", "sha256:aa"))
        .await
        .unwrap();
    assert!(!new);
    assert_eq!(again, first);
    // The tag moved: another release.
    let (moved, new) = store
        .create_release(release("r-3", "v2", "sha256:bb"))
        .await
        .unwrap();
    assert!(new && moved.id == "r-3");
    // A digest learnt at the first pull is filled once, never changed.
    store
        .create_release(release("r-4", "v3", ""))
        .await
        .unwrap();
    store.set_release_digest("r-4", "sha256:cc").await.unwrap();
    store.set_release_digest("r-4", "sha256:dd").await.unwrap();
    assert_eq!(store.release("r-4").await.unwrap().digest, "sha256:cc");
    assert!(matches!(
        store.release("r-9").await,
        Err(StoreError::NoRelease(_))
    ));
}

async fn successes_since_a_digest_start_at_its_newest_success(db: TestDb) {
    let store = db.open().await;
    let succeed = |id: &str, pinned: &str, created_ms: u64, kind: DeploymentKind| Deployment {
        pinned: pinned.into(),
        created_ms,
        kind,
        ..in_env(id, "staging")
    };
    for d in [
        succeed("d-1", "reg/web@sha256:aa", 1, DeploymentKind::Deploy),
        succeed("d-2", "reg/web@sha256:bb", 2, DeploymentKind::Deploy),
        succeed("d-3", "reg/web@sha256:aa", 3, DeploymentKind::Deploy),
        succeed("d-4", "reg/web@sha256:bb", 4, DeploymentKind::Rollback),
    ] {
        let id = d.id.clone();
        store.create(d, vec![]).await.unwrap();
        for e in [Event::Roll, Event::Succeed] {
            let state = store.deployment(&id).await.unwrap().state;
            let t = machine::apply(state, e).unwrap();
            store.transition(&id, t, None, "").await.unwrap();
        }
    }
    let got: Vec<String> = store
        .successes_since_digest("web", "staging", "sha256:aa")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, ["d-3", "d-4"]);
    assert!(
        store
            .successes_since_digest("web", "production", "sha256:aa")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .successes_since_digest("web", "staging", "sha256:ee")
            .await
            .unwrap()
            .is_empty()
    );
    let last = store
        .last_in("web", "staging", DeploymentState::Succeeded)
        .await
        .unwrap();
    assert_eq!(last.unwrap().id, "d-4");
}

async fn a_listing_reads_every_deployments_hosts_and_newest_event_at_once(db: TestDb) {
    let store = db.open().await;
    store
        .create(deployment("d-1", "web"), vec![host("a", 0), host("b", 1)])
        .await
        .unwrap();
    store
        .create(deployment("d-2", "api"), vec![host("c", 0)])
        .await
        .unwrap();
    store.event("d-1", "", "one").await.unwrap();
    store.event("d-1", "", "two").await.unwrap();
    let ids = vec!["d-2".to_string(), "d-1".to_string(), "d-none".to_string()];
    let got = store.hosts_and_seqs(ids).await.unwrap();
    for (i, id) in ["d-2", "d-1"].into_iter().enumerate() {
        let (_, hosts) = store.get(id).await.unwrap();
        assert_eq!(got[i].0, hosts, "{id}");
        assert_eq!(got[i].1, store.last_seq(id).await.unwrap(), "{id}");
    }
    assert_eq!(got[2], (vec![], 0));
}

async fn recent_events_are_the_newest_in_order(db: TestDb) {
    let store = db.open().await;
    store
        .create(deployment("d-1", "web"), vec![host("a", 0)])
        .await
        .unwrap();
    store
        .create(deployment("d-2", "api"), vec![])
        .await
        .unwrap();
    for i in 0..10 {
        store.event("d-1", "", &format!("e{i}")).await.unwrap();
    }
    store.event("d-2", "", "other").await.unwrap();
    let all = store.events("d-1", 0).await.unwrap();
    let recent = store.recent_events("d-1", 3).await.unwrap();
    assert_eq!(recent, all[all.len() - 3..].to_vec());
    assert_eq!(recent.last().unwrap().message, "e9");
    assert_eq!(store.recent_events("d-1", 1000).await.unwrap(), all);
    assert!(store.recent_events("d-none", 5).await.unwrap().is_empty());
}

/// Processes opening one new SQLite database together (the controller and a tool) each
/// get it, migrated once: the schema and its version are one write transaction.
#[tokio::test]
async fn openers_racing_on_a_new_sqlite_database_all_get_it_migrated_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let path = dir.path().join(format!("drover-{round}.db"));
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                // Threads of their own: each open runs on its own connection at once.
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async { Store::open(&path).await.map(drop) })
                })
            })
            .collect();
        for open in opens {
            open.join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let s = Store::open(&path).await.unwrap();
        s.create(deployment("d-1", "web"), vec![host("h1", 0)])
            .await
            .unwrap();
    }
}
