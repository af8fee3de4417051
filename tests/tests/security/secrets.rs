//! Secrets: set from stdin, listed by name, delivered as files or environment, and written
//! nowhere else.

use std::path::PathBuf;

use drover_tests::docker::docker;
use drover_tests::fleet::SERVICE;
use drover_tests::http;
use sha2::{Digest, Sha256};

use super::*;

/// `sha256=<hex> len=<n>` as the demo app reports what it was given.
fn given(value: &[u8]) -> String {
    format!(
        "sha256={} len={}\n",
        hex::encode(Sha256::digest(value)),
        value.len()
    )
}

/// What host `i`'s container reports for `path` (`/env/NAME` or `/file/PATH`).
async fn ask(fleet: &Fleet, i: usize, path: &str) -> (u16, String) {
    let r = http::get(fleet.host(i).addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on host {i}: {e}"));
    (r.status, r.body)
}

/// The spec of the fleet with a `[secrets]` table.
fn spec_with_secrets(fleet: &Fleet, names: &[&str], delivery: &str) -> PathBuf {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let text = format!(
        "{}\n[secrets]\nnames = [{}]\ndelivery = \"{delivery}\"\n",
        fleet.spec_toml("100%"),
        names.join(", ")
    );
    fleet.write_spec(&format!("secrets-{delivery}.toml"), &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_containers_as_files_or_env_and_are_written_nowhere_else() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1, DemoImage::V2],
        initial: None,
        ..Default::default()
    })
    .await;
    let value = format!("drover-secret-{:032x}", rand::random::<u128>());

    let set = fleet
        .drover_stdin(
            &As::Admin,
            &["secret", "set", SERVICE, "DB_PASSWORD"],
            format!("{value}\n").as_bytes(),
        )
        .await;
    assert_eq!(set.code, Some(0), "{}", set.describe());
    let list = fleet.drover(&["secret", "list", SERVICE]).await;
    assert!(
        list.code == Some(0) && list.stdout.contains("DB_PASSWORD"),
        "{}",
        list.describe()
    );

    // A name that was never set: refused before anything happens, naming it.
    let missing = spec_with_secrets(&fleet, &["DB_PASSWORD", "NEVER_SET"], "files");
    let missing = missing.to_string_lossy().into_owned();
    let run = fleet
        .drover(&["deploy", "-f", &missing, "--version", "v1"])
        .await;
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("NEVER_SET"), "{}", run.describe());

    // Files: on a tmpfs directory of the agent, mounted read-only at /run/secrets.
    let files = spec_with_secrets(&fleet, &["DB_PASSWORD"], "files");
    let files = files.to_string_lossy().into_owned();
    let run = fleet
        .drover(&["deploy", "-f", &files, "--version", "v1", "--json"])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    for i in 0..fleet.hosts().len() {
        assert_eq!(
            ask(&fleet, i, "/file/run/secrets/DB_PASSWORD").await,
            (200, given(value.as_bytes())),
            "host {i} reads the secret file"
        );
        assert_eq!(
            ask(&fleet, i, "/env/DB_PASSWORD").await.0,
            404,
            "not in env"
        );
        let dir = fleet.agent_secrets_dir(i);
        assert_eq!(mode_of(&dir) & 0o777, 0o700, "{}", dir.display());
        let file = secret_file(&dir, "DB_PASSWORD");
        assert_eq!(mode_of(&file) & 0o777, 0o444, "{}", file.display());
        assert_eq!(mode_of(file.parent().expect("dir")) & 0o777, 0o755);
        let inspect = running_container_inspect(&fleet, i).await;
        assert!(
            !inspect.contains(&value),
            "docker inspect shows the secret of a files-mode container"
        );
    }

    // Environment.
    let env = spec_with_secrets(&fleet, &["DB_PASSWORD"], "env");
    let env = env.to_string_lossy().into_owned();
    let run = fleet
        .drover(&["deploy", "-f", &env, "--version", "v2", "--json"])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    for i in 0..fleet.hosts().len() {
        assert_eq!(
            ask(&fleet, i, "/env/DB_PASSWORD").await,
            (200, given(value.as_bytes())),
            "host {i} has the secret in its environment"
        );
        assert_eq!(ask(&fleet, i, "/file/run/secrets/DB_PASSWORD").await.0, 404);
    }

    // Everything the run wrote: status and history too.
    for args in [
        vec!["history", "--json"],
        vec!["history"],
        vec!["status", "--json", "--no-follow"],
        vec!["hosts", "--json"],
        vec!["secret", "list", SERVICE],
    ] {
        let run = fleet.drover(&args).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
    }
    assert_no_secret_anywhere(&fleet, &value, &[], Cli::Search);
}

/// The file holding secret `name` for the one container that has it, under `dir`.
fn secret_file(dir: &Path, name: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.is_file())
        .collect();
    assert!(!found.is_empty(), "no {name} under {}", dir.display());
    found[0].clone()
}

/// `docker inspect` of the running `web` container of host `i`.
async fn running_container_inspect(fleet: &Fleet, i: usize) -> String {
    let agent = format!("{}={}", drover_shared::labels::AGENT, fleet.host(i).name);
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label={agent}"),
        "--filter",
        "status=running",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let id = ids.split_whitespace().next().expect("a running container");
    docker(&["container", "inspect", id])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
