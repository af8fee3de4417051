//! Zero-trust transport with real binaries: every refusal the issue lists (plaintext
//! client, certificate from another CA, an agent certificate posing as the controller,
//! an expired certificate, a removed agent, a join token used twice or too late, a
//! viewer deploying), each asserted from the refused side and from the log that names the
//! reason; roles and who-did-what in the history; agent certificate renewal without a
//! restart; secrets delivered as files and as environment and written nowhere else; and
//! an independent client (Python grpcio) talking to the operator API.
//!
//! Fleets here are small (one or two hosts, no first deploy unless the test needs one)
//! and run in the `fleet` test group, so at most two run at once.
//!
//! One binary, a module per theme: [`transport`], [`enrollment`], [`operators`],
//! [`secrets`], [`python`], [`dev`].

mod dev;
mod enrollment;
mod operators;
mod python;
mod secrets;
mod transport;

use std::path::Path;
use std::time::Duration;

use drover_shared::tls;
use drover_tests::DemoImage;
use drover_tests::fleet::{As, CliRun, Fleet, FleetOptions};
use drover_tests::logs::{find_line, strip_ansi};

/// How long a refusal may take to show in a log.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// A fleet of `hosts` without a first deploy: enough for the transport and enrollment
/// tests, quick to start.
async fn small_fleet(hosts: usize) -> Fleet {
    Fleet::start(FleetOptions {
        hosts,
        images: &[DemoImage::V1],
        initial: None,
        ..Default::default()
    })
    .await
}

/// Asserts that a CLI run failed (non-zero exit), with its output in the message.
fn assert_refused(run: &CliRun, what: &str) {
    assert!(
        run.code.is_some_and(|c| c != 0),
        "{what}: expected a refusal, got {}",
        run.describe()
    );
}

/// Writes `cert` and `key` (PEM) as files in `dir`; returns the CLI credentials.
fn cert_files(dir: &Path, name: &str, cert: &str, key: &str) -> As {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    tls::write_public(&cert_path, cert.as_bytes()).expect("write the certificate");
    tls::write_private(&key_path, key.as_bytes()).expect("write the key");
    As::Cert {
        cert: cert_path,
        key: key_path,
    }
}

fn count_lines(text: &str, needles: &[&str]) -> usize {
    strip_ansi(text)
        .lines()
        .filter(|l| find_line(l, needles).is_some())
        .count()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
}

/// Whether [`assert_no_secret_anywhere`] searches the CLI's output too.
#[derive(PartialEq)]
enum Cli {
    Search,
    /// A token is printed once, on purpose, by the command that creates it.
    Skip,
}

/// Searches every log, every CLI output (unless `cli` says not to), and every file in
/// the fleet's directory (the database and its journal, specs, PKI, agents' state) for
/// `secret`; panics naming where it was found, never printing it.
fn assert_no_secret_anywhere(fleet: &Fleet, secret: &str, more: &[String], cli: Cli) {
    let mut found: Vec<String> = vec![];
    if fleet.all_logs().contains(secret) {
        found.push("the process logs".into());
    }
    if cli == Cli::Search && fleet.transcript().text().contains(secret) {
        found.push("the CLI output".into());
    }
    if more.iter().any(|m| m.contains(secret)) {
        found.push("the test's own agents' logs".into());
    }
    let mut files = 0;
    let mut stack = vec![fleet.dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        files >= 3 && fleet.database_path().exists(),
        "searched only {files} files"
    );
    assert!(found.is_empty(), "the secret was written to {found:?}");
}
