//! Log lines on request, for the tests of `drover logs`: `GET /log/<text>` writes
//! `<text>` to stdout, `GET /log-stderr/<text>` to stderr, and `GET /log-env/<NAME>`
//! writes `NAME=<value>` of an environment variable to stdout: an app that logs its own
//! secret, so a test can check the value never leaves the host. The answers never carry
//! the value.

use std::io::Write;

use crate::http::Response;

/// Answers the `/log...` paths; `None` for any other path.
pub fn route(path: &str) -> Option<Response> {
    if let Some(text) = path.strip_prefix("/log/") {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
        return Some(Response::text(200, "logged to stdout\n"));
    }
    if let Some(text) = path.strip_prefix("/log-stderr/") {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
        return Some(Response::text(200, "logged to stderr\n"));
    }
    if let Some(name) = path.strip_prefix("/log-env/") {
        return Some(match std::env::var(name) {
            Ok(v) => {
                let _ = writeln!(std::io::stdout().lock(), "{name}={v}");
                Response::text(200, format!("logged {name}\n"))
            }
            Err(_) => Response::text(404, format!("no environment variable {name}\n")),
        });
    }
    None
}
