//! Flag, file and environment merging, and validation of every setting.

use super::*;

/// A join token of the right shape, used to check it never shows.
const TOKEN: &str = "drj1.0123456789abcdef.fedcba9876543210fedcba9876543210";

fn cli(args: &[&str]) -> Cli {
    let mut full = vec!["drover-agent"];
    full.extend_from_slice(args);
    Cli::try_parse_from(full).unwrap()
}

fn file(text: &str) -> FileConfig {
    parse_file(Path::new("agent.toml"), text).unwrap()
}

fn merge(args: &[&str]) -> Result<AgentConfig, ConfigError> {
    AgentConfig::merge(&cli(args), FileConfig::default(), EnvVars::default())
}

#[test]
fn flags_override_file_and_labels_merge() {
    let f = file(
        r#"
        controller = "https://file:7070"
        name = "from-file"
        keep-previous = 5
        heartbeat_interval = "500ms"
        [labels]
        role = "db"
        zone = "a"
        "#,
    );
    let c = cli(&[
        "--name",
        "web-1",
        "--label",
        "role=web",
        "--keep-previous",
        "1",
    ]);
    let cfg = AgentConfig::merge(&c, f, EnvVars::default()).unwrap();
    assert_eq!(cfg.controller, "https://file:7070");
    assert_eq!(cfg.name, "web-1");
    assert_eq!(cfg.keep_previous, 1);
    assert_eq!(cfg.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(cfg.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(cfg.docker_host, DEFAULT_DOCKER_HOST);
    assert!(!cfg.insecure_dev);
}

#[test]
fn defaults_and_docker_host_env() {
    let c = cli(&["--controller", "https://127.0.0.1:7070", "--name", "h1"]);
    let env = EnvVars {
        docker_host: Some("tcp://127.0.0.1:2375".into()),
        ..Default::default()
    };
    let cfg = AgentConfig::merge(&c, FileConfig::default(), env).unwrap();
    assert_eq!(cfg.docker_host, "tcp://127.0.0.1:2375");
    assert_eq!(cfg.keep_previous, DEFAULT_KEEP_PREVIOUS);
    assert_eq!(cfg.heartbeat_interval, DEFAULT_HEARTBEAT);
    assert_eq!(cfg.log_format, LogFormat::Text);
    assert_eq!(cfg.ca_cert, Path::new(DEFAULT_CA_CERT));
    assert_eq!(cfg.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(cfg.secrets_dir, Path::new(DEFAULT_SECRETS_DIR));
    assert_eq!(cfg.join_token, TokenSource::None);
    let c = cli(&[
        "--controller",
        "https://c:1",
        "--name",
        "h1",
        "--docker-host",
        "unix:///x.sock",
    ]);
    let env = EnvVars {
        docker_host: Some("tcp://ignored:1".into()),
        ..Default::default()
    };
    let cfg = AgentConfig::merge(&c, FileConfig::default(), env).unwrap();
    assert_eq!(cfg.docker_host, "unix:///x.sock");
}

#[test]
fn the_documented_example_config_is_valid() {
    let text = include_str!("../../deploy/agent.example.toml");
    let f = parse_file(Path::new("deploy/agent.example.toml"), text).unwrap();
    let cfg = AgentConfig::merge(&Cli::default(), f, EnvVars::default()).unwrap();
    assert_eq!(cfg.log_format, LogFormat::Json);
    assert!(cfg.controller.starts_with("https://"));
    assert!(!cfg.insecure_dev);
}

#[test]
fn unknown_file_key_is_named() {
    let e = parse_file(Path::new("agent.toml"), "controler = \"https://x\"").unwrap_err();
    assert!(e.to_string().contains("controler"), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let c = cli(&["--config", "/nonexistent/drover/agent.toml"]);
    let e = AgentConfig::load(&c).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/drover/agent.toml"));
}

#[test]
fn https_is_required_unless_insecure_dev_which_requires_http() {
    let e = merge(&["--controller", "http://c:1", "--name", "h"]).unwrap_err();
    assert!(e.to_string().contains("--insecure-dev"), "{e}");
    assert!(e.to_string().contains("https://"), "{e}");
    let cfg = merge(&[
        "--controller",
        "http://c:1",
        "--name",
        "h",
        "--insecure-dev",
    ])
    .unwrap();
    assert!(cfg.insecure_dev);
    assert!(cfg.summary().contains("plaintext"));
    let e = merge(&[
        "--controller",
        "https://c:1",
        "--name",
        "h",
        "--insecure-dev",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("http:// URL"), "{e}");
    // The file can say it too.
    let f = file("controller = \"http://c:1\"\nname = \"h\"\ninsecure-dev = true\n");
    let cfg = AgentConfig::merge(&Cli::default(), f, EnvVars::default()).unwrap();
    assert!(cfg.insecure_dev);
    let cfg = merge(&["--controller", "https://c:1", "--name", "h"]).unwrap();
    assert!(cfg.summary().contains("mutual TLS"));
}

#[test]
fn paths_come_from_flags_or_file() {
    let f = file(
        r#"
        controller = "https://c:7070"
        name = "h"
        ca-cert = "/file/ca.crt"
        state_dir = "/file/state"
        secrets-dir = "/dev/shm/file-secrets"
        "#,
    );
    let c = cli(&["--ca-cert", "/flag/ca.crt"]);
    let cfg = AgentConfig::merge(&c, f, EnvVars::default()).unwrap();
    assert_eq!(cfg.ca_cert, Path::new("/flag/ca.crt"));
    assert_eq!(cfg.state_dir, Path::new("/file/state"));
    assert_eq!(cfg.secrets_dir, Path::new("/dev/shm/file-secrets"));
    let e = merge(&[
        "--controller",
        "https://c:1",
        "--name",
        "h",
        "--secrets-dir",
        "relative/secrets",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("secrets-dir"), "{e}");
}

#[test]
fn token_sources_in_order_flag_env_file() {
    let base = ["--controller", "https://c:1", "--name", "h"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        cli(&a)
    };
    let env = || EnvVars {
        join_token: Some(JoinToken::new(TOKEN)),
        ..Default::default()
    };
    let f = || file(&format!("token = \"{TOKEN}\""));

    let cfg = AgentConfig::merge(&with(&["--token", TOKEN]), f(), env()).unwrap();
    assert!(matches!(
        cfg.join_token,
        TokenSource::Given {
            from: "--token",
            ..
        }
    ));
    let cfg = AgentConfig::merge(&with(&["--token-file", "/t"]), f(), env()).unwrap();
    assert_eq!(cfg.join_token, TokenSource::File("/t".into()));
    let cfg = AgentConfig::merge(&with(&[]), f(), env()).unwrap();
    assert!(matches!(
        cfg.join_token,
        TokenSource::Given {
            from: TOKEN_ENV,
            ..
        }
    ));
    let cfg = AgentConfig::merge(&with(&[]), f(), EnvVars::default()).unwrap();
    assert!(matches!(cfg.join_token, TokenSource::Given { .. }));
    assert_eq!(cfg.join_token.read().unwrap(), Some(JoinToken::new(TOKEN)));
    let tf = file("token-file = \"/etc/drover/join-token\"");
    let cfg = AgentConfig::merge(&with(&[]), tf, EnvVars::default()).unwrap();
    assert_eq!(
        cfg.join_token,
        TokenSource::File("/etc/drover/join-token".into())
    );

    let e = AgentConfig::merge(
        &with(&["--token", TOKEN, "--token-file", "/t"]),
        FileConfig::default(),
        EnvVars::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--token-file"), "{e}");
    let both = file(&format!("token = \"{TOKEN}\"\ntoken-file = \"/t\""));
    let e = AgentConfig::merge(&with(&[]), both, EnvVars::default()).unwrap_err();
    assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let source = TokenSource::File(path.clone());
    assert_eq!(source.read().unwrap(), Some(JoinToken::new(TOKEN)));
    std::fs::write(&path, "not-a-token-but-secret-anyway\n").unwrap();
    let e = source.read().unwrap_err().to_string();
    assert!(
        e.contains("drj1.<id>.<secret>") && e.contains("token"),
        "{e}"
    );
    assert!(!e.contains("secret-anyway"), "{e}");
    let missing = TokenSource::File(dir.path().join("absent"));
    assert!(missing.read().unwrap_err().to_string().contains("absent"));
}

#[test]
fn the_token_never_shows_in_debug_errors_or_summaries() {
    let c = cli(&[
        "--controller",
        "https://c:1",
        "--name",
        "h",
        "--token",
        TOKEN,
    ]);
    let cfg = AgentConfig::merge(&c, FileConfig::default(), EnvVars::default()).unwrap();
    let secret_part = TOKEN.rsplit('.').next().unwrap();
    let f = file(&format!("token = \"{TOKEN}\""));
    for text in [
        format!("{c:?}"),
        format!("{cfg:?}"),
        format!("{cfg:#?}"),
        cfg.summary(),
        format!("{f:?}"),
        format!("{:?}", JoinToken::new(TOKEN)),
    ] {
        assert!(!text.contains(secret_part), "{text}");
    }
    assert!(cfg.summary().contains("join-token=from --token"));

    // Malformed tokens are refused without being quoted, wherever they come from.
    for bad in [
        "drj1.short",
        "dra1.0123456789abcdef.fedcba9876543210fedcba9876543210",
        "hunter2-looks-like-a-password",
    ] {
        let c = cli(&["--controller", "https://c:1", "--name", "h", "--token", bad]);
        let e = AgentConfig::merge(&c, FileConfig::default(), EnvVars::default()).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(matches!(e, ConfigError::Token { .. }), "{text}");
        assert!(!text.contains(bad), "{text}");
        let env = EnvVars {
            join_token: Some(JoinToken::new(bad)),
            ..Default::default()
        };
        let c = cli(&["--controller", "https://c:1", "--name", "h"]);
        let e = AgentConfig::merge(&c, FileConfig::default(), env).unwrap_err();
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");
        assert!(!e.to_string().contains(bad), "{e}");
    }

    // A file whose token line is broken is refused without quoting the line.
    let text = format!("name = \"h\"\ntoken = {TOKEN}\n");
    let e = parse_file(Path::new("agent.toml"), &text).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("line 2"), "{shown}");
    assert!(!shown.contains(secret_part), "{shown}");
}

#[test]
fn bad_values_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "h1"], "controller is required"),
        (&["--controller", "https://c:1"], "name is required"),
        (
            &["--controller", "ftp://c", "--name", "h1"],
            "invalid controller",
        ),
        (
            &["--controller", "https://", "--name", "h1"],
            "invalid controller",
        ),
        (
            &["--controller", "https://c:1", "--name", "bad name"],
            "invalid name \"bad name\"",
        ),
        (
            &["--controller", "https://c:1", "--name=-x"],
            "invalid name",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--label",
                "novalue",
            ],
            "novalue",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--heartbeat-interval",
                "fast",
            ],
            "\"fast\"",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--heartbeat-interval",
                "10ms",
            ],
            "between",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--log-format",
                "xml",
            ],
            "xml",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--docker-host",
                "/var/run/docker.sock",
            ],
            "docker-host",
        ),
        (
            &[
                "--controller",
                "https://c:1",
                "--name",
                "h",
                "--advertise",
                "10.0.0.1:80",
            ],
            "advertise",
        ),
    ];
    for (args, needle) in cases {
        let e = merge(args).unwrap_err();
        assert!(e.to_string().contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn tokens() {
    assert!(check_token("web-1.example_a", 63).is_ok());
    assert!(check_token("", 63).is_err());
    assert!(check_token("a/b", 63).is_err());
    assert!(check_token("x.", 63).is_err());
    assert!(check_token(&"a".repeat(64), 63).is_err());
}
