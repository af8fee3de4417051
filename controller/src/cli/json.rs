//! The `--json` output of `deploy`, `rollback`, `status` and `history`: one object per
//! line, with typed fields beside every message, so CI reads the phase, host, batch and
//! elapsed time instead of parsing words. Batches count from 1, as on screen.

use std::collections::HashMap;

use drover_proto::v1::{DeploymentEvent, DeploymentInfo, HostStep, HostStepKind};

use super::progress::{phase_name, state_name};

/// What an event needs from its deployment to carry typed fields: when it started and
/// which batch each host is in.
#[derive(Debug, Default)]
pub struct EventContext {
    /// The deployment's creation time (ms since the epoch); 0 when unknown.
    created_ms: u64,
    /// Host name to its batch (from 0, as on the wire).
    batch_of: HashMap<String, u32>,
}

impl EventContext {
    /// The context of deployment `s`.
    pub fn of(s: &DeploymentInfo) -> Self {
        Self {
            created_ms: s.created_ms,
            batch_of: s.hosts.iter().map(|h| (h.host.clone(), h.batch)).collect(),
        }
    }
}

/// One event: `{"type": "event", "seq", "at_ms", "elapsed_ms", "host", "batch",
/// "phase", "state", "message"}`; fields that do not apply are `null`.
pub fn event_json(e: &DeploymentEvent, ctx: &EventContext) -> serde_json::Value {
    let host = (!e.host.is_empty()).then_some(e.host.as_str());
    serde_json::json!({
        "type": "event", "seq": e.seq, "at_ms": e.at_ms,
        "elapsed_ms": (ctx.created_ms > 0).then(|| e.at_ms.saturating_sub(ctx.created_ms)),
        "host": host,
        "batch": host.and_then(|h| ctx.batch_of.get(h)).map(|b| b + 1),
        "phase": (e.phase != 0).then(|| phase_name(e.phase)),
        "state": (e.state != 0).then(|| state_name(e.state)),
        "message": e.message,
    })
}

/// A host's steps: `{"drain_ms": 12, ..., "notes": {"stop": "..."}}`; only the steps
/// that ran, `notes` only when one has something to say.
fn steps_json(steps: &[HostStep]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut notes = serde_json::Map::new();
    for s in steps {
        let name = step_name(s.kind);
        out.insert(format!("{name}_ms"), s.ms.into());
        if !s.note.is_empty() {
            notes.insert(name.to_string(), s.note.clone().into());
        }
    }
    if !notes.is_empty() {
        out.insert("notes".into(), notes.into());
    }
    out.into()
}

/// The word of a step kind, as in the CLI.
pub fn step_name(kind: i32) -> &'static str {
    match HostStepKind::try_from(kind).unwrap_or_default() {
        HostStepKind::Drain => "drain",
        HostStepKind::Create => "create",
        HostStepKind::Stop => "stop",
        HostStepKind::Start => "start",
        HostStepKind::Ready => "ready",
        HostStepKind::Up => "up",
        HostStepKind::Unspecified => "step",
    }
}

/// A deployment as JSON (used by `--json` outputs).
pub fn snapshot_json(s: &DeploymentInfo) -> serde_json::Value {
    let hosts: Vec<_> = s
        .hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "host": h.host, "batch": h.batch + 1, "phase": phase_name(h.phase),
                "from_version": h.from_version, "to_version": h.to_version, "error": h.error,
                "started_ms": h.started_ms, "finished_ms": h.finished_ms,
                "duration_ms": h.finished_ms.checked_sub(h.started_ms).filter(|_| h.started_ms > 0),
                "steps": steps_json(&h.steps),
            })
        })
        .collect();
    serde_json::json!({
        "type": "deployment", "id": s.id, "service": s.service, "kind": s.kind,
        "version": s.version, "image": s.image, "pinned": s.pinned,
        "state": state_name(s.state), "requested_by": s.requested_by,
        "created_ms": s.created_ms, "finished_ms": s.finished_ms, "error": s.error,
        "epoch": s.epoch, "batches": s.batches, "hosts": hosts,
        "environment": (!s.environment.is_empty()).then_some(&s.environment),
        "release_id": (!s.release_id.is_empty()).then_some(&s.release_id),
        "gate_note": (!s.gate_note.is_empty()).then_some(&s.gate_note),
        "hooks": super::hooks::json(&s.hooks),
        "bakes": super::bake::json(&s.bakes),
    })
}

#[cfg(test)]
mod tests {
    use drover_proto::v1::{DeploymentHostInfo, HostPhase};

    use super::*;

    #[test]
    fn events_carry_host_batch_phase_and_elapsed_and_batches_count_from_one() {
        let s = DeploymentInfo {
            created_ms: 10_000,
            hosts: vec![DeploymentHostInfo {
                host: "web-2".into(),
                batch: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let ctx = EventContext::of(&s);
        let e = DeploymentEvent {
            seq: 3,
            at_ms: 13_900,
            host: "web-2".into(),
            message: "draining".into(),
            phase: HostPhase::Draining as i32,
            state: 0,
        };
        let v = event_json(&e, &ctx);
        assert_eq!(v["host"], "web-2");
        assert_eq!(v["batch"], 2);
        assert_eq!(v["phase"], "draining");
        assert_eq!(v["elapsed_ms"], 3_900);
        assert!(v["state"].is_null());
        assert_eq!(snapshot_json(&s)["hosts"][0]["batch"], 2);
        let whole = event_json(
            &DeploymentEvent {
                host: String::new(),
                ..e
            },
            &ctx,
        );
        assert!(
            whole["host"].is_null() && whole["batch"].is_null(),
            "{whole}"
        );
    }

    #[test]
    fn host_steps_are_typed_fields_with_their_notes() {
        let step = |kind: HostStepKind, ms: u64, note: &str| HostStep {
            kind: kind as i32,
            ms,
            note: note.into(),
        };
        let steps = vec![
            step(HostStepKind::Drain, 12, ""),
            step(HostStepKind::Stop, 10_000, "old container ignored SIGTERM"),
            step(HostStepKind::Up, 210, ""),
        ];
        let v = steps_json(&steps);
        assert_eq!(v["drain_ms"], 12);
        assert_eq!(v["stop_ms"], 10_000);
        assert_eq!(v["up_ms"], 210);
        assert!(v["create_ms"].is_null());
        assert_eq!(v["notes"]["stop"], "old container ignored SIGTERM");
        assert!(steps_json(&steps[..1])["notes"].is_null());
        assert_eq!(
            super::super::summary::steps_line(&steps).unwrap(),
            "drain 12 ms · stop 10 s · up 210 ms"
        );
    }
}
