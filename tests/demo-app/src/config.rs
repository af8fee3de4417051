//! The app's configuration, read once from the environment at start and validated, so
//! a bad value exits with a message naming it instead of misbehaving later.

use std::fmt;
use std::time::Duration;

/// How the app misbehaves, on purpose, so tests can exercise every failure of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Healthy: ready at once, every request answered.
    Ok,
    /// `/ready` answers 503 forever while `/` still works: a readiness deadline must fire.
    NeverReady,
    /// Exits 1 right at start: a deploy must notice the container exited.
    Crash,
    /// Answers 500 on this share (percent) of `/` requests, spread evenly: canary metrics.
    ErrorRate(u8),
    /// Ready, then exits 1 after this delay: a host that dies after its readiness passed.
    CrashAfter(Duration),
}

impl Mode {
    /// Parses `ok`, `never-ready`, `crash`, `error-rate:<pct>` or `crash-after:<ms>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid DEMO_MODE {s:?}: {why}");
        match s.trim() {
            "" | "ok" => Ok(Self::Ok),
            "never-ready" => Ok(Self::NeverReady),
            "crash" => Ok(Self::Crash),
            other => match other.split_once(':') {
                Some(("error-rate", pct)) => match pct.parse::<u8>() {
                    Ok(p) if p <= 100 => Ok(Self::ErrorRate(p)),
                    _ => Err(bad("error-rate takes a percentage from 0 to 100")),
                },
                Some(("crash-after", ms)) => ms
                    .parse::<u64>()
                    .map(|ms| Self::CrashAfter(Duration::from_millis(ms)))
                    .map_err(|_| bad("crash-after takes a delay in milliseconds")),
                _ => Err(bad(
                    "expected ok, never-ready, crash, error-rate:<pct> or crash-after:<ms>",
                )),
            },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::NeverReady => f.write_str("never-ready"),
            Self::Crash => f.write_str("crash"),
            Self::ErrorRate(p) => write!(f, "error-rate:{p}"),
            Self::CrashAfter(d) => write!(f, "crash-after:{}", d.as_millis()),
        }
    }
}

/// Everything the app reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `DEMO_VERSION`: echoed in every `/` answer so a test can tell which version served it.
    pub version: String,
    /// `DEMO_ADDR` (default `0.0.0.0`): `0.0.0.0` inside a container, loopback in tests
    /// that run the binary directly.
    pub addr: String,
    /// `DEMO_PORT` (default 8080).
    pub port: u16,
    /// `DEMO_MODE` (default `ok`).
    pub mode: Mode,
    /// `DEMO_IGNORE_SIGTERM=1`: install no SIGTERM handler, so that as a container's
    /// PID 1 the app ignores `docker stop` until it is killed (an app that needs
    /// `--init`); SIGINT still stops it.
    pub ignore_sigterm: bool,
}

impl Config {
    /// Reads the configuration through `var` (the process environment in `main`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let port = match var("DEMO_PORT") {
            None => 8080,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("invalid DEMO_PORT {p:?}: expected a port from 1 to 65535")
                })?,
        };
        Ok(Self {
            version: var("DEMO_VERSION").unwrap_or_else(|| "dev".to_string()),
            addr: var("DEMO_ADDR").unwrap_or_else(|| "0.0.0.0".to_string()),
            port,
            mode: Mode::parse(&var("DEMO_MODE").unwrap_or_default())?,
            ignore_sigterm: var("DEMO_IGNORE_SIGTERM").is_some_and(|v| v == "1"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("").unwrap(), Mode::Ok);
        assert_eq!(Mode::parse("never-ready").unwrap(), Mode::NeverReady);
        assert_eq!(Mode::parse("error-rate:20").unwrap(), Mode::ErrorRate(20));
        assert_eq!(
            Mode::parse("crash-after:3000").unwrap(),
            Mode::CrashAfter(Duration::from_secs(3))
        );
        assert_eq!(
            Mode::parse("crash-after:3000").unwrap().to_string(),
            "crash-after:3000"
        );
        assert!(
            Mode::parse("error-rate:101")
                .unwrap_err()
                .contains("error-rate:101")
        );
        assert!(Mode::parse("sometimes").unwrap_err().contains("sometimes"));
    }

    #[test]
    fn env_defaults_and_errors() {
        let c = Config::from_env(|_| None).unwrap();
        assert_eq!(
            (c.port, c.mode, c.addr.as_str()),
            (8080, Mode::Ok, "0.0.0.0")
        );
        let e = Config::from_env(|k| (k == "DEMO_PORT").then(|| "http".to_string()));
        assert!(e.unwrap_err().contains("\"http\""));
    }
}
