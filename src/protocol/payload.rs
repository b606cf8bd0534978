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

/// The deepest nesting of objects and arrays in a keystroke event, the event's own object
/// being the first level (docs/format.md "Plaintext payloads").
pub const MAX_EVENT_DEPTH: usize = 128;

/// A keystroke event is one line of UTF-8 holding a JSON text (RFC 8259) whose value is an
/// object, nested at most `MAX_EVENT_DEPTH` levels deep. Every `\uXXXX` escape is accepted
/// (an unpaired surrogate too) and every number the grammar allows, whatever its magnitude or
/// precision: the event is kept byte for byte, never converted. Checked without building it.
pub fn check_keystroke_event(line: &[u8]) -> Result<(), String> {
    std::str::from_utf8(line).map_err(|e| format!("event is not UTF-8: {e}"))?;
    check_json_object(line)
        .map_err(|(at, why)| format!("event is not a JSON object: {why} at byte {at}"))
}

/// RFC 8259's grammar over `b`, iteratively (a stack of open containers, no recursion).
fn check_json_object(b: &[u8]) -> Result<(), (usize, &'static str)> {
    fn ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }
    fn string(b: &[u8], mut i: usize) -> Result<usize, (usize, &'static str)> {
        if b.get(i) != Some(&b'"') {
            return Err((i, "expected a string"));
        }
        i += 1;
        loop {
            match b.get(i) {
                None => return Err((i, "unterminated string")),
                Some(b'"') => return Ok(i + 1),
                Some(b'\\') => match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let hex = b.get(i + 2..i + 6).ok_or((i, "short \\u escape"))?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err((i, "bad \\u escape"));
                        }
                        i += 6;
                    }
                    _ => return Err((i, "bad escape")),
                },
                Some(c) if *c < 0x20 => return Err((i, "control character in a string")),
                Some(_) => i += 1,
            }
        }
    }
    fn digits(b: &[u8], i: usize) -> usize {
        i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count()
    }
    fn number(b: &[u8], mut i: usize) -> Result<usize, (usize, &'static str)> {
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(b, i),
            _ => return Err((i, "bad number")),
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(b, i + 1);
            if end == i + 1 {
                return Err((i, "bad fraction"));
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let end = digits(b, i);
            if end == i {
                return Err((i, "bad exponent"));
            }
            i = end;
        }
        Ok(i)
    }
    /// After an object's `{` or `,`: a name, `:` and the value's first byte.
    fn member(b: &[u8], i: usize) -> Result<usize, (usize, &'static str)> {
        let i = ws(b, string(b, ws(b, i))?);
        if b.get(i) != Some(&b':') {
            return Err((i, "expected ':'"));
        }
        Ok(i + 1)
    }

    let mut open: Vec<u8> = Vec::new();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err((i, "the line's value is not an object"));
    }
    loop {
        // A value at `i`.
        i = ws(b, i);
        match b.get(i) {
            Some(c @ (b'{' | b'[')) => {
                open.push(*c);
                if open.len() > MAX_EVENT_DEPTH {
                    return Err((i, "nested more than 128 levels deep"));
                }
                let j = ws(b, i + 1);
                if b.get(j) == Some(if *c == b'{' { &b'}' } else { &b']' }) {
                    open.pop();
                    i = j + 1;
                } else if *c == b'{' {
                    i = member(b, j)?;
                    continue;
                } else {
                    i = j;
                    continue;
                }
            }
            Some(b'"') => i = string(b, i)?,
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            Some(b'-' | b'0'..=b'9') => i = number(b, i)?,
            _ => return Err((i, "expected a value")),
        }
        // After a value: `,` and the next one, or the end of containers.
        loop {
            i = ws(b, i);
            match (open.last(), b.get(i)) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err((i, "text after the object")),
                (Some(b'{'), Some(b',')) => {
                    i = member(b, i + 1)?;
                    break;
                }
                (Some(b'['), Some(b',')) => {
                    i += 1;
                    break;
                }
                (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']')) => {
                    open.pop();
                    i += 1;
                }
                _ => return Err((i, "expected ',' or the end of an object or array")),
            }
        }
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

    #[test]
    fn keystroke_events_are_rfc_8259_objects_within_the_limits() {
        let deep = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        for ok in [
            deep(MAX_EVENT_DEPTH),
            r#"{"lone":"\ud800"}"#.to_owned(),
            r#"{"n":1e400,"m":-0.0e-99999,"k":-12.5E+3}"#.to_owned(),
            format!("{{\"big\":{}}}", "9".repeat(400)),
            r#"{"d":1,"d":2}"#.to_owned(),
            r#"{"s":"\u0000\"\\\/\b\f\n\r\t","":[],"o":{}}"#.to_owned(),
            "\t {\"ws\":[ true , false , null ]} \r".to_owned(),
            "{\"ü\":\"日本\"}".to_owned(),
        ] {
            assert_eq!(check_keystroke_event(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            deep(MAX_EVENT_DEPTH + 1).into_bytes(),
            br#"{"n":NaN}"#.to_vec(),
            br#"{"n":Infinity}"#.to_vec(),
            b"\xef\xbb\xbf{\"bom\":1}".to_vec(),
            b"[1]".to_vec(),
            b"1".to_vec(),
            b"{\"s\":\"\xed\xa0\x80\"}".to_vec(),
            br#"{"a":1,}"#.to_vec(),
            br#"{"a":[1,]}"#.to_vec(),
            b"{\"t\":\"\t\"}".to_vec(),
            br#"{"n":01}"#.to_vec(),
            br#"{"n":1.}"#.to_vec(),
            br#"{"n":+1}"#.to_vec(),
            br#"{"n":1e}"#.to_vec(),
            br#"{"s":"\x"}"#.to_vec(),
            br#"{"s":"\u12"}"#.to_vec(),
            br#"{a:1}"#.to_vec(),
            br#"{"a" 1}"#.to_vec(),
            br#"{"a":1}{"#.to_vec(),
            br#"{"a":1"#.to_vec(),
            br#"{"a":tru}"#.to_vec(),
            b"".to_vec(),
        ] {
            assert!(
                check_keystroke_event(&bad).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    proptest! {
        /// Where serde_json can judge (no escapes, numbers in range, shallow), it agrees.
        #[test]
        fn keystroke_events_agree_with_serde_json(text in "\\{?[{}\\[\\]\":,0-9.eE+ \\-tuflsnar]{0,16}") {
            let serde = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => Some(v.is_object()),
                Err(e) if e.to_string().contains("out of range") => None,
                Err(_) => Some(false),
            };
            if let Some(object) = serde {
                prop_assert_eq!(check_keystroke_event(text.as_bytes()).is_ok(), object, "{}", text);
            }
        }

        /// Every object serde_json writes (compact or pretty on one line) is an event.
        #[test]
        fn serialized_objects_are_events(v in json_object()) {
            let compact = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(check_keystroke_event(compact.as_bytes()), Ok(()), "{}", compact);
            let spaced = serde_json::to_string_pretty(&v).unwrap().replace('\n', " ");
            prop_assert_eq!(check_keystroke_event(spaced.as_bytes()), Ok(()), "{}", spaced);
        }

        #[test]
        fn decoding_arbitrary_payloads_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Frame::decode(&bytes);
            let _ = keystroke_lines(&bytes);
        }
    }

    fn json_object() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map(".*", value, 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }
}
