//! `drover deploy ... --plan` and `drover rollback SERVICE --plan`: asks the controller
//! what the deploy or rollback would do and prints it (or one JSON object with
//! `--json`). Nothing is changed. Exit 0 with the plan, 2 with the reason it would be
//! refused.

use drover_proto::v1::{DeploymentHostInfo, PlanRequest, PlanResponse};
use serde_json::{Value, json};

use super::{Client, EXIT_REFUSED};

/// Asks for the plan of `request` and prints it; `rerun` is the command that would do it.
pub async fn run(
    client: &mut Client,
    request: PlanRequest,
    json: bool,
    rerun: &str,
) -> anyhow::Result<i32> {
    let plan = match client.plan(request).await {
        Ok(r) => r.into_inner(),
        Err(status) if super::is_refusal(status.code()) => {
            if json {
                println!(
                    "{}",
                    json!({ "type": "refused", "reason": status.message() })
                );
            } else {
                eprintln!("error: this would be refused: {}", status.message());
            }
            return Ok(EXIT_REFUSED);
        }
        Err(status) => anyhow::bail!(
            "the controller could not make the plan ({}: {}); nothing was changed",
            status.code(),
            status.message()
        ),
    };
    if json {
        println!("{}", plan_json(&plan));
    } else {
        print!("{}", plan_text(&plan, rerun));
    }
    Ok(0)
}

/// What a plan says of a service without a load balancer.
const NOT_DRAINED: &str = "no load balancer (kind = \"none\"): hosts are not drained; a batch's hosts stop serving while they swap";

/// Whether `h` moves to another version (a host already on it is swapped again).
fn changes(h: &DeploymentHostInfo) -> bool {
    h.from_version != h.to_version
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn secs(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
}

/// The plan for a terminal: the facts first, then stage by stage, batch by batch.
pub fn plan_text(p: &PlanResponse, rerun: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "Plan: {} of {} {} (nothing has been changed)\n",
        p.kind, p.service, p.version
    );
    let row = |w: &mut String, key: &str, value: &str| {
        let _ = writeln!(w, "  {key:<10}{value}");
    };
    if !p.environment.is_empty() {
        row(w, "env", &p.environment);
    }
    if !p.release_id.is_empty() {
        row(w, "release", &p.release_id);
    }
    if !p.gate_note.is_empty() {
        row(w, "gates", &p.gate_note);
    }
    row(w, "image", &p.image);
    // The digest, then how it was found (or why not) on a line of its own.
    match p.digest_note.split_once(": ") {
        _ if !p.pinned.is_empty() => {
            row(w, "digest", &p.pinned);
            row(w, "", &format!("({})", p.digest_note));
        }
        Some((what, why)) => {
            row(w, "digest", what);
            row(w, "", &format!("({why})"));
        }
        None => row(w, "digest", &p.digest_note),
    }
    row(
        w,
        "pull",
        if p.pulls {
            "every host pulls first; a failed pull stops it before any host is drained"
        } else {
            "none: each host restarts the container it keeps"
        },
    );
    let starts = match (p.held_by.is_empty(), p.starts_ms) {
        (true, _) => "at once".to_string(),
        (false, 0) => format!("not yet: {}", p.held_by),
        (false, at) => format!("{}, {}", rfc3339(at), p.held_by),
    };
    row(w, "starts", &starts);
    if p.windows.is_empty() {
        row(w, "windows", "none: stages may run at any time");
    } else {
        row(
            w,
            "windows",
            &format!("{} (each stage waits for one)", p.windows.join("; ")),
        );
    }
    let changing = p.hosts.iter().filter(|h| changes(h)).count();
    let same = p.hosts.len() - changing;
    let mut hosts = format!("{} targets: {changing} change", p.hosts.len());
    if same > 0 {
        let _ = write!(hosts, ", {same} already run {} (swapped again)", p.version);
    }
    row(w, "hosts", &hosts);
    if p.no_load_balancer {
        row(w, "drain", NOT_DRAINED);
    }
    row(
        w,
        "capacity",
        &if p.start_first {
            format!(
                "no host leaves rotation (start-first); at most {} hand over at once",
                p.max_batch
            )
        } else if p.no_load_balancer {
            format!(
                "at most {} out of service at once, while they swap",
                p.max_out_of_rotation
            )
        } else {
            format!("at most {} out of rotation at once", p.max_out_of_rotation)
        },
    );
    let staged = p.stages.len() > 1;
    let width = p
        .hosts
        .iter()
        .map(|h| h.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for (i, stage) in p.stages.iter().enumerate() {
        let _ = writeln!(w);
        if staged {
            let mut gate = format!(
                "stage {} of {}: {} host{}",
                i + 1,
                p.stages.len(),
                stage.hosts,
                if stage.hosts == 1 { "" } else { "s" }
            );
            if stage.bake_ms > 0 {
                let _ = write!(gate, ", bakes {}", secs(stage.bake_ms));
            }
            if stage.manual && i + 1 < p.stages.len() {
                gate.push_str(", then waits for `drover promote ID`");
            }
            let _ = writeln!(w, "  {gate}");
        }
        let mut last_batch = None;
        for h in p.hosts.iter().filter(|h| h.stage as usize == i) {
            let batch = if last_batch == Some(h.batch) {
                String::new()
            } else {
                format!("batch {}", h.batch + 1)
            };
            last_batch = Some(h.batch);
            let from = if h.from_version.is_empty() {
                "(none)"
            } else {
                &h.from_version
            };
            let note = if changes(h) {
                String::new()
            } else {
                format!("   already runs {}", h.to_version)
            };
            let _ = writeln!(
                w,
                "    {batch:<9} {:<width$}  {from} -> {}{note}",
                h.host, h.to_version
            );
        }
    }
    let _ = writeln!(w, "\nTo do it: {rerun}");
    out
}

/// The plan as one JSON object.
pub fn plan_json(p: &PlanResponse) -> Value {
    let stages: Vec<Value> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut batches: Vec<Value> = Vec::new();
            let mut current: Option<(u32, Vec<Value>)> = None;
            for h in p.hosts.iter().filter(|h| h.stage as usize == i) {
                let host = json!({
                    "host": h.host,
                    "from_version": h.from_version,
                    "to_version": h.to_version,
                    "changes": changes(h),
                });
                match &mut current {
                    Some((b, hosts)) if *b == h.batch => hosts.push(host),
                    _ => {
                        if let Some((b, hosts)) = current.take() {
                            batches.push(json!({ "batch": b + 1, "hosts": hosts }));
                        }
                        current = Some((h.batch, vec![host]));
                    }
                }
            }
            if let Some((b, hosts)) = current {
                batches.push(json!({ "batch": b + 1, "hosts": hosts }));
            }
            json!({
                "stage": i + 1,
                "hosts": s.hosts,
                "bake_ms": s.bake_ms,
                "promotion": if s.manual { "manual" } else { "auto" },
                "batches": batches,
            })
        })
        .collect();
    json!({
        "type": "plan",
        "kind": p.kind,
        "service": p.service,
        "version": p.version,
        "image": p.image,
        "pinned": Some(&p.pinned).filter(|s| !s.is_empty()),
        "digest_note": p.digest_note,
        "pulls": p.pulls,
        "starts_at": Some(p.starts_ms).filter(|ms| *ms > 0).map(rfc3339),
        "held_by": Some(&p.held_by).filter(|s| !s.is_empty()),
        "environment": Some(&p.environment).filter(|s| !s.is_empty()),
        "release_id": Some(&p.release_id).filter(|s| !s.is_empty()),
        "gate_note": Some(&p.gate_note).filter(|s| !s.is_empty()),
        "windows": p.windows,
        "max_out_of_rotation": p.max_out_of_rotation,
        "start_first": p.start_first,
        "load_balancer": if p.no_load_balancer { "none" } else { "haproxy" },
        "changing_hosts": p.hosts.iter().filter(|h| changes(h)).count(),
        "unchanged_hosts": p.hosts.iter().filter(|h| !changes(h)).count(),
        "stages": stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::v1::PlanStage;

    fn host(name: &str, stage: u32, batch: u32, from: &str) -> DeploymentHostInfo {
        DeploymentHostInfo {
            host: name.into(),
            stage,
            batch,
            from_version: from.into(),
            to_version: "v2".into(),
            ..Default::default()
        }
    }

    fn staged() -> PlanResponse {
        PlanResponse {
            service: "web".into(),
            kind: "deploy".into(),
            version: "v2".into(),
            image: "reg:5000/web:v2".into(),
            digest_note: "resolved at pull time: registry reg:5000 is not on loopback".into(),
            pulls: true,
            hosts: vec![
                host("web-3", 0, 0, "v1"),
                host("web-1", 1, 1, "v1"),
                host("web-2", 1, 1, "v2"),
            ],
            stages: vec![
                PlanStage {
                    hosts: 1,
                    bake_ms: 300_000,
                    manual: true,
                },
                PlanStage {
                    hosts: 2,
                    ..Default::default()
                },
            ],
            max_out_of_rotation: 2,
            ..Default::default()
        }
    }

    #[test]
    fn text_shows_stages_gates_and_hosts_that_already_run_the_version() {
        let text = plan_text(&staged(), "drover deploy -f drover.toml --version v2");
        for line in [
            "  digest    resolved at pull time\n            (registry reg:5000 is not on loopback)\n",
            "  hosts     3 targets: 2 change, 1 already run v2 (swapped again)\n",
            "  stage 1 of 2: 1 host, bakes 5m, then waits for `drover promote ID`\n",
            "    batch 1   web-3  v1 -> v2\n",
            "  stage 2 of 2: 2 hosts\n",
            "    batch 2   web-1  v1 -> v2\n",
            "              web-2  v2 -> v2   already runs v2\n",
            "\nTo do it: drover deploy -f drover.toml --version v2\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
    }

    #[test]
    fn text_and_json_say_a_service_without_a_load_balancer_is_not_drained() {
        let plain = staged();
        let text = plan_text(&plain, "drover deploy");
        assert!(!text.contains("not drained"), "{text}");
        assert!(text.contains("  capacity  at most 2 out of rotation at once\n"));
        assert_eq!(plan_json(&plain)["load_balancer"], "haproxy");
        let none = PlanResponse {
            no_load_balancer: true,
            ..staged()
        };
        let text = plan_text(&none, "drover deploy");
        for line in [
            "  drain     no load balancer (kind = \"none\"): hosts are not drained; a batch's hosts stop serving while they swap\n",
            "  capacity  at most 2 out of service at once, while they swap\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
        assert_eq!(plan_json(&none)["load_balancer"], "none");
    }

    #[test]
    fn json_groups_hosts_by_stage_and_batch() {
        let v = plan_json(&staged());
        assert_eq!(v["type"], "plan");
        assert_eq!(v["pinned"], Value::Null);
        assert_eq!(v["changing_hosts"], 2);
        assert_eq!(v["unchanged_hosts"], 1);
        assert_eq!(v["stages"][0]["promotion"], "manual");
        assert_eq!(v["stages"][0]["bake_ms"], 300_000);
        let second = &v["stages"][1]["batches"][0];
        assert_eq!(second["batch"], 2);
        assert_eq!(second["hosts"][1]["host"], "web-2");
        assert_eq!(second["hosts"][1]["changes"], false);
    }
}
