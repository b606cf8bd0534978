//! Recordings that prove themselves (issue 9): a store written by a signing agent verifies
//! with `sealstream verify` and `export --agent-ca`, and each way an outsider, the server
//! operator or a KEK holder could forge, alter, cut, rename or strip it is reported with its
//! own words and exit code. Keys come from the real openssl CLI; the CLI is the real binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealstream::crypto::{AgentSigner, Checkpoints, Dek, StreamSealer};
use sealstream::keys;
use sealstream::protocol::{AgentId, DekRecord, Kind, SealedChunk, Segment, SessionId, StreamId};
use sealstream::recorder::{self, Recorder};
use sealstream::storage::{self, paths};

mod export;
mod signatures;

const AGENT: &str = "ts-07";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::common::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
        crate::common::pubout(d, "keypair.pem", "publickey.crt", true);
        crate::common::pass_file(d);
        // The deployment's agent CA, kept offline, and an agent enrolled through a CSR.
        sealstream(d, &["ca", "init", "--dir", "ca"]).success();
        sealstream(d, &["agents", "csr", AGENT, "--dir", "agent"]).success();
        sealstream(
            d,
            &[
                "ca",
                "sign",
                "--ca-dir",
                "ca",
                "--csr",
                "agent/agent.csr",
                "--out",
                "agent/agent.crt",
            ],
        )
        .success();
        // Another CA (an attacker's), and an agent certificate of the same name from it.
        sealstream(d, &["ca", "init", "--dir", "rogue-ca"]).success();
        sealstream(d, &["agents", "csr", AGENT, "--dir", "rogue"]).success();
        sealstream(
            d,
            &[
                "ca",
                "sign",
                "--ca-dir",
                "rogue-ca",
                "--csr",
                "rogue/agent.csr",
                "--out",
                "rogue/agent.crt",
            ],
        )
        .success();
        Fixture { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn signer(&self, who: &str) -> Arc<AgentSigner> {
        let cert = CertificateDer::from_pem_file(self.path(&format!("{who}/agent.crt"))).unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{who}/agent.key"))).unwrap();
        Arc::new(AgentSigner::new(&cert, &key).unwrap())
    }

    fn kek(&self) -> keys::PublicKeyFile {
        keys::load_public_key(&self.path("publickey.crt")).unwrap()
    }

    /// A recording of `frames` frames by `who` (or unsigned), checkpoints every 4 chunks.
    fn record(&self, who: Option<&str>, frames: u64) -> (DekRecord, Vec<SealedChunk>) {
        self.record_images(who, frames, |i| format!("frame {i}").into_bytes(), 500_000)
    }

    fn record_images(
        &self,
        who: Option<&str>,
        frames: u64,
        image: impl Fn(u64) -> Vec<u8>,
        interval_us: i64,
    ) -> (DekRecord, Vec<SealedChunk>) {
        let rec = Recorder::new(AgentId::new(AGENT).unwrap(), &self.kek());
        let rec = match who {
            Some(w) => rec
                .signed_by(
                    self.signer(w),
                    Checkpoints {
                        every_chunks: 4,
                        every: std::time::Duration::from_secs(3600),
                    },
                )
                .unwrap(),
            None => rec,
        };
        let mut s = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
        let t0 = 1_795_773_600_000_000;
        let mut chunks = Vec::new();
        for i in 0..frames {
            let frame = sealstream::protocol::payload::Frame {
                name: &format!("f{i:03}.png"),
                image: &image(i),
            }
            .encode();
            chunks.push(s.seal(&frame, t0 + i as i64 * interval_us, false).unwrap());
        }
        chunks.push(s.seal(&[], t0 + frames as i64 * interval_us, true).unwrap());
        (rec.dek_record().clone(), chunks)
    }

    fn store(&self, name: &str, record: &DekRecord, chunks: &[SealedChunk]) -> PathBuf {
        let dir = self.path(name);
        let store = storage::open_local(&dir).unwrap();
        rt().block_on(recorder::store_recording(store.as_ref(), record, chunks))
            .unwrap();
        dir
    }

    fn verify(&self, store: &Path, ca: Option<&str>) -> assert_cmd::assert::Assert {
        let mut args = vec!["verify", "--store", store.to_str().unwrap()];
        if let Some(ca) = ca {
            args.extend(["--agent-ca", ca]);
        }
        sealstream(self.dir.path(), &args)
    }

    fn export(&self, store: &Path, out: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
        let mut args = vec![
            "export",
            "--store",
            store.to_str().unwrap(),
            "--out",
            out,
            "--key",
            "keypair.pem",
            "--passphrase-file",
            "pass.txt",
        ];
        args.extend_from_slice(extra);
        sealstream(self.dir.path(), &args)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn sealstream(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("sealstream")
        .unwrap()
        .current_dir(dir)
        .env_remove("SEALSTREAM_PASSPHRASE")
        .args(args)
        .assert()
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// The one segment object of a store written by `store_recording` (small recordings fit one).
fn segment_of(store: &Path) -> PathBuf {
    let mut found = Vec::new();
    for day in std::fs::read_dir(store.join("v1/segments")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            found.push(f.unwrap().path());
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}
