//! HTTP load for "no request fails during a deploy" tests: [`Load`] sends `GET /` from a
//! few tasks, bounded in count and time, over keep-alive connections or one connection
//! per request, and records every outcome with its time and the version that answered.
//! [`VersionServer`] is the tiny in-process backend it is tested against (and that
//! harness self-tests put behind HAProxy): `/` answers its version, `/ready` its
//! readiness.
//!
//! The client is hand-written HTTP/1.1 (status line, headers, `Content-Length` or chunked
//! body) so that connection reuse is explicit: a failure on a reused connection is
//! reported as such, never retried away. Loopback targets only.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{Instrument, info_span};

use crate::http::HttpResponse;

/// How the load is shaped and bounded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Reuse each task's connection (HTTP/1.1 keep-alive), or `Connection: close` and a
    /// new connection per request.
    pub keep_alive: bool,
    /// Tasks sending requests one after another.
    pub concurrency: usize,
    /// Requests sent in total, over all tasks, at most.
    pub max_requests: u64,
    /// The load stops by itself after this long.
    pub max_duration: Duration,
    /// One request (connect included) fails after this long.
    pub request_timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            keep_alive: true,
            concurrency: 4,
            max_requests: 100_000,
            max_duration: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When the answer (or the failure) came.
    pub at: Instant,
    /// `Ok(version)` for a 200 (`X-Version`, else `version=` in the body); `Err(reason)`
    /// for any other status, connection error, reset or timeout.
    pub result: Result<Option<String>, String>,
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200.
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// When and why each failure happened, in time order.
    pub failures: Vec<(Instant, String)>,
    /// 200 answers per version (`"?"` when the answer named none).
    pub versions: BTreeMap<String, u64>,
    /// Every outcome, in time order.
    pub outcomes: Vec<Outcome>,
    /// From start to the last task's end.
    pub elapsed: Duration,
}

impl LoadReport {
    fn from_outcomes(mut outcomes: Vec<Outcome>, elapsed: Duration) -> Self {
        outcomes.sort_by_key(|o| o.at);
        let mut report = LoadReport {
            sent: outcomes.len() as u64,
            elapsed,
            ..Default::default()
        };
        for o in &outcomes {
            match &o.result {
                Ok(v) => {
                    report.ok += 1;
                    *report.versions.entry(version_key(v)).or_default() += 1;
                }
                Err(reason) => {
                    report.failed += 1;
                    report.failures.push((o.at, reason.clone()));
                }
            }
        }
        report.outcomes = outcomes;
        report
    }

    /// 200 answers per version among those that came at or after `since`: "after the
    /// deploy every response comes from v2" is `versions_since(done).keys() == ["v2"]`.
    pub fn versions_since(&self, since: Instant) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for o in self.outcomes.iter().filter(|o| o.at >= since) {
            if let Ok(v) = &o.result {
                *out.entry(version_key(v)).or_default() += 1;
            }
        }
        out
    }

    /// One line for assertion messages: counts, versions and the first failures.
    pub fn summary(&self) -> String {
        let first: Vec<&str> = self
            .failures
            .iter()
            .take(5)
            .map(|(_, r)| r.as_str())
            .collect();
        format!(
            "sent {} ok {} failed {} in {:?}; versions {:?}; first failures {:?}",
            self.sent, self.ok, self.failed, self.elapsed, self.versions, first
        )
    }
}

fn version_key(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "?".to_string())
}

/// A running load. Dropping it stops the tasks at once; [`Load::stop`] lets in-flight
/// requests finish and returns the report.
pub struct Load {
    /// Tells the tasks to stop after their current request.
    stop: watch::Sender<bool>,
    /// The tasks, each returning its outcomes.
    tasks: Vec<JoinHandle<Vec<Outcome>>>,
    /// Requests answered so far (ok or not), for tests that wait on progress.
    done: Arc<AtomicU64>,
    /// Start time, for the report.
    started: Instant,
}

impl Load {
    /// Starts `opts.concurrency` tasks sending `GET /` to `target` (a loopback address).
    pub fn start(target: SocketAddr, opts: LoadOptions) -> Self {
        assert!(
            target.ip().is_loopback(),
            "load goes only to loopback, not {target}"
        );
        let (stop, stop_rx) = watch::channel(false);
        let budget = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + opts.max_duration;
        let tasks = (0..opts.concurrency.max(1))
            .map(|id| {
                let worker = Worker {
                    target,
                    opts: opts.clone(),
                    budget: budget.clone(),
                    done: done.clone(),
                    deadline,
                    stop: stop_rx.clone(),
                };
                let span = info_span!("load", %target, worker = id, keep_alive = opts.keep_alive);
                tokio::spawn(worker.run().instrument(span))
            })
            .collect();
        Self {
            stop,
            tasks,
            done,
            started,
        }
    }

    /// Requests answered so far (ok or failed).
    pub fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops sending, waits for in-flight requests (each bounded by its timeout), reports.
    pub async fn stop(mut self) -> LoadReport {
        let _ = self.stop.send(true);
        self.collect().await
    }

    /// Waits until the load ends by itself (count or time bound), then reports.
    pub async fn finish(mut self) -> LoadReport {
        self.collect().await
    }

    async fn collect(&mut self) -> LoadReport {
        let mut outcomes = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(o) => outcomes.extend(o),
                Err(e) => panic!("a load task failed: {e}"),
            }
        }
        LoadReport::from_outcomes(outcomes, self.started.elapsed())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One load task: sends requests one after another until a bound or stop.
struct Worker {
    target: SocketAddr,
    opts: LoadOptions,
    /// Requests started by all tasks; a task stops once it reaches `max_requests`.
    budget: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    deadline: Instant,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let mut conn: Option<BufReader<TcpStream>> = None;
        while !*self.stop.borrow()
            && Instant::now() < self.deadline
            && self.budget.fetch_add(1, Ordering::Relaxed) < self.opts.max_requests
        {
            let reused = conn.is_some();
            let result =
                tokio::time::timeout(self.opts.request_timeout, self.request(&mut conn)).await;
            let result = match result {
                Ok(Ok(resp)) if resp.status == 200 => Ok(response_version(&resp)),
                Ok(Ok(resp)) => Err(format!("HTTP {}: {}", resp.status, resp.body.trim())),
                Ok(Err(e)) if reused => Err(format!("{e} (on a reused connection)")),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {:?}", self.opts.request_timeout)),
            };
            if result.is_err() {
                conn = None;
            }
            self.done.fetch_add(1, Ordering::Relaxed);
            outcomes.push(Outcome {
                at: Instant::now(),
                result,
            });
        }
        outcomes
    }

    /// One `GET /`, on the kept connection if there is one.
    async fn request(
        &self,
        conn: &mut Option<BufReader<TcpStream>>,
    ) -> Result<HttpResponse, String> {
        let stream = match conn {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.target)
                    .await
                    .map_err(|e| format!("connect to {}: {e}", self.target))?;
                let _ = stream.set_nodelay(true);
                conn.insert(BufReader::new(stream))
            }
        };
        let close = if self.opts.keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: drover-load\r\n{close}\r\n",
            self.target
        );
        stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send request: {e}"))?;
        let (resp, server_closes) = read_response(stream).await?;
        if server_closes || !self.opts.keep_alive {
            *conn = None;
        }
        Ok(resp)
    }
}

/// The version a 200 came from: `X-Version`, else `version=` in the body.
fn response_version(resp: &HttpResponse) -> Option<String> {
    resp.header("x-version").map(str::to_string).or_else(|| {
        resp.body
            .split_whitespace()
            .find_map(|t| t.strip_prefix("version="))
            .map(str::to_string)
    })
}

/// Reads one response; also says whether the server will close the connection.
async fn read_response<R>(r: &mut R) -> Result<(HttpResponse, bool), String>
where
    R: AsyncBufRead + Unpin,
{
    let status_line = read_line(r, "status line").await?;
    let mut parts = status_line.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let status: u16 = code
        .parse()
        .ok()
        .filter(|_| proto.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, "headers").await?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let resp = HttpResponse {
        status,
        headers,
        body: String::new(),
    };
    let conn_header = resp.header("connection").unwrap_or("").to_ascii_lowercase();
    let mut closes = conn_header.contains("close")
        || (proto == "HTTP/1.0" && !conn_header.contains("keep-alive"));
    let mut body = Vec::new();
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size = read_line(r, "chunk size").await?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while !read_line(r, "trailers").await?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .await
                .map_err(|e| format!("read chunk: {e}"))?;
            read_line(r, "chunk end").await?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
    } else if !matches!(status, 204 | 304) {
        r.read_to_end(&mut body)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        closes = true;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok((HttpResponse { body, ..resp }, closes))
}

/// One CRLF-terminated line without its terminator; EOF is an error naming `what`.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, what: &str) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line).await {
        Ok(0) => Err(format!("connection closed before the {what}")),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(format!("read {what}: {e}")),
    }
}

/// A tiny HTTP/1.1 backend: `GET /` answers `200 version=<v>` with `X-Version`,
/// `GET /ready` answers 200 or 503. Keep-alive unless asked to close. Stops on drop.
pub struct VersionServer {
    /// Where it listens.
    addr: SocketAddr,
    /// What `/ready` answers.
    ready: Arc<AtomicBool>,
    /// Delay before each `/` answer, in ms (to hold sessions open during a drain).
    delay_ms: Arc<AtomicU64>,
    /// `/` requests answered.
    served: Arc<AtomicU64>,
    /// The accept loop; its `JoinSet` owns the connection tasks, so aborting it ends all.
    task: JoinHandle<()>,
}

impl VersionServer {
    /// Listens on `ip`:<free port> and answers `version`.
    pub async fn start(ip: Ipv4Addr, version: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let ready = Arc::new(AtomicBool::new(true));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let state = ServeState {
            version: version.to_string(),
            ready: ready.clone(),
            delay_ms: delay_ms.clone(),
            served: served.clone(),
        };
        let span = info_span!("version_server", %addr, version);
        let task = tokio::spawn(
            async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => { conns.spawn(serve(stream, state.clone())); }
                            Err(e) => tracing::warn!(error = %e, "accept failed"),
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            }
            .instrument(span),
        );
        Ok(Self {
            addr,
            ready,
            delay_ms,
            served,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `/ready` answer 200 (true) or 503 (false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Delays every `/` answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// `/` requests answered so far (health checks not counted).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for VersionServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct ServeState {
    version: String,
    ready: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

/// Serves requests on one connection until the client closes or asks to.
async fn serve(stream: TcpStream, state: ServeState) {
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    loop {
        let Ok(request_line) = read_line(&mut stream, "request").await else {
            return;
        };
        let mut close = request_line.ends_with("HTTP/1.0");
        loop {
            match read_line(&mut stream, "request headers").await {
                Ok(h) if h.is_empty() => break,
                Ok(h) => {
                    let h = h.to_ascii_lowercase();
                    if h.starts_with("connection:") {
                        close = h.contains("close");
                    }
                }
                Err(_) => return,
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("");
        let (status, body) = if path == "/ready" {
            match state.ready.load(Ordering::Relaxed) {
                true => ("200 OK", "ready\n".to_string()),
                false => ("503 Service Unavailable", "not ready\n".to_string()),
            }
        } else {
            let delay = state.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            state.served.fetch_add(1, Ordering::Relaxed);
            ("200 OK", format!("version={}\n", state.version))
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Version: {}\r\n{}\r\n{body}",
            body.len(),
            state.version,
            if close { "Connection: close\r\n" } else { "" },
        );
        if stream.get_mut().write_all(resp.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load_against(keep_alive: bool) -> (LoadReport, u64) {
        let server = VersionServer::start(Ipv4Addr::LOCALHOST, "v3")
            .await
            .unwrap();
        let opts = LoadOptions {
            keep_alive,
            concurrency: 3,
            max_requests: 60,
            max_duration: Duration::from_secs(10),
            ..Default::default()
        };
        let report = Load::start(server.addr(), opts).finish().await;
        (report, server.served())
    }

    #[tokio::test]
    async fn counts_every_request_and_its_version() {
        for keep_alive in [true, false] {
            let (report, served) = load_against(keep_alive).await;
            assert_eq!(
                (report.sent, report.ok, report.failed),
                (60, 60, 0),
                "{}",
                report.summary()
            );
            assert_eq!(served, 60);
            assert_eq!(report.versions, BTreeMap::from([("v3".to_string(), 60)]));
        }
    }

    #[tokio::test]
    async fn failures_keep_their_reason_and_time() {
        // Nothing listens there: every request fails to connect.
        let port = crate::net::free_port(Ipv4Addr::LOCALHOST);
        let opts = LoadOptions {
            concurrency: 2,
            max_requests: 4,
            ..Default::default()
        };
        let before = Instant::now();
        let report = Load::start((Ipv4Addr::LOCALHOST, port).into(), opts)
            .finish()
            .await;
        assert_eq!((report.sent, report.failed), (4, 4));
        assert!(
            report
                .failures
                .iter()
                .all(|(at, r)| *at >= before && r.contains("connect"))
        );
    }

    #[tokio::test]
    async fn non_200_is_a_failure_and_versions_since_filters_by_time() {
        let server = VersionServer::start(Ipv4Addr::LOCALHOST, "v1")
            .await
            .unwrap();
        let mut conn = BufReader::new(TcpStream::connect(server.addr()).await.unwrap());
        server.set_ready(false);
        conn.get_mut()
            .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (resp, closes) = read_response(&mut conn).await.unwrap();
        assert_eq!((resp.status, closes), (503, false));

        let t = Instant::now();
        let report = LoadReport::from_outcomes(
            vec![
                Outcome {
                    at: t,
                    result: Ok(Some("v2".into())),
                },
                Outcome {
                    at: t - Duration::from_millis(5),
                    result: Ok(Some("v1".into())),
                },
                Outcome {
                    at: t,
                    result: Err("HTTP 503".into()),
                },
            ],
            Duration::from_millis(5),
        );
        assert_eq!(
            report.versions_since(t),
            BTreeMap::from([("v2".to_string(), 1)])
        );
        assert_eq!((report.ok, report.failed), (2, 1));
    }

    #[tokio::test]
    async fn reads_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nvers\r\n6\r\nion=v9\r\n0\r\n\r\n";
        let (resp, closes) = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!((resp.body.as_str(), closes), ("version=v9", false));
        assert_eq!(response_version(&resp).as_deref(), Some("v9"));
    }
}
