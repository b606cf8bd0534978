//! An operator's first hour, through the real `sealstream` binary: what a new user meets when a
//! port is taken, the database is down or a path is wrong (a clear error, said once, no panic,
//! no state left behind), what the logs show by default, what `agents enroll` writes, what an
//! agent says when it stops, is refused or drains its spool, and what its /metrics exports.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::agents::{free_tcp, free_udp};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sealstream"));
    c.env_remove("SEALSTREAM_LOG")
        .env_remove("SEALSTREAM_LOG_FORMAT")
        .env_remove("SEALSTREAM_PASSPHRASE");
    c
}

/// A serve.toml in `dir` with these addresses and `extra` lines.
fn serve_toml(dir: &Path, name: &str, quic: SocketAddr, ops: SocketAddr, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "listen = \"{quic}\"\nops_listen = \"{ops}\"\nkek_poll_ms = 100\n{extra}\n[segments]\nmax_age_ms = 30\n"
        ),
    )
    .unwrap();
    p
}

/// A running `sealstream serve`, its stderr in a file; killed when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
    ops: SocketAddr,
}

impl Serve {
    fn start(config: &Path, log: &Path, ops: SocketAddr, args: &[&str]) -> Serve {
        let child = bin()
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .stderr(std::fs::File::create(log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            log: log.to_owned(),
            ops,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(self.ops) {
                use std::io::Write;
                let _ = c.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
                let mut out = String::new();
                let _ = c.read_to_string(&mut out);
                if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        crate::common::agents::without_node_label(&http(self.ops, "/metrics"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(addr: SocketAddr, path: &str) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

/// Run `cmd` to its end (at most 30 s): (exit code, stdout, stderr).
fn finish(mut cmd: Command) -> (i32, String, String) {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The how-to's KEK (openssl-made) registered with the server of `config`.
fn register_kek(dir: &Path, config: &Path) -> PathBuf {
    crate::common::genrsa(dir, "keypair.pem", 2048, &["-aes256"]);
    let public = crate::common::pubout(dir, "keypair.pem", "publickey.crt", true);
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["keys", "register", "--config"])
            .arg(config)
            .arg("--public")
            .arg(&public)
            .arg("--private")
            .arg(dir.join("keypair.pem"));
        c
    });
    assert_eq!(code, 0, "{err}");
    public
}

/// `agents enroll NAME` into dir/NAME with the customer's public key as kek.pem.
fn enroll(dir: &Path, config: &Path, name: &str, public: &Path) -> PathBuf {
    let out = dir.join(name);
    let mut c = bin();
    c.args(["agents", "enroll", name, "--config"])
        .arg(config)
        .arg("--out")
        .arg(&out);
    let (code, _, err) = finish(c);
    assert_eq!(code, 0, "{err}");
    std::fs::copy(public, out.join("kek.pem")).unwrap();
    out.join("agent.toml")
}

/// A server configuration with the how-to's KEK registered and one enrolled agent (its
/// agent.toml), the server not started.
struct Deployment {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    ops: SocketAddr,
    agent: PathBuf,
}

impl Deployment {
    fn new(agent: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ops = free_tcp();
        let cfg = serve_toml(d, "serve.toml", free_udp(), ops, "data_dir = \"state\"");
        let public = register_kek(d, &cfg);
        let agent = enroll(d, &cfg, agent, &public);
        Deployment {
            dir,
            cfg,
            ops,
            agent,
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut t = std::fs::read_to_string(path).unwrap();
    t.push_str(text);
    std::fs::write(path, t).unwrap();
}

fn sigint(child: &Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
}

#[test]
fn a_busy_port_is_one_clear_error_no_panic_and_no_state_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (quic, ops) = (free_udp(), free_tcp());
    let first = serve_toml(d, "first.toml", quic, ops, "data_dir = \"first\"");
    let _running = Serve::start(&first, &d.join("first.log"), ops, &[]);
    for (name, q, o) in [
        ("quic-taken", quic, free_tcp()),
        ("ops-taken", free_udp(), ops),
    ] {
        let cfg = serve_toml(
            d,
            &format!("{name}.toml"),
            q,
            o,
            &format!("data_dir = \"{name}\""),
        );
        let (code, _, err) = finish({
            let mut c = bin();
            c.args(["serve", "--config"]).arg(&cfg);
            c
        });
        assert_eq!(code, 1, "{err}");
        assert!(!err.contains("panicked"), "a panic reached the user: {err}");
        assert!(!err.contains("reactor"), "{err}");
        assert!(err.contains("Address already in use"), "{err}");
        let taken = if name == "quic-taken" { q } else { o };
        assert!(err.contains(&taken.to_string()), "names the address: {err}");
        assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
        assert!(
            !d.join(name).exists(),
            "a failed start created state in {name}/"
        );
    }
}

#[test]
fn an_unreachable_database_is_named_once_and_leaves_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let closed = free_tcp();
    let cfg = serve_toml(
        d,
        "pg.toml",
        free_udp(),
        free_tcp(),
        &format!(
            "data_dir = \"state\"\ndatabase_url = \"postgres://postgres@{closed}/sealstream\"\n[database]\nconnect_timeout_ms = 2000"
        ),
    );
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["serve", "--config"]).arg(&cfg);
        c
    });
    assert_eq!(code, 1, "{err}");
    let target = format!("PostgreSQL at {closed}/sealstream");
    assert_eq!(err.matches(&target).count(), 1, "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(
        !d.join("state").exists(),
        "no CA, key, store or SQLite file"
    );
}

#[test]
fn a_path_error_names_the_path_and_says_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a-file"), b"not a directory").unwrap();
    let cfg = serve_toml(
        d,
        "bad.toml",
        free_udp(),
        free_tcp(),
        "data_dir = \"a-file/state\"",
    );
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["serve", "--config"]).arg(&cfg);
        c
    });
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains("a-file/state"), "names the path: {err}");
}

#[test]
fn lifecycle_events_are_logged_by_default_without_colour_and_as_json_on_request() {
    let Deployment {
        dir,
        cfg,
        ops,
        agent,
    } = Deployment::new("ts-01");
    let d = dir.path();
    let server = Serve::start(&cfg, &d.join("serve.log"), ops, &[]);
    let (code, _, agent_err) = finish({
        let mut c = bin();
        c.args(["agent", "--config"]).arg(&agent).args([
            "--users",
            "1",
            "--duration",
            "1",
            "--frame-size",
            "4096",
        ]);
        c
    });
    assert_eq!(code, 0, "{agent_err}");
    // An agent that stopped is logged as having closed its connection, not as timed out
    // (it waits for its close to be sent before it exits).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log_text();
        if log.contains("agent disconnected") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let gone = log
        .lines()
        .find(|l| l.contains("agent disconnected"))
        .unwrap_or_else(|| panic!("no disconnection logged:\n{log}"));
    assert!(
        gone.contains("closed by the agent") && !gone.contains("timed out"),
        "{gone}"
    );
    for event in [
        "sealstream serving",
        "KEK loaded",
        "agent connected",
        "DEK registered",
    ] {
        assert!(
            log.contains(event),
            "{event:?} not in the server log:\n{log}"
        );
    }
    // Where its state lives, as an absolute path, and who can reach it.
    let state = std::fs::canonicalize(d.join("state")).unwrap();
    assert!(
        log.contains(&format!(
            "state (agent CA, server key, SQLite file): {}",
            state.display()
        )),
        "{log}"
    );
    assert!(log.contains("loopback only"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(agent_err.contains("connected"), "{agent_err}");
    assert!(!agent_err.contains('\u{1b}'), "{agent_err}");
    drop(server);

    let json_log = d.join("json.log");
    let server = Serve::start(&cfg, &json_log, ops, &["--log-format", "json"]);
    drop(server);
    let text = std::fs::read_to_string(&json_log).unwrap();
    let mut events = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        events += 1;
    }
    assert!(events >= 2, "JSON log lines: {text}");
    assert!(text.contains("\"sealstream serving\""), "{text}");
}

/// `agents enroll NAME` against a server configured to listen on `listen`, without
/// `--server`: (its stderr, the `server = ...` line it wrote).
fn enroll_without_server(d: &Path, listen: &str, name: &str) -> (String, String) {
    let cfg = serve_toml(
        d,
        &format!("{name}.toml"),
        listen.parse().unwrap(),
        free_tcp(),
        "data_dir = \"state\"",
    );
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["agents", "enroll", name, "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(d.join(name));
        c
    });
    assert_eq!(code, 0, "{err}");
    let toml = std::fs::read_to_string(d.join(name).join("agent.toml")).unwrap();
    let server = toml
        .lines()
        .find(|l| l.starts_with("server ="))
        .unwrap()
        .to_owned();
    (err, server)
}

#[test]
fn enroll_writes_an_address_agents_elsewhere_can_use_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (err, server) = enroll_without_server(d, "0.0.0.0:7443", "ts-02");
    assert!(
        !server.contains("127.0.0.1") && !server.contains("0.0.0.0") && server.contains(":7443"),
        "{server}"
    );
    assert!(
        err.contains("host name"),
        "says where the address came from: {err}"
    );
    let (err, server) = enroll_without_server(d, "127.0.0.1:7443", "ts-03");
    assert!(server.contains("127.0.0.1:7443"), "{server}");
    assert!(err.contains("only agents on this machine"), "{err}");
}

#[test]
fn an_agent_stopped_says_its_unacked_chunks_are_spooled_then_drain_sends_them() {
    let Deployment {
        dir,
        cfg,
        ops,
        agent,
    } = Deployment::new("ts-04");
    let d = dir.path();
    let metrics = free_tcp();
    append(
        &agent,
        &format!("reconnect_ms = 100\nconnect_timeout_ms = 500\nmetrics_listen = \"{metrics}\"\n"),
    );
    // The server is not running: nothing can be acked.
    let mut child = bin()
        .args(["agent", "--config"])
        .arg(&agent)
        .args(["--users", "2", "--duration", "1", "--frame-size", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    // Its own metric families only.
    let text = http(metrics, "/metrics");
    assert!(text.contains("sealstream_agent_unacked_chunks"), "{text}");
    assert!(
        text.contains("sealstream_agent_uplink_state{state=\"unreachable\"} 1"),
        "{text}"
    );
    for server_family in [
        "sealstream_keys_",
        "sealstream_quic_",
        "sealstream_ingest_",
        "sealstream_store_",
        "sealstream_pipeline_",
    ] {
        assert!(
            !text.contains(server_family),
            "{server_family} exported by an agent:\n{text}"
        );
    }
    sigint(&child);
    let out = {
        let mut o = String::new();
        child.stdout.take().unwrap().read_to_string(&mut o).unwrap();
        o
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "nothing lost, so success: {out}\n{err}");
    assert!(
        !err.contains("lost"),
        "a false alarm about data loss:\n{err}"
    );
    assert!(err.contains("held in the spool"), "{err}");
    let unacked: u64 = out
        .split("acked, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(unacked > 0, "{out}");
    assert!(
        out.contains(&format!(
            "the {unacked} chunks not acked yet are held in the spool"
        )),
        "{out}"
    );
    assert_eq!(
        err.matches("uplink down").count(),
        1,
        "one line per change of state, not per attempt:\n{err}"
    );

    // Now the server runs: --drain sends exactly what was held, and exits.
    let _server = Serve::start(&cfg, &d.join("serve.log"), ops, &[]);
    let (code, out, err) = finish({
        let mut c = bin();
        c.args(["agent", "--drain", "--config"]).arg(&agent);
        c
    });
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "0 chunks sealed (0 bytes), {unacked} acked, 0 not acked yet"
        )),
        "{out}"
    );
    assert!(
        out.contains(", 0 chunks (") && out.contains("held for the next start"),
        "{out}"
    );
    // Everything exports: the streams that were cut by Ctrl-C were finished before it stopped.
    let (code, out, err) = finish({
        let mut c = bin();
        c.args(["export", "--store"])
            .arg(d.join("state/store"))
            .arg("--key")
            .arg(d.join("keypair.pem"))
            .arg("--passphrase-file")
            .arg(crate::common::pass_file(d))
            .arg("--out")
            .arg(d.join("export"));
        c
    });
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn a_wrong_server_pin_backs_off_says_so_once_and_shows_in_the_metric() {
    let Deployment {
        dir,
        cfg,
        ops,
        agent,
    } = Deployment::new("ts-05");
    let d = dir.path();
    let text = std::fs::read_to_string(&agent).unwrap();
    let pinned = text
        .lines()
        .find(|l| l.starts_with("server_pins"))
        .unwrap()
        .to_owned();
    let wrong = format!("server_pins = [\"sha256:{}\"]", "42".repeat(32));
    let metrics = free_tcp();
    std::fs::write(
        &agent,
        text.replace(&pinned, &wrong)
            + &format!("reconnect_ms = 100\nmetrics_listen = \"{metrics}\"\n"),
    )
    .unwrap();
    let server = Serve::start(&cfg, &d.join("serve.log"), ops, &[]);
    let mut child = bin()
        .args(["agent", "--config"])
        .arg(&agent)
        .args(["--users", "1", "--duration", "1", "--frame-size", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let state = http(metrics, "/metrics");
    assert!(
        state.contains("sealstream_agent_uplink_state{state=\"server_key_mismatch\"} 1"),
        "{state}"
    );
    sigint(&child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert_eq!(
        err.matches("uplink refused").count(),
        1,
        "one line for the refusal, not one per attempt:\n{err}"
    );
    assert!(err.contains("server_pins"), "says what to do: {err}");
    // Attempts back off: at a fixed 100 ms the server would have seen about 60 in 6 s.
    let attempts: f64 = server
        .metrics()
        .lines()
        .find(|l| l.starts_with("sealstream_quic_connections_refused_total{reason=\"handshake\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(attempts <= 10.0, "{attempts} handshakes in 6 s");
}

/// `agents list|revoke|disable|enable|renew` through the binary, on the embedded database:
/// each says what it did, and the list shows each state.
#[test]
fn agents_are_listed_revoked_disabled_enabled_and_renewed_from_the_command_line() {
    let dep = Deployment::new("ts-01");
    let agents = |args: &[&str]| {
        let mut c = bin();
        c.arg("agents").args(args).arg("--config").arg(&dep.cfg);
        let (code, out, err) = finish(c);
        assert_eq!(code, 0, "agents {args:?}: {err}");
        (out, err)
    };
    let row = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("ts-01 "))
            .unwrap_or_else(|| panic!("no ts-01 in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (out, _) = agents(&["list"]);
    let enrolled = row(&out);
    assert_eq!(enrolled[1], "enabled", "{out}");
    // 90 days by default: the expiry is a date about three months out.
    assert!(
        enrolled[2].len() == 10 && enrolled[2].starts_with("20"),
        "{out}"
    );

    let (_, err) = agents(&["revoke", "ts-01", "--reason", "laptop stolen"]);
    assert!(err.contains("1 certificate(s) revoked"), "{err}");
    assert_eq!(row(&agents(&["list"]).0)[1], "revoked");

    let agent_dir = dep.agent.parent().unwrap().to_str().unwrap().to_owned();
    let (_, err) = agents(&["renew", "ts-01", "--dir", &agent_dir, "--days", "30"]);
    assert!(err.contains("renewed agent \"ts-01\""), "{err}");
    let renewed = row(&agents(&["list"]).0);
    assert_eq!(renewed[1], "enabled");
    assert_eq!(renewed[3..], ["1", "current,", "1", "revoked"]);

    let (_, err) = agents(&["disable", "ts-01"]);
    assert!(err.contains("disabled: servers refuse it"), "{err}");
    assert!(agents(&["disable", "ts-01"]).1.contains("already disabled"));
    assert_eq!(row(&agents(&["list"]).0)[1], "disabled");
    agents(&["enable", "ts-01"]);
    assert_eq!(row(&agents(&["list"]).0)[1], "enabled");

    // A renewal of a directory holding another agent's certificate is refused.
    let mut c = bin();
    c.args([
        "agents",
        "renew",
        "other-name",
        "--dir",
        &agent_dir,
        "--config",
    ])
    .arg(&dep.cfg);
    let (code, _, err) = finish(c);
    assert_ne!(code, 0);
    assert!(err.contains("belongs to agent \"ts-01\""), "{err}");
}

/// The review console as an operator starts it: `serve` with a `[console]` section serves it
/// beside ingest; `sealstream console` serves it alone against the same database and store
/// (a user added with `users add` logs in on both); without the section, and on a taken
/// port, one clear error each.
#[test]
fn the_console_runs_with_serve_and_alone_against_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (quic, ops, web) = (free_udp(), free_tcp(), free_tcp());
    let with_console = serve_toml(
        d,
        "serve.toml",
        quic,
        ops,
        &format!("data_dir = \"state\"\n[console]\nlisten = \"{web}\"\n"),
    );
    let _serve = Serve::start(&with_console, &d.join("serve.log"), ops, &[]);
    let page = http(web, "/");
    assert!(
        page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"),
        "{page}"
    );
    assert!(page.contains("content-security-policy"), "{page}");
    std::fs::write(d.join("pw.txt"), "a long enough password\n").unwrap();
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["users", "add", "ann", "--role", "admin", "--password-file"])
            .arg(d.join("pw.txt"))
            .arg("--config")
            .arg(&with_console);
        c
    });
    assert_eq!(code, 0, "{err}");

    // The console alone, on another port, against the same SQLite file and store.
    let web2 = free_tcp();
    let alone = serve_toml(
        d,
        "console.toml",
        free_udp(),
        free_tcp(),
        &format!("data_dir = \"state\"\n[console]\nlisten = \"{web2}\"\n"),
    );
    let console = bin()
        .args(["console", "--config"])
        .arg(&alone)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(web2).is_err() {
        assert!(
            Instant::now() < deadline,
            "sealstream console did not listen on {web2}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for addr in [web, web2] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            let mut h = crate::common::console::Http::new(addr);
            h.login("ann", "a long enough password").await.status
        });
        assert_eq!(status, 200, "login on {addr}");
    }
    unsafe { libc::kill(console.id() as i32, libc::SIGTERM) };
    let out = console.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("http://{web2}/")));

    // No [console] section; the console's port taken.
    let bare = serve_toml(
        d,
        "bare.toml",
        free_udp(),
        free_tcp(),
        "data_dir = \"state\"",
    );
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["console", "--config"]).arg(&bare);
        c
    });
    assert_eq!(code, 1);
    assert!(err.contains("no [console] section"), "{err}");
    let taken = serve_toml(
        d,
        "taken.toml",
        free_udp(),
        free_tcp(),
        &format!("data_dir = \"state\"\n[console]\nlisten = \"{web}\"\n"),
    );
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["console", "--config"]).arg(&taken);
        c
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Address already in use") && err.contains(&web.to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
