//! Just enough HTTP/1.1 for a load balancer and a load generator: request line and
//! headers parsed from any `BufRead`, bodies with a Content-Length skipped, keep-alive
//! decided per request, and responses that always carry Content-Length.

use std::io::{self, BufRead, Read, Write};

/// Longest request head (request line plus headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest request body accepted (and discarded).
const MAX_BODY: u64 = 1024 * 1024;

/// One parsed request. The body, if any, has been read and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// Should the connection stay open after the answer (HTTP/1.1 default, or
    /// HTTP/1.0 with `Connection: keep-alive`)?
    pub keep_alive: bool,
    /// HTTP/1.0 peers need `Connection: keep-alive` echoed to keep the connection.
    pub http10: bool,
}

/// Why a request could not be read. Each maps to the status answered before closing.
#[derive(Debug)]
pub enum ParseError {
    /// Malformed request line or header: 400.
    Malformed(&'static str),
    /// Request head larger than [`MAX_HEAD`]: 431.
    HeadTooLarge,
    /// A body this app will not read (chunked, or larger than [`MAX_BODY`]): 413.
    BodyRefused,
    /// The connection failed or timed out mid-request: nothing can be answered.
    Io,
}

impl From<io::Error> for ParseError {
    fn from(_: io::Error) -> Self {
        Self::Io
    }
}

impl ParseError {
    /// The status to answer with, when the peer can still be answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Malformed(_) => Some(400),
            Self::HeadTooLarge => Some(431),
            Self::BodyRefused => Some(413),
            Self::Io => None,
        }
    }

    /// What was wrong, for the answer's body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(why) => why,
            Self::HeadTooLarge => "request head too large",
            Self::BodyRefused => "chunked or oversized request bodies are not accepted",
            Self::Io => "connection failed",
        }
    }
}

/// Reads one request. `Ok(None)` is a clean end of stream before any byte of a request.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, ParseError> {
    let mut head_len = 0;
    let mut line = Vec::new();
    // Tolerate blank lines before a request line (RFC 9112, section 2.2).
    let request_line = loop {
        line.clear();
        let n = read_line(r, &mut line, &mut head_len)?;
        if n == 0 {
            return if head_len == 0 {
                Ok(None)
            } else {
                Err(ParseError::Malformed(
                    "connection closed inside the request",
                ))
            };
        }
        if !trim_eol(&line).is_empty() {
            break String::from_utf8(trim_eol(&line).to_vec())
                .map_err(|_| ParseError::Malformed("request line is not UTF-8"))?;
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(
            "request line is not `METHOD target HTTP/1.x`",
        ));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Err(ParseError::Malformed(
                "only HTTP/1.0 and HTTP/1.1 are spoken",
            ));
        }
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(ParseError::Malformed("bad method or target"));
    }
    let mut connection = String::new();
    let mut content_length: u64 = 0;
    loop {
        line.clear();
        if read_line(r, &mut line, &mut head_len)? == 0 {
            return Err(ParseError::Malformed(
                "connection closed inside the headers",
            ));
        }
        let l = trim_eol(&line);
        if l.is_empty() {
            break;
        }
        let l = std::str::from_utf8(l).map_err(|_| ParseError::Malformed("header is not UTF-8"))?;
        let (name, value) = l
            .split_once(':')
            .ok_or(ParseError::Malformed("header without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            connection = value.to_ascii_lowercase();
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| ParseError::Malformed("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ParseError::BodyRefused);
        }
    }
    if content_length > MAX_BODY {
        return Err(ParseError::BodyRefused);
    }
    let skipped = io::copy(&mut r.take(content_length), &mut io::sink())?;
    if skipped != content_length {
        return Err(ParseError::Malformed("connection closed inside the body"));
    }
    let has = |token: &str| connection.split(',').any(|t| t.trim() == token);
    let keep_alive = if http10 {
        has("keep-alive")
    } else {
        !has("close")
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Some(Request {
        method: method.to_string(),
        path,
        keep_alive,
        http10,
    }))
}

/// Reads one line into `buf`, counting it against the head limit.
fn read_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head_len: &mut usize,
) -> Result<usize, ParseError> {
    let limit = (MAX_HEAD - (*head_len).min(MAX_HEAD)) as u64 + 1;
    let n = r.take(limit).read_until(b'\n', buf)?;
    *head_len += n;
    if *head_len > MAX_HEAD {
        return Err(ParseError::HeadTooLarge);
    }
    Ok(n)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Length, Content-Type and Connection are added).
    pub headers: Vec<(&'static str, String)>,
    /// Body, sent unless the request was HEAD.
    pub body: String,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the answer; `keep_alive` false adds `Connection: close`.
    pub fn write_to<W: Write>(
        &self,
        w: &mut W,
        head_only: bool,
        keep_alive: bool,
        http10: bool,
    ) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        match (keep_alive, http10) {
            (false, _) => out.push_str("Connection: close\r\n"),
            (true, true) => out.push_str("Connection: keep-alive\r\n"),
            (true, false) => {}
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        w.write_all(out.as_bytes())?;
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse_all(raw: &str) -> Vec<Request> {
        let mut c = Cursor::new(raw.as_bytes().to_vec());
        std::iter::from_fn(|| read_request(&mut c).unwrap()).collect()
    }

    #[test]
    fn pipelined_keep_alive_requests() {
        let reqs = parse_all(
            "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /ready?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        let paths: Vec<_> = reqs
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.keep_alive))
            .collect();
        assert_eq!(
            paths,
            [
                ("GET", "/", true),
                ("GET", "/ready", true),
                ("POST", "/health", true),
                ("GET", "/", false)
            ]
        );
    }

    #[test]
    fn http10_needs_explicit_keep_alive() {
        let r = parse_all("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!((r[0].keep_alive, r[0].http10), (false, true));
        assert!(r[1].keep_alive);
    }

    #[test]
    fn bare_lf_and_leading_blank_lines() {
        let r = parse_all("\r\nGET /health HTTP/1.1\nhost: x\n\n");
        assert_eq!(r[0].path, "/health");
    }

    #[test]
    fn clean_eof_is_none() {
        assert!(
            read_request(&mut Cursor::new(Vec::new()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn malformed_requests_are_400() {
        for raw in [
            "GET /\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            let e = read_request(&mut Cursor::new(raw.as_bytes().to_vec())).unwrap_err();
            assert_eq!(e.status(), Some(400), "{raw:?}: {e:?}");
        }
    }

    #[test]
    fn oversized_head_and_chunked_bodies_are_refused() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let e = read_request(&mut Cursor::new(big.into_bytes())).unwrap_err();
        assert_eq!(e.status(), Some(431));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let e = read_request(&mut Cursor::new(chunked.as_bytes().to_vec())).unwrap_err();
        assert_eq!(e.status(), Some(413));
    }

    #[test]
    fn responses_always_carry_content_length() {
        let mut out = Vec::new();
        Response::text(200, "version=v1\n")
            .header("X-Version", "v1")
            .write_to(&mut out, true, false, false)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(out.contains("Content-Length: 11\r\n"));
        assert!(out.contains("X-Version: v1\r\n"));
        assert!(
            out.ends_with("Connection: close\r\n\r\n"),
            "HEAD has no body: {out:?}"
        );
    }
}
