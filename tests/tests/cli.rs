//! What a new operator meets first, with the real `drover` binary against a real `drover
//! serve` (no agents): the hints `ca init` and `token create` print run as printed, the
//! CLI finds the fleet through `DROVER_PKI_DIR` or a profile written by `drover login`,
//! errors say what to fix, exit codes are the documented ones, completions and man pages
//! come from the CLI definition, and nothing writes colour codes into a file.

use drover_tests::fleet::CliRun;
use drover_tests::process::bin_path;
use drover_tests::solo::SoloController;
use drover_tests::tmpfs::TmpfsDir;

fn assert_code(run: &CliRun, code: i32) {
    assert_eq!(run.code, Some(code), "{}", run.describe());
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hints_of_ca_init_and_token_create_are_commands_that_run() {
    let c = SoloController::start().await;
    // ca init names the directory through DROVER_PKI_DIR, which the CLI honours.
    let other = c.dir().join("other-pki");
    let other_arg = other.to_string_lossy().into_owned();
    let init = c
        .drover(&["ca", "init", "--dir", &other_arg], &[], b"")
        .await;
    assert_code(&init, 0);
    let env = format!("DROVER_PKI_DIR={other_arg} ");
    for hint in [
        "drover serve --listen",
        "drover hosts",
        "drover token create",
    ] {
        assert!(
            init.stdout.contains(&format!("{env}{hint}")),
            "ca init: no runnable `{hint}`:\n{}",
            init.stdout
        );
    }
    assert!(
        !init.stdout.contains("TOKEN") && init.stdout.contains("--token-file join-token"),
        "the agent hint reads the token from a file: {}",
        init.stdout
    );

    // DROVER_PKI_DIR alone gives the CLI the CA and the admin certificate.
    let hosts = c.admin(&["hosts"]).await;
    assert_code(&hosts, 0);

    // token create: the token alone on stdout; a complete agent command on stderr.
    let token = c.admin(&["token", "create", "--ttl", "10m"]).await;
    assert_code(&token, 0);
    assert!(
        token.stdout.trim().starts_with("drj1."),
        "{}",
        token.describe()
    );
    let hint = token
        .stderr
        .lines()
        .find(|l| l.contains("drover-agent "))
        .unwrap_or_else(|| panic!("no agent command: {}", token.describe()))
        .trim()
        .trim_start_matches("sudo ");
    // Run it as printed (with --check: validate, contact nothing) where it says to be.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("join-token"), &token.stdout).expect("token file");
    std::fs::copy(c.pki().join("ca.crt"), host.path().join("ca.crt")).expect("ca.crt");
    let secrets = TmpfsDir::new();
    assert!(hint.starts_with("drover-agent "), "{hint}");
    // Through a shell, as an operator pastes it, with the agent binary on PATH.
    let bin_dir = bin_path("drover-agent")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{hint} --check --state-dir state --secrets-dir \"$SECRETS\""
        ))
        .env("PATH", path)
        .env("SECRETS", secrets.path().join("secrets"))
        .current_dir(host.path())
        .output()
        .expect("sh runs");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("join token"),
        "`{hint}` as printed: {said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_a_profile_that_later_commands_use_and_flags_override() {
    let c = SoloController::start().await;
    let created = c
        .admin(&["api-token", "create", "ci", "--role", "viewer"])
        .await;
    assert_code(&created, 0);
    let token = created.stdout.trim().to_owned();
    assert!(
        created.stderr.contains("drover login --profile ci")
            && created.stderr.contains("--token-stdin"),
        "the hint says how to use it: {}",
        created.stderr
    );
    let ca = c.pki().join("ca.crt").to_string_lossy().into_owned();
    // Replicas are tried in order: the first address answers nothing.
    let dead = format!(
        "https://127.0.0.1:{}",
        drover_tests::free_port(std::net::Ipv4Addr::LOCALHOST)
    );
    let login = c
        .drover(
            &[
                "login",
                "--profile",
                "ci",
                "--controller",
                &dead,
                "--controller",
                c.url(),
                "--ca-cert",
                &ca,
                "--token-stdin",
            ],
            &[],
            token.as_bytes(),
        )
        .await;
    assert_code(&login, 0);
    assert!(
        login.stdout.contains("as ci (viewer"),
        "{}",
        login.describe()
    );
    let config = std::fs::read_to_string(c.config_file()).expect("config.toml written");
    assert!(
        !config.contains(&token),
        "the token itself is not in the profile"
    );
    assert_eq!(mode_of(&c.config_file()), 0o600);
    let token_file = c.config_file().with_file_name("ci.token");
    assert_eq!(mode_of(&token_file), 0o600);

    // Later commands need nothing else: the first profile became the default.
    let me = c.drover(&["whoami"], &[], b"").await;
    assert_code(&me, 0);
    assert!(
        me.stdout.contains("ci (viewer, by token)"),
        "{}",
        me.describe()
    );

    // Flags and environment win over the profile.
    let cert = c.pki().join("admin.crt").to_string_lossy().into_owned();
    let key = c.pki().join("admin.key").to_string_lossy().into_owned();
    let me = c
        .drover(&["whoami", "--cert", &cert, "--key", &key], &[], b"")
        .await;
    assert_code(&me, 0);
    assert!(me.stdout.contains("admin (admin"), "{}", me.describe());
    let me = c
        .drover(
            &["whoami"],
            &[("DROVER_CONTROLLER", "https://127.0.0.1:1")],
            b"",
        )
        .await;
    assert!(
        me.code != Some(0) && me.stderr.contains("127.0.0.1:1"),
        "{}",
        me.describe()
    );

    // An unknown profile is refused, naming it and the ones there are.
    let none = c.drover(&["whoami", "--profile", "prod"], &[], b"").await;
    assert_code(&none, 2);
    assert!(
        none.stderr.contains("\"prod\"") && none.stderr.contains("ci"),
        "{}",
        none.describe()
    );

    // A login that cannot authenticate saves nothing.
    let before = std::fs::read_to_string(c.config_file()).expect("config");
    let bad = c
        .drover(
            &[
                "login",
                "--profile",
                "bad",
                "--controller",
                c.url(),
                "--ca-cert",
                &ca,
                "--token-stdin",
            ],
            &[],
            b"dra1.nothing.valid",
        )
        .await;
    assert!(bad.code.is_some_and(|c| c != 0), "{}", bad.describe());
    assert_eq!(
        std::fs::read_to_string(c.config_file()).expect("config"),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_to_fix_first() {
    let c = SoloController::start().await;
    let pki = c.pki().to_string_lossy().into_owned();
    let env = [("DROVER_PKI_DIR", pki.as_str())];
    let bare = c.url().trim_start_matches("https://").to_owned();
    let run = c.drover(&["hosts", "--controller", &bare], &env, b"").await;
    assert_code(&run, 2);
    assert!(
        run.stderr.contains(&format!("write https://{bare}")),
        "{}",
        run.describe()
    );

    let port = drover_tests::free_port(std::net::Ipv4Addr::LOCALHOST);
    let nowhere = format!("https://127.0.0.1:{port}");
    let run = c
        .drover(&["hosts", "--controller", &nowhere], &env, b"")
        .await;
    assert_code(&run, 1);
    let said = run.stderr.to_lowercase();
    assert!(
        said.contains(&nowhere) && said.contains("--controller"),
        "{}",
        run.describe()
    );
    assert_eq!(
        said.matches("refused").count(),
        1,
        "said once: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_are_the_documented_ones_and_logs_in_files_have_no_colour() {
    let c = SoloController::start().await;
    let missing = c
        .dir()
        .join("nowhere/drover.toml")
        .to_string_lossy()
        .into_owned();
    let run = c
        .admin(&["deploy", "-f", &missing, "--version", "v2"])
        .await;
    assert_code(&run, 2);
    assert!(
        run.stderr.contains(&missing) && run.stderr.contains("-f FILE"),
        "{}",
        run.describe()
    );
    for bad in [["--heartbeat-interval", "soon"], ["--listen", "localhost"]] {
        let run = c.drover(&["serve", bad[0], bad[1]], &[], b"").await;
        assert_code(&run, 64);
        assert!(run.stderr.contains(bad[1]), "{}", run.describe());
    }
    // A bad flag of a client command stays a usage error (2).
    assert_code(
        &c.drover(&["history", "--limit", "many"], &[], b"").await,
        2,
    );

    // The controller's log went to a file: plain text, no escape codes.
    let logs = c.logs();
    assert!(logs.contains("INFO"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log file:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_pages_come_from_the_cli_definition() {
    let c = SoloController::start().await;
    let bash = c.drover(&["completions", "bash"], &[], b"").await;
    assert_code(&bash, 0);
    assert!(bash.stdout.contains("login") && bash.stdout.contains("--version"));
    let script = c.dir().join("drover.bash");
    std::fs::write(&script, &bash.stdout).expect("write");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status();
    assert!(
        syntax.expect("bash runs").success(),
        "the bash script parses"
    );
    for shell in ["zsh", "fish"] {
        let run = c.drover(&["completions", shell], &[], b"").await;
        assert_code(&run, 0);
        assert!(run.stdout.contains("rollback"), "{shell}: {}", run.stdout);
    }
    let man = c.drover(&["man"], &[], b"").await;
    assert_code(&man, 0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH drover"),
        "{}",
        man.stdout
    );
    let out = c.dir().join("man1");
    let out_arg = out.to_string_lossy().into_owned();
    assert_code(&c.drover(&["man", "--out", &out_arg], &[], b"").await, 0);
    let deploy = std::fs::read_to_string(out.join("drover-deploy.1")).expect("drover-deploy.1");
    assert!(
        deploy.contains("Examples") && deploy.contains("130"),
        "{deploy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_cut_short_by_its_reader_ends_quietly() {
    // `drover man | head -1`: the reader goes away after one line.
    let mut child = tokio::process::Command::new(bin_path("drover"))
        .arg("man")
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("drover runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.expect("drover ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        matches!(out.status.code(), Some(0) | Some(141)),
        "{:?} {stderr}",
        out.status
    );
}
