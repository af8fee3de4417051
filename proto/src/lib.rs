//! The Drover wire protocol, package `drover.v1`.
//!
//! Two services: `AgentChannel` (one long-lived stream opened by each agent) and
//! `Operator` (the API behind the `drover` CLI). The `.proto` files under
//! `proto/drover/v1/` are the one source of truth; this crate only compiles them.

#![allow(clippy::all, missing_docs)]

/// Generated types and services of `drover.v1`.
pub mod v1 {
    tonic::include_proto!("drover.v1");
}

/// Debug for messages that carry secrets, tokens or credentials: the names show, the
/// values never do.
mod redacted {
    use super::v1::*;
    use std::fmt;

    const REDACTED: &str = "<redacted>";

    impl fmt::Debug for SecretValue {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SecretValue")
                .field("name", &self.name)
                .field("value", &REDACTED)
                .finish()
        }
    }

    impl fmt::Debug for SetSecretRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SetSecretRequest")
                .field("service", &self.service)
                .field("name", &self.name)
                .field("value", &REDACTED)
                .finish()
        }
    }

    impl fmt::Debug for EnrollRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EnrollRequest")
                .field("token", &REDACTED)
                .field("name", &self.name)
                .field("csr_pem", &self.csr_pem)
                .finish()
        }
    }

    impl fmt::Debug for CreateJoinTokenResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("CreateJoinTokenResponse")
                .field("token", &REDACTED)
                .field("expires_at_ms", &self.expires_at_ms)
                .finish()
        }
    }

    impl fmt::Debug for CreateApiTokenResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("CreateApiTokenResponse")
                .field("token", &REDACTED)
                .field("expires_at_ms", &self.expires_at_ms)
                .finish()
        }
    }

    impl fmt::Debug for RegistryAuth {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RegistryAuth")
                .field("username", &self.username)
                .field("password", &REDACTED)
                .field("server", &self.server)
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;

    #[test]
    fn debug_output_never_shows_secret_values() {
        let swap = SwapCommand {
            secrets: Some(Secrets {
                delivery: SecretDelivery::Env as i32,
                mount_path: String::new(),
                values: vec![SecretValue {
                    name: "DB_PASSWORD".into(),
                    value: b"hunter2-value".to_vec(),
                }],
            }),
            ..Default::default()
        };
        let auth = RegistryAuth {
            username: "u".into(),
            password: "hunter2-value".into(),
            server: "s".into(),
        };
        let set = SetSecretRequest {
            service: "web".into(),
            name: "X".into(),
            value: b"hunter2-value".to_vec(),
            environment: String::new(),
        };
        let enroll = EnrollRequest {
            token: "hunter2-value".into(),
            ..Default::default()
        };
        for text in [
            format!("{swap:?}"),
            format!("{auth:?}"),
            format!("{set:?}"),
            format!("{enroll:?}"),
            format!(
                "{:?}",
                CreateApiTokenResponse {
                    token: "hunter2-value".into(),
                    expires_at_ms: 0
                }
            ),
            format!(
                "{:?}",
                CreateJoinTokenResponse {
                    token: "hunter2-value".into(),
                    expires_at_ms: 0
                }
            ),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
        // Values do not leak through the byte-list form either.
        let swap = format!("{swap:?}");
        assert!(!swap.contains(&format!("{:?}", b"hunter2-value")[1..10]));
    }
}
