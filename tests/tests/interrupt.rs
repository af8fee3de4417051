//! Ctrl-C while `drover deploy` follows a deployment stops the terminal, not the
//! deployment: the CLI says the deployment continues on the controller and how to follow
//! or stop it, and exits 130; the deployment is still where it was, and `drover abort`
//! then rolls it back. A real fleet (registry, HAProxy, controller, agents).

use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions};

/// Longest wait for one step of the rollout to show in the CLI's output.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_deploy_leaves_the_deployment_running_and_says_how_to_follow_it() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    // A manual gate after the first host: the deployment waits there for as long as
    // the test needs, with the CLI following it.
    let gated = fleet.spec_toml("1")
        + "\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n\n[[rollout.stage]]\nhosts = \"100%\"\n";
    let spec = fleet.write_spec("gated.toml", &gated);
    let spec = spec.to_string_lossy().into_owned();
    let mut deploy = fleet.spawn_drover(&["deploy", "-f", &spec, "--version", "v2", "--json"]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = first["id"].as_str().expect("id").to_string();
    deploy
        .wait_json(STEP_TIMEOUT, "awaiting_promotion", |v| {
            v["state"] == "awaiting_promotion"
        })
        .await;

    // Events carry typed fields beside the message; batches count from 1.
    let moved = deploy
        .wait_json(STEP_TIMEOUT, "an event of the first host", |v| {
            v["type"] == "event" && v["phase"] == "done"
        })
        .await;
    assert_eq!(moved["batch"], 1, "{moved}");
    assert!(
        moved["host"].is_string() && moved["elapsed_ms"].is_u64(),
        "{moved}"
    );

    deploy.interrupt();
    let run = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(run.code, Some(130), "{}", run.describe());
    assert!(
        run.json()
            .iter()
            .any(|v| v["type"] == "interrupted" && v["id"] == id.as_str()),
        "{}",
        run.describe()
    );
    for next in [format!("drover status {id}"), format!("drover abort {id}")] {
        assert!(
            run.stderr.contains(&next),
            "says `{next}`: {}",
            run.describe()
        );
    }
    assert!(run.stderr.contains("continues"), "{}", run.describe());

    // The deployment did not notice: still at its gate, then aborted from here.
    let status = fleet
        .drover(&["status", &id, "--json", "--no-follow"])
        .await
        .final_snapshot();
    assert_eq!(status["state"], "awaiting_promotion", "{status}");
    let abort = fleet.drover(&["abort", &id]).await;
    assert_eq!(abort.code, Some(0), "{}", abort.describe());
    let end = fleet.drover(&["status", &id, "--json"]).await;
    assert_eq!(
        end.final_snapshot()["state"],
        "rolled_back",
        "{}",
        end.describe()
    );
    fleet.assert_serves("v1").await;
}
