//! A backend's cumulative request counters and the HAProxy process that counts them:
//! what an error budget is computed from. Counters live in the process, so a reload or
//! a restart starts them from zero again; [`ProcessInfo`] tells the processes apart.

use std::collections::HashMap;

use super::error::LbError;
use super::haproxy::HaproxyRuntime;
use super::stats::{self, ParseError};

/// A backend's counters since its HAProxy process started (the `BACKEND` row of `show
/// stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCounters {
    /// HTTP requests the backend handled (`req_tot`, filled for HTTP backends by
    /// HAProxy 2.6); sessions (`stot`) where `req_tot` is empty (a TCP backend).
    pub requests: u64,
    /// Responses with a 5xx status (`hrsp_5xx`): the servers' and HAProxy's own
    /// 502/503/504 when no server could answer.
    pub errors_5xx: u64,
}

/// Which process answered (`show info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `Pid`.
    pub pid: u32,
    /// `Start_time_sec` (Unix seconds); 0 where HAProxy does not print it.
    pub start_unix_s: u64,
}

/// Reads the `BACKEND` row of `backend` from a `show stat` answer.
pub fn parse_backend_counters(
    text: &str,
    backend: &str,
) -> Result<Option<BackendCounters>, ParseError> {
    let rows = stats::parse_show_stat(text)?;
    let Some(row) = rows.iter().find(|r| r.names() == (backend, "BACKEND")) else {
        return Ok(None);
    };
    let requests = if row.get("req_tot").trim().is_empty() {
        row.counter("stot")?
    } else {
        row.counter("req_tot")?
    };
    Ok(Some(BackendCounters {
        requests,
        errors_5xx: row.counter("hrsp_5xx")?,
    }))
}

/// Reads `Pid` and `Start_time_sec` from a `show info` answer (`Name: value` lines).
pub fn parse_process_info(text: &str) -> Result<ProcessInfo, ParseError> {
    let fields: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let pid = fields
        .get("Pid")
        .ok_or_else(|| ParseError("show info has no Pid line".into()))?;
    let pid = pid
        .parse()
        .map_err(|_| ParseError(format!("show info Pid {pid:?} is not a number")))?;
    let start_unix_s = match fields.get("Start_time_sec") {
        Some(s) => s
            .parse()
            .map_err(|_| ParseError(format!("show info Start_time_sec {s:?} is not a number")))?,
        None => 0,
    };
    Ok(ProcessInfo { pid, start_unix_s })
}

impl HaproxyRuntime {
    /// `backend`'s counters and the process that counted them. Two commands, so the
    /// process is read before and after the counters: when a reload came between them
    /// the read is repeated (up to three times), so counters are never paired with the
    /// wrong process.
    pub async fn backend_counters(
        &self,
        backend: &str,
    ) -> Result<(BackendCounters, ProcessInfo), LbError> {
        let stat_cmd = format!("show stat {backend} 2 -1");
        let mut last = None;
        for _ in 0..3 {
            let before = self.process_info().await?;
            let stat = match self.command(&stat_cmd).await {
                Err(LbError::Rejected { answer, .. }) if answer.starts_with("No such proxy") => {
                    return Err(self.missing(backend));
                }
                other => other?,
            };
            let counters = parse_backend_counters(&stat, backend)
                .map_err(|source| self.parse_failure(&stat_cmd, source))?
                .ok_or_else(|| self.missing(backend))?;
            let after = self.process_info().await?;
            if before == after {
                return Ok((counters, after));
            }
            last = Some(after);
        }
        Err(LbError::Rejected {
            haproxy: self.addr().to_string(),
            command: stat_cmd,
            answer: format!(
                "the process answering changed during every read (now pid {}); HAProxy is reloading repeatedly",
                last.map_or(0, |p| p.pid)
            ),
        })
    }

    /// `show info`: which process answers.
    pub async fn process_info(&self) -> Result<ProcessInfo, LbError> {
        let info = self.command("show info").await?;
        parse_process_info(&info).map_err(|source| self.parse_failure("show info", source))
    }

    fn missing(&self, backend: &str) -> LbError {
        LbError::NoSuchBackend {
            haproxy: self.addr().to_string(),
            backend: backend.to_string(),
        }
    }

    fn parse_failure(&self, command: &str, source: ParseError) -> LbError {
        LbError::Parse {
            haproxy: self.addr().to_string(),
            command: command.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from HAProxy 2.6.12: `show stat web 2 -1` after 20 requests, of which
    /// one answered 500 by the server and ten 503 by HAProxy (a server refused them).
    const STAT_BACKEND: &str = include_str!("fixtures/show_stat_backend.txt");
    /// Captured from HAProxy 2.6.12: `show info`.
    const INFO: &str = include_str!("fixtures/show_info.txt");

    #[test]
    fn reads_the_backend_row_from_real_output() {
        let c = parse_backend_counters(STAT_BACKEND, "web").unwrap();
        assert_eq!(
            c,
            Some(BackendCounters {
                requests: 20,
                errors_5xx: 11
            })
        );
        assert_eq!(parse_backend_counters(STAT_BACKEND, "api").unwrap(), None);
    }

    #[test]
    fn sessions_stand_in_for_requests_on_a_tcp_backend() {
        let text = "# pxname,svname,stot,req_tot,hrsp_5xx\ndb,BACKEND,42,,\n";
        let c = parse_backend_counters(text, "db").unwrap().unwrap();
        assert_eq!((c.requests, c.errors_5xx), (42, 0));
    }

    #[test]
    fn reads_pid_and_start_time_from_real_output() {
        assert_eq!(
            parse_process_info(INFO).unwrap(),
            ProcessInfo {
                pid: 4026,
                start_unix_s: 1796535860
            }
        );
        assert_eq!(
            parse_process_info("Name: HAProxy\nPid: 7\n").unwrap(),
            ProcessInfo {
                pid: 7,
                start_unix_s: 0
            }
        );
        assert!(parse_process_info("Unknown command.\n").is_err());
    }
}
