//! moto's S3 server (PyPI `moto[server]`) on a loopback port, one per test: a real S3 API
//! (signed requests, conditional PUT, multipart uploads) for the object store tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealstream::config;

use super::agents::free_tcp;

pub struct Moto {
    proc: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Start `moto_server` (or `python3 -m moto.server`) and wait until it answers.
    pub fn start() -> Moto {
        let addr = free_tcp();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let port = addr.port().to_string();
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(["-H", "127.0.0.1", "-p", &port])
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
        };
        let proc = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect("moto's S3 server: pip install 'moto[server]' (.ci/run installs it)");
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {addr}: {}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(
            dir.path().join("credentials"),
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .unwrap();
        Moto {
            proc,
            endpoint: format!("http://{addr}"),
            dir,
        }
    }

    /// Create bucket `name` (moto accepts the unsigned request).
    pub fn bucket(&self, name: &str) -> String {
        use std::io::{Read, Write};
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(host).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        format!("s3://{name}")
    }

    /// The AWS shared credentials file the tests use (moto accepts any key).
    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// `[store]` settings that reach this server.
    pub fn settings(&self) -> config::Store {
        config::Store {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            credentials_file: self.credentials(),
            retry_timeout_ms: 5_000,
            ..config::Store::default()
        }
    }

    /// The same as a `[store]` section of a configuration file.
    pub fn settings_toml(&self) -> String {
        format!(
            "[store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\ncredentials_file = \"{}\"\nretry_timeout_ms = 5000\n",
            self.endpoint,
            self.credentials().display()
        )
    }

    /// Environment for a `sealstream` command reading this server by URL alone.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.credentials().display().to_string(),
            ),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}
