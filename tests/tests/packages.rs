//! Drover's packages (`deploy/package.sh`): what the `.deb` files and the tarball hold,
//! and the agent package installed with apt on a clean Debian host (a container of a
//! debootstrapped bookworm, no systemd), enrolled with a join token from a file, and
//! connected to a real `drover serve`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use drover_tests::debian::DebianHost;
use drover_tests::packages::{Packages, contents, dpkg_deb, packages, unpack};
use drover_tests::process::ChildGuard;
use drover_tests::solo::SoloController;

/// How long the packaged agent may take to enroll and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

async fn built() -> Packages {
    tokio::task::spawn_blocking(packages)
        .await
        .expect("package")
}

/// What `ldd` says of a binary that needs no shared library, whichever way it is linked.
fn assert_static(binary: &Path) {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "{} is dynamically linked: {said}",
        binary.display()
    );
}

#[tokio::test]
async fn the_packages_hold_static_binaries_units_maintainer_scripts_and_conffiles() {
    let p = built().await;

    let agent = contents(&p.agent);
    for path in [
        "./usr/bin/drover-agent",
        "./usr/sbin/drover-agent-join",
        "./usr/share/drover-agent/install-agent.sh",
        "./lib/systemd/system/drover-agent.service",
        "./etc/drover/agent.example.toml",
    ] {
        assert!(agent.iter().any(|p| p == path), "{path} in {agent:?}");
    }
    let controller = contents(&p.controller);
    for path in [
        "./usr/bin/drover",
        "./lib/systemd/system/drover.service",
        "./etc/drover/drover.example.toml",
        "./usr/share/man/man1/drover-deploy.1.gz",
        "./usr/share/bash-completion/completions/drover",
    ] {
        assert!(
            controller.iter().any(|p| p == path),
            "{path} in {controller:?}"
        );
    }

    let info = dpkg_deb(&["--info"], &p.agent, &[]);
    assert!(
        info.contains("Package: drover-agent") && info.contains(&format!("Version: {}", p.version)),
        "{info}"
    );
    // The user is made by the same script as drover-agent-join, which never starts an
    // agent that was not running.
    let postinst = dpkg_deb(&["--info"], &p.agent, &["postinst"]);
    assert!(
        postinst.contains("install-agent.sh --packaged --no-start"),
        "{postinst}"
    );
    assert_eq!(
        dpkg_deb(&["--info"], &p.agent, &["conffiles"]).trim(),
        "/etc/drover/agent.example.toml"
    );
    assert_eq!(
        dpkg_deb(&["--info"], &p.controller, &["conffiles"]).trim(),
        "/etc/drover/drover.example.toml"
    );

    let agent_files = unpack(&p.agent);
    let controller_files = unpack(&p.controller);
    let script = std::fs::read_to_string(
        agent_files
            .path()
            .join("usr/share/drover-agent/install-agent.sh"),
    )
    .unwrap();
    assert!(
        script.contains("useradd --system"),
        "the script makes the user"
    );
    for (root, name) in [
        (agent_files.path(), "drover-agent"),
        (controller_files.path(), "drover"),
    ] {
        assert_static(&root.join("usr/bin").join(name));
        // The units run the packaged binaries, not /usr/local/bin's.
        let unit = std::fs::read_to_string(root.join(format!("lib/systemd/system/{name}.service")))
            .unwrap();
        assert!(
            unit.contains(&format!("ExecStart=/usr/bin/{name} ")) && !unit.contains("/usr/local"),
            "{unit}"
        );
    }

    // The tarball: both binaries with the units and the install script next to them.
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(&p.tarball)
        .output()
        .expect("tar runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    for file in [
        "drover",
        "drover-agent",
        "install-agent.sh",
        "drover-agent.service",
        "drover.service",
        "agent.example.toml",
    ] {
        let path = format!("drover-{}/{file}", p.version);
        assert!(listed.lines().any(|l| l == path), "{path} in {listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_package_enrolls_a_clean_debian_host_with_a_token_from_a_file() {
    let p = built().await;
    let controller = SoloController::start().await;
    let token = controller
        .admin(&[
            "token",
            "create",
            "--ttl",
            "10m",
            "--label",
            "role=packaged",
        ])
        .await;
    assert_eq!(token.code, Some(0), "{}", token.describe());
    let secret = token.stdout.trim().rsplit('.').next().unwrap().to_string();

    // What the operator copies to the host: the packages, the CA certificate, the token.
    let inbox = tempfile::Builder::new()
        .prefix("drover-inbox-")
        .tempdir()
        .unwrap();
    for file in [&p.agent, &p.controller] {
        std::fs::copy(file, inbox.path().join(file.file_name().unwrap())).unwrap();
    }
    std::fs::copy(controller.pki().join("ca.crt"), inbox.path().join("ca.crt")).unwrap();
    std::fs::write(inbox.path().join("join-token"), &token.stdout).unwrap();

    let host = DebianHost::start(inbox.path()).await;
    let name = host.name().to_string();
    let installed = host
        .ok(&format!(
            "apt-get install -y --no-install-recommends /inbox/drover-agent_{v}_amd64.deb \
             /inbox/drover_{v}_amd64.deb",
            v = p.version
        ))
        .await;
    assert!(installed.contains("not enrolled yet"), "{installed}");
    let modes = host
        .ok("stat -c '%n %U:%G %a' /etc/drover /var/lib/drover-agent; drover --version")
        .await;
    assert!(
        modes.contains("/etc/drover root:drover-agent 750")
            && modes.contains("/var/lib/drover-agent drover-agent:drover-agent 700")
            && modes.contains(&format!("drover {}", p.version)),
        "{modes}"
    );

    let joined = host
        .ok(&format!(
            "drover-agent-join --controller {url} --name {name} --ca-cert /inbox/ca.crt \
             --token-file /inbox/join-token --label zone=test && \
             stat -c '%n %U:%G %a' /etc/drover/agent.env /etc/drover/agent.toml",
            url = controller.url()
        ))
        .await;
    assert!(
        joined.contains("no systemd here")
            && joined.contains("/etc/drover/agent.env root:root 600")
            && joined.contains("/etc/drover/agent.toml root:drover-agent 640"),
        "{joined}"
    );
    assert!(!joined.contains(&secret), "the join printed the token");

    // No systemd in the container: run the agent as its unit says (user, environment
    // file, runtime directory, command line), so a unit pointing at the wrong binary or
    // a user the package did not make fails here.
    let agent = ChildGuard::spawn(
        &format!("packaged agent {name}"),
        Path::new("docker"),
        ["exec", host.name(), "bash", "-c", RUN_AS_THE_UNIT],
        &[],
    );
    let connected = drover_tests::poll(CONNECT_TIMEOUT, || async {
        let hosts = controller.admin(&["hosts", "--json"]).await;
        hosts
            .json()
            .into_iter()
            .find(|h| h["name"] == name.as_str() && h["connected"] == true)
            .ok_or_else(|| format!("{name} not connected: {}", hosts.describe()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.logs(), controller.logs()));
    assert_eq!(connected["labels"]["role"], "packaged", "{connected}");
    assert_eq!(connected["labels"]["zone"], "test", "{connected}");
    let key = host
        .ok("stat -c '%U %a' /var/lib/drover-agent/agent.key")
        .await;
    assert_eq!(key.trim(), "drover-agent 600");

    // Reinstalling (an upgrade) keeps the host's configuration; purging removes it.
    let again = host
        .ok(&format!(
            "dpkg -i /inbox/drover-agent_{}_amd64.deb",
            p.version
        ))
        .await;
    assert!(again.contains("kept existing config"), "{again}");
    drop(agent);
    let purged = host
        .ok("apt-get purge -y drover-agent >/dev/null && ls -A /etc/drover; ls /var/lib")
        .await;
    assert!(
        !purged.contains("agent.toml")
            && !purged.contains("agent.env")
            && !purged.contains("drover-agent"),
        "{purged}"
    );
}

/// Starts the packaged agent the way `drover-agent.service` does, reading the unit.
const RUN_AS_THE_UNIT: &str = r#"set -euo pipefail
unit=/lib/systemd/system/drover-agent.service
key() { sed -n "s/^$1=//p" "$unit"; }
user=$(key User)
install -d -m "$(key RuntimeDirectoryMode)" -o "$user" -g "$user" "/run/$(key RuntimeDirectory)"
env_file=$(key EnvironmentFile)
set -a; . "${env_file#-}"; set +a
exec setpriv --reuid="$user" --regid="$user" --init-groups $(key ExecStart)
"#;
