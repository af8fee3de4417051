//! `bench_handshake`: how long N agents (1,000 by default) connecting at once take until
//! the controller reports them all connected, over mTLS and, as the baseline measured in
//! the same run, in plaintext (`--insecure-dev`); and how fast agents enroll.
//!
//! The agents are SIMULATED: N tonic clients inside this process (no Docker, no
//! `drover-agent` processes), each speaking the agent protocol the way
//! `agent/src/connection.rs` does, on its own TCP connection and, with mTLS, its own
//! TLS 1.3 session and agent certificate. The controllers are real: two `drover serve`
//! processes from `target/release` on 127.0.0.1, one with a PKI made by `drover ca init`,
//! one with `--insecure-dev`.
//!
//! 1. Enrollment (mTLS controller): N join tokens from the real `CreateJoinToken` RPC
//!    (admin certificate from `ca init`), then N `Enroll` calls, each with a key and CSR
//!    made here and on a TLS connection of its own without a client certificate, as a
//!    fresh agent would, `--enroll-parallel` at a time: tokens/s and enrollments/s.
//! 2. Storms, interleaved (mTLS, plaintext, plaintext, mTLS, ...): all N agents dial at
//!    once, send Hello with their enrolled name and heartbeat as the Welcome asks; a dial
//!    that fails is retried with the real agent's backoff. Timed until the controller's
//!    ListHosts reports all N connected (polled every 50 ms, deadline `--deadline`).
//!    Then every stream closes and the controller must report them gone before the next
//!    storm.
//!
//! Prints each storm, the medians per mode and the ratio mTLS / plaintext. The machine is
//! shared, and this process's N clients share its cores with the controller: the times
//! include the clients' half of every handshake.
//!
//! Not a test: run it through `tests/bench.sh tls` (which raises the open-files limit).
//!
//! ```text
//! bench_handshake [--agents 1000] [--rounds 3] [--enroll-parallel 32] [--deadline 120]
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drover_proto::v1::agent_channel_client::AgentChannelClient;
use drover_proto::v1::enrollment_client::EnrollmentClient;
use drover_proto::v1::{
    AgentMessage, CreateJoinTokenRequest, EnrollRequest, Heartbeat, Hello, agent_message,
    controller_message,
};
use drover_shared::backoff::Backoff;
use drover_shared::tls::{self, Identity};
use drover_tests::bench::{self, BinDir, Flags, Stats, StopChildren, cpu_seconds, median, ms};
use drover_tests::bench_controller::{
    CALL_TIMEOUT, Controller, Dial, Mode, SETTLE_TIMEOUT, ca_init, plain_dial, read, status_chain,
    tls_dial,
};
use drover_tests::fleet::now_ms;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// How often ListHosts is asked during a storm.
const POLL: Duration = Duration::from_millis(50);
/// Open files this process needs besides one socket per agent.
const SPARE_FILES: u64 = 512;
/// The simulated agents' heartbeat, until the Welcome asks for another.
const HEARTBEAT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Args {
    agents: usize,
    rounds: usize,
    enroll_parallel: usize,
    deadline: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        agents: 1000,
        rounds: 3,
        enroll_parallel: 32,
        deadline: Duration::from_secs(120),
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--agents" => a.agents = flags.number_in("--agents", 1..=5000)?,
            "--rounds" => a.rounds = flags.number_in("--rounds", 1..=20)?,
            "--enroll-parallel" => {
                a.enroll_parallel = flags.number_in("--enroll-parallel", 1..=1000)?
            }
            "--deadline" => {
                a.deadline = Duration::from_secs(flags.number_in("--deadline", 5..=600)? as u64)
            }
            other => {
                return Err(format!(
                    "unknown flag {other}\nusage: bench_handshake [--agents N] [--rounds R] [--enroll-parallel P] [--deadline SECONDS]"
                ));
            }
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    bench::run_main(
        "bench_handshake",
        parse_args(),
        BinDir::Release,
        StopChildren::Kill,
        run,
    )
}

async fn run(args: Args) -> ExitCode {
    match bench_handshake(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_handshake: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench_handshake(args: &Args) -> Result<(), String> {
    bench::require_open_files(
        args.agents as u64 + SPARE_FILES,
        &format!(
            "{} simulated agents (one socket each, here and in the controller)",
            args.agents
        ),
    )?;
    let dir = tempfile::Builder::new()
        .prefix("drover-bench-handshake-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    bench::on_abort(|c| c.dirs.push(dir.path().to_path_buf()));
    let pki = dir.path().join("pki");
    ca_init(&pki).await?;
    let ca_pem = read(&pki.join(tls::CA_CERT_FILE))?;
    // Locals drop in reverse order: the controllers (and their logs) go before `dir`.
    let mut mtls = Controller::start(Mode::Mtls, dir.path(), &pki).await?;
    let mut plain = Controller::start(Mode::Plaintext, dir.path(), &pki).await?;

    let role = drover_tests::unique_name("hs");
    let names: Vec<String> = (1..=args.agents)
        .map(|i| format!("{role}-{i:04}"))
        .collect();
    let (enrolled, enrollment) = enroll(&mtls, &ca_pem, &names, &role, args).await?;
    enrollment.print(args);

    let mut fleets = BTreeMap::new();
    fleets.insert(
        Mode::Mtls,
        mtls_agents(&mtls.url, &ca_pem, &enrolled, &role)?,
    );
    fleets.insert(Mode::Plaintext, plain_agents(&plain.url, &names, &role));
    let mut storms: Vec<Storm> = vec![];
    let outcome = async {
        for round in 1..=args.rounds {
            let order = if round % 2 == 1 {
                [Mode::Mtls, Mode::Plaintext]
            } else {
                [Mode::Plaintext, Mode::Mtls]
            };
            for mode in order {
                let ctl = match mode {
                    Mode::Mtls => &mut mtls,
                    Mode::Plaintext => &mut plain,
                };
                let s = storm(ctl, &fleets[&mode], &role, args.deadline).await?;
                s.print(round, args.agents);
                storms.push(s);
            }
        }
        Ok::<_, String>(())
    }
    .await;
    summary(args, &enrollment, &storms, listen_backlog(&mtls.url));
    outcome
}

// ----- enrollment --------------------------------------------------------------------

/// An enrolled agent's certificate and key (PEM; the key never leaves this process).
struct Enrolled {
    name: String,
    cert_pem: String,
    key_pem: String,
}

/// What enrollment measured.
struct Enrollment {
    tokens: Duration,
    enroll: Duration,
    /// Per Enroll call (dial, TLS handshake, RPC), ms; key generation excluded.
    latencies: Vec<f64>,
}

impl Enrollment {
    fn print(&self, args: &Args) {
        let n = args.agents as f64;
        let s = Stats::of(&self.latencies);
        println!(
            "enrollment (mTLS controller, {} at a time): {} join tokens (CreateJoinToken, admin certificate) in {:.2} s = {:.0} tokens/s; {} Enroll calls (own TLS connection each, no client certificate) in {:.2} s = {:.0} enrollments/s; per call median {:.0} / p90 {:.0} / max {:.0} ms",
            args.enroll_parallel,
            args.agents,
            self.tokens.as_secs_f64(),
            n / self.tokens.as_secs_f64(),
            args.agents,
            self.enroll.as_secs_f64(),
            n / self.enroll.as_secs_f64(),
            s.median,
            s.p90,
            s.max
        );
    }
}

/// One join token per name (labels `role=<role>`), then one Enroll per name, each
/// `args.enroll_parallel` at a time.
async fn enroll(
    ctl: &Controller,
    ca_pem: &str,
    names: &[String],
    role: &str,
    args: &Args,
) -> Result<(Vec<Enrolled>, Enrollment), String> {
    let gate = Arc::new(Semaphore::new(args.enroll_parallel));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (i, _) in names.iter().enumerate() {
        let mut operator = ctl.operator.clone();
        let gate = gate.clone();
        let role = role.to_string();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let mut request = tonic::Request::new(CreateJoinTokenRequest {
                ttl_ms: 3_600_000,
                labels: [("role".to_string(), role)].into_iter().collect(),
            });
            request.set_timeout(CALL_TIMEOUT);
            let token = operator
                .create_join_token(request)
                .await
                .map_err(|s| format!("CreateJoinToken: {}", status_chain(&s)))?
                .into_inner()
                .token;
            Ok::<_, String>((i, token))
        });
    }
    let mut tokens: Vec<Option<String>> = vec![None; names.len()];
    for (i, token) in join_all(set).await? {
        tokens[i] = Some(token);
    }
    let token_time = started.elapsed();

    let dial = tls_dial(&ctl.url, ca_pem, None)?;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (name, token) in names.iter().zip(tokens) {
        let token = token.ok_or("a join token is missing")?;
        let (dial, gate, name) = (dial.clone(), gate.clone(), name.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let identity = Identity::Agent { name: name.clone() };
            let (key_pem, csr_pem) = tls::key_and_csr(&identity)
                .map_err(|e| format!("cannot make a key and CSR for {name}: {e}"))?;
            let call = Instant::now();
            let channel = dial().await?;
            let mut request = tonic::Request::new(EnrollRequest {
                token,
                name: name.clone(),
                csr_pem,
            });
            request.set_timeout(CALL_TIMEOUT);
            let response = EnrollmentClient::new(channel)
                .enroll(request)
                .await
                .map_err(|s| format!("Enroll {name}: {}", status_chain(&s)))?
                .into_inner();
            Ok::<_, String>((
                ms(call.elapsed()),
                Enrolled {
                    name,
                    cert_pem: response.cert_pem,
                    key_pem,
                },
            ))
        });
    }
    let done = join_all(set).await?;
    let enroll_time = started.elapsed();
    let latencies = done.iter().map(|(l, _)| *l).collect();
    let enrolled = done.into_iter().map(|(_, e)| e).collect();
    Ok((
        enrolled,
        Enrollment {
            tokens: token_time,
            enroll: enroll_time,
            latencies,
        },
    ))
}

/// Every task's output; the first error (after aborting the rest) if any failed.
async fn join_all<T: 'static>(mut set: JoinSet<Result<T, String>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e);
            }
            Err(e) => {
                set.abort_all();
                return Err(format!("a task failed: {e}"));
            }
        }
    }
    Ok(out)
}

// ----- the simulated agents ----------------------------------------------------------

/// One simulated agent: how it dials and what it says first.
struct SimAgent {
    dial: Dial,
    hello: Hello,
}

fn hello(name: &str, role: &str) -> Hello {
    Hello {
        name: name.to_string(),
        labels: [("role".to_string(), role.to_string())]
            .into_iter()
            .collect(),
        advertise_address: "127.0.0.1".into(),
        agent_version: format!("{}-simulated", drover_shared::VERSION),
        heartbeat_interval_ms: HEARTBEAT.as_millis() as u64,
        ..Hello::default()
    }
}

/// Agents presenting their enrolled certificates (client configurations built here,
/// before any storm: an agent builds its own once at start).
fn mtls_agents(
    url: &str,
    ca_pem: &str,
    enrolled: &[Enrolled],
    role: &str,
) -> Result<Vec<SimAgent>, String> {
    enrolled
        .iter()
        .map(|e| {
            Ok(SimAgent {
                dial: tls_dial(url, ca_pem, Some((&e.cert_pem, &e.key_pem)))?,
                hello: hello(&e.name, role),
            })
        })
        .collect()
}

fn plain_agents(url: &str, names: &[String], role: &str) -> Vec<SimAgent> {
    names
        .iter()
        .map(|n| SimAgent {
            dial: plain_dial(url),
            hello: hello(n, role),
        })
        .collect()
}

/// What one agent saw during a storm.
#[derive(Debug, Default)]
struct AgentOutcome {
    /// From the storm's start to its first Welcome.
    welcomed_after: Option<Duration>,
    /// Dials (1 unless one failed or a stream broke).
    dials: u32,
    /// Why the first failed dial or stream failed.
    first_error: Option<String>,
}

/// Counts the agents welcomed so far in a storm, and wakes the poller when the last one
/// is, so that "all connected" is read one ListHosts after it, not up to a poll later.
struct Welcomed {
    count: AtomicUsize,
    of: usize,
    all: Notify,
}

impl Welcomed {
    fn one_more(&self) {
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.of {
            self.all.notify_one();
        }
    }
}

/// Dials, says Hello, heartbeats; redials with the agent's backoff after a failure, until
/// `stop` (or `deadline` while not connected).
async fn run_agent(
    agent: (Dial, Hello),
    t0: Instant,
    deadline: Instant,
    welcomed: Arc<Welcomed>,
    mut stop: watch::Receiver<bool>,
) -> AgentOutcome {
    let (dial, hello) = agent;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut out = AgentOutcome::default();
    loop {
        if *stop.borrow() || Instant::now() >= deadline {
            return out;
        }
        out.dials += 1;
        match session(&dial, &hello, t0, &welcomed, &mut stop, &mut out).await {
            Ok(()) => return out,
            Err(e) => {
                out.first_error.get_or_insert(e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => return out,
                }
            }
        }
    }
}

/// One stream: `Ok` once `stop` fires, `Err` when the dial or the stream fails.
async fn session(
    dial: &Dial,
    hello: &Hello,
    t0: Instant,
    welcomed: &Welcomed,
    stop: &mut watch::Receiver<bool>,
    out: &mut AgentOutcome,
) -> Result<(), String> {
    let channel = dial().await?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let first = AgentMessage {
        body: Some(agent_message::Body::Hello(hello.clone())),
    };
    tx.send(first).await.map_err(|_| "stream closed")?;
    let mut inbound = AgentChannelClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("Connect: {}", status_chain(&s)))?
        .into_inner();
    let welcome = tokio::time::timeout(CALL_TIMEOUT, inbound.message())
        .await
        .map_err(|_| "no Welcome within the call timeout".to_string())?
        .map_err(|s| format!("stream: {}", status_chain(&s)))?;
    let every = match welcome.and_then(|m| m.body) {
        Some(controller_message::Body::Welcome(w)) if w.heartbeat_interval_ms > 0 => {
            Duration::from_millis(w.heartbeat_interval_ms).max(Duration::from_millis(100))
        }
        Some(controller_message::Body::Welcome(_)) => HEARTBEAT,
        other => return Err(format!("expected a Welcome first, got {other:?}")),
    };
    if out.welcomed_after.is_none() {
        out.welcomed_after = Some(t0.elapsed());
        welcomed.one_more();
    }
    let mut beat = tokio::time::interval_at(Instant::now() + every, every);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = beat.tick() => {
                seq += 1;
                let hb = AgentMessage {
                    body: Some(agent_message::Body::Heartbeat(Heartbeat { seq, sent_at_ms: now_ms() })),
                };
                // A full queue means the controller is not reading; the next beat retries.
                let _ = tx.try_send(hb);
            }
            m = inbound.message() => match m {
                Ok(Some(_)) => {} // no deploys target these hosts
                Ok(None) => return Err("the controller closed the stream".into()),
                Err(s) => return Err(format!("stream: {}", status_chain(&s))),
            },
        }
    }
}

// ----- one storm ---------------------------------------------------------------------

/// What one storm measured.
struct Storm {
    mode: Mode,
    /// Until ListHosts first reported all connected; `None` if the deadline passed.
    all_connected: Option<Duration>,
    /// Most agents ListHosts reported connected (when not all).
    most_connected: usize,
    /// Per agent, start to Welcome, ms.
    welcomes: Vec<f64>,
    /// Dials beyond one per agent.
    redials: u32,
    /// Agents that never got a Welcome.
    never: usize,
    /// First errors, folded, with counts.
    errors: BTreeMap<String, usize>,
    /// CPU seconds the controller used from the start until all were connected.
    controller_cpu: f64,
    /// CPU seconds this process (the simulated agents) used in the same time.
    clients_cpu: f64,
    /// Failed TLS handshakes the controller logged during the storm.
    refused: usize,
    /// Connections the kernel dropped because a listen queue was full, machine-wide
    /// (`TcpExt ListenOverflows`): the client resends its SYN after 1 s, then 3 s...
    listen_overflows: u64,
    /// SYNs resent, machine-wide (`TcpExt TCPSynRetrans`).
    syn_retransmits: u64,
}

/// All agents dial at once; timed until ListHosts reports every one connected. Then
/// every stream closes and the controller must report them gone.
async fn storm(
    ctl: &mut Controller,
    agents: &[SimAgent],
    role: &str,
    deadline_after: Duration,
) -> Result<Storm, String> {
    ctl.wait_all_gone(role).await?;
    let refused_before = ctl.log_count("TLS handshake");
    let pid = ctl.process.pid().ok_or("the controller exited")?;
    let (cpu0, own0) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let tcp0 = tcp_counters();
    let welcomed = Arc::new(Welcomed {
        count: AtomicUsize::new(0),
        of: agents.len(),
        all: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let since = now_ms();
    let t0 = Instant::now();
    let deadline = t0 + deadline_after;
    let mut set = JoinSet::new();
    for a in agents {
        set.spawn(run_agent(
            (a.dial.clone(), a.hello.clone()),
            t0,
            deadline,
            welcomed.clone(),
            stop_rx.clone(),
        ));
    }
    let mut all_connected = None;
    let mut most = 0;
    let mut last_error = None;
    while Instant::now() < deadline {
        match ctl.connected(role, since).await {
            Ok((n, _)) if n == agents.len() => {
                all_connected = Some(t0.elapsed());
                break;
            }
            Ok((n, _)) => most = most.max(n),
            Err(e) => last_error = Some(e),
        }
        if welcomed.count.load(Ordering::SeqCst) < agents.len() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = welcomed.all.notified() => {}
            }
        } else {
            // All welcomed: the controller registered them before answering; ask again
            // at once (a little later if it has not caught up).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let cpu = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let tcp = tcp_counters();
    let _ = stop_tx.send(true);
    let mut outcomes = vec![];
    let joined = tokio::time::timeout(SETTLE_TIMEOUT, async {
        while let Some(o) = set.join_next().await {
            outcomes.extend(o.ok());
        }
    })
    .await;
    if joined.is_err() {
        set.abort_all();
    }
    ctl.wait_all_gone(role).await?;
    if all_connected.is_none()
        && let Some(e) = last_error
    {
        eprintln!("bench_handshake: last ListHosts error: {e}");
    }
    let mut errors = BTreeMap::new();
    for e in outcomes.iter().filter_map(|o| o.first_error.as_ref()) {
        *errors.entry(e.chars().take(160).collect()).or_default() += 1;
    }
    let diff = |a: Option<f64>, b: Option<f64>| b.zip(a).map_or(f64::NAN, |(b, a)| b - a);
    Ok(Storm {
        mode: ctl.mode,
        all_connected,
        most_connected: most,
        welcomes: outcomes
            .iter()
            .filter_map(|o| o.welcomed_after.map(ms))
            .collect(),
        redials: outcomes.iter().map(|o| o.dials.saturating_sub(1)).sum(),
        never: agents.len()
            - outcomes
                .iter()
                .filter(|o| o.welcomed_after.is_some())
                .count(),
        errors,
        controller_cpu: diff(cpu0, cpu.0),
        clients_cpu: diff(own0, cpu.1),
        refused: ctl
            .log_count("TLS handshake")
            .saturating_sub(refused_before),
        listen_overflows: tcp.0.saturating_sub(tcp0.0),
        syn_retransmits: tcp.1.saturating_sub(tcp0.1),
    })
}

impl Storm {
    fn print(&self, round: usize, agents: usize) {
        let all = match self.all_connected {
            Some(d) => format!("all {agents} connected after {:.0} ms", ms(d)),
            None => format!(
                "NOT all connected before the deadline (at most {} of {agents})",
                self.most_connected
            ),
        };
        let welcomes = if self.welcomes.is_empty() {
            "no Welcome at all".to_string()
        } else {
            let s = Stats::of(&self.welcomes);
            format!(
                "start→Welcome per agent median {:.0} / p90 {:.0} / max {:.0} ms",
                s.median, s.p90, s.max
            )
        };
        println!(
            "[{round}] {:<9}: {all} (ListHosts); {welcomes}; redials {}, never welcomed {}; CPU until all connected: controller {:.2} s, simulated agents {:.2} s; failed TLS handshakes logged {}; machine-wide listen-queue overflows {}, SYN retransmits {}",
            self.mode.label(),
            self.redials,
            self.never,
            self.controller_cpu,
            self.clients_cpu,
            self.refused,
            self.listen_overflows,
            self.syn_retransmits,
        );
        for (e, n) in &self.errors {
            println!("      {n}× {e}");
        }
    }
}

// ----- report ------------------------------------------------------------------------

fn summary(args: &Args, enrollment: &Enrollment, storms: &[Storm], backlog: Option<u64>) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let of = |mode: Mode, f: &dyn Fn(&Storm) -> Option<f64>| -> (f64, usize) {
        let v: Vec<f64> = storms
            .iter()
            .filter(|s| s.mode == mode)
            .filter_map(f)
            .collect();
        (median(&v), v.len())
    };
    let all = |s: &Storm| s.all_connected.map(ms);
    let ((tls, tls_n), (plain, plain_n)) = (of(Mode::Mtls, &all), of(Mode::Plaintext, &all));
    let last = |s: &Storm| s.welcomes.iter().copied().reduce(f64::max);
    let (tls_last, plain_last) = (of(Mode::Mtls, &last).0, of(Mode::Plaintext, &last).0);
    let ctl_cpu = |s: &Storm| Some(s.controller_cpu);
    let (tls_cpu, plain_cpu) = (of(Mode::Mtls, &ctl_cpu).0, of(Mode::Plaintext, &ctl_cpu).0);
    let own_cpu = |s: &Storm| Some(s.clients_cpu);
    let (tls_own, plain_own) = (of(Mode::Mtls, &own_cpu).0, of(Mode::Plaintext, &own_cpu).0);
    let typical = |s: &Storm| (!s.welcomes.is_empty()).then(|| median(&s.welcomes));
    let (tls_typ, plain_typ) = (of(Mode::Mtls, &typical).0, of(Mode::Plaintext, &typical).0);
    let overflows = |s: &Storm| Some(s.listen_overflows as f64);
    let (tls_ovf, plain_ovf) = (
        of(Mode::Mtls, &overflows).0,
        of(Mode::Plaintext, &overflows).0,
    );
    println!();
    println!(
        "=== bench_handshake: {} SIMULATED agents (tonic clients in this process: no Docker, no drover-agent processes) connecting at once to the real `drover serve` on 127.0.0.1; {} round(s), mTLS and plaintext interleaved; machine: {cores} cores shared by the controller and every simulated agent, and noisy (compare the ratios) ===",
        args.agents, args.rounds
    );
    println!(
        "  all connected (ListHosts), median: mTLS {tls:.0} ms ({tls_n} storms) | plaintext {plain:.0} ms ({plain_n} storms) | ratio mTLS/plaintext {:.2}",
        tls / plain
    );
    println!(
        "  last Welcome (client side), median: mTLS {tls_last:.0} ms | plaintext {plain_last:.0} ms | ratio {:.2}",
        tls_last / plain_last
    );
    println!(
        "  an agent's start→Welcome, median of the storms' medians: mTLS {tls_typ:.0} ms | plaintext {plain_typ:.0} ms | ratio {:.2}",
        tls_typ / plain_typ
    );
    println!(
        "  listen-queue overflows per storm (machine-wide), median: mTLS {tls_ovf:.0} | plaintext {plain_ovf:.0}; the controller's listen backlog (ss): {}{}",
        backlog.map_or("unknown".to_string(), |b| b.to_string()),
        if tls_ovf + plain_ovf > 0.0 {
            " — SYNs beyond it are dropped and resent by the client after 1 s (then 3 s), which sets the tail of both modes"
        } else {
            ""
        }
    );
    println!(
        "  CPU until all connected, median: controller mTLS {tls_cpu:.2} s | plaintext {plain_cpu:.2} s (≈ {:.2} ms per mTLS connection more); simulated agents mTLS {tls_own:.2} s | plaintext {plain_own:.2} s",
        (tls_cpu - plain_cpu) * 1000.0 / args.agents as f64
    );
    println!(
        "  enrollment: {:.0} enrollments/s ({} at a time, own TLS connection each), {:.0} join tokens/s",
        args.agents as f64 / enrollment.enroll.as_secs_f64(),
        args.enroll_parallel,
        args.agents as f64 / enrollment.tokens.as_secs_f64()
    );
    println!(
        "method: per storm, every agent task starts at once and dials (TCP; with mTLS a TLS 1.3 handshake presenting its own enrolled certificate, verifying the controller identity), opens AgentChannel.Connect, sends Hello and waits for the Welcome, then heartbeats; a failed dial is retried with the agent's backoff (200 ms..10 s, full jitter). \"All connected\" is the first ListHosts (every {} ms) reporting all of them connected in a session begun after the start. Between storms every stream closes and the controller must report none connected.",
        POLL.as_millis()
    );
}

// ----- helpers -----------------------------------------------------------------------

/// The backlog of the socket listening on `url`'s port (`ss -Hltn`, its Send-Q column),
/// if `ss` can tell.
fn listen_backlog(url: &str) -> Option<u64> {
    let port = url.rsplit(':').next()?;
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Machine-wide `(ListenOverflows, TCPSynRetrans)` from `/proc/net/netstat` (zeros when
/// unreadable).
fn tcp_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let counters: BTreeMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect();
    let get = |n: &str| counters.get(n).copied().unwrap_or(0);
    (get("ListenOverflows"), get("TCPSynRetrans"))
}
