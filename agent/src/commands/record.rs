//! What a handover leaves behind for a restarted agent, so that it can tell a container
//! that was ready from one a swap never finished with:
//!
//! - on the container, as labels set at create: the readiness probe and the stop grace
//!   the swap used ([`handover_labels`], read back with [`recorded_probe`] and
//!   [`recorded_stop_grace`]);
//! - in the agent's state directory, one empty file per container that passed its
//!   readiness probe ([`ReadyRecords`]). Docker cannot relabel a container, so this is
//!   the one fact the agent keeps outside Docker; it is removed with the container.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_shared::labels;
use drover_shared::proto::{
    DockerHealthProbe, HttpProbe, ReadinessProbe, TcpProbe, readiness_probe::Kind,
};
use tracing::{info, warn};

use crate::runtime::ContainerInfo;

/// The labels recording how `probe` and `stop_grace` hand a container over.
pub fn handover_labels(
    probe: Option<&ReadinessProbe>,
    stop_grace: Duration,
) -> Vec<(String, String)> {
    let mut out = vec![(
        labels::STOP_GRACE.to_string(),
        stop_grace.as_millis().to_string(),
    )];
    if let Some(text) = probe.and_then(encode_probe) {
        out.push((labels::READINESS.to_string(), text));
    }
    out
}

/// The readiness probe recorded on `c` (`None`: none was, running is enough).
pub fn recorded_probe(c: &ContainerInfo) -> Option<ReadinessProbe> {
    c.labels
        .get(labels::READINESS)
        .and_then(|t| decode_probe(t))
}

/// The stop grace recorded on `c`, if any.
pub fn recorded_stop_grace(c: &ContainerInfo) -> Option<Duration> {
    c.labels
        .get(labels::STOP_GRACE)
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
}

/// `kind=http interval=100 timeout=1000 success=1 deadline=15000 status=200 port=8080
/// path=/ready`: numbers in ms, the path last (it runs to the end of the text).
fn encode_probe(p: &ReadinessProbe) -> Option<String> {
    let mut text = String::new();
    let kind = match p.kind.as_ref()? {
        Kind::Http(_) => "http",
        Kind::Tcp(_) => "tcp",
        Kind::DockerHealth(_) => "docker-health",
    };
    text.push_str(&format!(
        "kind={kind} interval={} timeout={} success={} deadline={}",
        p.interval_ms, p.timeout_ms, p.success_threshold, p.deadline_ms
    ));
    match p.kind.as_ref()? {
        Kind::Http(h) => text.push_str(&format!(
            " status={} port={} path={}",
            h.expected_status, h.port, h.path
        )),
        Kind::Tcp(t) => text.push_str(&format!(" port={}", t.port)),
        Kind::DockerHealth(_) => {}
    }
    Some(text)
}

fn decode_probe(text: &str) -> Option<ReadinessProbe> {
    let (fields, path) = match text.split_once(" path=") {
        Some((f, p)) => (f, Some(p)),
        None => (text, None),
    };
    let mut p = ReadinessProbe::default();
    let (mut kind, mut status, mut port) = ("", 0u32, 0u32);
    for field in fields.split(' ') {
        let (k, v) = field.split_once('=')?;
        let num = || v.parse::<u64>().ok();
        match k {
            "kind" => kind = v,
            "interval" => p.interval_ms = num()?,
            "timeout" => p.timeout_ms = num()?,
            "success" => p.success_threshold = u32::try_from(num()?).ok()?,
            "deadline" => p.deadline_ms = num()?,
            "status" => status = u32::try_from(num()?).ok()?,
            "port" => port = u32::try_from(num()?).ok()?,
            _ => {}
        }
    }
    p.kind = Some(match kind {
        "http" => Kind::Http(HttpProbe {
            path: path.unwrap_or_default().to_string(),
            expected_status: status,
            port,
        }),
        "tcp" => Kind::Tcp(TcpProbe { port }),
        "docker-health" => Kind::DockerHealth(DockerHealthProbe {}),
        _ => return None,
    });
    Some(p)
}

/// Which containers passed their readiness probe: `<state-dir>/ready/<container name>`.
#[derive(Debug, Clone)]
pub struct ReadyRecords {
    /// The directory holding one empty file per ready container.
    dir: PathBuf,
}

impl ReadyRecords {
    /// Records under `<state_dir>/ready`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("ready"),
        }
    }

    /// Records that `container` became ready. Best effort: without the record a restarted
    /// agent probes the container again instead of trusting it.
    pub async fn record(&self, container: &str) {
        let (dir, name) = (self.dir.clone(), container.to_string());
        let written = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(name), b"")
        })
        .await;
        if let Err(e) = written {
            warn!(container, dir = %self.dir.display(), error = %e, "cannot record that the container became ready");
        }
    }

    /// Did `container` become ready once?
    pub async fn was_ready(&self, container: &str) -> bool {
        let path = self.dir.join(container);
        blocking(move || Ok(path.is_file())).await.unwrap_or(false)
    }

    /// Forgets `container` (it was removed, or failed its probe).
    pub async fn forget(&self, container: &str) {
        let path = self.dir.join(container);
        let removed = blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await;
        if let Err(e) = removed {
            warn!(container, error = %e, "cannot remove the container's ready record");
        }
    }

    /// Forgets the records of containers that no longer exist (`live` holds the names of
    /// this agent's managed containers; the state directory is this agent's own).
    pub async fn forget_missing(&self, live: &HashSet<String>) {
        let dir = self.dir.clone();
        let live = live.clone();
        let gone = blocking(move || {
            let mut gone = vec![];
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(gone),
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    std::fs::remove_file(entry.path())?;
                    gone.push(name);
                }
            }
            Ok(gone)
        })
        .await;
        match gone {
            Ok(gone) if !gone.is_empty() => {
                info!(containers = ?gone, "forgot the ready records of containers that no longer exist")
            }
            Ok(_) => {}
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot clean the ready records")
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: Kind) -> ReadinessProbe {
        ReadinessProbe {
            kind: Some(kind),
            interval_ms: 100,
            timeout_ms: 1000,
            success_threshold: 2,
            deadline_ms: 15_000,
        }
    }

    #[test]
    fn probes_survive_their_label() {
        for p in [
            probe(Kind::Http(HttpProbe {
                path: "/ready?deep=1 x".into(),
                expected_status: 204,
                port: 8080,
            })),
            probe(Kind::Tcp(TcpProbe { port: 5432 })),
            probe(Kind::DockerHealth(DockerHealthProbe {})),
        ] {
            let text = encode_probe(&p).unwrap();
            assert_eq!(decode_probe(&text), Some(p), "{text}");
        }
        assert_eq!(encode_probe(&ReadinessProbe::default()), None);
        assert_eq!(decode_probe("kind=carrier-pigeon"), None);
        assert_eq!(decode_probe("kind=tcp port=x"), None);
    }

    #[tokio::test]
    async fn ready_records_live_as_long_as_their_container() {
        let dir = tempfile::tempdir().unwrap();
        let r = ReadyRecords::new(dir.path());
        assert!(!r.was_ready("drover-h1-web-v1-aaaaaa").await);
        r.record("drover-h1-web-v1-aaaaaa").await;
        r.record("drover-h1-web-v2-bbbbbb").await;
        assert!(r.was_ready("drover-h1-web-v1-aaaaaa").await);
        let live = HashSet::from(["drover-h1-web-v2-bbbbbb".to_string()]);
        r.forget_missing(&live).await;
        assert!(!r.was_ready("drover-h1-web-v1-aaaaaa").await);
        assert!(r.was_ready("drover-h1-web-v2-bbbbbb").await);
        r.forget("drover-h1-web-v2-bbbbbb").await;
        r.forget("drover-h1-web-v2-bbbbbb").await;
        assert!(!r.was_ready("drover-h1-web-v2-bbbbbb").await);
    }
}
