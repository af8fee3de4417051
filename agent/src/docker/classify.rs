//! Classifying bollard errors into [`RuntimeError`]: engine unreachable, registry
//! refused the credentials, image unknown, registry unreachable, port taken, not found.

use std::time::Duration;

use bollard::errors::Error as BollardError;
use drover_shared::image::ImageRef;

use crate::runtime::RuntimeError;

/// The registry/image context of an image operation, for precise messages.
pub(super) struct ImageContext<'a> {
    pub(super) image: &'a ImageRef,
    pub(super) user: &'a str,
}

/// Turns a bollard error into a [`RuntimeError`]. Registry messages are matched on the
/// texts Docker relays from the registry (`unauthorized`, `manifest unknown`, dial errors).
pub(super) fn classify(
    endpoint: &str,
    op: &str,
    ctx: Option<ImageContext<'_>>,
    e: BollardError,
) -> RuntimeError {
    let (status, message) = match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => (status_code, message),
        BollardError::DockerStreamError { error } => (0, error),
        BollardError::RequestTimeoutError => {
            return RuntimeError::Timeout {
                op: "the request",
                after: Duration::from_secs(120),
            };
        }
        BollardError::JsonDataError { message, .. } => (0, message),
        other => {
            return RuntimeError::Unavailable {
                endpoint: endpoint.to_string(),
                detail: other.to_string(),
            };
        }
    };
    let lower = message.to_lowercase();
    if let Some(ctx) = ctx {
        let registry = ctx.image.registry_host().to_string();
        let auth = status == 401
            || status == 403
            || [
                "unauthorized",
                "authentication required",
                "no basic auth credentials",
                "denied",
            ]
            .iter()
            .any(|m| lower.contains(m));
        if auth {
            return RuntimeError::RegistryAuth {
                registry,
                user: ctx.user.to_string(),
                detail: message,
            };
        }
        if status == 404 || lower.contains("manifest unknown") || lower.contains("not found") {
            return RuntimeError::ImageNotFound {
                image: ctx.image.to_string(),
                detail: message,
            };
        }
        let unreachable = [
            "connection refused",
            "no such host",
            "i/o timeout",
            "dial tcp",
            "tls handshake",
            "connection reset",
            "network is unreachable",
            "http response to https client",
        ];
        if unreachable.iter().any(|m| lower.contains(m)) {
            return RuntimeError::RegistryUnavailable {
                registry,
                detail: message,
            };
        }
    }
    if lower.contains("port is already allocated") || lower.contains("address already in use") {
        return RuntimeError::PortInUse { detail: message };
    }
    if status == 404 {
        return RuntimeError::NotFound {
            what: op.to_string(),
        };
    }
    RuntimeError::Engine {
        op: op.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16, msg: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code: status,
            message: msg.into(),
        }
    }

    #[test]
    fn registry_errors_are_classified() {
        let image = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap();
        let ctx = || {
            Some(ImageContext {
                image: &image,
                user: "x",
            })
        };
        let e = classify(
            "unix:///s",
            "resolve",
            ctx(),
            server(401, "unauthorized: authentication required"),
        );
        assert!(matches!(e, RuntimeError::RegistryAuth { .. }));
        assert_eq!(
            e.to_string(),
            "registry 127.0.0.1:5000 refused the credentials for user 'x': check the username/password (unauthorized: authentication required)"
        );
        let e = classify(
            "unix:///s",
            "pull",
            ctx(),
            server(
                500,
                "Head \"http://127.0.0.1:5000/v2/team/app/manifests/v1\": no basic auth credentials",
            ),
        );
        assert!(matches!(e, RuntimeError::RegistryAuth { .. }));
        let e = classify(
            "unix:///s",
            "resolve",
            ctx(),
            server(404, "manifest unknown: manifest unknown"),
        );
        assert!(matches!(e, RuntimeError::ImageNotFound { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:5000/team/app:v1"));
        let e = classify(
            "unix:///s",
            "resolve",
            ctx(),
            server(
                500,
                "Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            ),
        );
        assert!(matches!(e, RuntimeError::RegistryUnavailable { .. }), "{e}");
        let e = classify(
            "unix:///s",
            "pull",
            ctx(),
            BollardError::DockerStreamError {
                error: "unauthorized: authentication required".into(),
            },
        );
        assert!(matches!(e, RuntimeError::RegistryAuth { .. }));
    }

    #[test]
    fn engine_errors_are_classified() {
        let e = classify(
            "unix:///s",
            "start container x",
            None,
            server(
                500,
                "driver failed programming external connectivity: Bind for 0.0.0.0:8080 failed: port is already allocated",
            ),
        );
        assert!(matches!(e, RuntimeError::PortInUse { .. }));
        let e = classify(
            "unix:///s",
            "start container x",
            None,
            server(404, "No such container: x"),
        );
        assert!(matches!(e, RuntimeError::NotFound { .. }));
        let e = classify(
            "unix:///var/run/docker.sock",
            "ping",
            None,
            BollardError::SocketNotFoundError("/var/run/docker.sock".into()),
        );
        assert!(
            e.to_string()
                .starts_with("Docker engine at unix:///var/run/docker.sock is unreachable: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("check that dockerd runs and this user may use the socket")
        );
    }
}
