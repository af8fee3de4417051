//! The pure part of reading logs: frames of bytes into lines ([`LineSplitter`]), secrets
//! out of lines ([`Redactor`]), lines into bounded chunks ([`Chunker`]).

use drover_shared::proto::{LogLine, LogSource};

use crate::runtime::LogOutput;

/// Longest line sent; the rest is cut and marked.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Most lines in one chunk.
pub const MAX_CHUNK_LINES: usize = 256;
/// Most bytes of line text in one chunk (a line is never split across chunks).
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;
/// What replaces a secret value in a line.
pub const REDACTED: &str = "[redacted]";
/// Values shorter than this are not redacted: replacing every occurrence of a two-letter
/// string would garble the log without hiding anything worth hiding.
pub const MIN_REDACTED_LEN: usize = 4;

/// Splits what one output (stdout or stderr) wrote into lines; keeps a partial last line
/// until its newline arrives (or the log ends).
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes after the last newline seen.
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `bytes` (with what was kept before), without newlines.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(at) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(at + 1);
            let mut line = std::mem::replace(&mut self.partial, rest);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(to_text(&line));
        }
        if self.partial.len() > MAX_LINE_BYTES {
            // A line without an end in sight: send what there is.
            let line = std::mem::take(&mut self.partial);
            lines.push(to_text(&line));
        }
        lines
    }

    /// The partial last line, when the log ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| to_text(&std::mem::take(&mut self.partial)))
    }
}

/// Text of a line, cut at [`MAX_LINE_BYTES`] (on a character boundary) and marked.
fn to_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX_LINE_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [line cut at {MAX_LINE_BYTES} bytes]", &text[..end])
}

/// Replaces the secret values given to a container wherever they appear verbatim.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Values to hide, longest first (so a value containing another is hidden whole).
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for `values` (blank and very short ones are ignored).
    pub fn new(values: Vec<String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .flat_map(|v| {
                // A value read from a file often ends in a newline the log line lacks.
                let trimmed = v.trim_end_matches(['\n', '\r']).to_string();
                [v, trimmed]
            })
            .filter(|v| v.len() >= MIN_REDACTED_LEN && !v.contains('\n'))
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    /// `line` with every value replaced by [`REDACTED`].
    pub fn redact(&self, line: String) -> String {
        self.values.iter().fold(line, |line, v| {
            if line.contains(v.as_str()) {
                line.replace(v.as_str(), REDACTED)
            } else {
                line
            }
        })
    }
}

/// Collects lines into a chunk of at most [`MAX_CHUNK_LINES`] lines and
/// [`MAX_CHUNK_BYTES`] bytes.
#[derive(Debug, Default)]
pub struct Chunker {
    lines: Vec<LogLine>,
    bytes: usize,
}

impl Chunker {
    /// Adds `line`; returns the full chunk to send first when it would not fit.
    pub fn push(&mut self, line: LogLine) -> Option<Vec<LogLine>> {
        let size = line.text.len();
        let full = !self.lines.is_empty()
            && (self.lines.len() >= MAX_CHUNK_LINES || self.bytes + size > MAX_CHUNK_BYTES);
        let out = full.then(|| self.take());
        self.bytes += size;
        self.lines.push(line);
        out
    }

    /// The lines collected so far (possibly none).
    pub fn take(&mut self) -> Vec<LogLine> {
        self.bytes = 0;
        std::mem::take(&mut self.lines)
    }

    /// Nothing collected.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The wire form of an output.
pub fn source(output: LogOutput) -> LogSource {
    match output {
        LogOutput::Stdout => LogSource::Stdout,
        LogOutput::Stderr => LogSource::Stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            text: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn frames_become_lines_and_a_partial_line_waits_for_its_newline() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), vec!["one"]);
        assert_eq!(s.push(b"o\r\nthree\n\n"), vec!["two", "three", ""]);
        assert_eq!(s.push(b"four"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("four"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn an_endless_line_is_cut_and_marked() {
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE_BYTES * 2];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with("[line cut at 8192 bytes]"),
            "{}",
            &lines[0][8000..]
        );
        assert!(lines[0].len() < MAX_LINE_BYTES + 40);
    }

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let r = Redactor::new(vec![
            "hunter2-long".into(),
            "pw\n".into(),
            "s3cr3t\n".into(),
        ]);
        assert_eq!(
            r.redact("login with hunter2-long and s3cr3t, again hunter2-long".into()),
            "login with [redacted] and [redacted], again [redacted]"
        );
        // Too short to redact without garbling the log.
        assert_eq!(r.redact("pw".into()), "pw");
        let nested = Redactor::new(vec!["abcd".into(), "abcdefgh".into()]);
        assert_eq!(nested.redact("xabcdefghx".into()), "x[redacted]x");
    }

    #[test]
    fn chunks_are_bounded_by_lines_and_bytes() {
        let mut c = Chunker::default();
        let mut sent = vec![];
        for _ in 0..MAX_CHUNK_LINES + 1 {
            if let Some(chunk) = c.push(line("a")) {
                sent.push(chunk);
            }
        }
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].len(), MAX_CHUNK_LINES);
        assert_eq!(c.take().len(), 1);
        assert!(c.is_empty());
        let big = "b".repeat(MAX_CHUNK_BYTES / 2 + 1);
        assert!(c.push(line(&big)).is_none());
        let full = c
            .push(line(&big))
            .expect("the second half-chunk line does not fit");
        assert_eq!(full.len(), 1);
    }
}
