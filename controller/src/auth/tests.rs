use super::*;
use crate::store::ApiToken;
use drover_shared::tls::PeerCertificate;

fn operator(name: &str, role: Role) -> Principal {
    Principal {
        name: name.into(),
        role,
        method: AuthMethod::Certificate,
    }
}

#[test]
fn the_roles_matrix() {
    let viewer = [
        "ListHosts",
        "GetDeployment",
        "ListDeployments",
        "Watch",
        "Logs",
        "ListSecrets",
        "WhoAmI",
        "Plan",
        "GetSlo",
        "ListReleases",
        "GetDora",
    ];
    let deployer = ["Deploy", "Rollback", "Control", "CreateRelease"];
    let admin = [
        "RemoveHost",
        "CreateJoinToken",
        "CreateApiToken",
        "SetSecret",
        "SomethingAddedLater",
    ];
    for (role, allowed, refused) in [
        (
            Role::Viewer,
            &viewer[..],
            [&deployer[..], &admin[..]].concat(),
        ),
        (
            Role::Deployer,
            &[&viewer[..], &deployer[..]].concat()[..],
            admin.to_vec(),
        ),
        (
            Role::Admin,
            &[&viewer[..], &deployer[..], &admin[..]].concat()[..],
            vec![],
        ),
    ] {
        let p = operator("alice", role);
        for m in allowed {
            assert!(authorize(&p, requirement(m)).is_ok(), "{role} {m}");
        }
        for m in refused {
            let r = authorize(&p, requirement(m)).unwrap_err();
            assert_eq!(r.code, Code::PermissionDenied, "{role} {m}");
        }
    }
    let r = authorize(&operator("alice", Role::Viewer), requirement("Deploy")).unwrap_err();
    assert_eq!(r.message, "viewer alice may not deploy: needs deployer");
}

#[test]
fn history_names_the_authenticated_caller_unless_insecure_dev() {
    let p = Principal {
        name: "ci".into(),
        role: Role::Deployer,
        method: AuthMethod::Token,
    };
    assert_eq!(p.history_name("mallory@laptop"), "ci");
    let dev = Principal::insecure_dev();
    assert_eq!(dev.role, Role::Admin);
    assert_eq!(dev.history_name(" bob@box "), "bob@box");
    assert_eq!(dev.history_name(""), "unknown");
}

fn tls(identity: Option<Identity>) -> Credentials {
    Credentials {
        tls: Some(TlsConnectInfo {
            remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
            peer: Some(PeerCertificate {
                identity,
                serial: "4a".into(),
                not_after_unix: 0,
            }),
        }),
        authorization: None,
    }
}

#[test]
fn certificates_name_operators_and_nothing_else() {
    let p = certificate(
        tls(Some(Identity::Operator {
            name: "alice".into(),
            role: Role::Deployer,
        }))
        .tls
        .as_ref(),
    )
    .unwrap();
    assert_eq!(p, operator("alice", Role::Deployer));
    let agent = certificate(
        tls(Some(Identity::Agent {
            name: "web-1".into(),
        }))
        .tls
        .as_ref(),
    )
    .unwrap_err();
    assert_eq!(agent.code, Code::PermissionDenied);
    assert!(agent.message.contains("agent web-1"), "{}", agent.message);
    let controller = certificate(tls(Some(Identity::Controller)).tls.as_ref()).unwrap_err();
    assert_eq!(controller.code, Code::PermissionDenied);
    assert_eq!(
        certificate(tls(None).tls.as_ref()).unwrap_err().code,
        Code::PermissionDenied
    );
    let none = certificate(None).unwrap_err();
    assert_eq!(none.code, Code::Unauthenticated);
    assert!(
        none.message
            .starts_with("no client certificate or API token")
    );
}

fn record(t: &tokens::NewToken, expires_ms: Option<u64>, revoked_ms: Option<u64>) -> ApiToken {
    ApiToken {
        id: t.id.clone(),
        name: "ci".into(),
        role: Role::Deployer,
        secret_hash: t.secret_hash.clone(),
        created_by: "admin".into(),
        expires_ms,
        revoked_ms,
    }
}

#[test]
fn api_tokens_are_judged_by_hash_expiry_and_revocation() {
    let t = tokens::generate(TokenKind::Api);
    let presented = tokens::parse(TokenKind::Api, &t.token).unwrap();
    let now = 1_000_000;
    let ok = judge_token(&presented, Some(&record(&t, Some(now + 1), None)), now).unwrap();
    assert_eq!(
        (ok.name.as_str(), ok.role, ok.method),
        ("ci", Role::Deployer, AuthMethod::Token)
    );
    assert!(judge_token(&presented, Some(&record(&t, None, None)), now).is_ok());
    let secret = t.token.rsplit('.').next().unwrap().to_owned();
    for (rec, words) in [
        (None, "unknown API token"),
        (
            Some(record(&tokens::generate(TokenKind::Api), None, None)),
            "unknown API token",
        ),
        (Some(record(&t, Some(now), None)), "expired"),
        (Some(record(&t, None, Some(now - 5))), "revoked"),
    ] {
        let r = judge_token(&presented, rec.as_ref(), now).unwrap_err();
        assert_eq!(r.code, Code::Unauthenticated);
        assert!(r.message.contains(words), "{}", r.message);
        assert!(!r.message.contains(&secret), "{}", r.message);
    }
}

#[tokio::test]
async fn tokens_come_before_certificates_and_are_checked_against_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("d.db")).await.unwrap();
    let t = tokens::generate(TokenKind::Api);
    store
        .create_api_token(record(&t, None, None))
        .await
        .unwrap();
    let auth = Authenticator::verified(store.clone());
    let mut creds = tls(Some(Identity::Operator {
        name: "root".into(),
        role: Role::Admin,
    }));
    creds.authorization = Some(format!("Bearer {}", t.token.as_str()));
    let p = auth.authenticate(&creds).await.unwrap().unwrap();
    assert_eq!(p.name, "ci");
    creds.authorization = Some("Basic abc".into());
    assert_eq!(
        auth.authenticate(&creds).await.unwrap().unwrap_err().code,
        Code::Unauthenticated
    );
    creds.authorization = Some(format!("Bearer {}", t.token.as_str()));
    assert_eq!(store.revoke_api_tokens(&t.id).await.unwrap(), 1);
    let r = auth.authenticate(&creds).await.unwrap().unwrap_err();
    assert!(r.message.contains("revoked"), "{}", r.message);
    // --insecure-dev: everyone is admin, whatever they present.
    let dev = Authenticator::insecure_dev();
    let p = dev
        .authenticate(&Credentials::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p, Principal::insecure_dev());
}
