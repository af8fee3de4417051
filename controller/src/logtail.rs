//! The last log lines of a container whose swap failed, as they are kept with the
//! deployment: appended to the host's failure message (so `drover deploy`, `drover
//! status` and the history show them where the failure is) in a form that
//! `drover logs --deployment` reads back.

/// Introduces the lines in a failure message.
pub const HEADER: &str = "last log lines of the failed container:";
/// Prefix of each kept line.
const LINE: &str = "  | ";
/// Most lines kept per failure.
pub const MAX_LINES: usize = 20;

/// `message` followed by the last [`MAX_LINES`] of `lines`, one per line.
pub fn with_log_tail(message: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return message.to_string();
    }
    let mut out = format!("{message}\n  {HEADER}");
    for l in &lines[lines.len().saturating_sub(MAX_LINES)..] {
        out.push('\n');
        out.push_str(LINE);
        out.push_str(l.trim_end_matches(['\n', '\r']));
    }
    out
}

/// The kept lines of a failure message written by [`with_log_tail`] (none otherwise).
pub fn log_tail_of(message: &str) -> Vec<String> {
    let Some((_, rest)) = message.split_once(HEADER) else {
        return vec![];
    };
    rest.lines()
        .filter_map(|l| l.strip_prefix(LINE))
        .map(str::to_string)
        .collect()
}

/// The first line of a failure message (the failure itself, without kept lines).
pub fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_lines_round_trip_through_the_failure_message() {
        let lines: Vec<String> = (0..25).map(|i| format!("line {i}")).collect();
        let message = with_log_tail("h1: container web-2 was not ready", &lines);
        assert_eq!(first_line(&message), "h1: container web-2 was not ready");
        assert!(message.contains("\n  last log lines of the failed container:\n  | line 5\n"));
        let kept = log_tail_of(&message);
        assert_eq!(kept.len(), MAX_LINES);
        assert_eq!(kept[0], "line 5");
        assert_eq!(kept[19], "line 24");
        assert_eq!(with_log_tail("plain", &[]), "plain");
        assert!(log_tail_of("plain").is_empty());
    }
}
