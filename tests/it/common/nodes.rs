//! Ingest nodes as real processes (`sealstream serve` children) on one PostgreSQL database and
//! one bucket, as `multinode` and `balance` run them: the fresh database with the KEK
//! registered, each node's data directory (sharing the first node's agent CA), configuration,
//! start and readiness, and the bucket checked against the agents' reports at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealstream::agent::AgentReport;
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::metadata::Metadata;
use sealstream::pki::Pki;
use sealstream::protocol::AgentId;

use super::agents::{check_store, free_tcp, free_udp};
use super::faults::Child;
use super::moto::Moto;
use super::server::{insert_kek, pg_exec};

/// A fresh PostgreSQL database for the nodes (named `<prefix>_<random>`), an openssl-made KEK
/// in the test's directory (`keypair.pem`, `publickey.crt`) registered in it, and the test's
/// own metadata connection.
pub struct Estate {
    pub db: String,
    /// `postgres://…/<db>`, the nodes' `database_url`.
    pub pg: String,
    pub kek_pub: PathBuf,
    pub md: Metadata,
}

impl Estate {
    pub async fn create(d: &Path, prefix: &str) -> Estate {
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).unwrap();
        let db = format!("{prefix}_{}", hex::encode(id));
        pg_exec(&format!("CREATE DATABASE {db}")).await;
        let pg = format!("postgres://postgres@127.0.0.1:5432/{db}");
        super::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
        let kek_pub = super::pubout(d, "keypair.pem", "publickey.crt", true);
        let md = Metadata::open(&pg, Path::new("unused.db")).await.unwrap();
        insert_kek(&md, &kek_pub, &d.join("keypair.pem")).await;
        Estate {
            db,
            pg,
            kek_pub,
            md,
        }
    }

    /// Close the test's connection and drop the database.
    pub async fn drop_database(self) {
        let Estate { db, md, .. } = self;
        drop(md);
        pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

/// Another node's data directory sharing `from`'s agent CA (its own server key and pin).
pub fn node_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("pki")).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(from.join("pki").join(f), to.join("pki").join(f)).unwrap();
    }
}

/// A node process (not started) with its listeners and server pin.
pub struct Node {
    pub child: Child,
    pub quic: SocketAddr,
    pub ops: SocketAddr,
    pub pin: String,
}

/// Write node `name`'s configuration under `base` (`store` is the store URL and its settings'
/// TOML); with `ca_from`, its data directory shares that node's agent CA.
pub fn write_node(
    base: &Path,
    name: &str,
    database_url: &str,
    store: (&str, &str),
    ca_from: Option<&Path>,
) -> Node {
    let data_dir = base.join(name);
    if let Some(from) = ca_from {
        node_dir(from, &data_dir);
    }
    let pin = Pki::open_or_create(&data_dir)
        .unwrap()
        .server_pin()
        .to_string();
    let (quic, ops) = (free_udp(), free_tcp());
    let text = format!(
        "listen = \"{quic}\"\nops_listen = \"{ops}\"\ndata_dir = \"{}\"\ndatabase_url = \"{database_url}\"\nstore_url = \"{}\"\nnode_id = \"{name}\"\nkek_poll_ms = 200\n[segments]\nmax_age_ms = 50\n{}",
        data_dir.display(),
        store.0,
        store.1
    );
    let config_path = base.join(format!("{name}.toml"));
    std::fs::write(&config_path, text).unwrap();
    let cfg = ServeConfig::load(&config_path).unwrap();
    Node {
        child: Child {
            cfg,
            config_path,
            proc: None,
        },
        quic,
        ops,
        pin,
    }
}

/// Wait until `node`'s ops listener accepts (up to about 10 s); panics with its log.
pub async fn wait_ready(node: &Node) {
    for _ in 0..200 {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(node.ops),
        )
        .await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "node on {} did not start: {}",
        node.ops,
        std::fs::read_to_string(node.child.cfg.data_dir.join("server.log")).unwrap_or_default()
    );
}

/// Agent `name` of the estate, enrolled with `pki` (the first node's CA) under `d/agents/`:
/// it lists the nodes in `order` (indices into `nodes`) and pins every node's key; a killed
/// node cannot say so, so it notices one by its silence.
pub fn estate_agent(
    pki: &Pki,
    d: &Path,
    name: &str,
    nodes: &[Node],
    order: &[usize],
    kek_pub: &Path,
) -> AgentConfig {
    let files = pki
        .enroll_agent(&AgentId::new(name).unwrap(), &d.join("agents").join(name))
        .unwrap();
    let addrs: Vec<String> = order.iter().map(|&i| nodes[i].quic.to_string()).collect();
    AgentConfig {
        server: addrs[0].clone(),
        servers: addrs[1..].to_vec(),
        server_pins: nodes.iter().map(|n| n.pin.clone()).collect(),
        cert: files.cert,
        key: files.key,
        kek: kek_pub.to_path_buf(),
        reconnect_ms: 100,
        connect_timeout_ms: 1000,
        idle_timeout_ms: 1500,
        ..AgentConfig::default()
    }
}

/// Start every node, then wait for each to be ready.
pub async fn start_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.child.spawn();
    }
    for n in nodes.iter() {
        wait_ready(n).await;
    }
}

/// SIGTERM every node and wait for it.
pub fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.child.stop();
    }
}

/// `check_store` on the bucket at `store_url`, with the KEK in `d` (`keypair.pem`) and the
/// export written under `d/export`; returns the frames exported.
pub async fn check_bucket(
    store_url: &str,
    moto: &Moto,
    d: &Path,
    reports: &[AgentReport],
) -> usize {
    let opened = sealstream::storage::open(store_url, &moto.settings()).unwrap();
    check_store(
        opened.objects.as_ref(),
        &sealstream::keys::load_private_key(&d.join("keypair.pem"), || {
            Ok(sealstream::keys::Passphrase::new(
                super::PASS.as_bytes().to_vec(),
            ))
        })
        .unwrap(),
        reports,
        &d.join("export"),
    )
    .await
}
