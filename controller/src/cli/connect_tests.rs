use std::path::PathBuf;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

fn args(flags: &[&str]) -> ClientArgs {
    let mut argv = vec!["drover"];
    argv.extend_from_slice(flags);
    Args::try_parse_from(argv).expect("flags parse").client
}

fn prod() -> Profile {
    Profile {
        controllers: vec!["https://a:7070".into(), "https://b:7070".into()],
        ca_cert: Some("/p/ca.crt".into()),
        token_file: Some("/p/token".into()),
        ..Profile::default()
    }
}

#[test]
fn the_profile_fills_in_what_flags_leave_out() {
    let s = args(&[]).merge(prod());
    assert_eq!(s.controllers, ["https://a:7070", "https://b:7070"]);
    assert_eq!(s.ca_cert, PathBuf::from("/p/ca.crt"));
    assert!(matches!(&s.token, Some(TokenSource::File(f)) if f == &PathBuf::from("/p/token")));
    assert!(s.cert.is_none(), "a profile token means no admin fallback");
}

#[test]
fn flags_override_the_profile() {
    let s = args(&[
        "--controller",
        "https://c:7070",
        "--ca-cert",
        "/f/ca.crt",
        "--cert",
        "/f/me.crt",
        "--key",
        "/f/me.key",
    ])
    .merge(prod());
    assert_eq!(s.controllers, ["https://c:7070"]);
    assert_eq!(s.ca_cert, PathBuf::from("/f/ca.crt"));
    assert!(
        s.token.is_none(),
        "a flag certificate replaces the profile's token"
    );
    assert_eq!(s.cert, Some(("/f/me.crt".into(), "/f/me.key".into(), true)));
}

#[test]
fn without_profile_the_pki_dir_gives_the_ca_and_the_admin_certificate() {
    let s = args(&["--pki-dir", "/srv/pki"]).merge(Profile::default());
    assert_eq!(s.controllers, [super::super::DEFAULT_CONTROLLER]);
    assert_eq!(s.ca_cert, PathBuf::from("/srv/pki/ca.crt"));
    assert_eq!(
        s.cert,
        Some((
            "/srv/pki/admin.crt".into(),
            "/srv/pki/admin.key".into(),
            false
        ))
    );
}

#[test]
fn an_address_without_a_scheme_is_refused_with_the_address_to_write() {
    let e = check_address("127.0.0.1:7070", false).unwrap_err();
    assert!(e.0.contains("https://127.0.0.1:7070"), "{e}");
    let e = check_address("http://h:7070", false).unwrap_err();
    assert!(
        e.0.contains("https://h:7070") && e.0.contains("--insecure-dev"),
        "{e}"
    );
    assert!(check_address("https://h:7070", false).is_ok());
    assert!(check_address("http://h:7070", true).is_ok());
    assert!(check_address("https://h:7070", true).is_err());
    let e = check_address("tcp://h:7070", false).unwrap_err();
    assert!(e.0.contains("https://h:7070"), "{e}");
}

#[tokio::test]
async fn a_refused_connection_is_named_once_with_the_address_and_the_flag() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let e = args(&["--controller", &url, "--insecure-dev"])
        .client()
        .await
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains(&url) && text.contains("--controller"),
        "{text}"
    );
    assert_eq!(
        text.to_lowercase().matches("refused").count(),
        1,
        "said once: {text}"
    );
}

#[test]
fn a_cause_repeated_by_the_layer_below_is_said_once() {
    assert_eq!(
        said_once("transport error: connection refused: Connection refused (os error 111)"),
        "transport error: connection refused"
    );
    assert_eq!(
        said_once("listing hosts failed: tcp connect error: deadline has elapsed"),
        "listing hosts failed: tcp connect error: deadline has elapsed"
    );
}
