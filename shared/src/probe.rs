//! Readiness probes: HTTP and TCP checks, and the one loop that turns checks into a
//! verdict (interval, per-check timeout, consecutive successes, overall deadline).
//! The agent supplies Docker-specific checks (HEALTHCHECK state, container exited) to the
//! same loop, so there is exactly one probe loop in Drover.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How a probe loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Pause between two checks.
    pub interval: Duration,
    /// Longest a single check may take before it counts as a failure.
    pub timeout: Duration,
    /// Consecutive passing checks required to call the target ready.
    pub success_threshold: u32,
    /// Give up after this long.
    pub deadline: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            success_threshold: 1,
            deadline: Duration::from_secs(60),
        }
    }
}

impl ProbeSettings {
    /// Builds settings from the wire form, with defaults for zero fields.
    pub fn from_proto(p: &crate::proto::ReadinessProbe) -> Self {
        let d = Self::default();
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        Self {
            interval: ms(p.interval_ms, d.interval),
            timeout: ms(p.timeout_ms, d.timeout),
            success_threshold: if p.success_threshold == 0 {
                d.success_threshold
            } else {
                p.success_threshold
            },
            deadline: ms(p.deadline_ms, d.deadline),
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The target answered as expected.
    Pass,
    /// Not ready yet; keep trying. The text says what was seen.
    Fail(String),
    /// It will never become ready (e.g. the container exited); stop now.
    Fatal(String),
}

/// Why a probe loop gave up.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// The deadline passed without the required consecutive successes.
    #[error("not ready after {} ({checks} checks); last check: {last}", crate::duration::human(*.waited))]
    Deadline {
        /// How long the loop ran.
        waited: Duration,
        /// How many checks were made.
        checks: u32,
        /// What the last check saw.
        last: String,
    },
    /// A check reported that readiness can never be reached.
    #[error("{0}")]
    Fatal(String),
}

/// Runs `check` until it passes `success_threshold` times in a row, a check is fatal, or
/// the deadline passes. Returns how long it took.
pub async fn wait_ready<F, Fut>(
    settings: ProbeSettings,
    mut check: F,
) -> Result<Duration, ProbeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check>,
{
    let start = Instant::now();
    let deadline = start + settings.deadline;
    let mut streak = 0u32;
    let mut checks = 0u32;
    let mut last = String::from("no check completed");
    loop {
        checks += 1;
        let outcome = match timeout(settings.timeout, check()).await {
            Ok(c) => c,
            Err(_) => Check::Fail(format!(
                "check timed out after {}",
                crate::duration::human(settings.timeout)
            )),
        };
        match outcome {
            Check::Pass => {
                streak += 1;
                if streak >= settings.success_threshold.max(1) {
                    return Ok(start.elapsed());
                }
            }
            Check::Fail(why) => {
                streak = 0;
                last = why;
            }
            Check::Fatal(why) => return Err(ProbeError::Fatal(why)),
        }
        let next = Instant::now() + settings.interval;
        if next > deadline {
            return Err(ProbeError::Deadline {
                waited: start.elapsed(),
                checks,
                last,
            });
        }
        tokio::time::sleep_until(next).await;
    }
}

/// One HTTP/1.1 GET of `path` on `addr`; passes when the status matches `expected`
/// (0 = any 2xx).
pub async fn http_check(addr: SocketAddr, path: &str, expected: u16) -> Check {
    match http_status(addr, path).await {
        Ok(status) if status_matches(status, expected) => Check::Pass,
        Ok(status) => Check::Fail(format!("GET http://{addr}{path} answered {status}")),
        Err(e) => Check::Fail(format!("GET http://{addr}{path} failed: {e}")),
    }
}

fn status_matches(status: u16, expected: u16) -> bool {
    if expected == 0 {
        (200..300).contains(&status)
    } else {
        status == expected
    }
}

/// Sends `GET path` and returns the response's status code.
pub async fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: drover-probe\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    // The status line is all we need.
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP/1.x response",
        )
    })
}

fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Passes when a TCP connection to `addr` succeeds.
pub async fn tcp_check(addr: SocketAddr) -> Check {
    match TcpStream::connect(addr).await {
        Ok(_) => Check::Pass,
        Err(e) => Check::Fail(format!("TCP connect to {addr} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::net::TcpListener;

    fn fast() -> ProbeSettings {
        ProbeSettings {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            success_threshold: 3,
            deadline: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn needs_consecutive_successes() {
        let n = Arc::new(AtomicU32::new(0));
        // Pass, fail, then pass forever: the streak must restart after the failure.
        let waited = wait_ready(fast(), || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 1 {
                    Check::Fail("blip".into())
                } else {
                    Check::Pass
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 5);
        assert_eq!(waited, Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_reports_last_failure() {
        let err = wait_ready(fast(), || async { Check::Fail("503".into()) })
            .await
            .unwrap_err();
        match err {
            ProbeError::Deadline { last, checks, .. } => {
                assert_eq!(last, "503");
                // Checks at 0, 100ms, ..., 5s: the one at the deadline still counts.
                assert_eq!(checks, 51);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_stops_at_once() {
        let err = wait_ready(fast(), || async { Check::Fatal("exited with 1".into()) })
            .await
            .unwrap_err();
        assert_eq!(err, ProbeError::Fatal("exited with 1".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_check_counts_as_failure() {
        let err = wait_ready(fast(), || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Check::Pass
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn http_check_reads_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(http_check(addr, "/ready", 200).await, Check::Pass);
        assert!(matches!(http_check(addr, "ready", 0).await, Check::Fail(m) if m.contains("503")));
        server.await.unwrap();
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
    }
}
