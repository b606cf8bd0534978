//! Opening a store by its location (a directory or a URL), and writing segments to object
//! stores other than a local directory: one conditional PUT (`If-None-Match: *`) per segment,
//! multipart uploads for large ones, and object_store's retries with backoff on throttling,
//! 5xx and timeouts, bounded so that a store that stays down turns into `retry_later` for the
//! agents instead of a wait without end.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use super::durable::{LocalDir, SegmentWriter};
use super::{PutOutcome, StoreError};
use crate::config::{self, Location};

/// An opened store: the object_store every reader uses, and the writer segments go through.
#[derive(Clone)]
pub struct Store {
    pub objects: Arc<dyn ObjectStore>,
    pub segments: Arc<dyn SegmentWriter>,
    pub location: Location,
}

/// Open the store at `location` (see `Location::parse`) with `settings` (endpoint, retries,
/// multipart sizes). A local directory is created if absent.
pub fn open(location: &str, settings: &config::Store) -> Result<Store, StoreError> {
    let location = Location::parse(location)?;
    if let Location::Local(dir) = &location {
        let objects = super::open_local(dir)?;
        let segments: Arc<dyn SegmentWriter> = Arc::new(LocalDir::new(dir));
        return Ok(Store {
            objects,
            segments,
            location,
        });
    }
    let (raw, prefix) = open_cloud(&location, settings)?;
    let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
        raw
    } else {
        Arc::new(PrefixStore::new(raw, prefix))
    };
    Ok(Store {
        segments: Arc::new(ObjectWriter {
            objects: objects.clone(),
            multipart_threshold: settings.multipart_threshold_bytes,
            part_bytes: settings.multipart_part_bytes,
        }),
        objects,
        location,
    })
}

/// A bucket or container through object_store's builders, and the key prefix inside it.
#[cfg(feature = "cloud")]
fn open_cloud<'a>(
    location: &'a Location,
    settings: &config::Store,
) -> Result<(Arc<dyn ObjectStore>, &'a str), StoreError> {
    use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};
    use std::time::Duration;
    let open_err = |e: object_store::Error| StoreError::Open {
        dir: location.to_string(),
        detail: e.to_string(),
    };
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: settings.retries,
        retry_timeout: Duration::from_millis(settings.retry_timeout_ms),
    };
    // Timeouts as configuration keys, so that the environment's client settings
    // (AWS_ALLOW_HTTP, proxies) stay in force.
    let timeouts = [
        (
            ClientConfigKey::Timeout,
            format!("{}ms", settings.request_timeout_ms),
        ),
        (ClientConfigKey::ConnectTimeout, "5s".to_owned()),
    ];
    // The HTTP clients' TLS runs on the process's rustls provider (the `cloud` feature leaves
    // out the bundled one): ring, as for QUIC. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(match location {
        Location::Local(_) => unreachable!("opened by `open`"),
        Location::S3 { bucket, prefix } => {
            // The AWS_* environment, as `from_env` reads it, but an empty value counts as unset
            // (systemd's `EnvironmentFile` makes `AWS_ACCESS_KEY_ID=` an empty variable, which
            // would otherwise be taken as an empty static key and hide the instance's role).
            let mut b = object_store::aws::AmazonS3Builder::new();
            for (k, v) in std::env::vars() {
                if k.starts_with("AWS_")
                    && !v.is_empty()
                    && let Ok(key) = k.to_ascii_lowercase().parse()
                {
                    b = b.with_config(key, v);
                }
            }
            let mut b = b.with_bucket_name(bucket).with_retry(retry);
            if settings.checksum_sha256 {
                b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
            }
            for (k, v) in timeouts {
                b = b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v);
            }
            if !settings.endpoint.is_empty() {
                b = b
                    .with_endpoint(&settings.endpoint)
                    .with_allow_http(settings.endpoint.starts_with("http://"));
            }
            if let Some(endpoint) = plain_http_refused(&b) {
                return Err(StoreError::Open {
                    dir: location.to_string(),
                    detail: format!(
                        "the endpoint {endpoint} is plain HTTP, which is refused unless AWS_ALLOW_HTTP=true is set (export it beside AWS_ENDPOINT_URL), or use an https:// endpoint"
                    ),
                });
            }
            if !settings.region.is_empty() {
                b = b.with_region(&settings.region);
            }
            // object_store addresses buckets by path unless told otherwise (or by
            // AWS_VIRTUAL_HOSTED_STYLE_REQUEST).
            if let Some(path_style) = settings.path_style {
                b = b.with_virtual_hosted_style_request(!path_style);
            }
            let key_in_env = std::env::var("AWS_ACCESS_KEY_ID").is_ok_and(|v| !v.is_empty());
            if !key_in_env && let Some(c) = shared_credentials(settings)? {
                b = b
                    .with_access_key_id(&c.key_id)
                    .with_secret_access_key(c.secret.as_str());
                if let Some(t) = &c.token {
                    b = b.with_token(t.as_str());
                }
            }
            (Arc::new(b.build().map_err(open_err)?), prefix)
        }
        Location::Gcs { bucket, prefix } => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry);
            for (k, v) in timeouts {
                b = b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v);
            }
            (Arc::new(b.build().map_err(open_err)?), prefix)
        }
        Location::Azure { container, prefix } => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry);
            for (k, v) in timeouts {
                b = b.with_config(object_store::azure::AzureConfigKey::Client(k), v);
            }
            (Arc::new(b.build().map_err(open_err)?), prefix)
        }
    })
}

#[cfg(not(feature = "cloud"))]
fn open_cloud<'a>(
    location: &'a Location,
    _: &config::Store,
) -> Result<(Arc<dyn ObjectStore>, &'a str), StoreError> {
    Err(StoreError::Open {
        dir: location.to_string(),
        detail: "this build has no object store clients (built without the `cloud` feature)".into(),
    })
}

/// The endpoint the S3 client would reach over plain HTTP without being allowed to: object_store
/// refuses such a request only when it is made ("URL scheme is not allowed"), without naming
/// the setting that allows it. An endpoint in `[store] endpoint` allows its own scheme; one from
/// the environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`) needs `AWS_ALLOW_HTTP=true`, as
/// object_store's own rule has it.
#[cfg(feature = "cloud")]
fn plain_http_refused(b: &object_store::aws::AmazonS3Builder) -> Option<String> {
    use object_store::ClientConfigKey;
    use object_store::aws::AmazonS3ConfigKey as Key;
    // The S3-specific endpoint wins over the general one, as the builder has it.
    let endpoint = b
        .get_config_value(&Key::S3Endpoint)
        .or_else(|| b.get_config_value(&Key::Endpoint))?;
    if !endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    {
        return None;
    }
    let allowed = b
        .get_config_value(&Key::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "on" | "yes" | "y"
            )
        });
    (!allowed).then_some(endpoint)
}

/// Credentials from the AWS shared credentials file (`[store] credentials_file`, else
/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`), profile `[store] profile`, else
/// `AWS_PROFILE`, else `default`. None when there is no such file.
#[cfg(feature = "cloud")]
fn shared_credentials(settings: &config::Store) -> Result<Option<Credentials>, StoreError> {
    let explicit = !settings.credentials_file.as_os_str().is_empty();
    let path = if explicit {
        settings.credentials_file.clone()
    } else if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        std::path::PathBuf::from(p)
    } else if let Some(home) = std::env::var_os("HOME") {
        std::path::PathBuf::from(home).join(".aws/credentials")
    } else {
        return Ok(None);
    };
    let profile = if settings.profile.is_empty() {
        std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into())
    } else {
        settings.profile.clone()
    };
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => Credentials::parse(&zeroize::Zeroizing::new(text), &profile).ok_or_else(|| {
            format!(
                "profile [{profile}] with aws_access_key_id and aws_secret_access_key not found"
            )
        }),
        Err(e) => Err(e.to_string()),
    };
    match found {
        Ok(c) => Ok(Some(c)),
        // Set in the configuration: its absence or a missing profile is an error.
        Err(detail) if explicit => Err(StoreError::Open {
            dir: path.display().to_string(),
            detail: format!("store.credentials_file: {detail}"),
        }),
        // A default location: the rest of the chain (web identity, instance metadata) runs.
        Err(detail) => {
            if path.exists() {
                tracing::warn!(file = %path.display(), %detail, "AWS shared credentials file not used");
            }
            Ok(None)
        }
    }
}

#[cfg(feature = "cloud")]
struct Credentials {
    key_id: String,
    secret: zeroize::Zeroizing<String>,
    token: Option<zeroize::Zeroizing<String>>,
}

#[cfg(feature = "cloud")]
impl Credentials {
    /// The INI format of `~/.aws/credentials`: `[profile]` sections of `key = value` lines.
    fn parse(text: &str, profile: &str) -> Option<Credentials> {
        let (mut key_id, mut secret, mut token) = (None, None, None);
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') && line.ends_with(']') {
                inside = line[1..line.len() - 1].trim() == profile;
                continue;
            }
            if !inside || line.starts_with(['#', ';']) {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => key_id = Some(v),
                "aws_secret_access_key" => secret = Some(zeroize::Zeroizing::new(v)),
                "aws_session_token" => token = Some(zeroize::Zeroizing::new(v)),
                _ => {}
            }
        }
        Some(Credentials {
            key_id: key_id?,
            secret: secret?,
            token,
        })
    }
}

/// What to do when an S3 request failed for want of credentials: object_store, finding no key
/// in the environment, asks the instance-metadata endpoint (169.254.169.254), which off a cloud
/// instance refuses or times out, and its error names only that URL. Empty for other errors.
pub(crate) fn credentials_hint(err: &object_store::Error) -> &'static str {
    let mut text = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        text.push_str(&e.to_string());
        text.push('\n');
        cur = e.source();
    }
    let key_set = std::env::var("AWS_ACCESS_KEY_ID").is_ok_and(|v| !v.is_empty());
    hint_for(&text, key_set)
}

/// `credentials_hint` on an error's text and whether `AWS_ACCESS_KEY_ID` is set.
fn hint_for(error_text: &str, key_set: bool) -> &'static str {
    if key_set || !error_text.contains("169.254.169.254") {
        return "";
    }
    " (no S3 credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on a node: \
     load /etc/sealstream/s3.env with `set -a; . /etc/sealstream/s3.env; set +a`), or run where an \
     instance role provides them)"
}

/// Segments into an object store: a conditional PUT, or a multipart upload when large.
#[derive(Clone, Debug)]
pub struct ObjectWriter {
    pub objects: Arc<dyn ObjectStore>,
    pub multipart_threshold: usize,
    pub part_bytes: usize,
}

impl ObjectWriter {
    async fn put_parts(&self, path: &Path, parts: Vec<Bytes>) -> Result<PutOutcome, StoreError> {
        let size: usize = parts.iter().map(Bytes::len).sum();
        if size < self.multipart_threshold {
            return super::put_new_parts(self.objects.as_ref(), path, parts).await;
        }
        // object_store's multipart completion is not conditional: look first. Segment names
        // carry 128 random bits and only ingest nodes write them, so an object already there
        // is our own earlier write whose answer was lost (same bytes) or a conflict.
        let backend = |source| StoreError::Backend {
            path: path.to_string(),
            source,
        };
        match self.objects.head(path).await {
            Ok(_) => return super::same_or_conflict(self.objects.as_ref(), path, &parts).await,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(backend(e)),
        }
        let upload = self.objects.put_multipart(path).await.map_err(backend)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_bytes);
        for p in parts {
            w.put(p);
        }
        w.finish().await.map_err(backend)?;
        Ok(PutOutcome::Created)
    }
}

impl SegmentWriter for ObjectWriter {
    fn put(
        &self,
        path: Path,
        parts: Vec<Bytes>,
    ) -> futures::future::BoxFuture<'static, Result<PutOutcome, StoreError>> {
        let me = self.clone();
        Box::pin(async move { me.put_parts(&path, parts).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_that_names_no_store_is_a_url_error() {
        let Err(e) = open("gs:bucket", &config::Store::default()) else {
            panic!("gs:bucket opened");
        };
        assert!(
            matches!(&e, StoreError::Url(l) if l.0 == "gs:bucket"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "store \"gs:bucket\": not a store location; give a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
        );
    }

    #[cfg(feature = "cloud")]
    #[test]
    fn a_plain_http_endpoint_needs_aws_allow_http() {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let with = |pairs: &[(&str, &str)]| {
            let mut b = AmazonS3Builder::new();
            for (k, v) in pairs {
                let key: AmazonS3ConfigKey = k.parse().unwrap();
                b = b.with_config(key, *v);
            }
            plain_http_refused(&b)
        };
        let http = ("aws_endpoint_url", "http://127.0.0.1:9000");
        assert_eq!(with(&[http]).as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(with(&[http, ("aws_allow_http", "true")]), None);
        assert_eq!(with(&[http, ("aws_allow_http", "TRUE")]), None);
        assert!(with(&[http, ("aws_allow_http", "false")]).is_some());
        assert_eq!(
            with(&[("aws_endpoint_url", "HTTP://s3.example.net")]).as_deref(),
            Some("HTTP://s3.example.net")
        );
        assert_eq!(
            with(&[("aws_endpoint_url", "https://s3.example.net")]),
            None
        );
        assert_eq!(with(&[]), None);
        // The S3-specific endpoint is the one used.
        assert!(
            with(&[
                ("aws_endpoint_url", "https://s3.example.net"),
                ("aws_endpoint_url_s3", "http://127.0.0.1:9000"),
            ])
            .is_some()
        );
        // `[store] endpoint = "http://…"` allows its own scheme.
        let b = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:9000")
            .with_allow_http(true);
        assert_eq!(plain_http_refused(&b), None);
    }

    #[test]
    fn an_instance_metadata_failure_without_a_key_says_how_to_give_credentials() {
        let imds = "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1ms - Server returned non-2xx status code: 403 Forbidden";
        let hint = hint_for(imds, false);
        assert!(
            hint.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            "{hint}"
        );
        assert!(hint.contains(". /etc/sealstream/s3.env"), "{hint}");
        assert!(hint.contains("instance role"), "{hint}");
        // A key was given: the metadata endpoint is not why it failed, so no hint.
        assert_eq!(hint_for(imds, true), "");
        // Another failure says nothing about credentials.
        assert_eq!(
            hint_for(
                "Generic S3 error: Error performing PUT http://127.0.0.1:9000/b/k - 503",
                false
            ),
            ""
        );
    }

    #[test]
    fn the_hint_reaches_a_store_error_from_the_nested_cause() {
        #[derive(Debug)]
        struct Imds;
        impl std::fmt::Display for Imds {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Error performing PUT http://169.254.169.254/latest/api/token - 403")
            }
        }
        impl std::error::Error for Imds {}
        let e = StoreError::Backend {
            path: "v1/audit/x".into(),
            source: object_store::Error::Generic {
                store: "S3",
                source: Box::new(Imds),
            },
        };
        let key_set = std::env::var("AWS_ACCESS_KEY_ID").is_ok_and(|v| !v.is_empty());
        assert_eq!(
            e.to_string().contains("no S3 credentials were found"),
            !key_set,
            "{e}"
        );
    }

    #[cfg(feature = "cloud")]
    #[test]
    fn shared_credentials_pick_the_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n[ci]\n# note\naws_access_key_id=B\naws_secret_access_key=T\naws_session_token=X\n";
        let d = Credentials::parse(text, "default").unwrap();
        assert_eq!((d.key_id.as_str(), d.secret.as_str()), ("A", "S"));
        assert!(d.token.is_none());
        let c = Credentials::parse(text, "ci").unwrap();
        assert_eq!(c.key_id, "B");
        assert_eq!(c.token.unwrap().as_str(), "X");
        assert!(Credentials::parse(text, "other").is_none());
    }
}
