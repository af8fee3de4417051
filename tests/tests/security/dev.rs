//! `drover ca init`, a controller without a CA, and the explicit `--insecure-dev` mode.

use drover_shared::tls::{Identity, Role};
use drover_tests::fleet::Transport;
use drover_tests::pki::read_certificate;
use drover_tests::process::bin_path;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_init_writes_private_keys_0600_prints_none_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let pki_arg = pki.to_string_lossy().into_owned();
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(bin_path("drover"))
            .args(&args)
            .output()
            .await
            .expect("drover runs");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let init = vec![
        "ca".to_string(),
        "init".into(),
        "--dir".into(),
        pki_arg.clone(),
    ];
    let (code, out) = run(init.clone()).await;
    assert_eq!(code, Some(0), "{out}");
    for (file, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("admin.crt", 0o644),
        ("admin.key", 0o600),
        ("secrets.key", 0o600),
    ] {
        assert_eq!(mode_of(&pki.join(file)) & 0o777, mode, "{file}");
    }
    assert!(!out.contains("PRIVATE KEY"), "ca init printed a key: {out}");
    for key in ["ca.key", "admin.key"] {
        let text = std::fs::read_to_string(pki.join(key)).expect("key");
        for line in text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!out.contains(line), "ca init printed part of {key}");
        }
    }
    let admin = read_certificate(&pki.join("admin.crt")).expect("admin.crt");
    assert_eq!(
        admin.identity,
        Some(Identity::Operator {
            name: "admin".into(),
            role: Role::Admin
        })
    );

    let before = std::fs::read(pki.join("ca.key")).expect("ca.key");
    let (code, out) = run(init).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "a second ca init succeeded: {out}"
    );
    assert!(out.contains("ca.key"), "names the file: {out}");
    assert_eq!(std::fs::read(pki.join("ca.key")).expect("ca.key"), before);

    // A controller without a CA refuses to start in TLS mode.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let (code, out) = run(vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        String::new(),
        "--database".into(),
        dir.path().join("db").to_string_lossy().into_owned(),
        "--pki-dir".into(),
        empty.to_string_lossy().into_owned(),
    ])
    .await;
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("no fleet CA") && out.contains("drover ca init"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_dev_fleet_deploys_in_plaintext_and_warns_at_every_start() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1, DemoImage::V2],
        transport: Transport::InsecureDev,
        ..Default::default()
    })
    .await;
    assert!(fleet.controller_url().starts_with("http://"));
    let run = fleet.deploy("v2").await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    fleet.assert_serves("v2").await;
    fleet.restart_controller().await;
    let warnings = count_lines(&fleet.controller_logs(), &["warn", "insecure"]);
    assert!(
        warnings >= 2,
        "one warning per controller start, saw {warnings}:\n{}",
        fleet.controller_logs()
    );
    for i in 0..2 {
        assert!(
            find_line(&fleet.agent_logs(i), &["warn", "insecure"]).is_some(),
            "agent {i} did not warn:\n{}",
            fleet.agent_logs(i)
        );
    }
}
