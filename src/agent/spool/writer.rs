//! The spool's writer thread: every file operation of the spool (new file, record, fsync, ack
//! ledger, deletion) runs here, in the order the spool asked for them, so no async task does
//! blocking file IO and no lock is held across one. The spool's bookkeeping (which file holds
//! what, sizes) stays with `Spool`, exact at once; this thread only carries it out.
//!
//! Its queue is bounded by its users rather than by a capacity: every task that asks for an
//! operation waits for its answer (a chunk's record before the chunk is queued for sending; a
//! stream's acks before it reads its next answer), so it holds at most a window of operations
//! per stream and one record per capture task.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{SpoolError, err, file_name};

pub(super) enum Op {
    /// Start file `n` (after syncing the one before), with the run's DEK record at its head.
    Open { n: u64, head: Option<Vec<u8>> },
    /// Append a record to file `n`; the answer says whether it is written.
    Append {
        n: u64,
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Append ack records to the ledger.
    Ledger(Vec<u8>),
    /// Delete file `n` (every chunk in it is acked, or none was written).
    Remove(u64),
    /// Answered (`Ok`) once every operation before it is done.
    Barrier(oneshot::Sender<Result<(), SpoolError>>),
}

/// Waits for the writer to carry out an operation (or every one before a barrier).
pub struct Written(Option<oneshot::Receiver<Result<(), SpoolError>>>);

impl Written {
    pub(super) fn new(rx: oneshot::Receiver<Result<(), SpoolError>>) -> Self {
        Written(Some(rx))
    }

    /// Nothing to wait for (no spool operation was needed).
    pub(super) fn done() -> Self {
        Written(None)
    }

    pub async fn wait(self) -> Result<(), SpoolError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or_else(|_| Err(gone())),
        }
    }

    /// `wait` from a thread that is not async (tests, start-up).
    pub fn wait_blocking(self) -> Result<(), SpoolError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(gone())),
        }
    }
}

fn gone() -> SpoolError {
    SpoolError {
        path: PathBuf::new(),
        source: std::io::Error::other("the spool writer stopped"),
    }
}

struct Writer {
    dir: PathBuf,
    current: Option<(u64, File)>,
    ledger: File,
    last_sync: Instant,
    sync_every: Duration,
}

/// Start the writer thread over `dir`, appending acks to `ledger`.
pub(super) fn start(
    dir: &Path,
    ledger: File,
    sync_every: Duration,
) -> std::io::Result<(mpsc::Sender<Op>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let mut w = Writer {
        dir: dir.to_owned(),
        current: None,
        ledger,
        last_sync: Instant::now(),
        sync_every,
    };
    let thread = std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || {
            while let Ok(op) = rx.recv() {
                w.run(op);
            }
            if let Some((_, f)) = w.current.take() {
                let _ = f.sync_data();
            }
            let _ = w.ledger.sync_data();
        })?;
    Ok((tx, thread))
}

impl Writer {
    fn run(&mut self, op: Op) {
        match op {
            Op::Open { n, head } => {
                if let Some((_, f)) = self.current.take() {
                    let _ = f.sync_all();
                }
                if let Err(e) = self.open(n, head) {
                    // The appends to it fail and say so; the spool starts another file.
                    tracing::debug!(error = %e, "cannot start a spool file");
                }
            }
            Op::Append { n, record, done } => {
                // Nobody waits for a gap record's append: its failure is said here.
                if let Err(Err(e)) = done.send(self.append(n, &record)) {
                    tracing::error!(error = %e, "cannot write a record to the spool");
                }
            }
            Op::Ledger(records) => {
                let path = self.dir.join("ledger");
                if let Err(e) = self.ledger.write_all(&records).map_err(err(&path)) {
                    tracing::error!(error = %e, "cannot record an ack in the spool");
                }
            }
            Op::Remove(n) => {
                if self.current.as_ref().is_some_and(|(c, _)| *c == n) {
                    self.current = None;
                }
                let path = self.dir.join(file_name(n));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        let e = err(&path)(e);
                        tracing::error!(error = %e, "cannot delete an acked spool file");
                    }
                }
            }
            Op::Barrier(done) => {
                // The operations before it reported their own errors.
                let _ = done.send(Ok(()));
            }
        }
    }

    fn open(&mut self, n: u64, head: Option<Vec<u8>>) -> Result<(), SpoolError> {
        let path = self.dir.join(file_name(n));
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        if let Some(rec) = head {
            f.write_all(&rec).map_err(err(&path))?;
        }
        // The new file's directory entry must be durable too.
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        self.current = Some((n, f));
        Ok(())
    }

    fn append(&mut self, n: u64, record: &[u8]) -> Result<(), SpoolError> {
        let path = self.dir.join(file_name(n));
        let Some((_, f)) = self.current.as_mut().filter(|(c, _)| *c == n) else {
            return Err(err(&path)(std::io::Error::other(
                "the spool file could not be started",
            )));
        };
        f.write_all(record).map_err(err(&path))?;
        if self.last_sync.elapsed() >= self.sync_every {
            f.sync_data().map_err(err(&path))?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}
