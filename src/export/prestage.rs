//! Chunks opened while the scan holds their bytes (one pass: each byte read and hashed once).
//! The scan hands every kept chunk to `Prestage`, which reads the DEK record the chunk names
//! from its own key (once: the scan takes that read instead of reading it again), unwraps it
//! once, and opens the chunk on the blocking pool in batches: a frame's image is written to a file of its own (later renamed into place,
//! never written twice), any other plaintext is appended to its batch's log. Nothing decided
//! here is trusted: a chunk whose segment proves damaged is in no stream, a chunk whose DEK
//! record the scan read differently is opened again the slow way, and a chunk that cannot be
//! opened here is left for the export to open and report.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::crypto::{Dek, StreamKey, sha256x2};
use crate::inspect::{ChunkRef, ChunkSink, Scan, StreamKey as StreamKeyId};
use crate::keys::PrivateKeyFile;
use crate::protocol::payload::Frame;
use crate::protocol::screen::is_update_name;
use crate::protocol::{DekRecord, Kind, SealedChunk, SessionId, StreamId};
use crate::storage::{self, paths};

use super::Owner;

/// A chunk is known by where it is: (segment index, offset).
pub(super) type At = (u32, u64);

/// What a chunk's plaintext became.
pub(super) enum Staged {
    /// A whole (not screen-update) frame: its image in a file of its own, its name.
    Image {
        path: PathBuf,
        name: String,
        len: u64,
        /// The image's SHA-256, for the receipt (hashed here, on the blocking pool).
        sha256: [u8; 32],
    },
    /// Any other plaintext: `len` bytes at `offset` of a batch's log.
    Plain {
        log: Arc<std::fs::File>,
        offset: u64,
        len: usize,
    },
}

impl Staged {
    /// A `Plain` chunk's plaintext, read back.
    pub(super) fn read_plain(
        log: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
        log.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// A chunk to open, with the key its header names.
struct Item {
    at: At,
    owner: Owner,
    chunk: SealedChunk,
    key: Arc<StreamKey>,
}

type Batch = Vec<(At, Owner, Staged)>;

/// Ciphertext bytes (or chunks) gathered before a batch goes to the blocking pool.
const BATCH_BYTES: usize = 4 << 20;
const BATCH_CHUNKS: usize = 512;
/// Batches being opened at once (each at most `BATCH_BYTES` and its plaintext).
const IN_FLIGHT: usize = 2;

pub(super) struct Prestage<'a> {
    store: &'a dyn ObjectStore,
    keys: &'a [PrivateKeyFile],
    dir: PathBuf,
    made: bool,
    /// Each DEK record read, as read, with its DEK if a key opened it.
    deks: HashMap<Owner, Option<(DekRecord, Arc<Dek>)>>,
    /// Each DEK record object read (`None`: there was none), until the scan takes it.
    read: HashMap<Owner, Option<bytes::Bytes>>,
    stream_keys: HashMap<(Owner, SessionId, StreamId, Kind), Arc<StreamKey>>,
    batch: Vec<Item>,
    batch_bytes: usize,
    batches: u64,
    in_flight: FuturesUnordered<JoinHandle<Batch>>,
    staged: HashMap<At, (Owner, Staged)>,
}

impl<'a> Prestage<'a> {
    pub(super) fn new(store: &'a dyn ObjectStore, keys: &'a [PrivateKeyFile], out: &Path) -> Self {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).expect("operating system random source failed");
        Prestage {
            store,
            keys,
            dir: out.join(format!(".{}.opened", hex::encode(r))),
            made: false,
            deks: HashMap::new(),
            read: HashMap::new(),
            stream_keys: HashMap::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            batches: 0,
            in_flight: FuturesUnordered::new(),
            staged: HashMap::new(),
        }
    }

    /// The DEK of `owner`, its record read from its own key (once).
    async fn dek(&mut self, owner: &Owner) -> Option<Arc<Dek>> {
        if let Some(known) = self.deks.get(owner) {
            return known.as_ref().map(|(_, d)| d.clone());
        }
        let path = paths::dek_record(&owner.0, owner.1);
        let record = match storage::get_opt(self.store, &path).await {
            Ok(got) => {
                self.read.insert(owner.clone(), got.clone());
                got.and_then(|bytes| DekRecord::decode(&bytes).ok())
                    .filter(|r| paths::dek_record(&r.agent, r.dek_id) == path)
            }
            Err(_) => None, // the scan reads it again and says why it cannot
        };
        let opened = record.and_then(|r| {
            let k = self.keys.iter().find(|k| k.kek_id == r.kek_id)?;
            let dek = Dek::unwrap(&r, &k.key, k.kek_id).ok()?;
            Some((r, Arc::new(dek)))
        });
        let dek = opened.as_ref().map(|(_, d)| d.clone());
        self.deks.insert(owner.clone(), opened);
        dek
    }

    /// Send the gathered chunks to the blocking pool, waiting for room first.
    async fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.collect_one().await;
        }
        if !self.made {
            // Not made: nothing is opened ahead, and the export opens every chunk itself.
            if std::fs::create_dir_all(&self.dir).is_err() {
                self.batch.clear();
                return;
            }
            self.made = true;
        }
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let dir = self.dir.clone();
        let n = self.batches;
        self.batches += 1;
        self.in_flight.push(tokio::task::spawn_blocking(move || {
            open_batch(&dir, n, items)
        }));
    }

    async fn collect_one(&mut self) {
        if let Some(Ok(done)) = self.in_flight.next().await {
            for (at, owner, s) in done {
                self.staged.insert(at, (owner, s));
            }
        }
    }

    /// Everything opened ahead, keeping only chunks whose DEK record is the one the scan
    /// read (a record changed between the two reads leaves its chunks to the slow way).
    pub(super) async fn finish(mut self, scan: &Scan) -> Opened {
        self.dispatch().await;
        while !self.in_flight.is_empty() {
            self.collect_one().await;
        }
        let same = |owner: &Owner, known: &Option<(DekRecord, Arc<Dek>)>| matches!((known, scan.records.get(owner)), (Some((a, _)), Some(b)) if a == b);
        let deks: HashMap<Owner, Arc<Dek>> = self
            .deks
            .iter()
            .filter(|(o, k)| same(o, k))
            .filter_map(|(o, k)| k.as_ref().map(|(_, d)| (o.clone(), d.clone())))
            .collect();
        let staged = std::mem::take(&mut self.staged)
            .into_iter()
            .filter(|(_, (owner, _))| deks.contains_key(owner))
            .map(|(at, (_, s))| (at, s))
            .collect();
        Opened {
            dir: self.made.then(|| std::mem::take(&mut self.dir)),
            staged,
            deks,
        }
    }
}

impl Drop for Prestage<'_> {
    fn drop(&mut self) {
        if self.made && !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl ChunkSink for Prestage<'_> {
    fn dek_record(&mut self, owner: &Owner) -> Option<Option<bytes::Bytes>> {
        self.read.remove(owner)
    }

    fn chunk(
        &mut self,
        key: &StreamKeyId,
        r: &ChunkRef,
        c: &SealedChunk,
    ) -> impl Future<Output = ()> + Send {
        let owner: Owner = (key.0.clone(), r.dek_id);
        let at = (r.segment, r.offset);
        let chunk = c.clone();
        async move {
            let Some(dek) = self.dek(&owner).await else {
                return;
            };
            let h = &chunk.header;
            let skey = self
                .stream_keys
                .entry((owner.clone(), h.session, h.stream, h.kind))
                .or_insert_with(|| Arc::new(StreamKey::for_chunk(&dek, h)))
                .clone();
            self.batch_bytes += chunk.len();
            self.batch.push(Item {
                at,
                owner,
                chunk,
                key: skey,
            });
            if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
                self.dispatch().await;
            }
        }
    }
}

/// Open a batch: what does not open, or cannot be written, is left out (the export opens it
/// again and says why).
fn open_batch(dir: &Path, n: u64, items: Vec<Item>) -> Batch {
    use std::io::Write;
    let mut out = Vec::with_capacity(items.len());
    // A directory per batch: batches opened at once do not queue on one directory's lock.
    let dir = dir.join(n.to_string());
    if std::fs::create_dir(&dir).is_err() {
        return out;
    }
    let log_path = dir.join("plain.log");
    let mut log: Option<(std::io::BufWriter<std::fs::File>, u64)> = None;
    let mut plain_at = Vec::new();
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    // Whole frames are hashed two at a time (crypto::sha256x2): one written waits for the
    // next, and their buffers are reused.
    let mut waiting: Option<Whole> = None;
    let mut spare: Vec<zeroize::Zeroizing<Vec<u8>>> = Vec::new();
    for item in items {
        if item.key.open_into(&item.chunk, &mut buf).is_err() {
            continue;
        }
        let plain = &buf[..];
        let h = &item.chunk.header;
        if h.kind == Kind::Frame
            && !h.gap
            && let Ok(frame) = Frame::decode(plain)
            && !is_update_name(frame.name)
        {
            let path = dir.join(format!("{}-{}", item.at.0, item.at.1));
            if std::fs::write(&path, frame.image).is_ok() {
                let start = frame.image.as_ptr() as usize - plain.as_ptr() as usize;
                let image = start..start + frame.image.len();
                let name = frame.name.to_owned();
                let next = spare.pop().unwrap_or_default();
                let whole = Whole {
                    at: item.at,
                    owner: item.owner,
                    path,
                    name,
                    image,
                    plain: std::mem::replace(&mut buf, next),
                };
                match waiting.take() {
                    None => waiting = Some(whole),
                    Some(first) => {
                        let (a, b) = sha256x2::digest_pair(first.image(), whole.image());
                        spare.push(first.staged(a, &mut out));
                        spare.push(whole.staged(b, &mut out));
                    }
                }
            }
            continue;
        }
        if log.is_none() {
            match std::fs::File::options()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&log_path)
            {
                Ok(f) => log = Some((std::io::BufWriter::new(f), 0)),
                Err(_) => continue,
            }
        }
        let (w, end) = log.as_mut().expect("opened above");
        if w.write_all(plain).is_err() {
            return out;
        }
        plain_at.push((item.at, item.owner, *end, plain.len()));
        *end += plain.len() as u64;
    }
    if let Some(last) = waiting {
        let digest = Sha256::digest(last.image()).into();
        last.staged(digest, &mut out);
    }
    if let Some((w, _)) = log
        && let Ok(f) = w.into_inner()
    {
        let f = Arc::new(f);
        for (at, owner, offset, len) in plain_at {
            let log = f.clone();
            out.push((at, owner, Staged::Plain { log, offset, len }));
        }
    }
    out
}

/// A whole frame written to its file, its plaintext kept until its SHA-256 is taken.
struct Whole {
    at: At,
    owner: Owner,
    path: PathBuf,
    name: String,
    /// Where the image is in `plain`.
    image: std::ops::Range<usize>,
    plain: zeroize::Zeroizing<Vec<u8>>,
}

impl Whole {
    fn image(&self) -> &[u8] {
        &self.plain[self.image.clone()]
    }

    /// Add it to `out` with its SHA-256; its buffer back, for reuse.
    fn staged(self, sha256: [u8; 32], out: &mut Batch) -> zeroize::Zeroizing<Vec<u8>> {
        let staged = Staged::Image {
            path: self.path,
            name: self.name,
            len: self.image.len() as u64,
            sha256,
        };
        out.push((self.at, self.owner, staged));
        self.plain
    }
}

/// What was opened ahead, for the export to place; what is not placed is removed with it.
pub(super) struct Opened {
    dir: Option<PathBuf>,
    pub(super) staged: HashMap<At, Staged>,
    /// The DEKs unwrapped from records the scan read the same.
    pub(super) deks: HashMap<Owner, Arc<Dek>>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.staged.clear(); // the logs closed first
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::StreamSealer;
    use crate::inspect::{Filter, scan_into};
    use crate::keys::{self, Passphrase};
    use crate::protocol::AgentId;
    use object_store::memory::InMemory;

    fn kek() -> PrivateKeyFile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
        let pass = std::fs::read(dir.join("passphrase.txt")).unwrap();
        let pass = pass.strip_suffix(b"\n").unwrap().to_vec();
        keys::load_private_key(&dir.join("kek.pem"), || Ok(Passphrase::new(pass))).unwrap()
    }

    /// A store holding one session: three whole frames and two keystroke batches.
    async fn store(kek: &PrivateKeyFile) -> (InMemory, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let agent = AgentId::new("a1").unwrap();
        let session = SessionId([4; 16]);
        let dek = Dek::generate();
        let public = keys::public_of(&kek.key);
        let record = dek.wrap(&public, kek.kek_id, agent.clone(), session, 1);
        let images: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let lines: Vec<Vec<u8>> = (0..2)
            .map(|i| format!("{{\"t\":{i},\"text\":\"k{i}\"}}").into_bytes())
            .collect();
        let mut chunks = Vec::new();
        let mut frames = StreamSealer::new(&dek, agent.clone(), session, StreamId(0), Kind::Frame);
        for (i, image) in images.iter().enumerate() {
            let name = format!("f{i}.png");
            let plain = Frame { name: &name, image }.encode();
            chunks.push(frames.seal(&plain, i as i64, i == 2).unwrap());
        }
        let mut keys_stream =
            StreamSealer::new(&dek, agent, session, StreamId(1), Kind::Keystrokes);
        for (i, line) in lines.iter().enumerate() {
            chunks.push(keys_stream.seal(line, i as i64, i == 1).unwrap());
        }
        let store = InMemory::new();
        crate::recorder::store_recording(&store, &record, &chunks)
            .await
            .unwrap();
        (store, images, lines)
    }

    #[tokio::test]
    async fn chunks_are_opened_during_the_scan_and_kept_only_under_the_record_the_scan_read() {
        let kek = kek();
        let (store, images, lines) = store(&kek).await;
        let out = tempfile::tempdir().unwrap();

        let mut ahead = Prestage::new(&store, std::slice::from_ref(&kek), out.path());
        let scan = scan_into(&store, &Filter::default(), |_| {}, &mut ahead)
            .await
            .unwrap();
        // The scan took the DEK record the sink read, rather than reading it again.
        assert!(ahead.read.is_empty() && scan.records.len() == 1);
        let opened = ahead.finish(&scan).await;
        assert_eq!(opened.deks.len(), 1);
        let mut by_stream = scan.streams.values();
        let frames = by_stream.next().unwrap();
        for (i, copies) in frames.values().enumerate() {
            match &opened.staged[&(copies[0].segment, copies[0].offset)] {
                Staged::Image {
                    path,
                    name,
                    len,
                    sha256,
                } => {
                    assert_eq!(sha256, &<[u8; 32]>::from(Sha256::digest(&images[i])));
                    assert_eq!(std::fs::read(path).unwrap(), images[i], "frame {i}");
                    assert_eq!(name, &format!("f{i}.png"));
                    assert_eq!(*len, images[i].len() as u64);
                }
                Staged::Plain { .. } => panic!("frame {i} was not written as its own file"),
            }
        }
        for (i, copies) in by_stream.next().unwrap().values().enumerate() {
            match &opened.staged[&(copies[0].segment, copies[0].offset)] {
                Staged::Plain { log, offset, len } => {
                    let plain = Staged::read_plain(log, *offset, *len).unwrap();
                    assert_eq!(&plain[..], &lines[i][..], "keystroke batch {i}");
                }
                Staged::Image { .. } => panic!("a keystroke batch became a frame"),
            }
        }
        drop(opened);
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "what was opened ahead and not placed is removed"
        );

        // The scan read another record under that DEK's name (replaced between the two reads):
        // nothing opened ahead is used, and the export opens each chunk itself.
        let mut ahead = Prestage::new(&store, std::slice::from_ref(&kek), out.path());
        let mut scan = scan_into(&store, &Filter::default(), |_| {}, &mut ahead)
            .await
            .unwrap();
        for r in scan.records.values_mut() {
            r.created_us += 1;
        }
        let opened = ahead.finish(&scan).await;
        assert!(opened.staged.is_empty() && opened.deks.is_empty());

        // Without the KEK's private key nothing is opened ahead.
        let mut ahead = Prestage::new(&store, &[], out.path());
        let scan = scan_into(&store, &Filter::default(), |_| {}, &mut ahead)
            .await
            .unwrap();
        assert!(ahead.finish(&scan).await.staged.is_empty());
    }
}
