//! What the benchmark programs (`src/bin/bench_*.rs`) share: their `main` (flags, the
//! re-run with `DROVER_BIN_DIR` set, the runtime, SIGTERM/SIGINT), the clean-up a panic
//! does in place of destructors, their flag parsing, what they read about the machine
//! (open-files limit, CPU time of a process) and their statistics.
//!
//! Release builds abort on panic (`panic = "abort"`), so `Drop` does not run there: the
//! panic hook installed by [`run_main`] stops this process's children and removes what
//! was registered with [`on_abort`].

use std::future::Future;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use crate::docker::docker_blocking;
use crate::fleet::Fleet;

// ----- main --------------------------------------------------------------------------

/// Which build a benchmark runs (`DROVER_BIN_DIR`, unless already set).
#[derive(Debug, Clone, Copy)]
pub enum BinDir {
    /// `<target>/release`.
    Release,
    /// The directory of the benchmark's own executable (the same build).
    OwnDir,
}

/// The `main` of a benchmark program called `program`: exits 64 on bad `args`; without
/// `DROVER_BIN_DIR` re-runs itself with it set to `bin_dir` (environment changes
/// in-process would need `unsafe`); else installs the panic clean-up (stopping children
/// as `stop` says) and runs `run` on a two-worker runtime until it ends or SIGTERM or
/// SIGINT arrives (then 130, dropping what `run` holds).
pub fn run_main<A, F>(
    program: &'static str,
    args: Result<A, String>,
    bin_dir: BinDir,
    stop: StopChildren,
    run: impl FnOnce(A) -> F,
) -> ExitCode
where
    F: Future<Output = ExitCode>,
{
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(64);
        }
    };
    if std::env::var_os("DROVER_BIN_DIR").is_none() {
        let exe = std::env::current_exe().expect("own path");
        let dir = match bin_dir {
            BinDir::Release => crate::target_dir().join("release"),
            BinDir::OwnDir => exe.parent().expect("a directory").to_path_buf(),
        };
        return match std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("DROVER_BIN_DIR", &dir)
            .status()
        {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => ExitCode::from(s.code().unwrap_or(1) as u8),
            Err(e) => {
                eprintln!("{program}: cannot re-run with DROVER_BIN_DIR set: {e}");
                ExitCode::FAILURE
            }
        };
    }
    install_abort_cleanup(program, stop);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            code = run(args) => code,
            _ = term.recv() => { eprintln!("{program}: SIGTERM: cleaning up"); ExitCode::from(130) }
            _ = int.recv() => { eprintln!("{program}: SIGINT: cleaning up"); ExitCode::from(130) }
        }
    })
}

// ----- cleanup when the process aborts -----------------------------------------------

/// What to remove if the process dies without running destructors.
#[derive(Debug, Default)]
pub struct AbortCleanup {
    /// `(label, value)` pairs: containers carrying one are removed.
    pub labels: Vec<(String, String)>,
    /// Image reference prefixes (a registry's `127.0.0.1:PORT/`) to untag.
    pub image_prefixes: Vec<String>,
    /// Directories (temporary ones: databases, PKI, logs) to remove.
    pub dirs: Vec<PathBuf>,
}

static ABORT_CLEANUP: Mutex<Option<AbortCleanup>> = Mutex::new(None);

/// Registers more to remove on a panic.
pub fn on_abort(f: impl FnOnce(&mut AbortCleanup)) {
    let mut guard = ABORT_CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(AbortCleanup::default));
}

/// Registers a fleet's containers (by agent label), its registry's image tags and its
/// directories (database, PKI, agents' state and secrets) to remove on a panic.
pub fn on_abort_fleet(fleet: &Fleet) {
    on_abort(|c| {
        for h in fleet.hosts() {
            c.labels
                .push((drover_shared::labels::AGENT.into(), h.name.clone()));
        }
        c.image_prefixes
            .push(format!("{}/", fleet.registry().host()));
        c.dirs.push(fleet.dir().to_path_buf());
        if !fleet.hosts().is_empty() {
            c.dirs
                .extend(fleet.agent_secrets_dir(0).parent().map(PathBuf::from));
        }
    });
}

/// How the panic hook stops this process's children.
#[derive(Debug, Clone, Copy)]
pub enum StopChildren {
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
    /// SIGTERM, then SIGKILL to those left after this long.
    TermThenKill(Duration),
}

/// Installs a panic hook that, after the usual message, stops this process's children
/// (by pid, as `stop` says), then removes the containers and image tags registered with
/// [`on_abort`].
fn install_abort_cleanup(program: &'static str, stop: StopChildren) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("{program}: panicked; cleaning up before exit");
        let signal = |sig: &str| {
            for pid in child_pids() {
                let _ = std::process::Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        };
        match stop {
            StopChildren::Term => signal("-TERM"),
            StopChildren::Kill => signal("-KILL"),
            StopChildren::TermThenKill(grace) => {
                signal("-TERM");
                let until = std::time::Instant::now() + grace;
                while !child_pids().is_empty() && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(50));
                }
                signal("-KILL");
            }
        }
        let cleanup = ABORT_CLEANUP
            .try_lock()
            .ok()
            .and_then(|mut g| g.take())
            .unwrap_or_default();
        for (label, value) in &cleanup.labels {
            if let Err(e) = remove_labelled(label, value) {
                eprintln!("{program}: cleanup: {e}");
            }
        }
        for dir in &cleanup.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        if cleanup.image_prefixes.is_empty() {
            return;
        }
        if let Ok(list) = docker_blocking(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ]) {
            for line in list.lines() {
                if !cleanup.image_prefixes.iter().any(|p| line.starts_with(p)) {
                    continue;
                }
                if let [repo, tag, digest] = line.split_whitespace().collect::<Vec<_>>()[..] {
                    if tag != "<none>" {
                        let _ = docker_blocking(&["rmi", &format!("{repo}:{tag}")]);
                    }
                    if digest != "<none>" {
                        let _ = docker_blocking(&["rmi", &format!("{repo}@{digest}")]);
                    }
                }
            }
        }
    }));
}

/// Pids of this process's direct children (from `/proc/*/stat`), zombies excluded.
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": comm may hold spaces, so cut at the last ')'.
            let mut rest = stat.rsplit_once(')').map_or("", |r| r.1).split_whitespace();
            let state = rest.next();
            let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(me) && state != Some("Z")
        })
        .collect()
}

/// Removes every container labelled `label=value` (blocking); listing errors count as
/// nothing to remove.
pub fn remove_labelled(label: &str, value: &str) -> Result<(), String> {
    let filter = format!("label={label}={value}");
    let Ok(ids) = docker_blocking(&["ps", "-aq", "--filter", &filter]) else {
        return Ok(());
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(ids);
    docker_blocking(&args).map(drop)
}

// ----- the machine -------------------------------------------------------------------

/// This process's limit on open files (`RLIMIT_NOFILE`): `(soft, hard)`, from
/// `/proc/self/limits` (`None` when unreadable; `u64::MAX` for "unlimited"). Children
/// inherit it.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| match v {
            "unlimited" => Some(u64::MAX),
            n => n.parse().ok(),
        });
    Some((values.next()??, values.next()??))
}

/// Fails, saying how to raise it, unless the soft open-files limit is at least `need`
/// (for `what`). Raising it in-process would need `unsafe`; `tests/bench.sh` raises it
/// with `ulimit -n` before starting the programs.
pub fn require_open_files(need: u64, what: &str) -> Result<(), String> {
    let Some((soft, hard)) = open_files_limit() else {
        return Err("cannot read RLIMIT_NOFILE from /proc/self/limits".into());
    };
    if soft >= need {
        return Ok(());
    }
    let raise = if hard >= need {
        format!("`ulimit -n {}` (the hard limit allows it)", hard.min(65536))
    } else {
        format!("raising the hard limit (now {hard}) first, e.g. in /etc/security/limits.conf")
    };
    Err(format!(
        "the open-files limit (RLIMIT_NOFILE, soft) is {soft}, but {what} need at least {need}: run through tests/bench.sh (it raises it) or run {raise} first"
    ))
}

/// CPU time (user + system, all threads) process `pid` used so far, in seconds, from
/// `/proc/PID/stat`; `None` when it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": utime and stime are fields 14 and 15, i.e. the 12th
    // and 13th after the closing ')'.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`, read once; 100, Linux's value, if that
/// fails).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

// ----- flags -------------------------------------------------------------------------

/// The program's arguments, read flag by flag.
pub struct Flags(std::iter::Skip<std::env::Args>);

impl Flags {
    /// The arguments after the program name.
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1))
    }

    /// The next flag, if any.
    pub fn flag(&mut self) -> Option<String> {
        self.0.next()
    }

    /// The value following `flag`; else `<flag> takes a value`.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.0.next().ok_or(format!("{flag} takes a value"))
    }

    /// The value following `flag` as a number in `range`; else `<flag> takes a value`
    /// (none) or `<flag> takes A..=B`.
    pub fn number_in(&mut self, flag: &str, range: RangeInclusive<usize>) -> Result<usize, String> {
        self.value(flag)?
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| format!("{flag} takes {}..={}", range.start(), range.end()))
    }

    /// The next argument parsed as a `T` that passes `valid`; else `err` (also when there
    /// is none).
    pub fn parsed<T: FromStr>(
        &mut self,
        valid: impl FnOnce(&T) -> bool,
        err: &str,
    ) -> Result<T, String> {
        self.0
            .next()
            .and_then(|v| v.parse().ok())
            .filter(valid)
            .ok_or_else(|| err.to_string())
    }

    /// The next argument as a path; else `<flag> takes a path`.
    pub fn path(&mut self, flag: &str) -> Result<PathBuf, String> {
        self.0
            .next()
            .map(PathBuf::from)
            .ok_or(format!("{flag} takes a path"))
    }
}

// ----- statistics --------------------------------------------------------------------

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median (the mean of the middle two for an even count); NaN for no samples.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Order statistics of samples in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// [`median`] and nearest-rank percentiles; panics on no samples.
    pub fn of(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Self {
            median: median(&s),
            p90: rank(0.9),
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

/// `PASS` or `FAIL`.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let s = Stats::of(&[5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0]);
        assert_eq!((s.median, s.p90, s.min, s.max), (5.5, 9.0, 1.0, 10.0));
    }

    #[test]
    fn reads_this_process_limits_and_cpu() {
        let (soft, hard) = open_files_limit().expect("RLIMIT_NOFILE");
        assert!(soft > 0 && soft <= hard);
        assert!(require_open_files(1, "one file").is_ok());
        let err = require_open_files(u64::MAX, "everything").expect_err("too many");
        assert!(err.contains("RLIMIT_NOFILE"), "{err}");
        assert!(cpu_seconds(std::process::id()).is_some_and(|s| s >= 0.0));
    }
}
