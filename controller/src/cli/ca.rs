//! `drover ca init` and `drover ca issue-operator`: the fleet's certificate authority,
//! made and used locally on the controller's machine (they need the CA key, so they do not
//! go through the controller).

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_shared::tls::{self, CertificateAuthority, Identity, Role};

use super::{DEFAULT_PKI_DIR, Refused};

/// How long operator certificates stay valid by default.
const OPERATOR_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The operator name of the certificate `ca init` makes.
const ADMIN_NAME: &str = "admin";
/// Secrets are encrypted at rest with this key.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// `drover ca ...`
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create the fleet's certificate authority, the first admin certificate and the
    /// secrets key. Private keys are written with mode 0600 and never printed.
    Init {
        /// Directory to write into (created with mode 0700).
        #[arg(long, env = "DROVER_PKI_DIR", default_value = DEFAULT_PKI_DIR)]
        dir: PathBuf,
        /// How long the CA is valid.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10y")]
        validity: Duration,
    },
    /// Issue a client certificate for an operator (a person or a CI job) with a role.
    /// Runs where the CA key is; hand the two files to the operator.
    IssueOperator {
        /// Who: shown in history next to everything done with this certificate.
        name: String,
        /// admin, deployer or viewer.
        #[arg(long)]
        role: Role,
        /// Directory holding ca.crt and ca.key.
        #[arg(long, env = "DROVER_PKI_DIR", default_value = DEFAULT_PKI_DIR)]
        dir: PathBuf,
        /// Where to write NAME.crt and NAME.key (default: the current directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// How long the certificate is valid.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1y")]
        validity: Duration,
    },
}

/// Runs a `drover ca` subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<i32> {
    match cmd {
        CaCommand::Init { dir, validity } => init(&dir, validity),
        CaCommand::IssueOperator {
            name,
            role,
            dir,
            out,
            validity,
        } => issue_operator(&name, role, &dir, &out, validity),
    }
}

fn init(dir: &Path, validity: Duration) -> anyhow::Result<i32> {
    let ca_key = dir.join(tls::CA_KEY_FILE);
    if ca_key.exists() {
        return Err(Refused(format!(
            "{} already exists: this directory holds a fleet CA already. Every agent and operator certificate depends on it; remove the directory yourself if you really mean to start over, or pass --dir",
            ca_key.display()
        ))
        .into());
    }
    create_private_dir(dir)?;
    let (ca, ca_pair) = CertificateAuthority::generate("Drover fleet CA", validity)?;
    let admin = ca.issue(
        &Identity::Operator {
            name: ADMIN_NAME.into(),
            role: Role::Admin,
        },
        OPERATOR_VALIDITY.min(validity),
    )?;
    let secrets_key: [u8; 32] = rand::random();
    let files = [
        (tls::CA_KEY_FILE, ca_pair.key_pem.as_bytes(), true),
        (tls::CA_CERT_FILE, ca_pair.cert_pem.as_bytes(), false),
        ("admin.key", admin.key_pem.as_bytes(), true),
        ("admin.crt", admin.cert_pem.as_bytes(), false),
        (SECRETS_KEY_FILE, &secrets_key[..], true),
    ];
    for (name, contents, private) in files {
        let path = dir.join(name);
        if private {
            tls::write_private(&path, contents)?;
        } else {
            tls::write_public(&path, contents)?;
        }
    }
    let d = dir.display();
    println!("created the fleet CA in {d}:");
    println!(
        "  ca.crt       the CA certificate: copy it to every agent (/etc/drover/ca.crt) and CLI user"
    );
    println!("  ca.key       the CA private key (0600): stays here, back it up offline");
    println!("  admin.crt    an admin operator certificate, and admin.key (0600)");
    println!("  secrets.key  encrypts service secrets at rest (0600): back it up with ca.key");
    println!();
    for line in next_steps(dir) {
        println!("{line}");
    }
    Ok(0)
}

/// What to run after `ca init`, as complete commands: `DROVER_PKI_DIR` when the
/// directory is not the default, this machine's host name where agents dial.
fn next_steps(dir: &Path) -> Vec<String> {
    let d = dir.display();
    let env = if dir == Path::new(DEFAULT_PKI_DIR) {
        String::new()
    } else {
        format!("DROVER_PKI_DIR={d} ")
    };
    let host = this_host();
    vec![
        "next, on this machine:".into(),
        format!("  {env}drover serve --listen 0.0.0.0:7070     # the controller"),
        format!("  {env}drover hosts                           # the CLI finds admin.crt in {d}"),
        format!("  (umask 077; {env}drover token create --ttl 1h > join-token)   # one per agent"),
        format!("then copy {d}/ca.crt and join-token to the new host and run there:"),
        format!(
            "  sudo drover-agent --controller https://{host}:7070 --name \"$(hostname)\" --ca-cert ca.crt --token-file join-token"
        ),
    ]
}

/// This machine's host name (for commands run elsewhere that dial it), else `localhost`.
pub(super) fn this_host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn issue_operator(
    name: &str,
    role: Role,
    dir: &Path,
    out: &Path,
    validity: Duration,
) -> anyhow::Result<i32> {
    if !tls::valid_name(name) {
        return Err(Refused(format!(
            "{name:?} is not a valid operator name: use letters, digits, '.', '-', '_' and '@', starting with a letter or digit"
        ))
        .into());
    }
    let ca = CertificateAuthority::load(dir).map_err(|e| {
        Refused(format!(
            "{e}: issuing a certificate needs the fleet CA (run this where `drover ca init` wrote it, or pass --dir)"
        ))
    })?;
    let cert_path = out.join(format!("{name}.crt"));
    let key_path = out.join(format!("{name}.key"));
    if key_path.exists() {
        return Err(Refused(format!(
            "{} already exists; remove it or pass another --out",
            key_path.display()
        ))
        .into());
    }
    let issued = ca.issue(
        &Identity::Operator {
            name: name.into(),
            role,
        },
        validity,
    )?;
    tls::write_private(&key_path, issued.key_pem.as_bytes())?;
    tls::write_public(&cert_path, issued.cert_pem.as_bytes())?;
    println!(
        "issued {role} certificate for {name}: {} and {} (0600)",
        cert_path.display(),
        key_path.display()
    );
    println!(
        "use it with: drover login --controller https://{}:7070 --ca-cert {}/ca.crt --cert {} --key {}\nor once: DROVER_CERT={} DROVER_KEY={} DROVER_CA_CERT={}/ca.crt drover hosts",
        this_host(),
        dir.display(),
        cert_path.display(),
        key_path.display(),
        cert_path.display(),
        key_path.display(),
        dir.display()
    );
    Ok(0)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to mode 0700", dir.display()))?;
    }
    Ok(())
}
