//! `[[hooks]]`: commands the rollout runs at fixed points of a deploy.
//!
//! - `before_rollout` (a migration): once per (service, environment, digest), on one
//!   target host, after the pre-pull and before any host is drained.
//! - `after_batch` (a check per host): after readiness, before the host is put back in
//!   rotation; in the new container (`run_in = "exec"`) or in a one-off container.
//! - `after_rollout` (a smoke test): once after the last batch; a command on one host, or
//!   a built-in HTTP check (`[hooks.http]`) through the load balancer's frontend.
//!
//! A hook's image defaults to the release's pinned digest, so a migration is the new
//! version's. Every value is checked here, once, and carried typed.

use std::time::Duration;

use drover_shared::duration;
use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPhase {
    /// Once per (service, environment, digest), before any host is drained.
    BeforeRollout,
    /// On each host of each batch, after readiness and before re-enable.
    AfterBatch,
    /// Once after the last batch; a failure rolls every changed host back.
    AfterRollout,
}

impl HookPhase {
    /// The word used in the spec, the wire and the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeRollout => "before_rollout",
            Self::AfterBatch => "after_batch",
            Self::AfterRollout => "after_rollout",
        }
    }
}

/// Where an `after_batch` command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunIn {
    /// A one-off container with the service's env, secrets, network and mounts.
    #[default]
    Container,
    /// Inside the host's new service container (`docker exec`).
    Exec,
}

/// What a hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Run a command (argv) in a container.
    Command {
        /// The argv.
        argv: Vec<String>,
        /// The image; `None` = the deployment's pinned digest.
        image: Option<String>,
        /// Where (`after_batch` only; the others always use a one-off container).
        run_in: RunIn,
    },
    /// GET a URL through the load balancer's frontend (`after_rollout` only).
    Http(HttpCheck),
}

/// The built-in smoke test: `GET url` until it answers as expected, up to `tries` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// `http://host:port/path` (the load balancer's frontend).
    pub url: String,
    /// The status expected (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// A substring the body must contain, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// How many tries before the check fails (default 3).
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// Pause between tries (default 1s).
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
}

/// One hook, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Unique among the spec's hooks; names the hook in history and markers.
    pub name: String,
    /// When it runs.
    pub phase: HookPhase,
    /// What it runs.
    pub action: HookAction,
    /// How long it may take; on expiry its container is killed and the hook fails.
    pub timeout: Duration,
}

/// `[[hooks]]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    name: String,
    phase: HookPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default = "default_timeout", with = "duration")]
    timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_in: Option<RunIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpCheck>,
}

fn default_status() -> u16 {
    200
}
fn default_tries() -> u32 {
    3
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

impl Hook {
    /// Parses and checks every hook; names are unique.
    pub(super) fn from_raw_all(raw: Vec<RawHook>) -> Result<Vec<Hook>, SpecError> {
        let mut hooks: Vec<Hook> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let hook = Self::from_raw(i, r)?;
            if hooks.iter().any(|h| h.name == hook.name) {
                return Err(invalid(
                    format!("hooks[{i}].name"),
                    format!(
                        "{:?} is used by another hook: give each hook its own name",
                        hook.name
                    ),
                ));
            }
            hooks.push(hook);
        }
        Ok(hooks)
    }

    fn from_raw(i: usize, r: RawHook) -> Result<Hook, SpecError> {
        let key = |k: &str| format!("hooks[{i}].{k}");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 63
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(invalid(
                key("name"),
                format!("{:?}: use 1 to 63 letters, digits, '-', '_' or '.'", r.name),
            ));
        }
        if r.timeout.is_zero() {
            return Err(invalid(key("timeout"), "must be more than zero"));
        }
        if r.run_in.is_some() && r.phase != HookPhase::AfterBatch {
            return Err(invalid(
                key("run_in"),
                "only an after_batch hook runs in the service's new container; the others run in a one-off container",
            ));
        }
        let action = match (r.http, r.command.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    key("http"),
                    "a hook is either a command or an HTTP check, not both",
                ));
            }
            (Some(http), true) => {
                if r.phase != HookPhase::AfterRollout {
                    return Err(invalid(
                        key("http"),
                        "the built-in HTTP check is a smoke test: use it with phase = \"after_rollout\"",
                    ));
                }
                if r.image.is_some() {
                    return Err(invalid(key("image"), "an HTTP check runs no container"));
                }
                check_http(&key("http"), &http)?;
                HookAction::Http(http)
            }
            (None, true) => {
                return Err(invalid(
                    key("command"),
                    "give the command to run (an argv list), or an [hooks.http] check for after_rollout",
                ));
            }
            (None, false) => {
                let run_in = r.run_in.unwrap_or_default();
                if run_in == RunIn::Exec && r.image.is_some() {
                    return Err(invalid(
                        key("image"),
                        "an exec hook runs in the service's new container, of the release's image: drop `image`, or use run_in = \"container\"",
                    ));
                }
                if let Some(image) = &r.image
                    && let Err(e) = drover_shared::image::ImageRef::parse(image)
                {
                    return Err(invalid(key("image"), e.to_string()));
                }
                HookAction::Command {
                    argv: r.command,
                    image: r.image,
                    run_in,
                }
            }
        };
        Ok(Hook {
            name: r.name,
            phase: r.phase,
            action,
            timeout: r.timeout,
        })
    }

    pub(super) fn to_raw(&self) -> RawHook {
        let (command, image, run_in, http) = match &self.action {
            HookAction::Command {
                argv,
                image,
                run_in,
            } => (
                argv.clone(),
                image.clone(),
                (self.phase == HookPhase::AfterBatch).then_some(*run_in),
                None,
            ),
            HookAction::Http(h) => (vec![], None, None, Some(h.clone())),
        };
        RawHook {
            name: self.name.clone(),
            phase: self.phase,
            command,
            image,
            timeout: self.timeout,
            run_in,
            http,
        }
    }
}

fn check_http(key: &str, h: &HttpCheck) -> Result<(), SpecError> {
    if parse_http_url(&h.url).is_none() {
        return Err(invalid(
            format!("{key}.url"),
            format!(
                "{:?}: give an http://HOST:PORT/PATH URL of the load balancer's frontend",
                h.url
            ),
        ));
    }
    if !(100..600).contains(&h.status) {
        return Err(invalid(
            format!("{key}.status"),
            "an HTTP status, 100 to 599",
        ));
    }
    if h.tries == 0 {
        return Err(invalid(format!("{key}.tries"), "at least 1"));
    }
    Ok(())
}

/// `http://host[:port][/path]` split into (host:port, path); `None` when not such a URL.
pub fn parse_http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.starts_with(':') || authority.contains('@') {
        return None;
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        || authority.ends_with(']')
    {
        authority.to_string()
    } else if authority.contains(':') && !authority.starts_with('[') {
        return None;
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/health?x=1"),
            Some(("127.0.0.1:8080".into(), "/health?x=1".into()))
        );
        assert_eq!(
            parse_http_url("http://lb.internal"),
            Some(("lb.internal:80".into(), "/".into()))
        );
        assert_eq!(parse_http_url("https://x/"), None);
        assert_eq!(parse_http_url("http://:80/"), None);
        assert_eq!(parse_http_url("http://a:b/"), None);
    }
}

#[cfg(test)]
mod spec_tests {
    use super::super::{ServiceSpec, SpecFile};
    use super::*;

    const BASE: &str = r#"
[service]
name = "web"
image = "registry.local/team/web"
port = 8080

[targets]
selector = "role=web"
"#;

    fn parse(hooks: &str) -> Result<ServiceSpec, String> {
        ServiceSpec::from_toml(&format!("{BASE}\n{hooks}")).map_err(|e| e.to_string())
    }

    #[test]
    fn hooks_parse_with_defaults_and_round_trip() {
        let s = parse(
            r#"
[[hooks]]
name = "migrate"
phase = "before_rollout"
command = ["migrate", "--up"]

[[hooks]]
name = "check"
phase = "after_batch"
command = ["check"]
run_in = "container"
timeout = "30s"

[[hooks]]
name = "smoke"
phase = "after_rollout"
[hooks.http]
url = "http://127.0.0.1:8080/health"
body_contains = "ok"

[[hooks]]
name = "in-place"
phase = "after_batch"
command = ["/app", "selftest"]
run_in = "exec"
"#,
        )
        .unwrap();
        assert_eq!(s.hooks.len(), 4);
        assert_eq!(
            s.hooks[3].action,
            HookAction::Command {
                argv: vec!["/app".into(), "selftest".into()],
                image: None,
                run_in: RunIn::Exec
            }
        );
        assert_eq!(s.hooks[0].timeout, Duration::from_secs(600));
        assert_eq!(
            s.hooks[0].action,
            HookAction::Command {
                argv: vec!["migrate".into(), "--up".into()],
                image: None,
                run_in: RunIn::Container
            }
        );
        let HookAction::Http(h) = &s.hooks[2].action else {
            panic!("an HTTP check")
        };
        assert_eq!((h.status, h.tries), (200, 3));
        assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn bad_hooks_are_named() {
        for (hooks, words) in [
            (
                "[[hooks]]\nname = \"m\"\nphase = \"before_rollout\"\n",
                "hooks[0].command",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"sometime\"\ncommand = [\"x\"]\n",
                "phase",
            ),
            (
                "[[hooks]]\nname = \"a b\"\nphase = \"after_batch\"\ncommand = [\"x\"]\n",
                "hooks[0].name",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"before_rollout\"\ncommand = [\"x\"]\ntimeout = \"0s\"\n",
                "timeout",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"before_rollout\"\ncommand = [\"x\"]\nrun_in = \"exec\"\n",
                "run_in",
            ),
            (
                "[[hooks]]\nname = \"c\"\nphase = \"after_batch\"\ncommand = [\"x\"]\nrun_in = \"exec\"\nimage = \"r.local/tools:1\"\n",
                "hooks[0].image",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"after_batch\"\n[hooks.http]\nurl = \"http://x:1/\"\n",
                "after_rollout",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"after_rollout\"\n[hooks.http]\nurl = \"https://x/\"\n",
                "http://",
            ),
            (
                "[[hooks]]\nname = \"m\"\nphase = \"after_rollout\"\ncommand = [\"x\"]\n[[hooks]]\nname = \"m\"\nphase = \"after_batch\"\ncommand = [\"y\"]\n",
                "another hook",
            ),
        ] {
            let e = parse(hooks).unwrap_err();
            assert!(e.contains(words), "{hooks}: {e}");
        }
    }

    #[test]
    fn an_environment_replaces_the_hooks() {
        let text = format!(
            r#"{BASE}
[[hooks]]
name = "migrate"
phase = "before_rollout"
command = ["migrate"]

[env.staging]
[env.production]
[[env.production.hooks]]
name = "migrate"
phase = "before_rollout"
command = ["migrate", "--careful"]
timeout = "30m"
"#
        );
        let file = SpecFile::parse(&text).unwrap();
        let staging = file.environment(Some("staging")).unwrap();
        let production = file.environment(Some("production")).unwrap();
        assert_eq!(staging.spec.hooks[0].timeout, Duration::from_secs(600));
        assert_eq!(production.spec.hooks.len(), 1);
        assert_eq!(production.spec.hooks[0].timeout, Duration::from_secs(1800));
    }
}
