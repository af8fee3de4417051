//! The server: one thread accepts, one thread per connection serves keep-alive requests,
//! and a shutdown stops accepting, lets in-flight requests finish (answered with
//! `Connection: close`), closes idle connections and waits for the rest with a deadline.

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, Mode};
use crate::http::{self, Request, Response};

/// How often an idle keep-alive connection looks at the shutdown flag.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long (HAProxy's own is shorter).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the rest of a request once its first byte arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a shutdown waits for open connections before exiting anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// What the request handlers need: the configuration and the error-rate counter.
pub struct App {
    /// Version, mode and address, as read at start.
    config: Config,
    /// Requests to `/` so far, to spread injected errors evenly and deterministically.
    hits: AtomicU64,
}

impl App {
    /// An app answering as `config` says.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            hits: AtomicU64::new(0),
        }
    }

    /// Answers one request.
    pub fn route(&self, req: &Request) -> Response {
        let v = &self.config.version;
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "only GET and HEAD\n").header("Allow", "GET, HEAD");
        }
        let resp = match req.path.as_str() {
            "/" => {
                if self.inject_error() {
                    Response::text(500, format!("error=injected version={v}\n"))
                } else {
                    Response::text(200, format!("version={v}\n"))
                }
            }
            "/ready" if self.config.mode == Mode::NeverReady => Response::text(503, "not ready\n"),
            "/ready" => Response::text(200, "ready\n"),
            "/health" => Response::text(200, "ok\n"),
            other if other.starts_with("/slow/") => slow(other, v),
            other => crate::given::route(other)
                .or_else(|| crate::logging::route(other))
                .unwrap_or_else(|| Response::text(404, "not found\n")),
        };
        resp.header("X-Version", v.clone())
    }

    /// Should this `/` request fail? With `error-rate:p`, exactly p of every 100 do,
    /// spread evenly (request n fails when floor(n*p/100) steps up).
    fn inject_error(&self) -> bool {
        let Mode::ErrorRate(p) = self.config.mode else {
            return false;
        };
        let n = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        n * u64::from(p) / 100 > (n - 1) * u64::from(p) / 100
    }
}

/// `/slow/<ms>`: answers after `ms` milliseconds (at most a minute), for tests of
/// requests in flight while a container is replaced.
fn slow(path: &str, version: &str) -> Response {
    match path["/slow/".len()..].parse::<u64>() {
        Ok(ms) if ms <= 60_000 => {
            thread::sleep(Duration::from_millis(ms));
            Response::text(200, format!("slow={ms} version={version}\n"))
        }
        _ => Response::text(400, "write /slow/<milliseconds>, at most 60000\n"),
    }
}

/// The shutdown flag and the count of open connections, shared by every thread.
#[derive(Default)]
pub struct Shutdown {
    /// Set once: stop accepting, answer with `Connection: close`, close idle connections.
    requested: AtomicBool,
    /// Open connections; the main thread waits for zero.
    open: Mutex<usize>,
    /// Signalled whenever `open` drops.
    closed: Condvar,
}

impl Shutdown {
    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Counts a connection as open until the returned guard drops.
    fn track(self: &Arc<Self>) -> OpenConnection {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        OpenConnection(self.clone())
    }

    /// Waits until every connection closed, or `deadline` passed. Returns how many remain.
    fn wait_drained(&self, deadline: Duration) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (open, _) = self
            .closed
            .wait_timeout_while(open, deadline, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *open
    }
}

/// One open connection, counted in [`Shutdown::open`] while alive.
struct OpenConnection(Arc<Shutdown>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.closed.notify_all();
    }
}

/// Serves until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: Config) -> io::Result<()> {
    let mut signals = if config.ignore_sigterm {
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?
    } else {
        signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?
    };
    let listener = TcpListener::bind((config.addr.as_str(), config.port))?;
    let local = listener.local_addr()?;
    let label = format!("demo-app version={} mode={}", config.version, config.mode);
    println!("{label} listening on {local}");
    if let Mode::CrashAfter(delay) = config.mode {
        thread::spawn(move || {
            thread::sleep(delay);
            eprintln!(
                "demo-app: crashing {}ms after start as DEMO_MODE asks",
                delay.as_millis()
            );
            std::process::exit(1);
        });
    }
    let app = Arc::new(App::new(config));
    let shutdown = Arc::new(Shutdown::default());
    let acceptor = {
        let shutdown = shutdown.clone();
        thread::spawn(move || accept_loop(listener, app, shutdown))
    };
    let signal = signals
        .forever()
        .next()
        .unwrap_or(signal_hook::consts::SIGTERM);
    println!("{label} stopping (signal {signal}): no new connections, finishing requests");
    shutdown.requested.store(true, Ordering::SeqCst);
    // Wake the acceptor blocked in accept(); it sees the flag and drops the listener.
    let _ = TcpStream::connect_timeout(&wake_address(local), Duration::from_secs(1));
    let _ = acceptor.join();
    let left = shutdown.wait_drained(DRAIN_DEADLINE);
    if left > 0 {
        println!("{label} stopped, cutting {left} connections still open at the deadline");
    } else {
        println!("{label} stopped");
    }
    Ok(())
}

/// Where to connect to wake our own acceptor: loopback when bound to the unspecified address.
fn wake_address(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, local.port()))
    } else {
        local
    }
}

fn accept_loop(listener: TcpListener, app: Arc<App>, shutdown: Arc<Shutdown>) {
    for stream in listener.incoming() {
        if shutdown.is_requested() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let guard = shutdown.track();
        let (app, shutdown) = (app.clone(), shutdown.clone());
        thread::spawn(move || {
            let _guard = guard;
            let _ = serve_connection(stream, &app, &shutdown);
        });
    }
}

fn serve_connection(stream: TcpStream, app: &App, shutdown: &Shutdown) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while wait_for_request(&mut reader, shutdown)? {
        reader.get_ref().set_read_timeout(Some(REQUEST_TIMEOUT))?;
        match http::read_request(&mut reader) {
            Ok(None) => return Ok(()),
            Ok(Some(req)) => {
                let keep_alive = req.keep_alive && !shutdown.is_requested();
                let head_only = req.method == "HEAD";
                app.route(&req)
                    .write_to(&mut writer, head_only, keep_alive, req.http10)?;
                if !keep_alive {
                    return Ok(());
                }
            }
            Err(e) => {
                if let Some(status) = e.status() {
                    Response::text(status, format!("{}\n", e.reason())).write_to(
                        &mut writer,
                        false,
                        false,
                        false,
                    )?;
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Waits for the first byte of the next request. False when the connection should close:
/// the peer closed it, it stayed idle too long, or a shutdown was requested meanwhile.
fn wait_for_request(reader: &mut BufReader<TcpStream>, shutdown: &Shutdown) -> io::Result<bool> {
    if !reader.buffer().is_empty() {
        return Ok(true);
    }
    reader.get_ref().set_read_timeout(Some(IDLE_POLL))?;
    let idle_since = Instant::now();
    loop {
        match reader.fill_buf() {
            Ok(bytes) => return Ok(!bytes.is_empty()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shutdown.is_requested() || idle_since.elapsed() > IDLE_TIMEOUT {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(mode: Mode) -> App {
        App::new(Config {
            version: "v7".into(),
            addr: "127.0.0.1".into(),
            port: 1,
            mode,
            ignore_sigterm: false,
        })
    }

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            keep_alive: true,
            http10: false,
        }
    }

    #[test]
    fn routes() {
        let a = app(Mode::Ok);
        let r = a.route(&get("/"));
        assert_eq!((r.status, r.body.as_str()), (200, "version=v7\n"));
        assert!(r.headers.contains(&("X-Version", "v7".to_string())));
        assert_eq!(a.route(&get("/ready")).status, 200);
        assert_eq!(a.route(&get("/health")).status, 200);
        assert_eq!(a.route(&get("/nope")).status, 404);
        let slow = a.route(&get("/slow/20"));
        assert_eq!(
            (slow.status, slow.body.as_str()),
            (200, "slow=20 version=v7\n")
        );
        assert_eq!(a.route(&get("/slow/x")).status, 400);
        assert_eq!(a.route(&get("/slow/600000")).status, 400);
        let post = Request {
            method: "POST".into(),
            ..get("/")
        };
        assert_eq!(a.route(&post).status, 405);
    }

    #[test]
    fn never_ready_still_serves_root() {
        let a = app(Mode::NeverReady);
        assert_eq!(a.route(&get("/ready")).status, 503);
        assert_eq!(a.route(&get("/")).status, 200);
    }

    #[test]
    fn error_rate_is_exact_and_spread() {
        let a = app(Mode::ErrorRate(20));
        let failed: Vec<usize> = (1..=100)
            .filter(|_| a.route(&get("/")).status == 500)
            .collect();
        assert_eq!(failed.len(), 20);
        assert!(failed.windows(2).all(|w| w[1] - w[0] == 5), "{failed:?}");
        assert_eq!(a.route(&get("/health")).status, 200, "only / fails");
    }
}
