//! Where a store is: a local directory or an object store bucket (`store_url`), parsed and
//! printed back. Pure; `storage` opens it, configuration validation only parses it.

use std::path::PathBuf;

/// A `store_url` (or `--store`) that names no store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "store {0:?}: not a store location; give a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
)]
pub struct LocationError(pub String);

/// Where a store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory (segments by direct I/O and fsync, `storage::durable`).
    Local(PathBuf),
    /// An S3-compatible bucket, with an optional key prefix.
    S3 { bucket: String, prefix: String },
    /// A Google Cloud Storage bucket.
    Gcs { bucket: String, prefix: String },
    /// An Azure Blob Storage container.
    Azure { container: String, prefix: String },
}

impl Location {
    /// A directory path, `file:///dir`, `s3://bucket/prefix` (also `s3a://`),
    /// `gs://bucket/prefix` or `az://container/prefix` (also `azure://`).
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let bad = || LocationError(text.to_owned());
        let Some((scheme, rest)) = text.split_once("://") else {
            // `s3:/bucket` or `s3:bucket` is a mistyped URL, not a directory.
            let typo = text
                .split_once(':')
                .is_some_and(|(s, _)| s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric()));
            if text.is_empty() || typo {
                return Err(bad());
            }
            return Ok(Location::Local(PathBuf::from(text)));
        };
        if scheme == "file" {
            if rest.is_empty() {
                return Err(bad());
            }
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_owned();
        if bucket.is_empty() || bucket.contains(['?', '#', '@']) || prefix.contains(['?', '#']) {
            return Err(bad());
        }
        let bucket = bucket.to_owned();
        match scheme {
            "s3" | "s3a" => Ok(Location::S3 { bucket, prefix }),
            "gs" => Ok(Location::Gcs { bucket, prefix }),
            "az" | "azure" => Ok(Location::Azure {
                container: bucket,
                prefix,
            }),
            _ => Err(bad()),
        }
    }

    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(d) => Some(d),
            _ => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, bucket, prefix) = match self {
            Location::Local(d) => return write!(f, "{}", d.display()),
            Location::S3 { bucket, prefix } => ("s3", bucket, prefix),
            Location::Gcs { bucket, prefix } => ("gs", bucket, prefix),
            Location::Azure { container, prefix } => ("az", container, prefix),
        };
        if prefix.is_empty() {
            write!(f, "{scheme}://{bucket}")
        } else {
            write!(f, "{scheme}://{bucket}/{prefix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print_back() {
        for text in [
            "s3://bucket",
            "s3://bucket/a/b",
            "gs://b/p",
            "az://container/p",
        ] {
            assert_eq!(Location::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Location::parse("file:///var/x").unwrap(),
            Location::Local("/var/x".into())
        );
        assert_eq!(
            Location::parse("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        for bad in [
            "",
            "ftp://x/y",
            "s3://",
            "s3:///p",
            "file://",
            "s3://b?x=1",
            "s3:/bucket",
            "gs:bucket",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains("s3://bucket/prefix"), "{bad}: {e}");
        }
    }
}
