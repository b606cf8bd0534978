//! Identifiers carried in envelopes: agent, session, stream, DEK and KEK ids, and chunk kinds.
//! Each type can only hold a valid value ("parse, don't validate").

use std::fmt;

/// Longest agent id, in characters.
pub const AGENT_ID_MAX_CHARS: usize = 64;
/// Longest agent id, in UTF-8 bytes (64 characters of up to 4 bytes each).
pub const AGENT_ID_MAX_BYTES: usize = 256;

/// The name of an agent: 1 to 64 printable characters (no control characters).
/// On the server it is the identity of the agent's client certificate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(String);

impl AgentId {
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let chars = name.chars().count();
        if chars == 0 {
            return Err("agent id is empty".into());
        }
        if chars > AGENT_ID_MAX_CHARS {
            return Err(format!(
                "agent id has {chars} characters, at most {AGENT_ID_MAX_CHARS} allowed"
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(format!(
                "agent id contains the control character {:?}; only printable text is allowed",
                c
            ));
        }
        Ok(AgentId(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lowercase hex of the UTF-8 bytes: safe as an object-key segment whatever the name holds.
    pub fn hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// A file-system-safe directory name for exports: the name with anything but
    /// `[A-Za-z0-9._-]` replaced by `_`, plus a short hash when something was replaced.
    pub fn dir_name(&self) -> String {
        let safe: String = self
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe == self.0 && safe != "." && safe != ".." {
            safe
        } else {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(self.0.as_bytes());
            format!("{safe}-{}", hex::encode(&digest[..4]))
        }
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({:?})", self.0)
    }
}

/// A recording session: one OS user session on one agent. Displayed as a UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub fn random() -> Self {
        SessionId(*uuid::Uuid::new_v4().as_bytes())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(text)
            .map(|u| SessionId(*u.as_bytes()))
            .map_err(|e| format!("{text:?} is not a session id (a UUID): {e}"))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// A stream inside a session; each stream carries one kind of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one data key: 16 random bytes chosen by the agent with the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DekId(pub [u8; 16]);

impl DekId {
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("operating system random source failed");
        DekId(id)
    }
}

impl fmt::Display for DekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DekId({self})")
    }
}

/// A KEK's id: SHA-256 of its SubjectPublicKeyInfo DER. Displayed as `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId(pub [u8; 32]);

impl KekId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let mut id = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut id).map_err(|_| {
            format!("{text:?} is not a KEK fingerprint (sha256: and 64 hex digits)")
        })?;
        Ok(KekId(id))
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({self})")
    }
}

/// What a chunk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One screen frame: an image file's bytes, kept as they are.
    Frame,
    /// A batch of keystroke events, one JSON object per line.
    Keystrokes,
    /// A batch of activity events (focus, size, idle, session start and end), one JSON object
    /// per line under the keystroke batch's rules.
    Activity,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Frame => 1,
            Kind::Keystrokes => 2,
            Kind::Activity => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Kind::Frame),
            2 => Some(Kind::Keystrokes),
            3 => Some(Kind::Activity),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Frame => "frames",
            Kind::Keystrokes => "keystrokes",
            Kind::Activity => "activity",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_printable_text_up_to_64_characters() {
        assert!(AgentId::new("ts-01.corp.example").is_ok());
        assert!(AgentId::new("Büro Rechner 7 / VDI").is_ok());
        assert!(AgentId::new("界".repeat(64)).is_ok());
        assert!(AgentId::new("x".repeat(65)).is_err());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("bad\nname").is_err());
    }

    #[test]
    fn dir_names_are_safe_and_distinct() {
        assert_eq!(AgentId::new("host-1").unwrap().dir_name(), "host-1");
        let a = AgentId::new("a/b").unwrap().dir_name();
        let b = AgentId::new("a_b").unwrap().dir_name();
        assert!(!a.contains('/'));
        assert_ne!(a, b);
        assert_ne!(AgentId::new("..").unwrap().dir_name(), "..");
    }

    #[test]
    fn kek_ids_round_trip_through_text() {
        let id = KekId([0xab; 32]);
        assert_eq!(KekId::parse(&id.to_string()).unwrap(), id);
        assert!(KekId::parse("sha256:12").is_err());
    }
}
