//! Operators: API tokens with roles, refusals for the wrong role or no credentials, and
//! the history naming who did what.

use drover_tests::fleet::SERVICE;
use drover_tests::logs::wait_line;

use super::*;

/// `drover api-token create NAME --role ROLE`: the token (the one `dra1.` word printed).
async fn api_token(fleet: &Fleet, name: &str, role: &str) -> String {
    let run = fleet
        .drover(&["api-token", "create", name, "--role", role])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.stdout
        .split_whitespace()
        .find(|w| w.starts_with("dra1."))
        .unwrap_or_else(|| panic!("no dra1. token printed: {}", run.describe()))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_deploy_a_deployer_can_and_history_names_who() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let alice = As::Token(api_token(&fleet, "alice", "viewer").await);
    let bob = As::Token(api_token(&fleet, "bob", "deployer").await);

    let whoami = fleet.drover_as(&alice, &["whoami"]).await;
    assert!(
        whoami.code == Some(0)
            && whoami.stdout.contains("alice")
            && whoami.stdout.contains("viewer"),
        "{}",
        whoami.describe()
    );
    let hosts = fleet.drover_as(&alice, &["hosts"]).await;
    assert_eq!(
        hosts.code,
        Some(0),
        "a viewer lists hosts: {}",
        hosts.describe()
    );

    let spec = fleet.spec_path().to_string_lossy().into_owned();
    let refused = fleet
        .drover_as(&alice, &["deploy", "-f", &spec, "--version", "v2"])
        .await;
    assert_eq!(refused.code, Some(2), "{}", refused.describe());
    assert!(
        refused.stderr.contains("alice") && refused.stderr.contains("deployer"),
        "the refusal names who and what is needed: {}",
        refused.describe()
    );
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the refused deploy",
        || fleet.controller_logs(),
        &["alice", "viewer", "deploy"],
    )
    .await;
    assert_eq!(fleet.history_json().await.len(), 1, "nothing was recorded");

    // Nobody at all, and a made-up token.
    let anonymous = fleet.drover_as(&As::Anonymous, &["hosts"]).await;
    assert_refused(&anonymous, "no certificate, no token");
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the anonymous call",
        || fleet.controller_logs(),
        &["no client certificate or api token"],
    )
    .await;
    let made_up = "dra1.0123456789abcdef.0123456789abcdef0123456789abcdef";
    let forged = fleet
        .drover_as(&As::Token(made_up.into()), &["hosts"])
        .await;
    assert_refused(&forged, "a made-up token");
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the made-up token",
        || fleet.controller_logs(),
        &[
            "refused an operator request",
            "unknown api token",
            "0123456789abcdef",
        ],
    )
    .await;
    // An agent's certificate is no operator's.
    let agent_dir = fleet.agent_state_dir(0);
    let agent = As::Cert {
        cert: agent_dir.join("agent.crt"),
        key: agent_dir.join("agent.key"),
    };
    let as_agent = fleet.drover_as(&agent, &["hosts"]).await;
    assert_refused(&as_agent, "an agent certificate on the operator API");
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the agent certificate",
        || fleet.controller_logs(),
        &["refused an operator request", "not an operator"],
    )
    .await;

    let done = fleet
        .drover_as(&bob, &["deploy", "-f", &spec, "--version", "v2", "--json"])
        .await;
    assert_eq!(done.code, Some(0), "{}", done.describe());
    fleet.assert_serves("v2").await;
    let history = fleet.history_json().await;
    let who: Vec<&str> = history
        .iter()
        .map(|d| d["requested_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(who, ["bob", "admin"], "newest first: {history:?}");

    // Secrets: a viewer sees names; only an admin sets them.
    let set = fleet
        .drover_stdin(&bob, &["secret", "set", SERVICE, "API_KEY"], b"nope\n")
        .await;
    assert_refused(&set, "a deployer setting a secret");
    assert!(set.stderr.contains("admin"), "{}", set.describe());
    let set = fleet
        .drover_stdin(&As::Admin, &["secret", "set", SERVICE, "API_KEY"], b"k\n")
        .await;
    assert_eq!(set.code, Some(0), "{}", set.describe());
    let list = fleet.drover_as(&alice, &["secret", "list", SERVICE]).await;
    assert!(
        list.code == Some(0) && list.stdout.contains("API_KEY"),
        "{}",
        list.describe()
    );
    // A revoked token is refused from then on.
    let revoke = fleet.drover(&["api-token", "revoke", "alice"]).await;
    assert_eq!(revoke.code, Some(0), "{}", revoke.describe());
    let revoked = fleet.drover_as(&alice, &["hosts"]).await;
    assert_refused(&revoked, "a revoked token");
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the revoked token",
        || fleet.controller_logs(),
        &["refused an operator request", "alice", "revoked"],
    )
    .await;

    for token in [&alice, &bob] {
        let As::Token(t) = token else { unreachable!() };
        let secret = t.rsplit('.').next().expect("token parts");
        assert!(
            !fleet.controller_logs().contains(secret),
            "the controller logged a token"
        );
    }
    assert!(
        !fleet
            .controller_logs()
            .contains("0123456789abcdef0123456789abcdef")
    );
}
