//! A raw HTTP/1.1 client for the web interface, beside the browser: requests a browser
//! would never send on its own (a forged POST with a viewer's session cookie, a POST
//! without its CSRF token), and timed page loads for the benchmark. HTTPS trusts only the
//! fleet CA (the controller's certificate is verified, as the CLI does); loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// How long one request may take, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer of the web interface.
#[derive(Debug, Clone)]
pub struct WebResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (no content coding is asked for).
    pub body: Vec<u8>,
}

impl WebResponse {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `name=value` of every `Set-Cookie`, attributes dropped, joined as a `Cookie`
    /// header value (`a=1; b=2`); empty when none was set.
    pub fn cookies(&self) -> String {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// One line for messages: status, `Location`, and the start of the body.
    pub fn describe(&self) -> String {
        let text = self.text();
        let start: String = text.chars().take(600).collect();
        format!(
            "{} (location {:?}): {start}",
            self.status,
            self.header("location")
        )
    }
}

/// A signed-in session of the raw client: its cookie and its CSRF token.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The `Cookie` header value.
    pub cookie: String,
    /// The CSRF token the pages carry for this session.
    pub csrf: String,
}

/// Where and how to reach the web interface.
#[derive(Clone)]
pub struct WebClient {
    /// The listener (loopback).
    addr: SocketAddr,
    /// TLS trusting the fleet CA, speaking HTTP/1.1; `None`: plaintext.
    tls: Option<TlsConnector>,
}

impl WebClient {
    /// A client of `addr`: HTTPS trusting `ca_pem` when given, else plaintext.
    pub fn new(addr: SocketAddr, ca_pem: Option<&str>) -> Self {
        assert!(
            addr.ip().is_loopback(),
            "tests only talk to loopback, not {addr}"
        );
        let tls = ca_pem.map(|pem| {
            let config = crate::pki::client_config(pem, None)
                .unwrap_or_else(|e| panic!("TLS configuration for the fleet CA: {e}"));
            let mut config = Arc::unwrap_or_clone(config);
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsConnector::from(Arc::new(config))
        });
        Self { addr, tls }
    }

    /// Opens a connection (TCP, TLS) that can carry several requests in turn.
    pub async fn connect(&self) -> Result<WebConnection, String> {
        let addr = self.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                // The controller's certificate names the controller, not an address
                // (what the CLI checks too).
                let name = ServerName::try_from(drover_shared::tls::CONTROLLER_SERVER_NAME)
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {addr}: {e}"))?;
                WebConnection::handshake(addr, "https", TokioIo::new(stream)).await
            }
            None => WebConnection::handshake(addr, "http", TokioIo::new(tcp)).await,
        }
    }

    /// `GET path` on a connection of its own, with `cookie` when given.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Result<WebResponse, String> {
        self.connect().await?.get(path, cookie).await
    }

    /// `POST path` of `form` (urlencoded) on a connection of its own, with `cookie`
    /// when given.
    pub async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> Result<WebResponse, String> {
        self.connect().await?.post_form(path, cookie, form).await
    }

    /// Signs in with an API token as a browser would (the sign-in page, then its form)
    /// and reads the session's CSRF token from the overview page.
    pub async fn sign_in(&self, token: &str) -> Result<WebSession, String> {
        let page = self.get("/sign-in", None).await?;
        let mut cookie = page.cookies();
        let csrf = csrf_in(&page.text()).unwrap_or_default();
        let mut form = vec![("token", token)];
        if !csrf.is_empty() {
            form.push(("csrf", csrf.as_str()));
        }
        let signed = self
            .post_form(
                "/sign-in",
                (!cookie.is_empty()).then_some(cookie.as_str()),
                &form,
            )
            .await?;
        if signed.status != 303 || signed.cookies().is_empty() {
            return Err(format!("sign-in gave no session: {}", signed.describe()));
        }
        cookie = signed.cookies();
        let home = self.get("/", Some(&cookie)).await?;
        let csrf = csrf_in(&home.text())
            .ok_or_else(|| format!("no CSRF token on the overview: {}", home.describe()))?;
        Ok(WebSession { cookie, csrf })
    }
}

/// One HTTP/1.1 connection to the web interface; closed when dropped.
pub struct WebConnection {
    /// `host:port` for the `Host` header.
    authority: String,
    /// `https://host:port`, the `Origin` of the POSTs (as a page of the site sends).
    origin: String,
    /// Sends requests on the connection, one at a time.
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection; aborted on drop.
    driver: JoinHandle<()>,
}

impl WebConnection {
    async fn handshake<T>(addr: SocketAddr, scheme: &str, io: TokioIo<T>) -> Result<Self, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
        let driver = tokio::spawn(async move {
            // Ends with the connection; an error here shows up as the request's error.
            let _ = conn.await;
        });
        Ok(Self {
            authority: addr.to_string(),
            origin: format!("{scheme}://{addr}"),
            sender,
            driver,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str, cookie: Option<&str>) -> Result<WebResponse, String> {
        let req = self.request("GET", path, cookie).body(Full::default());
        self.send(req.map_err(|e| e.to_string())?).await
    }

    /// `POST path` of `form`, urlencoded.
    pub async fn post_form(
        &mut self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> Result<WebResponse, String> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .request("POST", path, cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)));
        self.send(req.map_err(|e| e.to_string())?).await
    }

    fn request(&self, method: &str, path: &str, cookie: Option<&str>) -> http::request::Builder {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("accept", "text/html");
        if method == "POST" {
            // What a browser sends from the page itself.
            b = b.header("origin", &self.origin);
        }
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b
    }

    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<WebResponse, String> {
        let what = format!("{} {}", req.method(), req.uri());
        let call = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("{what}: connection closed: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{what}: reading the body: {e}"))?
                .to_bytes()
                .to_vec();
            Ok(WebResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| format!("{what}: no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

impl Drop for WebConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The CSRF token in a page: the `content` of `<meta name="csrf">`, else the `value` of
/// `<input name="csrf">`.
pub fn csrf_in(html: &str) -> Option<String> {
    ["content", "value"].iter().find_map(|attr| {
        html.match_indices("name=\"csrf\"").find_map(|(at, _)| {
            let start = html[..at].rfind('<')?;
            let end = at + html[at..].find('>')?;
            attribute(&html[start..end], attr)
        })
    })
}

/// The value of `name="..."` in one tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    let len = tag[from..].find('"')?;
    Some(tag[from..from + len].replace("&amp;", "&"))
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_csrf_token_in_meta_or_input() {
        let meta = r#"<head><meta charset="utf-8"><meta name="csrf" content="a1&amp;b"></head>"#;
        assert_eq!(csrf_in(meta).as_deref(), Some("a1&b"));
        let input = r#"<form><input type="hidden" name="csrf" value="z9"></form>"#;
        assert_eq!(csrf_in(input).as_deref(), Some("z9"));
        assert_eq!(csrf_in("<p>name=\"csrf\"</p>"), None);
    }

    #[test]
    fn encodes_form_values() {
        assert_eq!(urlencode("dra1.ab c/+="), "dra1.ab+c%2F%2B%3D");
    }
}
