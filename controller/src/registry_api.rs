//! The digest a tag points at, asked of the registry by the controller itself through
//! the registry's HTTP API (distribution v2: `HEAD /v2/<name>/manifests/<tag>`, answer
//! in `Docker-Content-Digest`), so a plan can show the digest a deploy would pin.
//!
//! Only registries that Docker talks to over plain HTTP without configuration (on a
//! loopback address) are asked; for any other registry, or one that wants a bearer
//! token, the answer is that the agents resolve the digest when they pull. Credentials
//! are sent as HTTP Basic auth and never logged or returned.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use drover_proto::v1::RegistryAuth;
use drover_shared::image::ImageRef;
use hyper_util::rt::TokioIo;

/// Longest the whole lookup may take: a plan never waits long on a registry.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The manifest kinds a pull accepts, so the registry answers with the digest a pull
/// would pin (an index for multi-platform images).
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// What the registry said about a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The tag points at this digest (`sha256:...`).
    Digest(String),
    /// The registry answered that it has no such tag (HTTP 404): why, in words.
    Missing(String),
    /// The registry refused the credentials (HTTP 401 or 403): why, in words.
    Refused(String),
    /// The controller could not tell; why, in words (the agents resolve it at pull time).
    Unknown(String),
}

/// Asks the registry of `image` (a tagged reference) which digest its tag points at.
pub async fn resolve(image: &ImageRef, auth: Option<&RegistryAuth>) -> Lookup {
    let host = image.registry_host().to_string();
    if !is_loopback(&host) {
        return Lookup::Unknown(format!(
            "the controller asks only registries on loopback for digests; each agent resolves {host}'s tag when it pulls"
        ));
    }
    let Some(tag) = image.tag_or_latest() else {
        return Lookup::Unknown("the image names no tag".into());
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, head_manifest(&host, image, tag, auth)).await {
        Ok(Ok(lookup)) => lookup,
        Ok(Err(e)) => Lookup::Unknown(format!("registry {host} could not be asked: {e}")),
        Err(_) => Lookup::Unknown(format!(
            "registry {host} did not answer within {}s",
            LOOKUP_TIMEOUT.as_secs()
        )),
    }
}

/// Whether the registry of `image` (pinned to a digest) still has that digest: a
/// release deployed long after it was made may name one the registry has since lost.
/// [`Lookup::Digest`] when it does, [`Lookup::Missing`] when it answers 404, and
/// [`Lookup::Unknown`] when the controller cannot ask.
pub async fn check_digest(image: &ImageRef, auth: Option<&RegistryAuth>) -> Lookup {
    let host = image.registry_host().to_string();
    let Some(digest) = image.digest.as_deref() else {
        return Lookup::Unknown("the image names no digest".into());
    };
    if !is_loopback(&host) {
        return Lookup::Unknown(format!(
            "the controller asks only registries on loopback; each agent pulls {digest} from {host}"
        ));
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, head_manifest(&host, image, digest, auth)).await {
        Ok(Ok(lookup)) => lookup,
        Ok(Err(e)) => Lookup::Unknown(format!("registry {host} could not be asked: {e}")),
        Err(_) => Lookup::Unknown(format!(
            "registry {host} did not answer within {}s",
            LOOKUP_TIMEOUT.as_secs()
        )),
    }
}

/// Whether `host` (`name[:port]`) is a loopback address or `localhost`.
fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn head_manifest(
    host: &str,
    image: &ImageRef,
    tag: &str,
    auth: Option<&RegistryAuth>,
) -> Result<Lookup, Box<dyn std::error::Error + Send + Sync>> {
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Owned by this lookup: the connection ends when the lookup (or its timeout) does.
    let conn = tokio::spawn(conn);
    let path = format!("/v2/{}/manifests/{tag}", image.repository);
    let mut req = http::Request::head(&path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, ACCEPT);
    if let Some(a) = auth.filter(|a| !a.username.is_empty()) {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", a.username, a.password));
        req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let response = sender.send_request(req.body(String::new())?).await;
    conn.abort();
    let response = response?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let name = image.name();
    // `name:tag`, or `name@sha256:...` for a digest.
    let shown = if tag.starts_with("sha256:") {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    };
    Ok(match status.as_u16() {
        200 => match header("docker-content-digest") {
            d if d.starts_with("sha256:") => Lookup::Digest(d),
            _ => Lookup::Unknown(format!("registry {host} gave no digest for {shown}")),
        },
        401 if header("www-authenticate").starts_with("Bearer") => Lookup::Unknown(format!(
            "registry {host} wants a bearer token, which only the agents' pulls fetch"
        )),
        401 | 403 => Lookup::Refused(format!(
            "registry {host} refused the controller's credentials (HTTP {status}); pass them with registry.username and registry.password_env, or give the controller --registry-auth-file"
        )),
        404 => Lookup::Missing(format!(
            "registry {host} has no {shown} (HTTP 404): check the tag (was the image pushed?) or the spec's service.image"
        )),
        _ => Lookup::Unknown(format!(
            "registry {host} answered HTTP {status} for {shown}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_registries_are_asked() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.5:5000"));
    }

    #[tokio::test]
    async fn a_remote_registry_is_left_to_pull_time() {
        let image = ImageRef::parse("registry.example.com/web:v2").unwrap();
        let Lookup::Unknown(why) = resolve(&image, None).await else {
            panic!("looked up a remote registry");
        };
        assert!(why.contains("registry.example.com"), "{why}");
    }
}
