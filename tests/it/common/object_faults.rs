//! A fault injector around object_store's `ObjectStore` trait: any backend (a local
//! directory, S3 on moto) fails, slows down, throttles with 503 SlowDown, or is unreachable,
//! while a test runs against it. Only writes are affected (reads are the checker's).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What the store does to a write now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    Healthy = 0,
    /// Every write fails with a server error (after the client's own retries gave up).
    Failing = 1,
    /// Every write waits 300 ms first.
    Slow = 2,
    /// Every other write answers 503 SlowDown.
    Throttling = 3,
    /// Nothing answers: a connection error, after a connect timeout's wait.
    Unreachable = 4,
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fault: AtomicU8,
    calls: AtomicU64,
    /// Writes refused by an injected fault.
    pub refused: AtomicU64,
    /// Writes each fault acted on, by `Fault as usize`: refused (Failing, Throttling,
    /// Unreachable), delayed (Slow), let through (Healthy).
    hits: [AtomicU64; 5],
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            fault: AtomicU8::new(0),
            calls: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            hits: Default::default(),
        })
    }

    pub fn set(&self, f: Fault) {
        self.fault.store(f as u8, Ordering::SeqCst);
    }

    /// The fault applied to writes now.
    pub fn current(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::Failing,
            2 => Fault::Slow,
            3 => Fault::Throttling,
            4 => Fault::Unreachable,
            _ => Fault::Healthy,
        }
    }

    /// Writes `f` acted on so far (see `hits`).
    pub fn hits(&self, f: Fault) -> u64 {
        self.hits[f as usize].load(Ordering::SeqCst)
    }

    /// Apply the current fault to one write: Err is what the caller sees.
    async fn gate(&self, path: &Path) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let err = |msg: &str| object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("{path}: {msg}").into(),
        };
        let fault = self.fault.load(Ordering::SeqCst);
        let hit = || self.hits[usize::from(fault)].fetch_add(1, Ordering::SeqCst);
        let refuse = |e| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            hit();
            Err(e)
        };
        match fault {
            1 => refuse(err(
                "Server returned non-2xx status code: 500 Internal Server Error: InternalError (injected)",
            )),
            2 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                hit();
                Ok(())
            }
            3 if n.is_multiple_of(2) => refuse(err(
                "Server returned non-2xx status code: 503 Service Unavailable: SlowDown: Please reduce your request rate (injected)",
            )),
            4 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                refuse(err(
                    "error sending request: client error (Connect): tcp connect error: Connection refused (injected)",
                ))
            }
            0 => {
                hit();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.gate(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.gate(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.gate(to).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
