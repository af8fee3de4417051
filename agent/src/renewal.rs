//! Certificate renewal without a restart: at two thirds of the certificate's lifetime the
//! [`Renewer`] makes a new key and CSR, calls `Enrollment.Renew` over mutual TLS with the
//! current certificate, writes the new pair to the state directory, swaps it into the
//! [`SwappableCert`] every new handshake uses, and tells the link to reconnect so the
//! stream runs on the new certificate too.
//!
//! Failures are retried with backoff; they are logged at warn, with a distinct warning once
//! less than a sixth of the lifetime is left, and at error once the certificate expired.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_shared::backoff::Backoff;
use drover_shared::proto::RenewRequest;
use drover_shared::tls::{self, Identity, SwappableCert};
use rustls::ClientConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::identity::{self, CertInfo, Credentials, RPC_TIMEOUT, is_refusal, rfc3339};
use crate::targets::Targets;

/// Longest single sleep, so a suspended host or a clock step is noticed soon after.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Never renew again sooner than this after a renewal, whatever the certificate says.
const MIN_GAP: Duration = Duration::from_secs(1);

/// A certificate's lifetime as the schedule sees it: from when this host received it to
/// its expiry. Not from `not_before`: the CA backdates that (by minutes) to absorb clock
/// skew, which would make a short-lived certificate look due for renewal at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// When the certificate was received (kept within its validity).
    pub issued: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

impl Validity {
    /// The schedule of `info`, received at `received`.
    pub fn new(info: &CertInfo, received: SystemTime) -> Self {
        let issued = received.max(info.not_before).min(info.not_after);
        Self {
            issued,
            not_after: info.not_after,
        }
    }

    /// From receipt to expiry.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.issued)
            .unwrap_or_default()
    }

    /// When to renew: two thirds into the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        self.issued + self.lifetime() * 2 / 3
    }

    /// From when on a failing renewal is urgent: the last sixth of the lifetime.
    pub fn urgent_from(&self) -> SystemTime {
        self.not_after - self.lifetime() / 6
    }
}

/// Renews the agent's certificate in the background.
pub struct Renewer {
    /// The controller addresses, shared with the link (the leader it follows).
    targets: Targets,
    /// This agent's name: the identity of every CSR.
    name: String,
    /// Where agent.crt and agent.key live.
    state_dir: PathBuf,
    /// mTLS configuration presenting `cert`.
    client: Arc<ClientConfig>,
    /// The certificate every handshake presents; replaced on renewal.
    cert: SwappableCert,
    /// What the certificate in use says.
    current: CertInfo,
    /// Its schedule.
    validity: Validity,
    /// Bumped after every renewal, so the link reconnects with the new certificate.
    renewed: watch::Sender<u64>,
}

impl Renewer {
    /// A renewer for `current`, the certificate in `cert`, of the agent `config`
    /// describes, talking to its controller with `client`. Subscribers of `renewed` hear
    /// of each renewal.
    pub fn new(
        config: &AgentConfig,
        client: Arc<ClientConfig>,
        cert: SwappableCert,
        current: &Credentials,
        renewed: watch::Sender<u64>,
    ) -> Self {
        Self {
            targets: config.targets.clone(),
            name: config.name.clone(),
            state_dir: config.state_dir.clone(),
            client,
            cert,
            current: current.info.clone(),
            validity: Validity::new(&current.info, current.received),
            renewed,
        }
    }

    /// Renews whenever due until `stop` is cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut last_renewal: Option<SystemTime> = None;
        loop {
            let due = self.validity.renew_at();
            let at = last_renewal.map_or(due, |t| due.max(t + MIN_GAP));
            info!(
                serial = %self.current.serial,
                not_after = %rfc3339(self.current.not_after),
                renew_at = %rfc3339(at),
                "certificate renewal scheduled"
            );
            if !sleep_until(at, &stop).await {
                return;
            }
            let mut backoff = Backoff::new(Duration::from_secs(1), MAX_SLEEP);
            loop {
                let failure = tokio::select! {
                    r = self.renew_once() => match r {
                        Ok(creds) => {
                            self.validity = Validity::new(&creds.info, creds.received);
                            self.current = creds.info;
                            last_renewal = Some(SystemTime::now());
                            break;
                        }
                        Err(f) => f,
                    },
                    _ = stop.cancelled() => return,
                };
                let delay = if failure.refused {
                    MAX_SLEEP
                } else {
                    backoff.next_delay()
                };
                self.report(&failure.message, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    fn report(&self, why: &str, retry_in: Duration) {
        let now = SystemTime::now();
        let not_after = rfc3339(self.current.not_after);
        let retry_in_s = retry_in.as_secs();
        if now >= self.current.not_after {
            error!(
                error = %why, not_after = %not_after, retry_in_s,
                "certificate expired and could not be renewed: the controller will refuse this agent; \
                 create a new join token with `drover token create` and restart the agent with it"
            );
        } else if now >= self.validity.urgent_from() {
            let left = self
                .current
                .not_after
                .duration_since(now)
                .unwrap_or_default();
            warn!(
                error = %why, not_after = %not_after, expires_in_s = left.as_secs(), retry_in_s,
                "certificate renewal keeps failing and less than a sixth of its lifetime is left"
            );
        } else {
            warn!(error = %why, not_after = %not_after, retry_in_s, "certificate renewal failed; retrying");
        }
    }

    /// One renewal: new key and CSR, `Renew`, files, swap, reconnect signal.
    async fn renew_once(&self) -> Result<Credentials, Failure> {
        let identity = Identity::Agent {
            name: self.name.clone(),
        };
        let (key_pem, csr_pem) = tls::key_and_csr(&identity).map_err(Failure::transient)?;
        let url = self.targets.current();
        let mut client = match identity::enrollment_client(&url, self.client.clone()).await {
            Ok(c) => c,
            Err(e) => {
                self.targets.unreachable(&url);
                return Err(Failure::transient(e));
            }
        };
        let response =
            match tokio::time::timeout(RPC_TIMEOUT, client.renew(RenewRequest { csr_pem })).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) if self.targets.redirected(&url, &status).is_some() => {
                    return Err(Failure::transient(format!(
                        "{url} is a standby controller: {}",
                        status.message()
                    )));
                }
                Ok(Err(status)) => {
                    let message = format!(
                        "the controller refused the renewal ({:?}): {}",
                        status.code(),
                        status.message()
                    );
                    return Err(Failure {
                        refused: is_refusal(status.code()),
                        message,
                    });
                }
                Err(_) => {
                    return Err(Failure::transient(format!(
                        "no answer within {}",
                        drover_shared::duration::human(RPC_TIMEOUT)
                    )));
                }
            };
        let creds =
            identity::accept(response.cert_pem, key_pem, &self.name).map_err(Failure::transient)?;
        let key = creds.certified_key().map_err(Failure::transient)?;
        let dir = self.state_dir.clone();
        let stored = creds.clone();
        tokio::task::spawn_blocking(move || identity::store(&dir, &stored))
            .await
            .map_err(Failure::transient)?
            .map_err(Failure::transient)?;
        self.cert.replace(key);
        self.renewed.send_modify(|n| *n = n.wrapping_add(1));
        info!(
            serial = %creds.info.serial,
            not_after = %rfc3339(creds.info.not_after),
            previous_serial = %self.current.serial,
            "certificate renewed"
        );
        Ok(creds)
    }
}

/// Why one renewal failed.
struct Failure {
    /// The controller said no (revoked, unknown): retry slowly.
    refused: bool,
    /// What happened (never key material).
    message: String,
}

impl Failure {
    fn transient(e: impl ToString) -> Self {
        Self {
            refused: false,
            message: e.to_string(),
        }
    }
}

/// Sleeps until the wall clock reaches `at`, in steps so clock jumps are noticed. False
/// when stopped first.
async fn sleep_until(at: SystemTime, stop: &CancellationToken) -> bool {
    loop {
        let Ok(left) = at.duration_since(SystemTime::now()) else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: u64, not_after: u64) -> CertInfo {
        CertInfo {
            identity: None,
            serial: "01".into(),
            not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(not_before),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renewal_is_at_two_thirds_from_receipt_and_urgent_in_the_last_sixth() {
        // A 24 h certificate backdated 5 minutes, like the fleet CA issues, received at
        // its issue time: the backdate does not count.
        let start = 1_700_000_000;
        let v = Validity::new(&info(start - 300, start + 86_400), at(start));
        assert_eq!(v.lifetime(), Duration::from_secs(86_400));
        assert_eq!(v.renew_at(), at(start + 57_600));
        assert_eq!(v.urgent_from(), at(start + 86_400 - 14_400));
        // A 60 s certificate (backdated 300 s) renews after 40 s, not at once.
        let short = Validity::new(&info(start - 300, start + 60), at(start));
        assert_eq!(short.renew_at(), at(start + 40));
        assert_eq!(short.urgent_from(), at(start + 50));
        // Receipt times outside the validity are clamped (a clock that was off, a file
        // copied later).
        let early = Validity::new(&info(100, 103), at(50));
        assert_eq!(early.renew_at(), at(102));
        let late = Validity::new(&info(100, 103), at(500));
        assert_eq!(late.lifetime(), Duration::ZERO);
        assert_eq!(late.renew_at(), at(103));
    }

    #[tokio::test]
    async fn sleeping_stops_when_cancelled_and_not_for_past_times() {
        let stop = CancellationToken::new();
        assert!(sleep_until(SystemTime::now() - Duration::from_secs(1), &stop).await);
        stop.cancel();
        assert!(!sleep_until(SystemTime::now() + Duration::from_secs(3600), &stop).await);
    }
}
