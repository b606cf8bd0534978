//! A bounds-checked big-endian reader shared by the decoders, and their error type.

/// Why bytes could not be decoded. Every variant says which structure and which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: truncated, need {need} more bytes but only {have} remain")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: bad magic {found:02x?}, expected {expected:?}")]
    BadMagic {
        what: &'static str,
        found: [u8; 4],
        expected: &'static str,
    },
    #[error("{what}: unsupported format version {version}; this build reads versions {known}")]
    UnsupportedVersion {
        what: &'static str,
        version: u8,
        known: &'static str,
    },
    #[error("{what}: unsupported cipher suite {suite}")]
    UnsupportedSuite { what: &'static str, suite: u8 },
    #[error("chunk: unknown kind {0} (1 = frame, 2 = keystrokes, 3 = activity)")]
    UnknownKind(u8),
    #[error("chunk: unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("{what}: {field} is {value}, limit is {limit}")]
    OutOfRange {
        what: &'static str,
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{what}: invalid agent id: {reason}")]
    AgentId { what: &'static str, reason: String },
    #[error("{what}: {extra} unexpected bytes after the end")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("segment: checksum mismatch (object corrupt or altered at rest)")]
    SegmentChecksum,
    #[error("segment: chunk {index} at byte {offset}: {source}")]
    ChunkInSegment {
        index: usize,
        offset: usize,
        source: Box<DecodeError>,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

pub(crate) struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                need: n,
                have: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub(crate) fn magic(&mut self, expected: &'static str) -> Result<(), DecodeError> {
        let found: [u8; 4] = self.array()?;
        if found != expected.as_bytes() {
            return Err(DecodeError::BadMagic {
                what: self.what,
                found,
                expected,
            });
        }
        Ok(())
    }

    /// The version byte, refused unless it is one of `known` (named in the error as `names`).
    pub(crate) fn version(&mut self, known: &[u8], names: &'static str) -> Result<u8, DecodeError> {
        let version = self.u8()?;
        if !known.contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                what: self.what,
                version,
                known: names,
            });
        }
        Ok(version)
    }

    pub(crate) fn suite(&mut self) -> Result<u8, DecodeError> {
        let suite = self.u8()?;
        if suite != super::SUITE_AES256GCM_HKDF_OAEP {
            return Err(DecodeError::UnsupportedSuite {
                what: self.what,
                suite,
            });
        }
        Ok(suite)
    }

    /// A length field checked against `limit` before anything is allocated or sliced.
    pub(crate) fn bounded(
        &mut self,
        field: &'static str,
        value: u64,
        min: u64,
        limit: u64,
    ) -> Result<usize, DecodeError> {
        if value > limit || value < min {
            return Err(DecodeError::OutOfRange {
                what: self.what,
                field,
                value,
                limit,
            });
        }
        Ok(value as usize)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                what: self.what,
                extra: self.remaining(),
            });
        }
        Ok(())
    }
}
