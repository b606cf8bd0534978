//! Where `sealstream serve` keeps its data: `[store]` (reaching the object store),
//! `[segments]` (batching chunks into segments) and `[database]` (PostgreSQL pools).

use std::path::PathBuf;

use serde::Deserialize;

/// `[store]`: how an object store URL is reached. Credentials come from the environment and
/// the provider's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, web identity,
/// instance metadata; `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`/`_KEY`), never
/// from this file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// S3-compatible endpoint (`http://127.0.0.1:9000`, `https://s3.example.net`); empty:
    /// AWS itself, or `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    /// S3 region; empty: `AWS_REGION` or us-east-1.
    pub region: String,
    /// Address buckets as `endpoint/bucket` (path style, most S3-compatible services) or, when
    /// false, as `bucket.endpoint`; unset: path style, unless
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub path_style: Option<bool>,
    /// An AWS shared credentials file to read when `AWS_ACCESS_KEY_ID` is not set; empty:
    /// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials` if present. Without either,
    /// web identity, ECS and instance-metadata credentials are tried.
    pub credentials_file: PathBuf,
    /// Its profile; empty: `AWS_PROFILE`, else `default`.
    pub profile: String,
    /// Send an `x-amz-checksum-sha256` with every upload (S3 buckets with Object Lock default
    /// retention require an integrity checksum on PUT).
    pub checksum_sha256: bool,
    /// Retries of a request that met throttling (429, 503 SlowDown), a 5xx or a timeout, with
    /// exponential backoff; after them the chunks are answered `retry_later`.
    pub retries: usize,
    /// A request and its retries give up after this long (milliseconds).
    pub retry_timeout_ms: u64,
    /// One HTTP request may take this long (milliseconds).
    pub request_timeout_ms: u64,
    /// Segments at least this large are uploaded in parts (multipart upload)...
    pub multipart_threshold_bytes: usize,
    /// ...of this size (S3 needs at least 5 MiB).
    pub multipart_part_bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            endpoint: String::new(),
            region: String::new(),
            path_style: None,
            credentials_file: PathBuf::new(),
            profile: String::new(),
            checksum_sha256: false,
            retries: 4,
            retry_timeout_ms: 15_000,
            request_timeout_ms: 30_000,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            multipart_part_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Segments {
    /// A segment is written when it holds this many bytes...
    pub max_bytes: usize,
    /// ...or when its oldest chunk has waited this long (milliseconds).
    pub max_age_ms: u64,
    /// Store actors (each batches its own segments).
    pub store_actors: usize,
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            max_bytes: 8 * 1024 * 1024,
            max_age_ms: 200,
            store_actors: 2,
        }
    }
}

/// PostgreSQL connection pools (ignored for the embedded SQLite file).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// Connections for segment index commits and stream lookups.
    pub index_connections: usize,
    /// Connections kept for the key actor, the KEK registry and the audit log, so key work
    /// never queues behind segment commits.
    pub key_connections: usize,
    /// Longest wait for a free connection before the request is answered `retry_later`.
    pub acquire_timeout_ms: u64,
    /// Connecting to PostgreSQL gives up after this long.
    pub connect_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` on every connection; 0 leaves the server's setting.
    pub statement_timeout_ms: u64,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            index_connections: 8,
            key_connections: 2,
            acquire_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}
