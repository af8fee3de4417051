//! `drover login`: checks a controller address and credentials against the controller
//! (`WhoAmI`) and saves them as a client profile, so later commands need no flags. Asks
//! nothing secret on the command line: an API token comes from a file or from stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use drover_proto::v1::WhoAmIRequest;

use super::connect::{Settings, TokenSource, check_address};
use super::profile::{self, ConfigFile, DEFAULT_PROFILE, Profile};
use super::{DEFAULT_PKI_DIR, Refused, rpc_error};

/// Flags of `drover login`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover login --controller https://ctl.internal:7070 --ca-cert ca.crt --cert alice.crt --key alice.key
  drover api-token create ci --role deployer | drover login --profile ci --controller https://ctl.internal:7070 --ca-cert ca.crt --token-stdin
  drover --profile ci hosts        # or DROVER_PROFILE=ci; flags still override the profile")]
pub struct LoginArgs {
    /// The profile to write.
    #[arg(long, env = "DROVER_PROFILE", value_name = "NAME", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Controller address (repeat for replicas, tried in order).
    #[arg(long = "controller", value_name = "URL", required = true)]
    pub controllers: Vec<String>,
    /// The fleet CA certificate [default: ca.crt in DROVER_PKI_DIR or /etc/drover/pki].
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Operator certificate (PEM), from `drover ca issue-operator`.
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with_all = ["token_file", "token_stdin"])]
    pub cert: Option<PathBuf>,
    /// Private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding an API token; the profile points at it.
    #[arg(long, value_name = "FILE", conflicts_with = "token_stdin")]
    pub token_file: Option<PathBuf>,
    /// Read an API token from stdin; it is saved next to the configuration (mode 0600).
    #[arg(long)]
    pub token_stdin: bool,
    /// Plaintext to a controller started with --insecure-dev (development only).
    #[arg(long)]
    pub insecure_dev: bool,
}

/// Runs `drover login`.
pub async fn run(args: LoginArgs) -> anyhow::Result<i32> {
    let (Some(dir), Some(path)) = (profile::config_dir(), profile::config_path()) else {
        return Err(Refused(
            "neither XDG_CONFIG_HOME nor HOME is set: there is nowhere to save a profile".into(),
        )
        .into());
    };
    for url in &args.controllers {
        check_address(url, args.insecure_dev)?;
    }
    let pki_dir =
        std::env::var_os("DROVER_PKI_DIR").map_or(PathBuf::from(DEFAULT_PKI_DIR), PathBuf::from);
    let ca_cert = if args.insecure_dev {
        PathBuf::new()
    } else {
        absolute(
            &args
                .ca_cert
                .clone()
                .unwrap_or_else(|| pki_dir.join("ca.crt")),
        )?
    };
    let cert = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some((absolute(c)?, absolute(k)?)),
        _ => None,
    };
    let token = if args.token_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let t = text.trim().to_owned();
        if t.is_empty() {
            return Err(Refused("--token-stdin: stdin held no token; pipe it in, e.g. `drover login ... --token-stdin < token`".into()).into());
        }
        Some(TokenSource::Value(t))
    } else {
        args.token_file
            .as_deref()
            .map(absolute)
            .transpose()?
            .map(TokenSource::File)
    };
    let settings = Settings {
        controllers: args.controllers.clone(),
        ca_cert: ca_cert.clone(),
        cert: cert.clone().map(|(c, k)| (c, k, true)),
        token: token.clone(),
        insecure_dev: args.insecure_dev,
    };
    let mut client = settings.client().await?;
    let me = client
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(|s| rpc_error("logging in (nothing was saved)", &s))?
        .into_inner();
    let token_file = match token {
        Some(TokenSource::Value(t)) => {
            let file = dir.join(format!("{}.token", args.profile));
            create_private_dir(&dir)?;
            drover_shared::tls::write_private(&file, format!("{t}\n").as_bytes())?;
            Some(file)
        }
        Some(TokenSource::File(f)) => Some(f),
        Some(TokenSource::Env) | None => None,
    };
    let mut file = ConfigFile::load(&path)?;
    file.profile.insert(
        args.profile.clone(),
        Profile {
            controllers: args.controllers.clone(),
            ca_cert: (!args.insecure_dev).then_some(ca_cert),
            cert: cert.as_ref().map(|(c, _)| c.clone()),
            key: cert.map(|(_, k)| k),
            token_file,
            insecure_dev: args.insecure_dev,
        },
    );
    if file.default.is_none() && args.profile != DEFAULT_PROFILE {
        file.default = Some(args.profile.clone());
    }
    file.save(&path)?;
    println!(
        "logged in to {} as {} ({}, by {}); saved profile {:?} in {}",
        args.controllers.join(", "),
        me.name,
        me.role,
        me.method,
        args.profile,
        path.display()
    );
    let used_by_default = file.default.as_deref().unwrap_or(DEFAULT_PROFILE) == args.profile;
    if used_by_default {
        println!("try: drover hosts");
    } else {
        println!("try: drover hosts --profile {}", args.profile);
    }
    Ok(0)
}

/// `path` made absolute, so the profile works from any directory; it must exist.
fn absolute(path: &Path) -> Result<PathBuf, Refused> {
    std::fs::canonicalize(path).map_err(|e| Refused(format!("{}: {e}", path.display())))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}
