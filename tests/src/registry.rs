//! A real image registry (Debian's `docker-registry`, distribution v2) on loopback with
//! htpasswd auth and throw-away storage, and pushes to it with the docker CLI under an
//! isolated `--config`, so the machine's own docker login is never touched.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::docker::{docker, docker_blocking};
use crate::images::DemoImage;
use crate::process::ChildGuard;

/// The registry binary from Debian's `docker-registry` package.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long the registry may take to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// An image pushed to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `127.0.0.1:PORT/repo:tag`, the reference to prepare.
    pub reference: String,
    /// The manifest digest the registry stored (`sha256:...`).
    pub digest: String,
}

/// A running registry; dropping it stops it and removes every local image reference
/// under its address (the test's pushes and the agent's pulls).
pub struct Registry {
    /// Where it listens (127.0.0.1:PORT); Docker treats 127.0.0.0/8 as insecure, so
    /// plain HTTP works without daemon configuration.
    pub addr: SocketAddr,
    /// The one user allowed in, generated per run.
    pub username: String,
    /// Their password, generated per run.
    password: String,
    /// The docker CLI's config dir holding the login to this registry.
    docker_config: tempfile::TempDir,
    /// The registry process (its logs are printed if the test fails).
    process: ChildGuard,
    /// Storage, htpasswd file and config; removed after the process stopped.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers `/v2/`
    /// with 401 (auth required).
    pub async fn start() -> Self {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry (tests/run.sh does)"
        );
        let username = crate::unique_name("user");
        let password = format!("{:032x}", rand::random::<u128>());
        let htpasswd = std::process::Command::new("htpasswd")
            .args(["-Bbn", &username, &password])
            .output()
            .expect("run htpasswd (Debian package apache2-utils)");
        assert!(htpasswd.status.success(), "htpasswd failed: {htpasswd:?}");

        // A port picked now may be taken before the registry binds it: retry a few times.
        let mut last_logs = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("drover-registry-")
                .tempdir()
                .expect("tempdir");
            std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("write htpasswd");
            let addr =
                SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port(Ipv4Addr::LOCALHOST)));
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), addr)).expect("write registry config");
            let mut process = ChildGuard::spawn(
                &format!("registry {addr}"),
                Path::new(REGISTRY_BIN),
                [Path::new("serve").as_os_str(), config.as_os_str()],
                &[],
            );
            if wait_answering(addr, &mut process).await {
                let docker_config = tempfile::Builder::new()
                    .prefix("drover-docker-config-")
                    .tempdir()
                    .expect("tempdir");
                let registry = Self {
                    addr,
                    username,
                    password,
                    docker_config,
                    process,
                    _dir: dir,
                };
                registry.login().await;
                return registry;
            }
            last_logs = process.logs();
        }
        panic!("the registry did not start after 3 tries:\n{last_logs}");
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The password (tests hand it to the agent in `RegistryAuth`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Credentials for a Prepare command.
    pub fn auth(&self) -> drover_proto::v1::RegistryAuth {
        drover_proto::v1::RegistryAuth {
            username: self.username.clone(),
            password: self.password.clone(),
            server: self.host(),
        }
    }

    /// Deletes the manifest `digest` of `repository` (the registry runs with deletes
    /// enabled): afterwards the registry answers 404 for it, as after a cleanup.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", self.username, self.password),
        );
        let request = format!(
            "DELETE /v2/{repository}/manifests/{digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n",
            self.host()
        );
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the registry");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send DELETE");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("read the registry's answer");
        assert!(
            answer.starts_with("HTTP/1.1 202"),
            "DELETE {repository}@{digest}: {answer}"
        );
    }

    async fn login(&self) {
        let mut child = tokio::process::Command::new("docker")
            .arg("--config")
            .arg(self.docker_config.path())
            .args([
                "login",
                "--username",
                &self.username,
                "--password-stdin",
                &self.host(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(self.password.as_bytes())
            .await
            .expect("write password");
        drop(stdin);
        let out = child.wait_with_output().await.expect("docker login");
        assert!(
            out.status.success(),
            "docker login {} failed: {}\n{}",
            self.host(),
            String::from_utf8_lossy(&out.stderr),
            self.process.logs()
        );
    }

    /// Pushes local image `local` (e.g. `drover-demo:v1`) as `repo_tag` (e.g. `demo:v1`),
    /// then removes the local registry tag so the agent really has to pull.
    pub async fn push(&self, local: &str, repo_tag: &str) -> Pushed {
        let reference = format!("{}/{repo_tag}", self.host());
        let config = self.docker_config.path().to_string_lossy().into_owned();
        docker(&["tag", local, &reference])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let out = docker(&["--config", &config, "push", &reference])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.process.logs()));
        docker(&["rmi", &reference])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The last line reads "<tag>: digest: sha256:... size: N".
        let digest = out
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in the output of docker push {reference}: {out}"))
            .to_string();
        Pushed { reference, digest }
    }

    /// Pushes a demo variant as `demo:<tag>`.
    pub async fn push_demo(&self, variant: DemoImage) -> Pushed {
        self.push(&variant.local_ref(), &format!("demo:{}", variant.tag()))
            .await
    }

    /// What the registry logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let prefix = format!("{}/", self.host());
        let Ok(list) = docker_blocking(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ]) else {
            return;
        };
        let mut refs = vec![];
        for line in list.lines().filter(|l| l.starts_with(&prefix)) {
            let mut f = line.split_whitespace();
            let (Some(repo), Some(tag), Some(digest)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if tag != "<none>" {
                refs.push(format!("{repo}:{tag}"));
            }
            if digest != "<none>" {
                refs.push(format!("{repo}@{digest}"));
            }
        }
        for r in refs {
            // Untags only: the image stays under its drover-demo:* tag.
            let _ = docker_blocking(&["rmi", &r]);
        }
    }
}

fn config_yaml(dir: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: {secret:032x}\n\
         auth:\n  htpasswd:\n    realm: drover-tests\n    path: {htpasswd}\n",
        root = dir.join("storage").display(),
        secret = rand::random::<u128>(),
        htpasswd = dir.join("htpasswd").display(),
    )
}

/// Waits until `/v2/` answers 401; false if the process exited or the time ran out.
async fn wait_answering(addr: SocketAddr, process: &mut ChildGuard) -> bool {
    let answer = crate::wait::poll(START_TIMEOUT, || {
        let exited = process.try_exit_status().is_some();
        async move {
            if exited {
                return Ok(None);
            }
            crate::http::get(addr, "/v2/").await.map(Some)
        }
    })
    .await;
    match answer {
        Ok(Some(r)) => {
            assert_eq!(
                r.status, 401,
                "registry {addr} answered /v2/ without asking for auth"
            );
            true
        }
        Ok(None) | Err(_) => false,
    }
}
