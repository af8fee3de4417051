//! `deploy/install-agent.sh` against a scratch root: it installs the real agent binary, a
//! config the real agent accepts, and the unit; a second run changes nothing and says so.

use std::path::Path;
use std::process::Command;

use drover_tests::process::bin_path;
use drover_tests::workspace_root;

fn install(root: &Path, extra: &[&str]) -> (bool, String) {
    let script = workspace_root().join("deploy/install-agent.sh");
    let agent = bin_path("drover-agent");
    let out = Command::new("bash")
        .arg(script)
        .args([
            "--binary",
            agent.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--no-systemd",
        ])
        .args(extra)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn install_is_idempotent_and_writes_a_config_the_agent_accepts() {
    let root = tempfile::tempdir().unwrap();
    let args = [
        "--controller",
        "https://127.0.0.1:7070",
        "--name",
        "web-1",
        "--advertise",
        "127.0.0.1",
        "--label",
        "role=web",
        "--label",
        "zone=a",
    ];
    let (ok, first) = install(root.path(), &args);
    assert!(ok, "{first}");
    assert!(
        first.contains("installed") && first.contains("wrote config"),
        "{first}"
    );
    let unit = root.path().join("etc/systemd/system/drover-agent.service");
    assert!(
        std::fs::read_to_string(&unit)
            .unwrap()
            .contains("NoNewPrivileges=yes")
    );
    let config = root.path().join("etc/drover/agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("name = \"web-1\"") && text.contains("zone = \"a\""),
        "{text}"
    );

    // The real agent accepts the written config, and says what is still missing (no CA
    // certificate, no join token were given): it would not start, so --check fails.
    let check = Command::new(bin_path("drover-agent"))
        .args(["--check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.code() == Some(64)
            && said.contains("configuration valid")
            && said.contains("web-1")
            && said.contains("identity: problem"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let (ok, second) = install(root.path(), &args);
    assert!(ok, "{second}");
    assert!(
        second.contains("binary") && second.contains("up to date"),
        "{second}"
    );
    assert!(second.contains("kept existing config"), "{second}");
    assert!(!second.contains("installed unit"), "{second}");
}

#[test]
fn install_refuses_bad_input_with_the_value_named() {
    let root = tempfile::tempdir().unwrap();
    let (ok, out) = install(
        root.path(),
        &[
            "--controller",
            "https://c:7070",
            "--name",
            "h",
            "--label",
            "novalue",
        ],
    );
    assert!(!ok);
    assert!(out.contains("novalue"), "{out}");
    assert!(
        !root.path().join("etc/drover/agent.toml").exists(),
        "no half-written config"
    );
    let (ok, out) = install(root.path(), &["--name", "h"]);
    assert!(!ok);
    assert!(out.contains("--controller"), "{out}");
}

/// systemd refuses to start a unit whose `SupplementaryGroups=` names a group the host
/// lacks, so the controller's unit names none: it must start on a host without HAProxy
/// (and its `haproxy` group). The README says how to add the group where it exists.
#[test]
fn the_controller_unit_starts_on_a_host_without_an_haproxy_group() {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/drover.service"))
        .expect("deploy/drover.service");
    let groups: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("SupplementaryGroups="))
        .collect();
    assert!(groups.is_empty(), "the unit needs groups: {groups:?}");
    assert!(
        unit.contains("SupplementaryGroups=haproxy"),
        "the unit's comment shows the drop-in that adds the group"
    );
    // Where systemd is installed, the unit is otherwise valid as written.
    let Ok(analyze) = which("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/drover", "/bin/true")).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// Runs `drover-agent --check` with `args`; returns its exit code and what it printed.
fn agent_check(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin_path("drover-agent"))
        .arg("--check")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn agent_check_exits_non_zero_whenever_it_reports_a_problem() {
    let state = tempfile::tempdir().unwrap();
    let tmpfs = drover_tests::tmpfs::TmpfsDir::new();
    let base = [
        "--controller",
        "http://127.0.0.1:7070",
        "--insecure-dev",
        "--name",
        "web-1",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    let on_tmpfs = tmpfs.path().join("secrets");
    let (code, said) =
        agent_check(&[&base[..], &["--secrets-dir", on_tmpfs.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "nothing to fix: {said}");
    assert!(!said.contains("problem"), "{said}");

    // Secrets on a disk: the agent would start, and refuse every swap with secrets.
    let on_disk = state.path().join("secrets");
    let (code, said) =
        agent_check(&[&base[..], &["--secrets-dir", on_disk.to_str().unwrap()]].concat());
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("secrets-dir: problem") && said.contains("1 problem(s)"),
        "{said}"
    );
}

#[test]
fn install_takes_the_join_token_from_a_file_and_never_prints_it() {
    let root = tempfile::tempdir().unwrap();
    let token_file = root.path().join("join-token");
    let token = "drj1.abc123.s3cr3tpart";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let args = [
        "--controller",
        "https://127.0.0.1:7070",
        "--name",
        "web-1",
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let (ok, out) = install(root.path(), &args);
    assert!(ok, "{out}");
    assert!(!out.contains("s3cr3tpart"), "{out}");
    let env = root.path().join("etc/drover/agent.env");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("DROVER_JOIN_TOKEN={token}\n")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "agent.env mode {mode:o}");

    // Something else pasted into the file: refused, naming the file, not quoting it.
    std::fs::write(&token_file, "hunter2-not-a-token\n").unwrap();
    let (ok, out) = install(root.path(), &args);
    assert!(!ok);
    assert!(
        out.contains("--token-file") && out.contains("join-token") && !out.contains("hunter2"),
        "{out}"
    );
}
