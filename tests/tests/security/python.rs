//! An independent client of the operator API: Python's grpcio, over mutual TLS, without a
//! client certificate, and in plaintext.

use std::path::PathBuf;

use drover_tests::logs::wait_line;

use super::*;

/// The Python interpreter with grpcio that tests/setup.sh installed.
fn python() -> PathBuf {
    let path = std::env::var_os("DROVER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("drover-tests/venv/bin/python")
        });
    assert!(
        path.is_file(),
        "{} missing: run `. tests/setup.sh` (or tests/run.sh) to install grpcio",
        path.display()
    );
    path
}

/// Runs tests/python/operator_client.py with `args`: (exit code, stdout + stderr).
async fn python_client(args: &[&str]) -> (Option<i32>, String) {
    let script = drover_tests::workspace_root().join("tests/python/operator_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python())
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finished within 60 s")
    .expect("the Python client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_needs_the_admin_certificate() {
    let fleet = small_fleet(1).await;
    let pki = fleet.pki();
    let target = fleet.controller_addr().to_string();
    let ca = pki.ca_cert().to_string_lossy().into_owned();
    let cert = pki.admin_cert().to_string_lossy().into_owned();
    let key = pki.admin_key().to_string_lossy().into_owned();
    let host = fleet.host(0).name.clone();

    let (code, out) = python_client(&[
        "--target", &target, "--ca", &ca, "--cert", &cert, "--key", &key, "--expect", &host,
    ])
    .await;
    assert_eq!(code, Some(0), "with the admin certificate: {out}");
    assert!(out.starts_with("OK len="), "{out}");

    let (code, out) = python_client(&["--target", &target, "--ca", &ca]).await;
    assert_eq!(code, Some(1), "without a client certificate: {out}");
    assert!(out.starts_with("ERROR UNAUTHENTICATED"), "{out}");
    wait_line(
        LOG_TIMEOUT,
        "the controller's log of the call without a certificate",
        || fleet.controller_logs(),
        &["no client certificate or api token"],
    )
    .await;

    let (code, out) = python_client(&["--target", &target, "--plaintext", "--timeout", "5"]).await;
    assert_eq!(code, Some(1), "in plaintext: {out}");
    assert!(out.starts_with("ERROR ") && !out.contains("OK"), "{out}");
}
