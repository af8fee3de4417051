//! How the controller reaches PostgreSQL over a network: TLS (rustls, through
//! `tokio-postgres-rustls`), the server's certificate verified against the CA given with
//! `drover serve --database-ca` and the host name of the URL. Without a CA the
//! connection is plaintext, meant for a Unix socket or loopback, and a URL that asks for
//! `sslmode=require` is refused rather than silently downgraded.

use std::sync::Arc;

use drover_shared::tls;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// TLS to PostgreSQL: the verifying client configuration, or none (plaintext).
#[derive(Clone, Default)]
pub struct PgTls {
    /// Trusts the CA of `--database-ca`.
    client: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = if self.client.is_some() {
            "verified"
        } else {
            "off"
        };
        f.debug_struct("PgTls").field("tls", &tls).finish()
    }
}

impl PgTls {
    /// TLS verified against the CA certificate(s) in `ca_pem`.
    pub fn verified(ca_pem: &str) -> Result<Self, String> {
        let roots = tls::root_store(ca_pem).map_err(|e| e.to_string())?;
        let client = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            client: Some(Arc::new(client)),
        })
    }

    /// Whether connections use TLS (when the server offers it, or always with
    /// `sslmode=require`).
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// How to connect given the URL's SSL `mode` and whether it names a TCP host: TLS
    /// with a CA over TCP, plaintext otherwise (a Unix socket never uses TLS); a URL
    /// requiring TLS without a CA is refused.
    pub fn connector(&self, mode: SslMode, tcp: bool) -> Result<Connector, StoreError> {
        match &self.client {
            Some(client) if tcp => Ok(Connector::Tls(MakeRustlsConnect::new((**client).clone()))),
            None if mode == SslMode::Require => Err(StoreError::PgTls(
                "the database URL asks for sslmode=require: give the CA that signed the server's certificate with --database-ca FILE".to_owned(),
            )),
            _ => Ok(Connector::Plain),
        }
    }
}

/// How one connection is made.
pub enum Connector {
    /// No TLS.
    Plain,
    /// TLS, verified.
    Tls(MakeRustlsConnect),
}

/// Whether `hosts` (a parsed URL's) include a TCP one.
pub fn over_tcp(hosts: &[tokio_postgres::config::Host]) -> bool {
    hosts
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_ca_tls_is_off_and_a_url_requiring_it_is_refused() {
        let off = PgTls::default();
        assert!(!off.enabled());
        assert!(matches!(
            off.connector(SslMode::Prefer, true),
            Ok(Connector::Plain)
        ));
        let Err(err) = off.connector(SslMode::Require, true) else {
            panic!("sslmode=require without a CA was accepted");
        };
        assert!(err.to_string().contains("--database-ca"), "{err}");
        assert!(PgTls::verified("not a certificate").is_err());
        let url: tokio_postgres::Config = "host=/run/postgresql dbname=d".parse().unwrap();
        assert!(!over_tcp(url.get_hosts()));
        let url: tokio_postgres::Config = "postgresql://db.internal/d".parse().unwrap();
        assert!(over_tcp(url.get_hosts()));
    }
}
