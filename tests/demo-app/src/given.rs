//! What the container was given, for the tests of secret delivery: `GET /env/NAME` and
//! `GET /file/<absolute path>` answer the SHA-256 and length of an environment variable or
//! a file, never the value itself, so a test can check a secret arrived without the
//! secret appearing in any answer, log or assertion message.

use sha2::{Digest, Sha256};

use crate::http::Response;

/// Answers `/env/...` and `/file/...`; `None` for any other path.
pub fn route(path: &str) -> Option<Response> {
    if let Some(name) = path.strip_prefix("/env/") {
        return Some(match std::env::var_os(name) {
            Some(v) => digest(v.as_encoded_bytes()),
            None => Response::text(404, format!("no environment variable {name}\n")),
        });
    }
    if let Some(rest) = path.strip_prefix("/file/") {
        let file = format!("/{rest}");
        return Some(match std::fs::read(&file) {
            Ok(bytes) => digest(&bytes),
            Err(e) => Response::text(404, format!("cannot read {file}: {e}\n")),
        });
    }
    None
}

/// `sha256=<hex> len=<bytes>`.
fn digest(bytes: &[u8]) -> Response {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    Response::text(200, format!("sha256={hex} len={}\n", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_variables_are_hashed_not_echoed() {
        let dir = std::env::temp_dir().join(format!("demo-given-{}", std::process::id()));
        std::fs::write(&dir, b"abc").unwrap();
        let r = route(&format!("/file{}", dir.display())).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad len=3\n"
        );
        assert_eq!(
            route("/env/DEMO_GIVEN_NOT_SET_ANYWHERE").unwrap().status,
            404
        );
        assert_eq!(route("/file/nonexistent/x").unwrap().status, 404);
        assert!(route("/ready").is_none());
    }
}
