//! The application protocol on each QUIC stream, sans-IO.
//!
//! Agent to server, one message after another: `type u8 | len u32 | body [len]` where type 1 is
//! a DEK record and type 2 a sealed chunk. Server to agent, one response per message, in order:
//! `type u8 | code u8 | seq u64 | msg_len u16 | msg [msg_len]` (`seq` is the chunk's sequence
//! number, 0 for DEK records; code 0 is an ack, anything else a rejection).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::chunk::MAX_CHUNK_LEN;
use super::wire::DecodeError;

pub const MSG_DEK: u8 = 1;
pub const MSG_CHUNK: u8 = 2;
/// Longest message body: a whole chunk.
pub const MAX_BODY: usize = MAX_CHUNK_LEN;
pub const MAX_REASON: usize = 512;

/// Why the server refused a message. Each has its own code on the wire and metric outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The envelope names another agent than the connection's certificate.
    AgentMismatch,
    /// Unknown version, suite, kind or message type, or a bad field.
    Malformed,
    /// A length over the limits.
    TooLarge,
    /// The chunk's DEK was not registered by this agent.
    UnknownDek,
    /// The DEK is wrapped under a KEK the server does not know (yet): keep it and resend.
    UnknownKek,
    /// The DEK is wrapped under a deactivated KEK: keep it and resend after a new KEK.
    InactiveKek,
    /// A sequence number was skipped.
    SequenceGap,
    /// Different bytes under a sequence number already stored: a security event.
    ConflictingDuplicate,
    /// Nothing may follow a final chunk.
    AfterFinal,
    /// A stream's chunks must all belong to the session and stream of its first chunk.
    StreamMismatch,
    /// Storage or metadata is unavailable: nothing was stored; resend later.
    RetryLater,
    /// A stream reached sequence number 2^64 - 1: nothing can follow it.
    SequenceExhausted,
    /// The same chunk is still being stored (sent twice): its answer comes to the first send.
    InProgress,
    /// A sequence number inside a range the stream's gap record declared dropped.
    DeclaredDropped,
}

impl Reject {
    pub const ALL: [Reject; 14] = [
        Reject::AgentMismatch,
        Reject::Malformed,
        Reject::TooLarge,
        Reject::UnknownDek,
        Reject::UnknownKek,
        Reject::InactiveKek,
        Reject::SequenceGap,
        Reject::ConflictingDuplicate,
        Reject::AfterFinal,
        Reject::StreamMismatch,
        Reject::RetryLater,
        Reject::SequenceExhausted,
        Reject::InProgress,
        Reject::DeclaredDropped,
    ];

    pub fn code(self) -> u8 {
        match self {
            Reject::AgentMismatch => 1,
            Reject::Malformed => 2,
            Reject::TooLarge => 3,
            Reject::UnknownDek => 4,
            Reject::UnknownKek => 5,
            Reject::InactiveKek => 6,
            Reject::SequenceGap => 7,
            Reject::ConflictingDuplicate => 8,
            Reject::AfterFinal => 9,
            Reject::StreamMismatch => 10,
            Reject::RetryLater => 11,
            Reject::SequenceExhausted => 12,
            Reject::InProgress => 13,
            Reject::DeclaredDropped => 14,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Reject::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The metric label and log word for this outcome.
    pub fn name(self) -> &'static str {
        match self {
            Reject::AgentMismatch => "agent_mismatch",
            Reject::Malformed => "malformed",
            Reject::TooLarge => "too_large",
            Reject::UnknownDek => "unknown_dek",
            Reject::UnknownKek => "unknown_kek",
            Reject::InactiveKek => "inactive_kek",
            Reject::SequenceGap => "sequence_gap",
            Reject::ConflictingDuplicate => "conflicting_duplicate",
            Reject::AfterFinal => "after_final",
            Reject::StreamMismatch => "stream_mismatch",
            Reject::RetryLater => "retry_later",
            Reject::SequenceExhausted => "sequence_exhausted",
            Reject::InProgress => "in_progress",
            Reject::DeclaredDropped => "declared_dropped",
        }
    }

    /// Whether the agent should keep the data and send it again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Reject::UnknownKek
                | Reject::InactiveKek
                | Reject::RetryLater
                | Reject::UnknownDek
                | Reject::InProgress
        )
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A message from agent to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub body: Bytes,
}

pub fn encode_message(kind: u8, body: &[u8], out: &mut BytesMut) {
    out.reserve(5 + body.len());
    out.put_u8(kind);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

/// Take one whole message from the front of `buf`, if it is all there.
/// A length over the limit is an error before any of the body is buffered.
pub fn decode_message(buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let kind = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if kind != MSG_DEK && kind != MSG_CHUNK {
        return Err(DecodeError::Invalid {
            what: "message",
            reason: format!("unknown message type {kind}"),
        });
    }
    if len > MAX_BODY {
        return Err(DecodeError::OutOfRange {
            what: "message",
            field: "length",
            value: len as u64,
            limit: MAX_BODY as u64,
        });
    }
    if buf.len() < 5 + len {
        buf.reserve(5 + len - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(len).freeze();
    Ok(Some(Message { kind, body }))
}

/// What of `reason` a response carries: at most `MAX_REASON` bytes, cut at a character
/// boundary so the agent reads valid UTF-8.
pub fn wire_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The server's answer to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub kind: u8,
    pub seq: u64,
    pub outcome: Result<(), Reject>,
    pub reason: String,
}

impl Response {
    pub fn encode(&self, out: &mut BytesMut) {
        let reason = wire_reason(&self.reason).as_bytes();
        out.put_u8(self.kind);
        out.put_u8(match self.outcome {
            Ok(()) => 0,
            Err(r) => r.code(),
        });
        out.put_u64(self.seq);
        out.put_u16(reason.len() as u16);
        out.put_slice(reason);
    }

    pub fn decode(buf: &mut BytesMut) -> Result<Option<Response>, DecodeError> {
        if buf.len() < 12 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([buf[10], buf[11]]) as usize;
        if len > MAX_REASON {
            return Err(DecodeError::OutOfRange {
                what: "response",
                field: "msg_len",
                value: len as u64,
                limit: MAX_REASON as u64,
            });
        }
        if buf.len() < 12 + len {
            return Ok(None);
        }
        let kind = buf.get_u8();
        let code = buf.get_u8();
        let seq = buf.get_u64();
        buf.advance(2);
        let reason = String::from_utf8_lossy(&buf.split_to(len)).into_owned();
        let outcome = match code {
            0 => Ok(()),
            c => Err(Reject::from_code(c).ok_or(DecodeError::Invalid {
                what: "response",
                reason: format!("unknown code {c}"),
            })?),
        };
        Ok(Some(Response {
            kind,
            seq,
            outcome,
            reason,
        }))
    }
}

/// Why one side closed the connection: the QUIC application close code, with a reason text for
/// people. The agent decides what to do by the code, never by the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The server or the agent is stopping.
    Shutdown,
    /// The client certificate names no usable agent.
    NoIdentity,
    /// A newer connection of the same agent reached this node.
    Replaced,
    /// The node is at `limits.max_connections`.
    ConnectionCap,
    /// The agent's certificate is revoked, superseded or disabled.
    AccessRefused,
    /// The agent connected to another node since (a newer lease).
    LeaseSuperseded,
    /// This node cannot reach its database: try another node.
    TryAnotherNode,
}

impl CloseCode {
    pub const ALL: [CloseCode; 7] = [
        CloseCode::Shutdown,
        CloseCode::NoIdentity,
        CloseCode::Replaced,
        CloseCode::ConnectionCap,
        CloseCode::AccessRefused,
        CloseCode::LeaseSuperseded,
        CloseCode::TryAnotherNode,
    ];

    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            CloseCode::Shutdown => 0,
            CloseCode::NoIdentity => 1,
            CloseCode::Replaced => 2,
            CloseCode::ConnectionCap => 3,
            CloseCode::AccessRefused => 4,
            CloseCode::LeaseSuperseded => 5,
            CloseCode::TryAnotherNode => 6,
        }
    }

    /// The code a peer sent, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// A person must act (a certificate to renew or enrol) before this agent is taken.
    pub fn needs_a_person(self) -> bool {
        matches!(self, CloseCode::NoIdentity | CloseCode::AccessRefused)
    }

    /// Not a connection served and ended, but a refusal: the agent goes to its next node at
    /// once (or backs off when every node refused).
    pub fn is_refusal(self) -> bool {
        self.needs_a_person() || self == CloseCode::TryAnotherNode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        // Found by the `uplink` fuzz target: a cut inside a character sent invalid UTF-8.
        let r = Response {
            kind: MSG_CHUNK,
            seq: 9,
            outcome: Err(Reject::RetryLater),
            reason: "é".repeat(MAX_REASON),
        };
        let mut out = BytesMut::new();
        r.encode(&mut out);
        let back = Response::decode(&mut out).unwrap().unwrap();
        assert_eq!(back.reason, "é".repeat(MAX_REASON / 2));
        assert!(!back.reason.contains('\u{fffd}'));
    }

    #[test]
    fn messages_arrive_whole_or_not_at_all() {
        let mut out = BytesMut::new();
        encode_message(MSG_CHUNK, b"hello", &mut out);
        encode_message(MSG_DEK, b"", &mut out);
        let mut partial = BytesMut::from(&out[..7]);
        assert_eq!(decode_message(&mut partial).unwrap(), None);
        let m = decode_message(&mut out).unwrap().unwrap();
        assert_eq!((m.kind, &m.body[..]), (MSG_CHUNK, &b"hello"[..]));
        assert_eq!(decode_message(&mut out).unwrap().unwrap().kind, MSG_DEK);
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_and_unknown_messages_are_refused_at_the_header() {
        let mut b = BytesMut::from(&[MSG_CHUNK, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_message(&mut b),
            Err(DecodeError::OutOfRange { .. })
        ));
        let mut b = BytesMut::from(&[9, 0, 0, 0, 0][..]);
        assert!(decode_message(&mut b).is_err());
    }

    #[test]
    fn responses_round_trip_with_every_code() {
        for outcome in Reject::ALL.iter().map(|r| Err(*r)).chain([Ok(())]) {
            let r = Response {
                kind: MSG_CHUNK,
                seq: 77,
                outcome,
                reason: "why".into(),
            };
            let mut b = BytesMut::new();
            r.encode(&mut b);
            assert_eq!(Response::decode(&mut b).unwrap(), Some(r));
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode_message(&mut b) {}
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Response::decode(&mut b) {}
        }
    }

    #[test]
    fn close_codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CloseCode::ALL {
            assert!(seen.insert(c.code()), "{c:?} shares its code");
            assert_eq!(CloseCode::from_code(u64::from(c.code())), Some(c));
        }
        assert_eq!(CloseCode::from_code(7), None);
        // The codes deployed agents already know: a renumbering would break them.
        assert_eq!(CloseCode::AccessRefused.code(), 4);
        assert_eq!(CloseCode::TryAnotherNode.code(), 6);
    }
}
