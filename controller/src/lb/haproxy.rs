//! One HAProxy's runtime API (the "stats socket"), spoken non-interactively: one
//! connection per command, `command\n` out, the answer read to EOF, all bounded by a
//! timeout. Typed calls on top read server state and set the admin state.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use super::LbError;
use super::stats::{self, AdminState, ServerStatus};

/// Answers larger than this are cut off (a `show stat` of a huge config is a few MiB).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Reads of `servers` before a torn one (state changed between its two commands) is
/// returned as it is.
const TORN_READ_ATTEMPTS: usize = 3;

/// Where an HAProxy runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuntimeAddr {
    /// A Unix socket (`stats socket /run/haproxy/admin.sock level admin`).
    Unix(PathBuf),
    /// A TCP socket (`stats socket 127.0.0.1:9999 level admin`).
    Tcp(SocketAddr),
}

impl FromStr for RuntimeAddr {
    type Err = LbError;

    /// Reads `unix:/path`, `/path`, `tcp:127.0.0.1:9999` or `127.0.0.1:9999`.
    fn from_str(input: &str) -> Result<Self, LbError> {
        let invalid = |reason: &str| LbError::InvalidAddr {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if let Some(path) = s.strip_prefix("unix:").or(s.starts_with('/').then_some(s)) {
            if !path.starts_with('/') {
                return Err(invalid("a Unix socket path must be absolute"));
            }
            return Ok(RuntimeAddr::Unix(PathBuf::from(path)));
        }
        let tcp = s.strip_prefix("tcp:").unwrap_or(s);
        tcp.parse()
            .map(RuntimeAddr::Tcp)
            .map_err(|_| invalid("neither an absolute socket path nor an ip:port"))
    }
}

impl fmt::Display for RuntimeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeAddr::Unix(path) => write!(f, "{}", path.display()),
            RuntimeAddr::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// What a command is about, so that HAProxy's terse refusals become precise errors.
#[derive(Clone, Copy, Default)]
struct Target<'a> {
    backend: Option<&'a str>,
    server: Option<&'a str>,
}

/// A handle on one HAProxy's runtime API. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct HaproxyRuntime {
    /// Where the runtime API listens.
    addr: RuntimeAddr,
    /// Limit for one command: connect, send, and read the whole answer.
    timeout: Duration,
}

impl HaproxyRuntime {
    /// A handle; nothing is contacted until the first command.
    pub fn new(addr: RuntimeAddr, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    /// Where this HAProxy's runtime API listens.
    pub fn addr(&self) -> &RuntimeAddr {
        &self.addr
    }

    /// Sends one command and returns HAProxy's answer. Known refusals ("Unknown command",
    /// "Permission denied", "No such ...") are errors.
    pub async fn command(&self, cmd: &str) -> Result<String, LbError> {
        self.run(cmd, Target::default()).await
    }

    /// One server of `backend`, as this HAProxy sees it.
    pub async fn server(&self, backend: &str, server: &str) -> Result<ServerStatus, LbError> {
        check_name("server", server)?;
        self.servers(backend)
            .await?
            .into_iter()
            .find(|s| s.server == server)
            .ok_or_else(|| LbError::NoSuchServer {
                haproxy: self.addr.to_string(),
                backend: backend.to_string(),
                server: server.to_string(),
            })
    }

    /// Every server of `backend`, in configuration order.
    ///
    /// Status and counters come from `show stat`, the admin state from `show servers
    /// state`: two commands, so a state change between them could pair an old status with
    /// a new admin state (UP with DRAIN). Such torn reads are detected and read again.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStatus>, LbError> {
        check_name("backend", backend)?;
        let mut servers = self.read_servers(backend).await?;
        for _ in 1..TORN_READ_ATTEMPTS {
            if servers.iter().all(ServerStatus::is_consistent) {
                break;
            }
            debug!(haproxy = %self.addr, %backend, "state changed while reading; reading again");
            servers = self.read_servers(backend).await?;
        }
        Ok(servers)
    }

    async fn read_servers(&self, backend: &str) -> Result<Vec<ServerStatus>, LbError> {
        let target = Target {
            backend: Some(backend),
            server: None,
        };
        // Type 6 = backend + servers: the BACKEND row proves it is a backend, not a frontend.
        let stat_cmd = format!("show stat {backend} 6 -1");
        let stat = self.run(&stat_cmd, target).await?;
        let rows = stats::parse_show_stat(&stat).map_err(|e| self.parse_error(&stat_cmd, e))?;
        let ours = |r: &&stats::StatRow| r.names().0 == backend;
        if !rows.iter().filter(ours).any(|r| r.names().1 == "BACKEND") {
            return Err(self.no_such_backend(backend));
        }
        // `show stat` prints DOWN for a drained server that is down: the admin state
        // comes from `show servers state`.
        let state_cmd = format!("show servers state {backend}");
        let state = self.run(&state_cmd, target).await?;
        let admin: HashMap<String, AdminState> = stats::parse_servers_state(&state)
            .map_err(|e| self.parse_error(&state_cmd, e))?
            .into_iter()
            .filter(|(b, _, _)| b == backend)
            .map(|(_, s, a)| (s, a))
            .collect();
        rows.iter()
            .filter(ours)
            .filter(|r| !matches!(r.names().1, "BACKEND" | "FRONTEND"))
            .map(|row| {
                // A server added between the two commands has no admin row yet: Ready.
                let admin = admin
                    .get(row.names().1)
                    .copied()
                    .unwrap_or(AdminState::Ready);
                stats::server_status(row, admin).map_err(|e| self.parse_error(&stat_cmd, e))
            })
            .collect()
    }

    /// Forces the server's administrative state (`set server b/s state ready|drain|maint`).
    pub async fn set_admin(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), LbError> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        let cmd = format!(
            "set server {backend}/{server} state {}",
            state.as_command_word()
        );
        let target = Target {
            backend: Some(backend),
            server: Some(server),
        };
        let answer = self.run(&cmd, target).await?;
        if answer.trim().is_empty() {
            debug!(haproxy = %self.addr, %backend, %server, %state, "admin state set");
            Ok(())
        } else {
            Err(LbError::Rejected {
                haproxy: self.addr.to_string(),
                command: cmd,
                answer: answer.trim().to_string(),
            })
        }
    }

    /// Where `server` of `backend` sends traffic now: its address and port.
    pub async fn server_addr(&self, backend: &str, server: &str) -> Result<(String, u16), LbError> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        let target = Target {
            backend: Some(backend),
            server: Some(server),
        };
        let cmd = format!("show servers state {backend}");
        let text = self.run(&cmd, target).await?;
        stats::parse_server_addrs(&text)
            .map_err(|e| self.parse_error(&cmd, e))?
            .into_iter()
            .find(|(b, s, _, _)| b == backend && s == server)
            .map(|(_, _, addr, port)| (addr, port))
            .ok_or_else(|| LbError::NoSuchServer {
                haproxy: self.addr.to_string(),
                backend: backend.to_string(),
                server: server.to_string(),
            })
    }

    /// Points `server` at `port` of the address it has (`set server b/s addr IP port P`):
    /// new connections go there; established ones stay where they are until they end.
    pub async fn set_port(&self, backend: &str, server: &str, port: u16) -> Result<(), LbError> {
        let (addr, now) = self.server_addr(backend, server).await?;
        if now == port {
            return Ok(());
        }
        // The address comes from HAProxy itself; refuse anything that would change the
        // command's meaning.
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':'))
        {
            return Err(LbError::Rejected {
                haproxy: self.addr.to_string(),
                command: format!("show servers state {backend}"),
                answer: format!("server {server} has address {addr:?}, not an IP address"),
            });
        }
        let cmd = format!("set server {backend}/{server} addr {addr} port {port}");
        let target = Target {
            backend: Some(backend),
            server: Some(server),
        };
        let answer = self.run(&cmd, target).await?;
        let answer = answer.trim();
        // HAProxy describes what it changed ("IP changed from ..., port changed from ...").
        if answer.is_empty() || answer.contains("changed") || answer.starts_with("no need") {
            debug!(haproxy = %self.addr, %backend, %server, %addr, port, "server pointed at a new port");
            Ok(())
        } else {
            Err(LbError::Rejected {
                haproxy: self.addr.to_string(),
                command: cmd,
                answer: answer.to_string(),
            })
        }
    }

    /// Forces the server's health DOWN (`set server b/s health down`) when HAProxy health
    /// checks it, so that it comes UP again only after `rise` fresh passing checks. A server
    /// without checks is left alone (forcing it down would keep it down).
    pub async fn expect_fresh_checks(&self, backend: &str, server: &str) -> Result<(), LbError> {
        let status = self.server(backend, server).await?;
        if status.check_status.trim().is_empty() {
            return Ok(());
        }
        self.force_health_down(backend, server).await
    }

    /// Forces the server's health back to 0 when a check has raised it: its checks then
    /// stay on the `downinter`/`fastinter` cadence instead of climbing to the top of
    /// their range, where HAProxy waits a whole `inter` before the next one. Returns
    /// whether it forced. A server without checks is left alone.
    pub async fn hold_health_down(&self, backend: &str, server: &str) -> Result<bool, LbError> {
        let status = self.server(backend, server).await?;
        if status.check_status.trim().is_empty() || status.check_health == 0 {
            return Ok(false);
        }
        self.force_health_down(backend, server).await.map(|()| true)
    }

    async fn force_health_down(&self, backend: &str, server: &str) -> Result<(), LbError> {
        let cmd = format!("set server {backend}/{server} health down");
        let target = Target {
            backend: Some(backend),
            server: Some(server),
        };
        let answer = self.run(&cmd, target).await?;
        if answer.trim().is_empty() {
            debug!(haproxy = %self.addr, %backend, %server, "health forced down until fresh checks pass");
            Ok(())
        } else {
            Err(LbError::Rejected {
                haproxy: self.addr.to_string(),
                command: cmd,
                answer: answer.trim().to_string(),
            })
        }
    }

    /// Sends `cmd`, bounded by the timeout, and turns known refusals into errors.
    async fn run(&self, cmd: &str, target: Target<'_>) -> Result<String, LbError> {
        let answer = tokio::time::timeout(self.timeout, self.exchange(cmd))
            .await
            .map_err(|_| LbError::Timeout {
                haproxy: self.addr.to_string(),
                command: cmd.to_string(),
                timeout: self.timeout,
            })??;
        debug!(haproxy = %self.addr, command = cmd, bytes = answer.len(), "runtime API answered");
        match self.refusal(cmd, &answer, target) {
            Some(err) => Err(err),
            None => Ok(answer),
        }
    }

    /// One connection: write the command line, read the answer to EOF.
    async fn exchange(&self, cmd: &str) -> Result<String, LbError> {
        let connect_err = |source| LbError::Connect {
            haproxy: self.addr.to_string(),
            source,
        };
        match &self.addr {
            RuntimeAddr::Unix(path) => {
                // A unix socket whose accept queue is full (HAProxy serves `stats maxconn`,
                // 10 by default, at once; a batch's hosts ask in parallel) refuses with
                // EAGAIN: the connections are short, so ask again until `run`'s timeout.
                let mut pause = Duration::from_millis(5);
                let stream = loop {
                    match UnixStream::connect(path).await {
                        Ok(s) => break s,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            debug!(haproxy = %self.addr, "runtime API busy; connecting again");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(100));
                        }
                        Err(e) => return Err(connect_err(e)),
                    }
                };
                self.talk(stream, cmd).await
            }
            RuntimeAddr::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(connect_err)?;
                self.talk(stream, cmd).await
            }
        }
    }

    async fn talk<S>(&self, mut stream: S, cmd: &str) -> Result<String, LbError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io_err = |source| LbError::Io {
            haproxy: self.addr.to_string(),
            command: cmd.to_string(),
            source,
        };
        stream
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(io_err)?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(io_err)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Maps HAProxy's one-line refusals to errors; `None` if the answer is not one.
    fn refusal(&self, cmd: &str, answer: &str, target: Target<'_>) -> Option<LbError> {
        let first = answer.trim_start().lines().next().unwrap_or("");
        let haproxy = self.addr.to_string();
        let command = cmd.to_string();
        let unknown_backend = ["No such backend", "No such proxy", "Can't find backend"];
        if first.starts_with("Unknown command") {
            Some(LbError::UnknownCommand { haproxy, command })
        } else if first.starts_with("Permission denied") || first.starts_with("Require ") {
            Some(LbError::PermissionDenied { haproxy, command })
        } else if unknown_backend.iter().any(|p| first.starts_with(p))
            && let Some(backend) = target.backend
        {
            Some(self.no_such_backend(backend))
        } else if first.starts_with("No such server")
            && let (Some(backend), Some(server)) = (target.backend, target.server)
        {
            Some(LbError::NoSuchServer {
                haproxy,
                backend: backend.to_string(),
                server: server.to_string(),
            })
        } else if first.starts_with("No such ") || first.starts_with("Can't find ") {
            Some(LbError::Rejected {
                haproxy,
                command,
                answer: first.to_string(),
            })
        } else {
            None
        }
    }

    fn no_such_backend(&self, backend: &str) -> LbError {
        LbError::NoSuchBackend {
            haproxy: self.addr.to_string(),
            backend: backend.to_string(),
        }
    }

    fn parse_error(&self, cmd: &str, source: stats::ParseError) -> LbError {
        LbError::Parse {
            haproxy: self.addr.to_string(),
            command: cmd.to_string(),
            source,
        }
    }
}

/// HAProxy names are letters, digits, `-`, `_`, `.` and `:`; anything else (a space, a
/// `;`) would change the command line, so it is refused before anything is sent.
fn check_name(what: &'static str, name: &str) -> Result<(), LbError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(LbError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    #[test]
    fn parses_runtime_addresses() {
        let unix = |p: &str| RuntimeAddr::Unix(PathBuf::from(p));
        let tcp = |a: &str| RuntimeAddr::Tcp(a.parse().unwrap());
        assert_eq!(
            "unix:/run/h.sock".parse::<RuntimeAddr>().unwrap(),
            unix("/run/h.sock")
        );
        assert_eq!(
            "/run/h.sock".parse::<RuntimeAddr>().unwrap(),
            unix("/run/h.sock")
        );
        assert_eq!(
            "127.0.0.1:9999".parse::<RuntimeAddr>().unwrap(),
            tcp("127.0.0.1:9999")
        );
        assert_eq!(
            "tcp:[::1]:9999".parse::<RuntimeAddr>().unwrap(),
            tcp("[::1]:9999")
        );
        for bad in ["unix:run/h.sock", "localhost:9999", "", "tcp:/x"] {
            let err = bad.parse::<RuntimeAddr>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn names_that_would_change_the_command_are_refused() {
        assert!(check_name("server", "host-1.web_2:a").is_ok());
        for bad in ["", "a b", "a;shutdown sessions", "a\nb", "a/b"] {
            assert!(check_name("server", bad).is_err(), "{bad:?}");
        }
    }

    /// A one-shot runtime API stand-in on a Unix socket: reads one line, answers `answer`
    /// (or never answers when `None`), closes.
    async fn fake_runtime(
        answer: Option<&'static str>,
        timeout: Duration,
    ) -> (HaproxyRuntime, PathBuf) {
        let path = std::env::temp_dir().join(format!("drover-lb-{}.sock", uuid::Uuid::new_v4()));
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            match answer {
                Some(a) => stream.get_mut().write_all(a.as_bytes()).await.unwrap(),
                None => std::future::pending().await,
            }
        });
        let rt = HaproxyRuntime::new(RuntimeAddr::Unix(path.clone()), timeout);
        (rt, path)
    }

    #[tokio::test]
    async fn refusals_become_precise_errors() {
        type Case = (&'static str, fn(&LbError) -> bool);
        let cases: [Case; 4] = [
            (
                "No such server.\n\n",
                |e| matches!(e, LbError::NoSuchServer { server, .. } if server == "h9"),
            ),
            (
                "No such backend.\n\n",
                |e| matches!(e, LbError::NoSuchBackend { backend, .. } if backend == "web"),
            ),
            ("Permission denied\n\n", |e| {
                matches!(e, LbError::PermissionDenied { .. })
            }),
            (
                "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n",
                |e| matches!(e, LbError::Rejected { .. }),
            ),
        ];
        for (answer, expected) in cases {
            let (rt, path) = fake_runtime(Some(answer), Duration::from_secs(5)).await;
            let err = rt
                .set_admin("web", "h9", AdminState::Drain)
                .await
                .unwrap_err();
            let _ = std::fs::remove_file(path);
            assert!(expected(&err), "{answer:?} gave {err:?}");
        }
        let err = LbError::NoSuchServer {
            haproxy: "/run/haproxy/admin.sock".into(),
            backend: "web".into(),
            server: "host-3".into(),
        };
        assert_eq!(
            err.to_string(),
            "HAProxy at /run/haproxy/admin.sock does not know server web/host-3: add it to \
             backend web or set `server_name` in the spec"
        );
    }

    #[tokio::test]
    async fn a_silent_haproxy_times_out() {
        let (rt, path) = fake_runtime(None, Duration::from_millis(200)).await;
        let err = rt.command("show info").await.unwrap_err();
        let _ = std::fs::remove_file(path);
        assert!(matches!(err, LbError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_full_accept_queue_is_asked_again_until_it_drains() {
        let path = std::env::temp_dir().join(format!("drover-lb-{}.sock", uuid::Uuid::new_v4()));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // Fill the accept queue until connecting refuses with EAGAIN, as a busy HAProxy
        // does.
        let mut queued = vec![];
        loop {
            match UnixStream::connect(&path).await {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 100_000, "the queue never filled");
        }
        let rt = HaproxyRuntime::new(RuntimeAddr::Unix(path.clone()), Duration::from_secs(10));
        let asked = tokio::spawn(async move { rt.command("show info").await });
        // Serve the queue: every connection gets one answer, the command's included.
        let served = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for stream in listener.incoming() {
                let mut stream = std::io::BufReader::new(stream.unwrap());
                let mut line = String::new();
                if stream.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                if line.trim() == "show info" {
                    stream.get_mut().write_all(b"Pid: 7\n").unwrap();
                    return;
                }
            }
        });
        drop(queued);
        let answer = asked.await.unwrap().unwrap();
        served.join().unwrap();
        let _ = std::fs::remove_file(path);
        assert_eq!(answer, "Pid: 7\n");
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_error_naming_the_socket() {
        let rt = HaproxyRuntime::new(
            RuntimeAddr::Unix("/nonexistent/drover/admin.sock".into()),
            Duration::from_secs(1),
        );
        let err = rt.command("show info").await.unwrap_err();
        assert!(matches!(err, LbError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/drover/admin.sock"));
    }
}
