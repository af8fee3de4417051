//! Reading what processes logged: lines without terminal colours, the line that holds
//! every one of a set of words, and waiting for such a line to be written.

use std::time::Duration;

/// `text` without ANSI escape sequences (the text log format colours its fields).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The first line of `text` containing every needle (compared case-insensitively,
/// colours removed).
pub fn find_line(text: &str, needles: &[&str]) -> Option<String> {
    let needles: Vec<String> = needles.iter().map(|n| n.to_lowercase()).collect();
    strip_ansi(text)
        .lines()
        .find(|line| {
            let lower = line.to_lowercase();
            needles.iter().all(|n| lower.contains(n.as_str()))
        })
        .map(str::to_string)
}

/// Waits until `logs()` has a line holding every needle, and returns it; panics after
/// `timeout` with the logs.
pub async fn wait_line(
    timeout: Duration,
    what: &str,
    logs: impl Fn() -> String,
    needles: &[&str],
) -> String {
    let found = crate::poll(timeout, || {
        let text = logs();
        async move { find_line(&text, needles).ok_or(text) }
    })
    .await;
    match found {
        Ok(line) => {
            eprintln!("found {what}: {}", line.trim());
            line
        }
        Err(text) => panic!(
            "no line with {needles:?} ({what}) within {timeout:?} in:\n{}",
            strip_ansi(&text)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_line_through_colours() {
        let text = "a\n\u{1b}[33m WARN\u{1b}[0m \u{1b}[2mpeer\u{1b}[0m=127.0.0.1:5 refused: TLS\nb";
        assert_eq!(
            find_line(text, &["peer=127.0.0.1:5", "tls"]).as_deref(),
            Some(" WARN peer=127.0.0.1:5 refused: TLS")
        );
        assert_eq!(find_line(text, &["peer", "nothing"]), None);
    }
}
