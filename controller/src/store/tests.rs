use super::*;
use crate::state::Control;

fn deployment(id: &str, service: &str) -> Deployment {
    Deployment {
        id: id.into(),
        service: service.into(),
        kind: DeploymentKind::Deploy,
        version: "v2".into(),
        image: "reg/demo:v2".into(),
        pinned: String::new(),
        spec: "[service]".into(),
        state: DeploymentState::Pending,
        epoch: 1,
        requested_by: "ops@box".into(),
        created_ms: now_ms(),
        finished_ms: None,
        error: None,
        stage: 0,
        scheduled_ms: None,
        hold: None,
        control: Control::None,
        promoted: -1,
    }
}

fn host(name: &str, batch: u32) -> DeploymentHost {
    DeploymentHost {
        host: name.into(),
        batch,
        stage: 0,
        phase: HostPhase::Pending,
        from_version: "v1".into(),
        to_version: "v2".into(),
        error: None,
        started_ms: None,
        finished_ms: None,
    }
}

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Store::open(&dir.path().join("state.db")).await.unwrap(),
        dir,
    )
}

#[tokio::test]
async fn lock_is_held_until_terminal() {
    let (s, _dir) = store().await;
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
    s.set_state("d-1", DeploymentState::Succeeded, None, "done")
        .await
        .unwrap();
    s.create(deployment("d-2", "web"), vec![]).await.unwrap();
}

#[tokio::test]
async fn hosts_events_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).await.unwrap();
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
    let s = Store::open(&path).await.unwrap();
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
