//! The agent's disk spool: every sealed chunk is written here before it is sent, and removed
//! once the server has acked it, so an agent crash (even `kill -9`) loses nothing it recorded.
//! It holds only ciphertext and wrapped DEK records, never a plaintext key.
//!
//! Files in the spool directory:
//! - `NNNNNNNNNNNN.spool`: records `len u32 | crc32c u32 | type u8 | body [len - 1]`, where the
//!   CRC32C covers `type | body`; type 1 is a DEK record, type 2 a sealed chunk. Every file
//!   starts with the DEK record of its run, so each file is self-contained.
//! - `ledger`: acks, 32-byte records `crc32c u32 | session [16] | stream u32 | seq u64`.
//!
//! A file is deleted when every chunk in it is acked. On start, a torn tail (a record cut by a
//! crash) or a corrupt record is counted, skipped, and reading goes on: never a crash loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{DekId, DekRecord, SealedChunk, SessionId, StreamId};

const TYPE_DEK: u8 = 1;
const TYPE_CHUNK: u8 = 2;
const LEDGER_RECORD: usize = 32;
/// A spool file is closed (and a new one started) at this size.
pub const FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The largest record: a whole chunk plus its type byte.
const MAX_RECORD: usize = crate::protocol::chunk::MAX_CHUNK_LEN + 1;

pub type ChunkKey = (SessionId, StreamId, u64);

/// What recovery found and what the spool holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub bytes: u64,
    pub records: u64,
    /// Records skipped on start because their CRC or length was wrong.
    pub corrupt_records: u64,
    /// Files whose last record was cut short (a crash mid-write).
    pub torn_tails: u64,
    /// Unacked chunks found on start (to be resent).
    pub recovered_chunks: u64,
    /// Capture time of the oldest unacked chunk, microseconds since the epoch.
    pub oldest_us: Option<i64>,
}

/// One stream's unacked chunks from an earlier run, in order, with their DEK record.
pub struct Recovered {
    pub dek_record: DekRecord,
    pub chunks: Vec<SealedChunk>,
}

struct FileState {
    size: u64,
    pending: HashSet<ChunkKey>,
}

pub struct Spool {
    dir: PathBuf,
    files: BTreeMap<u64, FileState>,
    where_is: HashMap<ChunkKey, u64>,
    current: Option<(u64, File)>,
    dek_record: Option<Vec<u8>>,
    ledger: File,
    last_sync: Instant,
    sync_every: Duration,
    stats: SpoolStats,
}

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

fn file_name(n: u64) -> String {
    format!("{n:012}.spool")
}

/// What one spool file holds: its valid DEK records and chunks, how many damaged records were
/// skipped, and whether it ends in a torn (half-written) record.
#[derive(Default)]
pub struct FileScan {
    pub deks: Vec<DekRecord>,
    pub chunks: Vec<SealedChunk>,
    pub corrupt: u64,
    pub torn: bool,
}

/// Decode a spool file's bytes, skipping whatever is damaged (never failing).
pub fn scan_file(bytes: &[u8]) -> FileScan {
    let (records, corrupt, torn) = read_records(bytes);
    let mut scan = FileScan {
        corrupt,
        torn,
        ..FileScan::default()
    };
    for (kind, body) in records {
        match kind {
            TYPE_DEK => match DekRecord::decode(body) {
                Ok(r) => scan.deks.push(r),
                Err(_) => scan.corrupt += 1,
            },
            TYPE_CHUNK => match SealedChunk::decode(Bytes::copy_from_slice(body)) {
                Ok(c) => scan.chunks.push(c),
                Err(_) => scan.corrupt += 1,
            },
            _ => scan.corrupt += 1,
        }
    }
    scan
}

/// What the ack ledger holds: the acked chunk keys, damaged records skipped, a torn tail.
pub struct LedgerScan {
    pub acked: HashSet<ChunkKey>,
    pub corrupt: u64,
    pub torn: bool,
}

/// Decode the ack ledger's bytes, skipping damaged records (never failing).
pub fn scan_ledger(bytes: &[u8]) -> LedgerScan {
    let mut scan = LedgerScan {
        acked: HashSet::new(),
        corrupt: 0,
        torn: false,
    };
    for rec in bytes.chunks(LEDGER_RECORD) {
        if rec.len() < LEDGER_RECORD {
            scan.torn = true;
            break;
        }
        if crc32c::crc32c(&rec[4..]) != u32::from_be_bytes(rec[0..4].try_into().expect("4 bytes")) {
            scan.corrupt += 1;
            continue;
        }
        let session = SessionId(rec[4..20].try_into().expect("16 bytes"));
        let stream = StreamId(u32::from_be_bytes(rec[20..24].try_into().expect("4 bytes")));
        let seq = u64::from_be_bytes(rec[24..32].try_into().expect("8 bytes"));
        scan.acked.insert((session, stream, seq));
    }
    scan
}

/// Read every valid record of a spool file; returns (records, corrupt skipped, torn tail).
fn read_records(bytes: &[u8]) -> (Vec<(u8, &[u8])>, u64, bool) {
    let mut out = Vec::new();
    let (mut corrupt, mut at) = (0u64, 0usize);
    let mut skipping = false;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 9 {
            return (out, corrupt, true);
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        if (1..=MAX_RECORD).contains(&len) && rest.len() < 8 + len {
            // Cut short by a crash while it was written.
            if !skipping {
                return (out, corrupt, true);
            }
        } else if (1..=MAX_RECORD).contains(&len) && crc32c::crc32c(&rest[8..8 + len]) == crc {
            out.push((rest[8], &rest[9..8 + len]));
            at += 8 + len;
            skipping = false;
            continue;
        }
        // A corrupt record: count it once and look for the next valid one byte by byte.
        if !skipping {
            corrupt += 1;
            skipping = true;
        }
        at += 1;
    }
    (out, corrupt, false)
}

impl Spool {
    /// Open (creating) the spool in `dir` and recover what an earlier run left unacked.
    pub fn open(dir: &Path, sync_every: Duration) -> Result<(Spool, Vec<Recovered>), SpoolError> {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let ledger_path = dir.join("ledger");
        let mut acked: HashSet<ChunkKey> = HashSet::new();
        let mut stats = SpoolStats::default();
        if let Ok(mut f) = File::open(&ledger_path) {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(err(&ledger_path))?;
            let ledger = scan_ledger(&buf);
            acked = ledger.acked;
            stats.corrupt_records += ledger.corrupt;
            stats.torn_tails += u64::from(ledger.torn);
        }
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(err(dir))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort();
        let mut files = BTreeMap::new();
        let mut where_is = HashMap::new();
        let mut deks: HashMap<DekId, DekRecord> = HashMap::new();
        let mut streams: BTreeMap<(SessionId, StreamId), BTreeMap<u64, SealedChunk>> =
            BTreeMap::new();
        for n in &numbers {
            let path = dir.join(file_name(*n));
            let bytes = std::fs::read(&path).map_err(err(&path))?;
            let scan = scan_file(&bytes);
            stats.corrupt_records += scan.corrupt;
            stats.torn_tails += u64::from(scan.torn);
            let mut pending = HashSet::new();
            for r in scan.deks {
                deks.insert(r.dek_id, r);
            }
            for c in scan.chunks {
                let key = (c.header.session, c.header.stream, c.header.seq);
                if !acked.contains(&key) {
                    pending.insert(key);
                    where_is.insert(key, *n);
                    streams.entry((key.0, key.1)).or_default().insert(key.2, c);
                }
            }
            if pending.is_empty() {
                std::fs::remove_file(&path).map_err(err(&path))?;
            } else {
                files.insert(
                    *n,
                    FileState {
                        size: bytes.len() as u64,
                        pending,
                    },
                );
            }
        }
        let mut recovered = Vec::new();
        for (_, chunks) in streams {
            let chunks: Vec<SealedChunk> = chunks.into_values().collect();
            let dek = chunks[0].header.dek_id;
            match deks.get(&dek) {
                Some(record) => {
                    stats.recovered_chunks += chunks.len() as u64;
                    recovered.push(Recovered {
                        dek_record: record.clone(),
                        chunks,
                    });
                }
                None => {
                    // Without its DEK record the server cannot take these: count them.
                    stats.corrupt_records += chunks.len() as u64;
                    for c in &chunks {
                        let key = (c.header.session, c.header.stream, c.header.seq);
                        if let Some(n) = where_is.remove(&key)
                            && let Some(f) = files.get_mut(&n)
                        {
                            f.pending.remove(&key);
                        }
                    }
                }
            }
        }
        // The ledger only needs acks for chunks still spooled: rewrite it compactly.
        let tmp = dir.join("ledger.new");
        {
            let mut f = File::create(&tmp).map_err(err(&tmp))?;
            for key in acked.iter().filter(|k| where_is.contains_key(k)) {
                f.write_all(&ledger_record(key)).map_err(err(&tmp))?;
            }
            f.sync_all().map_err(err(&tmp))?;
        }
        std::fs::rename(&tmp, &ledger_path).map_err(err(&ledger_path))?;
        let ledger = OpenOptions::new()
            .append(true)
            .open(&ledger_path)
            .map_err(err(&ledger_path))?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            files,
            where_is,
            current: None,
            dek_record: None,
            ledger,
            last_sync: Instant::now(),
            sync_every,
            stats,
        };
        spool.refresh_stats(
            recovered
                .iter()
                .flat_map(|r| r.chunks.iter())
                .map(|c| c.header.capture_time_us)
                .min(),
        );
        if spool.stats.corrupt_records > 0 || spool.stats.torn_tails > 0 {
            tracing::warn!(
                corrupt = spool.stats.corrupt_records,
                torn = spool.stats.torn_tails,
                "spool damage found and skipped"
            );
        }
        Ok((spool, recovered))
    }

    fn refresh_stats(&mut self, oldest: Option<i64>) {
        self.stats.bytes = self.files.values().map(|f| f.size).sum();
        self.stats.records = self.where_is.len() as u64;
        if oldest.is_some() {
            self.stats.oldest_us = oldest;
        }
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats.clone()
    }

    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// This run's DEK record: written at the head of every spool file from now on.
    pub fn set_dek(&mut self, record: &DekRecord) {
        self.dek_record = Some(record.encode());
    }

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut rec = Vec::with_capacity(9 + body.len());
        rec.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
        let mut crc = crc32c::crc32c(&[kind]);
        crc = crc32c::crc32c_append(crc, body);
        rec.extend_from_slice(&crc.to_be_bytes());
        rec.push(kind);
        rec.extend_from_slice(body);
        rec
    }

    /// Append a sealed chunk; it is on disk (in the page cache, fsynced every `sync_every`)
    /// before this returns.
    pub fn append(&mut self, chunk: &SealedChunk) -> Result<(), SpoolError> {
        let rotate = match &self.current {
            None => true,
            Some((n, _)) => self.files.get(n).is_none_or(|f| f.size >= FILE_BYTES),
        };
        if rotate {
            if let Some((_, f)) = self.current.take() {
                let _ = f.sync_all();
            }
            let n = self.files.keys().next_back().map_or(1, |n| n + 1);
            let path = self.dir.join(file_name(n));
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(err(&path))?;
            let mut size = 0;
            if let Some(dek) = &self.dek_record {
                let rec = Self::record(TYPE_DEK, dek);
                f.write_all(&rec).map_err(err(&path))?;
                size = rec.len() as u64;
            }
            // The new file's directory entry must be durable too.
            let _ = File::open(&self.dir).and_then(|d| d.sync_all());
            self.files.insert(
                n,
                FileState {
                    size,
                    pending: HashSet::new(),
                },
            );
            self.current = Some((n, f));
        }
        let (n, f) = self.current.as_mut().expect("opened above");
        let rec = Self::record(TYPE_CHUNK, chunk.bytes());
        let path = self.dir.join(file_name(*n));
        f.write_all(&rec).map_err(err(&path))?;
        if self.last_sync.elapsed() >= self.sync_every {
            f.sync_data().map_err(err(&path))?;
            self.last_sync = Instant::now();
        }
        let key = (chunk.header.session, chunk.header.stream, chunk.header.seq);
        let state = self.files.get_mut(n).expect("current file is tracked");
        state.size += rec.len() as u64;
        state.pending.insert(key);
        let n = *n;
        self.where_is.insert(key, n);
        self.stats.records = self.where_is.len() as u64;
        self.stats.bytes = self.bytes();
        Ok(())
    }

    /// The server acked this chunk: record it, and delete its file once all of it is acked.
    pub fn ack(
        &mut self,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Result<(), SpoolError> {
        let key = (session, stream, seq);
        let Some(n) = self.where_is.remove(&key) else {
            return Ok(());
        };
        let ledger_path = self.dir.join("ledger");
        self.ledger
            .write_all(&ledger_record(&key))
            .map_err(err(&ledger_path))?;
        let done = self.files.get_mut(&n).is_some_and(|f| {
            f.pending.remove(&key);
            f.pending.is_empty()
        });
        if done {
            // The current file too: the next append starts a new one (so space frees even
            // while everything fits in one file).
            if self.current.as_ref().is_some_and(|(c, _)| *c == n) {
                self.current = None;
            }
            self.files.remove(&n);
            let path = self.dir.join(file_name(n));
            std::fs::remove_file(&path).map_err(err(&path))?;
        }
        self.stats.records = self.where_is.len() as u64;
        self.stats.bytes = self.bytes();
        Ok(())
    }
}

fn ledger_record(key: &ChunkKey) -> [u8; LEDGER_RECORD] {
    let mut r = [0u8; LEDGER_RECORD];
    r[4..20].copy_from_slice(&key.0.0);
    r[20..24].copy_from_slice(&key.1.0.to_be_bytes());
    r[24..32].copy_from_slice(&key.2.to_be_bytes());
    let crc = crc32c::crc32c(&r[4..]);
    r[0..4].copy_from_slice(&crc.to_be_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Dek, StreamSealer};
    use crate::protocol::{AgentId, KekId, Kind};
    use proptest::prelude::*;

    fn record(dek: &Dek) -> DekRecord {
        DekRecord {
            dek_id: dek.id(),
            kek_id: KekId([1; 32]),
            agent_session: SessionId([2; 16]),
            created_us: 0,
            agent: AgentId::new("a").unwrap(),
            wrapped: vec![3; 256],
            signed: None,
        }
    }

    fn chunks(dek: &Dek, n: u64) -> Vec<SealedChunk> {
        let mut s = StreamSealer::new(
            dek,
            AgentId::new("a").unwrap(),
            SessionId([9; 16]),
            StreamId(0),
            Kind::Frame,
        );
        (0..n)
            .map(|i| {
                s.seal(format!("frame {i}").as_bytes(), i as i64, false)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn unacked_chunks_survive_a_restart_and_acked_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let dek = Dek::generate();
        let cs = chunks(&dek, 5);
        {
            let (mut sp, rec) = Spool::open(dir.path(), Duration::ZERO).unwrap();
            assert!(rec.is_empty());
            sp.set_dek(&record(&dek));
            for c in &cs {
                sp.append(c).unwrap();
            }
            sp.ack(SessionId([9; 16]), StreamId(0), 0).unwrap();
            sp.ack(SessionId([9; 16]), StreamId(0), 1).unwrap();
        } // dropped without any shutdown: as after kill -9
        let (sp, rec) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].dek_record, record(&dek));
        let seqs: Vec<u64> = rec[0].chunks.iter().map(|c| c.header.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert_eq!(
            rec[0].chunks[0].bytes(),
            cs[2].bytes(),
            "the same bytes, never re-sealed"
        );
        assert_eq!(sp.stats().recovered_chunks, 3);
    }

    #[test]
    fn a_fully_acked_file_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let dek = Dek::generate();
        let (mut sp, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        sp.set_dek(&record(&dek));
        for c in chunks(&dek, 3) {
            sp.append(&c).unwrap();
        }
        for i in 0..3 {
            sp.ack(SessionId([9; 16]), StreamId(0), i).unwrap();
        }
        drop(sp);
        let (sp, rec) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        assert!(rec.is_empty());
        assert_eq!(sp.bytes(), 0);
        let spools = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "spool")
            })
            .count();
        assert_eq!(spools, 0);
    }

    #[test]
    fn a_torn_tail_and_a_corrupt_record_are_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let dek = Dek::generate();
        {
            let (mut sp, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
            sp.set_dek(&record(&dek));
            for c in chunks(&dek, 4) {
                sp.append(&c).unwrap();
            }
        }
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        // Corrupt the second chunk record's body, and cut the last record in half.
        let dek_len = 9 + record(&dek).encode().len();
        let first =
            8 + u32::from_be_bytes(bytes[dek_len..dek_len + 4].try_into().unwrap()) as usize;
        bytes[dek_len + first + 20] ^= 0xff;
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, bytes).unwrap();
        let (sp, rec) = Spool::open(dir.path(), Duration::ZERO).unwrap();
        let seqs: Vec<u64> = rec[0].chunks.iter().map(|c| c.header.seq).collect();
        assert_eq!(seqs, vec![0, 2]);
        assert_eq!(sp.stats().corrupt_records, 1);
        assert_eq!(sp.stats().torn_tails, 1);
    }

    proptest! {
        #[test]
        fn any_damage_is_survived(cut in 0usize..400, flip in 0usize..400) {
            let dir = tempfile::tempdir().unwrap();
            let dek = Dek::generate();
            {
                let (mut sp, _) = Spool::open(dir.path(), Duration::ZERO).unwrap();
                sp.set_dek(&record(&dek));
                for c in chunks(&dek, 4) {
                    sp.append(&c).unwrap();
                }
            }
            let path = dir.path().join(file_name(1));
            let mut bytes = std::fs::read(&path).unwrap();
            let f = flip % bytes.len();
            bytes[f] ^= 0x5a;
            bytes.truncate(bytes.len() - cut % bytes.len());
            std::fs::write(&path, bytes).unwrap();
            let opened = Spool::open(dir.path(), Duration::ZERO);
            prop_assert!(opened.is_ok());
        }
    }
}
