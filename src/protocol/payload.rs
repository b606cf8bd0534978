//! The plaintext inside a chunk, per kind.
//!
//! - Frame: `name_len u16 | name [name_len] (UTF-8 file name, no '/' or NUL) | image bytes`.
//! - Keystrokes: one JSON object per line, each line ending in `\n`, kept byte for byte.

use super::wire::{DecodeError, Reader};

/// Longest frame name in bytes.
pub const MAX_FRAME_NAME: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub name: &'a str,
    pub image: &'a [u8],
}

impl<'a> Frame<'a> {
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.len() > MAX_FRAME_NAME {
            return Err(format!(
                "frame name is {} bytes, at most {MAX_FRAME_NAME}",
                name.len()
            ));
        }
        if name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
            return Err(format!("frame name {name:?} is not a plain file name"));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.name.len() + self.image.len());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.image);
        out
    }

    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("frame payload", buf);
        let len = r.u16()?;
        let len = r.bounded("name_len", len.into(), 0, MAX_FRAME_NAME as u64)?;
        let name = std::str::from_utf8(r.bytes(len)?).map_err(|_| DecodeError::Invalid {
            what: "frame payload",
            reason: "name is not UTF-8".into(),
        })?;
        Frame::check_name(name).map_err(|reason| DecodeError::Invalid {
            what: "frame payload",
            reason,
        })?;
        let image = r.bytes(r.remaining())?;
        Ok(Frame { name, image })
    }
}

/// The plaintext of a gap record: which of the stream's chunks the agent dropped, and when they
/// were captured. `first_seq u64 | last_seq u64 | first_capture_us i64 | last_capture_us i64 |
/// count u64` (40 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    pub count: u64,
}

impl Gap {
    pub const LEN: usize = 40;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.last_seq.to_be_bytes());
        out.extend_from_slice(&self.first_capture_us.to_be_bytes());
        out.extend_from_slice(&self.last_capture_us.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("gap record", buf);
        let g = Gap {
            first_seq: r.u64()?,
            last_seq: r.u64()?,
            first_capture_us: r.i64()?,
            last_capture_us: r.i64()?,
            count: r.u64()?,
        };
        r.finish()?;
        if g.last_seq < g.first_seq || (g.last_seq - g.first_seq).checked_add(1) != Some(g.count) {
            return Err(DecodeError::Invalid {
                what: "gap record",
                reason: "range and count disagree".into(),
            });
        }
        Ok(g)
    }
}

/// Split a keystroke batch into its lines (without the `\n`), checking each is a JSON object.
pub fn keystroke_lines(buf: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = buf.strip_suffix(b"\n") else {
        return Err(DecodeError::Invalid {
            what: "keystroke batch",
            reason: "does not end with a newline".into(),
        });
    };
    body.split(|b| *b == b'\n')
        .map(|line| {
            check_keystroke_event(line).map_err(|reason| DecodeError::Invalid {
                what: "keystroke batch",
                reason,
            })?;
            Ok(line)
        })
        .collect()
}

/// A keystroke event is one JSON object on one line.
pub fn check_keystroke_event(line: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("event is JSON but not an object".into()),
        Err(e) => Err(format!("event is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame {
            name: "shot.png",
            image: b"\x89PNG...",
        };
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        assert!(Frame::check_name("../x").is_err());
    }

    #[test]
    fn keystroke_batches_keep_lines_exactly() {
        let batch = b"{\"k\":\"a\",\"t\":1}\n{\"k\":\"b\", \"extra\": [1,2]}\n";
        let lines = keystroke_lines(batch).unwrap();
        assert_eq!(
            lines,
            vec![
                &b"{\"k\":\"a\",\"t\":1}"[..],
                &b"{\"k\":\"b\", \"extra\": [1,2]}"[..]
            ]
        );
        assert!(keystroke_lines(b"{}").is_err());
        assert!(keystroke_lines(b"[1]\n").is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_payloads_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode(&bytes);
            let _ = keystroke_lines(&bytes);
        }
    }
}
