//! The object store: opening it by URL (a local directory with fsync by default; S3, GCS or
//! Azure through object_store's builders) and writing objects create-if-absent. Object keys
//! are formatted only in `paths`.

pub mod durable;
pub mod paths;
pub mod remote;

pub use crate::config::{Location, LocationError};
pub use remote::{Store, open};

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {dir}: {detail}")]
    Open { dir: String, detail: String },
    #[error(transparent)]
    Url(#[from] LocationError),
    #[error("object {path}: already exists with different bytes (refusing to overwrite)")]
    Conflict { path: String },
    #[error("object {path}: {detail}")]
    Local { path: String, detail: String },
    #[error("object {path}: {source}{}", remote::credentials_hint(.source))]
    Backend {
        path: String,
        #[source]
        source: object_store::Error,
    },
}

/// What a create-if-absent write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The object was already there with identical bytes.
    AlreadyPresent,
}

/// A store in a local directory (created if absent), fsyncing files and directories.
pub fn open_local(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
        dir: dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let fs = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| StoreError::Open {
            dir: dir.display().to_string(),
            detail: e.to_string(),
        })?
        .with_fsync(true);
    Ok(Arc::new(fs))
}

/// Write `bytes` at `path` unless an object is there; an existing object with the same bytes
/// is success, one with different bytes is a conflict.
pub async fn put_new(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
) -> Result<PutOutcome, StoreError> {
    put_new_parts(store, path, vec![bytes]).await
}

/// `put_new` of the object made of `parts` in order (one conditional PUT, `If-None-Match: *`
/// on S3: the parts are not copied together first).
pub async fn put_new_parts(
    store: &dyn ObjectStore,
    path: &Path,
    parts: Vec<Bytes>,
) -> Result<PutOutcome, StoreError> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let payload: PutPayload = parts.iter().cloned().collect();
    match store.put_opts(path, payload, opts).await {
        Ok(_) => Ok(PutOutcome::Created),
        Err(object_store::Error::AlreadyExists { .. }) => {
            same_or_conflict(store, path, &parts).await
        }
        Err(source) => Err(StoreError::Backend {
            path: path.to_string(),
            source,
        }),
    }
}

/// An object found where a new one was to go: identical bytes are a repeat of our own write
/// (its answer was lost), anything else a conflict.
pub(crate) async fn same_or_conflict(
    store: &dyn ObjectStore,
    path: &Path,
    parts: &[Bytes],
) -> Result<PutOutcome, StoreError> {
    let existing = get(store, path).await?;
    let mut rest = &existing[..];
    for p in parts {
        if rest.len() < p.len() || rest[..p.len()] != p[..] {
            return Err(StoreError::Conflict {
                path: path.to_string(),
            });
        }
        rest = &rest[p.len()..];
    }
    if rest.is_empty() {
        Ok(PutOutcome::AlreadyPresent)
    } else {
        Err(StoreError::Conflict {
            path: path.to_string(),
        })
    }
}

pub async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Bytes, StoreError> {
    let backend = |source| StoreError::Backend {
        path: path.to_string(),
        source,
    };
    store
        .get(path)
        .await
        .map_err(backend)?
        .bytes()
        .await
        .map_err(backend)
}

/// Bytes `start .. start + len` of an object (one chunk of a segment: never the whole object).
pub async fn get_range(
    store: &dyn ObjectStore,
    path: &Path,
    start: u64,
    len: u32,
) -> Result<Bytes, StoreError> {
    store
        .get_range(path, start..start + u64::from(len))
        .await
        .map_err(|source| StoreError::Backend {
            path: path.to_string(),
            source,
        })
}

/// `get`, with an absent object as `None`.
pub async fn get_opt(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, StoreError> {
    match get(store, path).await {
        Ok(b) => Ok(Some(b)),
        Err(StoreError::Backend {
            source: object_store::Error::NotFound { .. },
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every object under `prefix` with its size, sorted by key. A key with `#` anywhere in it is
/// not an object but a staging file (a local store's write in progress, or one a crash
/// interrupted: docs/format.md "Store layout"), and is not listed.
pub async fn list_meta(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
    let mut metas: Vec<object_store::ObjectMeta> = store
        .list(Some(prefix))
        .try_filter(|m| std::future::ready(!is_staging(&m.location)))
        .try_collect()
        .await
        .map_err(|source| StoreError::Backend {
            path: prefix.to_string(),
            source,
        })?;
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(metas)
}

/// A staging file's key: `#` anywhere in it (object keys are hex, digits and `-`).
pub fn is_staging(key: &Path) -> bool {
    key.as_ref().contains('#')
}

/// Every object under `prefix`, sorted by key.
pub async fn list(store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<Path>, StoreError> {
    Ok(list_meta(store, prefix)
        .await?
        .into_iter()
        .map(|m| m.location)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn conformance(store: &dyn ObjectStore) {
        let p = Path::from("v1/test/a.bin");
        assert_eq!(
            put_new(store, &p, Bytes::from_static(b"one"))
                .await
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            put_new(store, &p, Bytes::from_static(b"one"))
                .await
                .unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(matches!(
            put_new(store, &p, Bytes::from_static(b"two")).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(get(store, &p).await.unwrap(), Bytes::from_static(b"one"));
        put_new(store, &Path::from("v1/test/0.bin"), Bytes::new())
            .await
            .unwrap();
        let listed = list(store, &Path::from("v1/test")).await.unwrap();
        assert_eq!(listed, vec![Path::from("v1/test/0.bin"), p]);
    }

    #[tokio::test]
    async fn in_memory_store_conforms() {
        conformance(&InMemory::new()).await;
    }

    #[tokio::test]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance(open_local(&dir.path().join("store")).unwrap().as_ref()).await;
    }
}
