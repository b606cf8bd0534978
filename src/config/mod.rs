//! Configuration files for `sealstream serve` and `sealstream agent`: serde structs with
//! defaults and `deny_unknown_fields`, validated at start-up. Relative paths are taken relative
//! to the configuration file's directory. This file holds the error type and the reading,
//! parsing and path resolution every file shares.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod agent;
mod capture;
mod console;
mod limits;
mod location;
mod serve;
mod store;
mod validate;
pub use agent::{AgentConfig, NodeOrder, SpoolFull};
pub use capture::{CaptureConfig, CaptureSource, parse_display};
pub use console::Console;
pub use limits::{Limits, Watchdog};
pub use location::{Location, LocationError};
pub use serve::ServeConfig;
pub use store::{Database, Segments, Store};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let serve = ServeConfig::load(&root.join("config/serve.toml")).unwrap();
        assert_eq!(serve.store.retries, 4);
        AgentConfig::load(&root.join("config/agent.toml")).unwrap();
        let node = ServeConfig::load(&root.join("ops/serve-node.toml")).unwrap();
        assert_eq!(node.node(), "ingest-1");
        assert_eq!(node.store_location(), "s3://recordings-example/estate-a");
    }

    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn the_shipped_examples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        ServeConfig::load(&root.join("serve.toml")).unwrap();
        AgentConfig::load(&root.join("agent.toml")).unwrap();
    }

    #[test]
    fn defaults_fill_in_and_paths_are_relative_to_the_file() {
        let (dir, p) = write("data_dir = \"data\"\n[segments]\nmax_age_ms = 50\n");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.store_dir(), dir.path().join("data/store"));
        assert_eq!(c.segments.max_age_ms, 50);
        assert_eq!(c.segments.max_bytes, 8 * 1024 * 1024);
        // The console checks signatures against the server's agent CA unless told otherwise.
        let (dir, p) = write("data_dir = \"data\"\n[console]\n");
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.agent_ca, None);
        assert_eq!(
            c.default_agent_ca.unwrap(),
            dir.path().join("data/pki/ca.crt")
        );
        let (dir, p) = write("[console]\nagent_ca = \"offline/ca.crt\"\n");
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.agent_ca.unwrap(), dir.path().join("offline/ca.crt"));
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let (_d, p) = write("listen = \"0.0.0.0:1\"\nlisten_port = 3\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("listen_port"), "{e}");
        let (_d, p) = write("database_url = \"mysql://x\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("database_url"), "{e}");
        let (_d, p) = write("[console]\nlisten = \"0.0.0.0:8443\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("console.listen") && e.contains("loopback"),
            "{e}"
        );
        let (_d, p) = write("[console]\ntls_cert = \"c.pem\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("tls_key"), "{e}");
        let (dir, p) = write(
            "[console]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        );
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.tls_cert.unwrap(), dir.path().join("c.pem"));
        let (_d, p) = write("server_pins = [\"abc\"]\n");
        let e = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("server_pins"), "{e}");
    }
}
