//! The state directory: which certificates are used, which send the agent to enroll, and
//! how a replacement interrupted by a crash is repaired.

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use drover_shared::tls::CertificateAuthority;

use super::local::next;
use super::*;

fn ca() -> (CertificateAuthority, String) {
    let (ca, pair) =
        CertificateAuthority::generate("test fleet", Duration::from_secs(3600)).unwrap();
    (ca, pair.cert_pem)
}

fn agent(name: &str) -> Identity {
    Identity::Agent { name: name.into() }
}

/// Credentials as enrollment would produce them: key here, CSR signed by the CA.
fn enrolled(ca: &CertificateAuthority, name: &str) -> Credentials {
    let (key, csr) = tls::key_and_csr(&agent(name)).unwrap();
    let cert = ca
        .sign_csr(&csr, &agent(name), Duration::from_secs(600))
        .unwrap();
    accept(cert, key, name).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn stored_credentials_are_used_with_the_right_modes() {
    let (ca, ca_pem) = ca();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    assert!(matches!(
        load_local(&state, &ca_pem, "web-1").unwrap(),
        Local::Missing
    ));
    let creds = enrolled(&ca, "web-1");
    store(&state, &creds).unwrap();
    assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&state.join(CERT_FILE)), 0o644);
    let Local::Usable(loaded) = load_local(&state, &ca_pem, "web-1").unwrap() else {
        panic!("the stored certificate must be usable")
    };
    assert_eq!(loaded.info, creds.info);
    assert_eq!(loaded.info.agent_name(), Some("web-1"));
    // Only the two files remain.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 2);
    // The key never shows in Debug.
    let key = std::fs::read_to_string(state.join(KEY_FILE)).unwrap();
    let shown = format!("{loaded:?}");
    assert!(!shown.contains(key.lines().nth(1).unwrap()), "{shown}");
}

#[test]
fn unusable_certificates_say_why() {
    let (ca, ca_pem) = ca();
    let dir = tempfile::tempdir().unwrap();
    let unusable = |why: &str| match load_local(dir.path(), &ca_pem, "web-1").unwrap() {
        Local::Unusable(w) => assert!(w.contains(why), "{why}: {w}"),
        other => panic!("{why}: {other:?}"),
    };

    // Expired.
    let now = SystemTime::now();
    let old = ca
        .issue_valid_between(
            &agent("web-1"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    std::fs::write(dir.path().join(CERT_FILE), &old.cert_pem).unwrap();
    std::fs::write(dir.path().join(KEY_FILE), &old.key_pem).unwrap();
    unusable("expired at");

    // From another CA.
    let (other_ca, _) = self::ca();
    let foreign = other_ca
        .issue(&agent("web-1"), Duration::from_secs(600))
        .unwrap();
    std::fs::write(dir.path().join(CERT_FILE), &foreign.cert_pem).unwrap();
    std::fs::write(dir.path().join(KEY_FILE), &foreign.key_pem).unwrap();
    unusable("not issued by the fleet CA");

    // A key that is not the certificate's.
    let good = ca.issue(&agent("web-1"), Duration::from_secs(600)).unwrap();
    std::fs::write(dir.path().join(CERT_FILE), &good.cert_pem).unwrap();
    std::fs::write(dir.path().join(KEY_FILE), &foreign.key_pem).unwrap();
    unusable("does not belong");

    // Not an agent certificate.
    let op = ca
        .issue(
            &Identity::Operator {
                name: "alice".into(),
                role: tls::Role::Admin,
            },
            Duration::from_secs(600),
        )
        .unwrap();
    std::fs::write(dir.path().join(CERT_FILE), &op.cert_pem).unwrap();
    std::fs::write(dir.path().join(KEY_FILE), &op.key_pem).unwrap();
    unusable("not an agent certificate");

    // Half a pair.
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    unusable("only one of");
}

#[test]
fn a_certificate_for_another_name_is_a_configuration_error() {
    let (ca, ca_pem) = ca();
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), &enrolled(&ca, "web-1")).unwrap();
    let e = load_local(dir.path(), &ca_pem, "web-2").unwrap_err();
    assert!(matches!(e, IdentityError::NameMismatch { .. }), "{e}");
    assert_eq!(e.exit_code(), EXIT_CONFIG);
    let text = e.to_string();
    assert!(text.contains("web-1") && text.contains("web-2") && text.contains("--name web-1"));
}

#[test]
fn an_interrupted_replacement_is_finished_or_discarded() {
    let (ca, ca_pem) = ca();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let first = enrolled(&ca, "web-1");
    let second = enrolled(&ca, "web-1");
    store(state, &first).unwrap();
    let (cert, key) = (state.join(CERT_FILE), state.join(KEY_FILE));

    // Crash after the key was renamed, before the certificate was.
    std::fs::write(&key, &second.key_pem).unwrap();
    std::fs::write(next(&cert), &second.cert_pem).unwrap();
    let Local::Usable(c) = load_local(state, &ca_pem, "web-1").unwrap() else {
        panic!("repaired")
    };
    assert_eq!(c.info.serial, second.info.serial);

    // Crash before any rename: the new pair is complete, so it is taken.
    let third = enrolled(&ca, "web-1");
    std::fs::write(next(&key), &third.key_pem).unwrap();
    std::fs::write(next(&cert), &third.cert_pem).unwrap();
    let Local::Usable(c) = load_local(state, &ca_pem, "web-1").unwrap() else {
        panic!("repaired")
    };
    assert_eq!(c.info.serial, third.info.serial);

    // Crash while writing the new key: the old pair stays, the leftover goes.
    std::fs::write(next(&key), "half a key").unwrap();
    let Local::Usable(c) = load_local(state, &ca_pem, "web-1").unwrap() else {
        panic!("kept")
    };
    assert_eq!(c.info.serial, third.info.serial);
    assert!(!next(&key).exists());
    assert_eq!(std::fs::read_dir(state).unwrap().count(), 2);
}

#[test]
fn certificates_from_the_controller_are_checked() {
    let (ca, _) = ca();
    let (key, csr) = tls::key_and_csr(&agent("web-1")).unwrap();
    let for_other = ca
        .sign_csr(&csr, &agent("web-2"), Duration::from_secs(60))
        .unwrap();
    let e = accept(for_other, key.clone(), "web-1").unwrap_err();
    assert!(e.contains("web-1"), "{e}");
    assert!(!e.contains(key.lines().nth(1).unwrap()));
    let (other_key, _) = tls::key_and_csr(&agent("web-1")).unwrap();
    let cert = ca
        .sign_csr(&csr, &agent("web-1"), Duration::from_secs(60))
        .unwrap();
    let e = accept(cert.clone(), other_key, "web-1").unwrap_err();
    assert!(e.contains("does not belong"), "{e}");
    accept(cert, key, "web-1").unwrap();
}

#[test]
fn ca_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ca.crt");
    let e = read_ca(&missing).unwrap_err();
    assert!(
        e.not_provisioned() && e.to_string().contains("ca.crt"),
        "{e}"
    );
    std::fs::write(&missing, "not a certificate").unwrap();
    let e = read_ca(&missing).unwrap_err();
    assert!(!e.not_provisioned(), "{e}");
    assert_eq!(e.exit_code(), EXIT_CONFIG);
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn refusals_exit_with_their_own_code_and_say_what_to_do() {
    let e = IdentityError::Refused {
        name: "web-1".into(),
        code: tonic::Code::Unauthenticated,
        message: "join token already used".into(),
        hint: refusal_hint(tonic::Code::Unauthenticated),
    };
    assert_eq!(e.exit_code(), EXIT_ENROLL_REFUSED);
    assert!(e.to_string().contains("drover token create"), "{e}");
    assert!(refusal_hint(tonic::Code::AlreadyExists).contains("drover hosts remove"));
    for code in [
        tonic::Code::Unauthenticated,
        tonic::Code::PermissionDenied,
        tonic::Code::AlreadyExists,
        tonic::Code::InvalidArgument,
    ] {
        assert!(is_refusal(code), "{code:?}");
    }
    assert!(!is_refusal(tonic::Code::Unavailable));
}

#[test]
fn an_error_chain_says_each_cause_once() {
    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        // Like hyper's and tonic's wrappers: repeats its source's text.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error: {}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let e = Wrapper(std::io::Error::other("connection refused"));
    assert_eq!(source_chain(&e), "transport error: connection refused");
    let plain = std::io::Error::other("connection refused");
    assert_eq!(source_chain(&plain), "connection refused");
}
