//! The built-in smoke test of an `after_rollout` hook: `GET url` through the load
//! balancer's frontend until it answers with the expected status (and body substring),
//! up to `tries` times. Plain HTTP/1.1 with `Connection: close`; the body read is
//! bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::spec::{HttpCheck, parse_http_url};

/// At most this much of a response is read.
const MAX_RESPONSE: usize = 64 * 1024;
/// Bound on one try.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `check`; whether it passed, and what each try saw.
pub(super) async fn run(check: &HttpCheck) -> (bool, String) {
    let mut log = String::new();
    for i in 1..=check.tries {
        let seen = match tokio::time::timeout(TRY_TIMEOUT, get(&check.url)).await {
            Ok(Ok((status, body))) => {
                let body_ok = check
                    .body_contains
                    .as_ref()
                    .is_none_or(|want| body.contains(want.as_str()));
                if status == check.status && body_ok {
                    log.push_str(&format!("try {i}: {status}, as expected\n"));
                    return (true, log);
                }
                let body_words = match &check.body_contains {
                    Some(want) if !body_ok => format!(", body lacks {want:?}"),
                    _ => String::new(),
                };
                let snippet: String = body.chars().take(200).collect();
                format!(
                    "{status} (expected {}){body_words}: {}",
                    check.status,
                    snippet.trim_end()
                )
            }
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => format!("no answer within {}s", TRY_TIMEOUT.as_secs()),
        };
        log.push_str(&format!("try {i}: GET {} {seen}\n", check.url));
        if i < check.tries {
            tokio::time::sleep(check.interval).await;
        }
    }
    (false, log)
}

/// One GET of `url`: its status and body (lossy UTF-8, bounded).
async fn get(url: &str) -> std::io::Result<(u16, String)> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let (authority, path) = parse_http_url(url).ok_or_else(|| invalid("not an http:// URL"))?;
    let mut stream = TcpStream::connect(&authority).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: drover-smoke-test\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while buf.len() < MAX_RESPONSE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| {
            let mut p = l.split_whitespace();
            p.next().filter(|v| v.starts_with("HTTP/1."))?;
            p.next()?.parse().ok()
        })
        .ok_or_else(|| invalid("the answer is not an HTTP/1.x response"))?;
    Ok((status, body.to_string()))
}
