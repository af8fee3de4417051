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

/// Sends `method path` to the registry at `host` (plain HTTP, Basic auth when given).
async fn send(
    host: &str,
    method: http::Method,
    path: &str,
    accept: &str,
    auth: Option<&RegistryAuth>,
) -> Result<http::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Owned by this request: the connection ends with the response's body (or when the
    // caller's timeout drops the future).
    let conn = tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, accept);
    if let Some(a) = auth.filter(|a| !a.username.is_empty()) {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", a.username, a.password));
        req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let response = sender.send_request(req.body(String::new())?).await;
    if response.is_err() {
        conn.abort();
    }
    Ok(response?)
}

async fn head_manifest(
    host: &str,
    image: &ImageRef,
    tag: &str,
    auth: Option<&RegistryAuth>,
) -> Result<Lookup, Box<dyn std::error::Error + Send + Sync>> {
    let path = format!("/v2/{}/manifests/{tag}", image.repository);
    let response = send(host, http::Method::HEAD, &path, ACCEPT, auth).await?;
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

/// What an image says about where it comes from: its OCI labels
/// `org.opencontainers.image.revision` (the commit) and `org.opencontainers.image.created`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOrigin {
    /// The commit SHA, if labelled.
    pub revision: Option<String>,
    /// The `created` label as Unix ms, if labelled with an RFC 3339 time.
    pub created_ms: Option<u64>,
}

/// Largest manifest or image config read while looking for labels.
const MAX_JSON: usize = 4 << 20;

/// Reads the OCI labels of `image` (pinned to a digest) from its registry's manifest
/// and image config; `None` when the controller cannot ask or the image has neither.
pub async fn image_origin(image: &ImageRef, auth: Option<&RegistryAuth>) -> Option<ImageOrigin> {
    let host = image.registry_host().to_string();
    let digest = image.digest.clone()?;
    if !is_loopback(&host) {
        return None;
    }
    let read = async {
        let mut manifest = get_json(&host, image, &format!("manifests/{digest}"), auth).await?;
        if let Some(list) = manifest["manifests"].as_array() {
            // An index: the linux/amd64 image's manifest (the platform agents pull).
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
                })
                .or_else(|| list.first())?;
            let d = pick["digest"].as_str()?.to_string();
            manifest = get_json(&host, image, &format!("manifests/{d}"), auth).await?;
        }
        let config = manifest["config"]["digest"].as_str()?.to_string();
        let config = get_json(&host, image, &format!("blobs/{config}"), auth).await?;
        let labels = &config["config"]["Labels"];
        let text = |k: &str| {
            labels[k]
                .as_str()
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        let origin = ImageOrigin {
            revision: text("org.opencontainers.image.revision"),
            created_ms: text("org.opencontainers.image.created")
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond().max(0) as u64),
        };
        (origin != ImageOrigin::default()).then_some(origin)
    };
    tokio::time::timeout(LOOKUP_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

/// `GET /v2/<repository>/<what>` as JSON, at most [`MAX_JSON`] bytes; `None` on any
/// failure (labels are a nicety: a release is made without them).
async fn get_json(
    host: &str,
    image: &ImageRef,
    what: &str,
    auth: Option<&RegistryAuth>,
) -> Option<serde_json::Value> {
    let path = format!("/v2/{}/{what}", image.repository);
    let accept = if what.starts_with("blobs/") {
        "*/*"
    } else {
        ACCEPT
    };
    let response = send(host, http::Method::GET, &path, accept, auth)
        .await
        .ok()?;
    if response.status() != http::StatusCode::OK {
        return None;
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx))
            .await
    {
        if let Ok(data) = frame.ok()?.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > MAX_JSON {
                return None;
            }
        }
    }
    serde_json::from_slice(&bytes).ok()
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
