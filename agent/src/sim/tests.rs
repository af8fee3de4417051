use std::sync::Arc;
use std::time::Duration;

use drover_shared::image::ImageRef;
use drover_shared::labels;

use super::{SimProfile, engines, versions_running};
use crate::runtime::{ContainerRuntime, CreateSpec, HealthState, Restart, RunState, RuntimeError};

fn spec(name: &str, version: &str) -> CreateSpec {
    CreateSpec {
        name: name.into(),
        image: format!("registry.test/web:{version}"),
        labels: [
            (labels::AGENT.to_string(), "h1".to_string()),
            (labels::SERVICE.to_string(), "web".to_string()),
            (labels::VERSION.to_string(), version.to_string()),
        ]
        .into_iter()
        .collect(),
        env: vec![],
        secret_env: vec![],
        cmd: None,
        ports: vec![],
        restart: Restart::No,
        mounts: vec![],
        network: None,
        init: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_started_container_turns_healthy_after_the_ready_latency() {
    let profile = SimProfile {
        ready: Duration::from_millis(300),
        ..SimProfile::default()
    };
    let (rt, counters) = engines(1, profile);
    let rt = &rt[0];
    let id = rt.create(&spec("web-1", "v1")).await.unwrap();
    rt.start(&id).await.unwrap();
    let health = |rt: &Arc<super::SimRuntime>| {
        let rt = rt.clone();
        let id = id.clone();
        async move { rt.inspect(&id).await.unwrap().unwrap().health }
    };
    assert_eq!(health(rt).await, HealthState::Starting);
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(health(rt).await, HealthState::Healthy);
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    let c = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(c.state, RunState::Exited);
    assert_eq!(counters.stops.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(rt.list_managed("h1").await.unwrap().len(), 1);
    assert!(rt.list_managed("h2").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn injected_failures_fail_the_way_an_engine_would() {
    let profile = SimProfile {
        missing_versions: ["v9".to_string()].into_iter().collect(),
        failing_versions: ["v3".to_string()].into_iter().collect(),
        never_ready: ["v4".to_string()].into_iter().collect(),
        ..SimProfile::default()
    };
    let (rt, _) = engines(1, profile);
    let rt = &rt[0];
    let missing = ImageRef::parse("registry.test/web:v9").unwrap();
    assert!(matches!(
        rt.resolve_digest(&missing, None).await,
        Err(RuntimeError::ImageNotFound { .. })
    ));
    assert!(rt.pull(&missing, None, &mut |_| {}).await.is_err());
    let present = ImageRef::parse("registry.test/web:v1").unwrap();
    let digest = rt.resolve_digest(&present, None).await.unwrap();
    assert_eq!(digest.len(), "sha256:".len() + 64, "{digest}");
    assert_ne!(
        digest,
        rt.resolve_digest(&ImageRef::parse("registry.test/web:v2").unwrap(), None)
            .await
            .unwrap()
    );

    let id = rt.create(&spec("web-3", "v3")).await.unwrap();
    assert!(rt.start(&id).await.is_err());
    assert_eq!(
        rt.inspect(&id).await.unwrap().unwrap().state,
        RunState::Exited
    );
    let id = rt.create(&spec("web-4", "v4")).await.unwrap();
    rt.start(&id).await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(
        rt.inspect(&id).await.unwrap().unwrap().health,
        HealthState::Unhealthy
    );
    assert!(
        rt.create(&spec("web-4", "v4")).await.is_err(),
        "name in use"
    );
    assert_eq!(versions_running([rt]).get("v4"), Some(&1));
    rt.stop(&id, Duration::ZERO).await.unwrap();
    rt.remove(&id).await.unwrap();
    assert!(rt.inspect(&id).await.unwrap().is_none());
}
