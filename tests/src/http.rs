//! A minimal HTTP/1.1 client for tests: one GET per connection, with a timeout, on
//! loopback only. Enough to ask the demo app and the registry who they are.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as received.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with `Connection: close`; an error says what failed.
pub async fn get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    assert!(
        addr.ip().is_loopback(),
        "tests only talk to loopback, not {addr}"
    );
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        parse(&raw).ok_or_else(|| {
            format!(
                "bad answer from {addr}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
    })
    .await
    .map_err(|_| format!("GET http://{addr}{path} took over {REQUEST_TIMEOUT:?}"))?
}

fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The body of `GET /` if it answered 200, else an error describing the answer.
pub async fn get_version(addr: SocketAddr) -> Result<String, String> {
    let r = get(addr, "/").await?;
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(format!(
            "GET / on {addr} answered {}: {:?}",
            r.status, r.body
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\nX-Version: v1\r\nContent-Length: 11\r\n\r\nversion=v1\n")
                .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "version=v1\n"));
        assert_eq!(r.header("x-version"), Some("v1"));
        assert!(parse(b"garbage").is_none());
    }
}
