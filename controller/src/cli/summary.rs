//! The last word on a deployment: which host runs what, how long each took, and the
//! one-line headline (`rolled back: canary web-1 ...`) the terminal shows.

use std::time::Duration;

use drover_proto::v1::{DeploymentInfo, DeploymentState, HostPhase, HostStep};
use drover_shared::duration::human;

use super::json::{snapshot_json, step_name};
use super::progress::{Mode, phase_name, state_name};

/// `state: message` in words, without saying the state twice when the message starts
/// with it already (`rolled back: ...`, not `rolled_back: rolled back: ...`).
pub fn headline(state: i32, message: &str) -> String {
    if state == 0 {
        return message.to_owned();
    }
    let words = state_name(state).replace('_', " ");
    if message.starts_with(&words) {
        message.to_owned()
    } else {
        format!("{words}: {message}")
    }
}

/// Prints the final word on a deployment: which host runs what; returns the exit code
/// (0 succeeded, 1 anything else).
pub fn summarize(s: &DeploymentInfo, mode: Mode) -> i32 {
    let ok = s.state == DeploymentState::Succeeded as i32;
    if mode == Mode::Json {
        println!("{}", snapshot_json(s));
        return if ok { 0 } else { 1 };
    }
    println!();
    println!(
        "deployment {} {}",
        s.id,
        headline(
            s.state,
            if s.error.is_empty() {
                "ok"
            } else {
                crate::logtail::first_line(&s.error)
            }
        )
    );
    println!(
        "  {:<20} {:<14} {:<12} {:<10} ERROR",
        "HOST", "PHASE", "VERSION", "TOOK"
    );
    for h in &s.hosts {
        let version = match HostPhase::try_from(h.phase).unwrap_or_default() {
            HostPhase::Done => h.to_version.as_str(),
            HostPhase::LeftDrained => "unknown",
            _ => h.from_version.as_str(),
        };
        let took = if h.started_ms > 0 && h.finished_ms >= h.started_ms {
            human(Duration::from_millis(h.finished_ms - h.started_ms)).to_string()
        } else {
            "-".into()
        };
        println!(
            "  {:<20} {:<14} {:<12} {:<10} {}",
            h.host,
            phase_name(h.phase),
            if version.is_empty() { "-" } else { version },
            took,
            crate::logtail::first_line(&h.error)
        );
        // The failed container's last log lines, kept with the deployment.
        for line in h.error.lines().skip(1) {
            println!("      {line}");
        }
        if let Some(line) = steps_line(&h.steps) {
            println!("      {line}");
        }
        for s in h.steps.iter().filter(|s| !s.note.is_empty()) {
            println!("      {}: {}", step_name(s.kind), s.note);
        }
    }
    print!("{}", super::hooks::text(&s.hooks, "  "));
    print!(
        "{}",
        super::bake::text(&s.bakes, "  ", crate::store::now_ms())
    );
    if ok { 0 } else { 1 }
}

/// `drain 12ms · create 30ms · stop 110ms · ...`: the host's steps that ran, in order.
pub fn steps_line(steps: &[HostStep]) -> Option<String> {
    if steps.is_empty() {
        return None;
    }
    let words: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                step_name(s.kind),
                human(Duration::from_millis(s.ms))
            )
        })
        .collect();
    Some(words.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_says_the_state_once_in_words() {
        let rb = DeploymentState::RolledBack as i32;
        assert_eq!(
            headline(rb, "rolled back: canary breached"),
            "rolled back: canary breached"
        );
        assert_eq!(
            headline(rb, "canary breached"),
            "rolled back: canary breached"
        );
        assert_eq!(headline(0, "batch 1/2: web-1"), "batch 1/2: web-1");
        assert_eq!(
            headline(DeploymentState::Succeeded as i32, "ok"),
            "succeeded: ok"
        );
    }
}
