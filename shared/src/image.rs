//! Image references (`registry:5000/team/app:v2`, `app@sha256:...`): parsed and checked
//! before anything reaches Docker, so a typo is refused with the bad value named instead of
//! surfacing as a pull error halfway through a rollout.

use std::fmt;

/// The registry Docker assumes when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), if the reference names one.
    pub registry: Option<String>,
    /// Repository path below the registry, e.g. `team/app`.
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Content digest (`sha256:...`), if given.
    pub digest: Option<String>,
}

/// Why an image reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    /// The reference as written.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ImageRef {
    /// Parses and validates a reference.
    pub fn parse(reference: &str) -> Result<Self, ImageRefError> {
        let bad = |reason| ImageRefError {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(bad("it is empty"));
        }
        if reference.len() > 512 || reference.chars().any(|c| c.is_whitespace()) {
            return Err(bad("it contains white space or is too long"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d
                    .split_once(':')
                    .ok_or_else(|| bad("a digest must look like sha256:<64 hex digits>"))?;
                let hex_ok = !hex.is_empty()
                    && hex.len() >= 32
                    && hex
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
                if algo.is_empty() || !hex_ok {
                    return Err(bad("a digest must look like sha256:<64 hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (reference, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad(
                "a tag may use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')",
            ));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            Some(parts.remove(0).to_string())
        } else {
            None
        };
        if let Some(r) = &registry
            && (!r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
                || (!r.starts_with('[') && r.matches(':').count() > 1))
        {
            return Err(bad(
                "the registry host has characters a host name cannot have",
            ));
        }
        if parts.is_empty() || parts.iter().any(|p| !valid_path_component(p)) {
            return Err(bad(
                "repository names use lowercase letters, digits and single '.', '_', '__' or '-' separators",
            ));
        }
        Ok(Self {
            registry,
            repository: parts.join("/"),
            tag,
            digest,
        })
    }

    /// The registry host to authenticate against.
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The reference pinned to `digest`: `registry/repository@digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag, or `latest` when neither a tag nor a digest is given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_path_component(p: &str) -> bool {
    if p.is_empty() || !p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return false;
    }
    if !p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return false;
    }
    let mut prev_sep = String::new();
    for c in p.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            prev_sep.clear();
        } else if matches!(c, '.' | '_' | '-') {
            prev_sep.push(c);
            let ok = matches!(prev_sep.as_str(), "." | "_" | "__" | "-")
                || prev_sep.chars().all(|c| c == '-');
            if !ok {
                return false;
            }
        } else {
            return false;
        }
    }
    true
}

/// A digest shortened for people: the algorithm and 12 hex digits
/// (`sha256:0123456789ab`); a string without an algorithm, its first 12 characters.
pub fn short_digest(digest: &str) -> &str {
    let end = digest.find(':').map_or(12, |i| i + 13);
    digest.get(..end).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests_keep_the_algorithm_and_twelve_digits() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(short_digest(d), "sha256:0123456789ab");
        assert_eq!(short_digest("sha256:0123"), "sha256:0123");
        assert_eq!(short_digest("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest(""), "");
    }

    #[test]
    fn full_reference() {
        let r = ImageRef::parse("127.0.0.1:5000/team/demo:v2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "team/demo");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/demo:v2");
        assert_eq!(
            r.pinned("sha256:abc"),
            "127.0.0.1:5000/team/demo@sha256:abc"
        );
    }

    #[test]
    fn short_names_and_digests() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.registry_host(), DEFAULT_REGISTRY);
        assert_eq!(r.tag_or_latest(), Some("latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag_or_latest(), None);
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app:-bad",
            "a b",
            "app@sha256:xyz",
            "app@nocolon",
            "/app",
            "app//x",
            "reg:5000/",
            "app:v1:v2/x",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert_eq!(e.reference, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")));
        }
    }
}
