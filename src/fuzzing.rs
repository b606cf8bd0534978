//! One entry point per decoder, for the `cargo fuzz` targets in `fuzz/` and for the test that
//! replays their committed corpus (`tests/it/fuzz_corpus.rs`). Each takes arbitrary bytes, must
//! never panic, and checks what a decoder promises: whatever decodes encodes back to the same
//! bytes, and decoding is deterministic.

use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::agent::spool;
use crate::config::{AgentConfig, ServeConfig};
use crate::keys::{self, KeyError, Passphrase};
use crate::protocol::chunk::SealedChunk;
use crate::protocol::dek_record::DekRecord;
use crate::protocol::payload::{self, Frame, Gap};
use crate::protocol::segment::Segment;
use crate::protocol::uplink::{self, Response};

/// One fuzz entry point: arbitrary bytes in, a panic on any broken promise.
pub type Target = fn(&[u8]);

/// Every target, by name: what `cargo fuzz run NAME` and the corpus replay call.
pub const TARGETS: &[(&str, Target)] = &[
    ("uplink", uplink),
    ("chunk", chunk),
    ("dek_record", dek_record),
    ("segment", segment),
    ("payload", payload),
    ("spool", spool),
    ("private_key", private_key),
    ("public_key", public_key),
    ("config", config),
];

/// Agent-to-server messages as the server reads them from a stream (split at an arbitrary
/// point, as QUIC may deliver them), their chunk and DEK-record bodies, and server responses.
pub fn uplink(data: &[u8]) {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut buf = BytesMut::from(&data[..split]);
    let mut whole = BytesMut::from(data);
    let mut rest = &data[split..];
    let mut from_parts = Vec::new();
    loop {
        match uplink::decode_message(&mut buf) {
            Ok(Some(m)) => from_parts.push(m),
            Ok(None) if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut from_whole = Vec::new();
    while let Ok(Some(m)) = uplink::decode_message(&mut whole) {
        from_whole.push(m);
    }
    assert_eq!(
        from_parts, from_whole,
        "how the bytes arrive must not change the messages"
    );
    for m in &from_whole {
        let mut again = BytesMut::new();
        uplink::encode_message(m.kind, &m.body, &mut again);
        let back = uplink::decode_message(&mut again).expect("re-encoded message decodes");
        assert_eq!(back.as_ref(), Some(m));
        match m.kind {
            uplink::MSG_CHUNK => chunk(&m.body),
            _ => dek_record(&m.body),
        }
    }
    let mut responses = BytesMut::from(data);
    while let Ok(Some(r)) = Response::decode(&mut responses) {
        let mut out = BytesMut::new();
        r.encode(&mut out);
        let back = Response::decode(&mut out)
            .expect("re-encoded response decodes")
            .expect("whole");
        // A reason that was not UTF-8 decodes with replacement characters, which may make it
        // longer than a response carries: it is then cut, at a character boundary.
        let sent = uplink::wire_reason(&r.reason).to_owned();
        assert_eq!(back, Response { reason: sent, ..r });
    }
}

/// A sealed chunk: whatever decodes has the same header and bytes when encoded again.
pub fn chunk(data: &[u8]) {
    let whole = SealedChunk::decode(Bytes::copy_from_slice(data));
    if let Ok((prefix, used)) = SealedChunk::decode_prefix(data) {
        assert!(used <= data.len());
        assert_eq!(prefix.bytes().as_ref(), &data[..used]);
        let aad = prefix.header.encode(prefix.ciphertext().len());
        assert_eq!(
            aad.as_slice(),
            prefix.aad(),
            "the header is exactly the AAD"
        );
        if let Ok(c) = &whole {
            assert_eq!(c.header, prefix.header);
        }
    } else {
        assert!(whole.is_err(), "a whole chunk is also a prefix");
    }
}

/// A DEK record: decode, encode, decode gives the same record and the same bytes.
pub fn dek_record(data: &[u8]) {
    if let Ok(r) = DekRecord::decode(data) {
        let bytes = r.encode();
        assert_eq!(bytes.as_slice(), data);
        assert_eq!(
            DekRecord::decode(&bytes).expect("re-encoded record decodes"),
            r
        );
    }
}

/// A segment object as the store returns it: verified, then re-encoded to the same bytes.
pub fn segment(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    if let Ok(s) = Segment::decode(&buf) {
        let (bytes, _sum) = Segment::encode(s.id, s.created_us, &s.chunks);
        assert_eq!(bytes, buf, "a verified segment re-encodes to its own bytes");
    }
}

/// Decrypted payloads: frames, gap records and keystroke batches.
pub fn payload(data: &[u8]) {
    if let Ok(f) = Frame::decode(data) {
        assert_eq!(f.encode(), data);
    }
    if let Ok(g) = Gap::decode(data) {
        assert_eq!(Gap::decode(&g.encode()).expect("re-encoded gap decodes"), g);
    }
    if let Ok(lines) = payload::keystroke_lines(data) {
        for line in lines {
            let _ = payload::check_keystroke_event(line);
        }
    }
}

/// A spool file and an ack ledger after a crash: damage is skipped, never a panic, and every
/// chunk recovered is one that decodes on its own.
pub fn spool(data: &[u8]) {
    let scan = spool::scan_file(data);
    for c in &scan.chunks {
        assert!(SealedChunk::decode(c.bytes().clone()).is_ok());
    }
    let _ = spool::scan_ledger(data);
}

/// A private key file's bytes, with a fixed passphrase for the encrypted forms.
pub fn private_key(data: &[u8]) {
    let path = Path::new("fuzz.pem");
    let result = keys::parse_private_key(path, data, || {
        Ok(Passphrase::new(b"fuzz passphrase".to_vec()))
    });
    if let Err(e) = result {
        assert!(
            e.to_string().starts_with("fuzz.pem: "),
            "every key error names the file: {e}"
        );
    }
}

/// A public key file's bytes (SPKI, PKCS#1 or a certificate).
pub fn public_key(data: &[u8]) {
    match keys::parse_public_key(Path::new("fuzz.crt"), data) {
        Ok(k) => assert!(k.bits >= keys::MIN_RSA_BITS && k.bits <= keys::MAX_RSA_BITS),
        Err(KeyError::Read { .. }) => unreachable!("nothing is read from disk"),
        Err(e) => assert!(e.to_string().starts_with("fuzz.crt: "), "{e}"),
    }
}

/// A config file's text, read as a server's and as an agent's.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/sealstream/fuzz.toml");
    let _ = ServeConfig::from_text(path, text);
    let _ = AgentConfig::from_text(path, text);
}
