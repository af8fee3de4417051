//! Throwaway PostgreSQL clusters for tests and benchmarks: Debian's binaries, a
//! temporary data directory, a private unix socket and no TCP, fsync off. Dropping the
//! cluster stops it and removes its directory.
//!
//! With `DROVER_TEST_POSTGRES` set to an existing server's base URL (one cluster for a
//! whole suite), [`PgCluster::start`] starts nothing and [`PgCluster::create_database`]
//! creates its databases there.
//!
//! initdb runs once per machine: its data directory is kept in the temporary directory
//! as a template (`drover-pg-template*`) that each cluster copies.
//!
//! PostgreSQL refuses to run as root: when the tests do, the cluster runs as the
//! `postgres` system user (`runuser`), which owns its directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};

/// A PostgreSQL server for tests: one of ours, or the one `DROVER_TEST_POSTGRES` names.
pub struct PgCluster {
    /// Ours: its directory, binaries and socket. `None` for an external server.
    own: Option<Own>,
    /// The external server's base URL (`DROVER_TEST_POSTGRES`).
    external: Option<String>,
    /// Numbers the databases this process creates.
    next: AtomicU64,
    /// Server options added by [`PgCluster::serve_tls`] (TCP on loopback with TLS).
    extra: std::sync::Mutex<String>,
    /// The port set by [`PgCluster::serve_tls`] (0: the default, 5432), which also
    /// names the Unix socket.
    port: AtomicU64,
}

struct Own {
    /// Removed on drop (after the server stops).
    dir: tempfile::TempDir,
    /// `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// Run them as `postgres` (we are root).
    as_postgres: bool,
}

impl Own {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Where Debian's PostgreSQL binaries are: `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| d.join(p).exists())
    };
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_all(d))
        .collect();
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = versions.pop() {
        return Ok(d);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_all(d))
        .context(
            "PostgreSQL's initdb, pg_ctl and postgres are not installed (not on PATH nor under /usr/lib/postgresql/*/bin): run `apt-get install postgresql`",
        )
}

/// Whether this process runs as root (the effective uid in /proc/self/status).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` system user.
fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!(
                "there is no `postgres` user to run PostgreSQL as (we run as root): run `apt-get install postgresql`"
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// A freshly initdb'd data directory, made once per machine (and binaries) and copied
/// by every cluster: initdb takes most of a second, a copy a tenth of that.
fn template(own: &Own) -> anyhow::Result<PathBuf> {
    let tag: String = own
        .bin
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let root = std::env::temp_dir().join(format!("drover-pg-template{tag}"));
    let data = root.join("data");
    if root.join("ready").exists() {
        return Ok(data);
    }
    // Built aside and renamed into place, so a racing process never sees half of it.
    let build = tempfile::Builder::new()
        .prefix("drover-pg-template-build-")
        .tempdir()?;
    if own.as_postgres {
        let (uid, gid) = postgres_ids()?;
        std::os::unix::fs::chown(build.path(), Some(uid), Some(gid))?;
    }
    own.run(
        "initdb",
        &[
            "-D",
            &build.path().join("data").to_string_lossy(),
            "-A",
            "trust",
            "--no-locale",
            "-E",
            "UTF8",
            "-U",
            "drover",
            "--no-sync",
        ],
    )?;
    std::fs::write(build.path().join("ready"), b"")?;
    let build = build.keep();
    if std::fs::rename(&build, &root).is_err() {
        // Another process made it first.
        let _ = std::fs::remove_dir_all(&build);
    }
    Ok(data)
}

/// `cp -a from to`: ownership and modes kept (PostgreSQL checks its directory's).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output()?;
    if !out.status.success() {
        bail!(
            "cannot copy {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl PgCluster {
    /// A new cluster, started; or the server `DROVER_TEST_POSTGRES` names.
    pub fn start() -> anyhow::Result<PgCluster> {
        if let Ok(url) = std::env::var("DROVER_TEST_POSTGRES")
            && !url.trim().is_empty()
        {
            return Ok(PgCluster {
                own: None,
                external: Some(url),
                next: AtomicU64::new(0),
                extra: std::sync::Mutex::default(),
                port: AtomicU64::new(0),
            });
        }
        let bin = find_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("drover-pg-")
            .tempdir()
            .context("cannot create the cluster's directory")?;
        let as_postgres = is_root();
        std::fs::create_dir(dir.path().join("sock"))?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            for p in [dir.path().to_path_buf(), dir.path().join("sock")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .with_context(|| format!("cannot give {} to postgres", p.display()))?;
            }
        }
        let own = Own {
            dir,
            bin,
            as_postgres,
        };
        let template = template(&own)?;
        copy_dir(&template, &own.data())?;
        let cluster = PgCluster {
            own: Some(own),
            external: None,
            next: AtomicU64::new(0),
            extra: std::sync::Mutex::default(),
            port: AtomicU64::new(0),
        };
        cluster.start_server()?;
        Ok(cluster)
    }

    fn start_server(&self) -> anyhow::Result<()> {
        let Some(own) = &self.own else {
            return Ok(());
        };
        let extra = self.extra.lock().map(|e| e.clone()).unwrap_or_default();
        let listen = if extra.is_empty() {
            "-c listen_addresses=''"
        } else {
            "-c listen_addresses=127.0.0.1"
        };
        let options = format!(
            "-k {} {listen} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 {extra}",
            own.socket_dir().display()
        );
        let log = own.dir.path().join("server.log");
        own.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                &own.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
            ],
        )
        .with_context(|| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("PostgreSQL did not start; its log:\n{log}")
        })
    }

    /// Serves TCP on 127.0.0.1 too, on a free port, with TLS from `cert_pem` and
    /// `key_pem` (a certificate for 127.0.0.1 or localhost); restarts the server.
    /// Returns the port.
    pub fn serve_tls(&self, cert_pem: &str, key_pem: &str) -> anyhow::Result<u16> {
        use std::os::unix::fs::PermissionsExt;
        let Some(own) = &self.own else {
            bail!(
                "the test PostgreSQL is DROVER_TEST_POSTGRES's: this process cannot configure it"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let (cert, key) = (
            own.dir.path().join("server.crt"),
            own.dir.path().join("server.key"),
        );
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if own.as_postgres {
            let (uid, gid) = postgres_ids()?;
            for p in [&cert, &key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
            }
        }
        *self.extra.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = format!(
            "-p {port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        self.stop()?;
        self.port.store(u64::from(port), Ordering::SeqCst);
        self.start_server()?;
        Ok(port)
    }

    /// The URL of database `db` (key-value form, which the `postgres` crate parses).
    pub fn url(&self, db: &str) -> String {
        match (&self.own, &self.external) {
            (Some(own), _) => {
                let port = match self.port.load(Ordering::SeqCst) {
                    0 => String::new(),
                    p => format!(" port={p}"),
                };
                format!(
                    "host={} user=drover dbname={db}{port}",
                    own.socket_dir().display()
                )
            }
            (None, Some(base)) => with_database(base, db),
            (None, None) => unreachable!("a cluster is ours or external"),
        }
    }

    /// A new, empty database with a name unique to this process; returns its URL.
    pub fn create_database(&self) -> anyhow::Result<String> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "drover_{}_{}_{n}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .context("cannot connect to the test PostgreSQL")?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(self.url(&name))
    }

    /// Stops the server (fast: running transactions are rolled back).
    pub fn stop(&self) -> anyhow::Result<()> {
        let Some(own) = &self.own else {
            bail!("the test PostgreSQL is DROVER_TEST_POSTGRES's: this process cannot stop it");
        };
        own.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-m",
                "fast",
                "-D",
                &own.data().to_string_lossy(),
            ],
        )
    }

    /// Starts the server again, on the same data.
    pub fn start_again(&self) -> anyhow::Result<()> {
        if self.own.is_none() {
            bail!("the test PostgreSQL is DROVER_TEST_POSTGRES's: this process cannot start it");
        }
        self.start_server()
    }

    /// Stops and starts the server: every connection to it is lost.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Ends every other connection to database `db` (a network cut, as the clients see it).
    pub fn kill_connections(&self, db_url: &str) -> anyhow::Result<u64> {
        let mut c = postgres::Client::connect(db_url, postgres::NoTls)?;
        let row = c.query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

/// `base` (a URL or key-value string) naming database `db` instead of its own.
fn with_database(base: &str, db: &str) -> String {
    if base.starts_with("postgres://") || base.starts_with("postgresql://") {
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let (head, tail) = base.split_at(scheme_end);
        let query = tail.find('?').map_or("", |q| &tail[q..]);
        let authority = tail.split(['/', '?']).next().unwrap_or_default();
        format!("{head}{authority}/{db}{query}")
    } else {
        let kept: Vec<&str> = base
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={db}", kept.join(" "))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = own.run(
                "pg_ctl",
                &[
                    "stop",
                    "-w",
                    "-m",
                    "immediate",
                    "-D",
                    &own.data().to_string_lossy(),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_database_and_parse() {
        assert_eq!(
            with_database("postgres://u:p@h:5/base?sslmode=disable", "d1"),
            "postgres://u:p@h:5/d1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "d1"), "postgres://h/d1");
        assert_eq!(
            with_database("host=/tmp/s user=drover dbname=x", "d1"),
            "host=/tmp/s user=drover dbname=d1"
        );
        for url in [
            "host=/tmp/drover-pg-x/sock user=drover dbname=d1".to_owned(),
            with_database("postgres://u:p@h:5/base", "d1"),
        ] {
            let config: postgres::Config = url.parse().unwrap();
            assert_eq!(config.get_dbname(), Some("d1"), "{url}");
        }
    }
}
