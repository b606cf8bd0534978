//! agent.toml as sealstream writes it: the one writer behind `agents enroll` (a certificate
//! this server issued) and `agents config` (a certificate the offline agent CA signed for the
//! endpoint's `agents csr` request, checked against the deployment's CA and the agent's key,
//! with every node and every pin of the deployment), and the offline-CA next steps that
//! `agents csr`, `enroll`, `renew` and `revoke` print (docs/deploy.md step 6).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sealstream::config::ServeConfig;
use sealstream::metadata::{AccessChange, Credential};
use sealstream::protocol::AgentId;

/// What an agent.toml says; `write` renders it (a new file only, never over an old one).
pub struct AgentToml<'a> {
    /// The command that wrote it, for the file's first line.
    pub written_by: &'a str,
    pub agent: &'a AgentId,
    /// The first node, then the others.
    pub server: &'a str,
    pub servers: &'a [String],
    /// Every node's pin.
    pub pins: &'a [String],
    pub cert: &'a str,
    pub key: &'a str,
    pub kek: &'a str,
    pub spool_dir: &'a str,
}

impl AgentToml<'_> {
    pub fn text(&self) -> String {
        let servers = if self.servers.is_empty() {
            String::new()
        } else {
            format!(
                "# More ingest nodes: each agent orders all of them by a hash of its name (node_order), moves on when one cannot be reached or its connection drops, and comes back to an earlier one when it returns (rebalance_ms).\nservers = [{}]\n",
                quoted(self.servers)
            )
        };
        format!(
            "# Written by `{by}` for agent {name:?}. See config/agent.toml for every setting.\n\
             server = {server:?}\n{servers}server_name = \"sealstream\"\n\
             # The servers' keys (every node's), and room for a backup pin before you rotate one.\nserver_pins = [{pins}]\n\
             cert = {cert:?}\nkey = {key:?}\n\
             # The customer's public key (the how-to's publickey.crt, renamed kek.pem).\ne2ee = true\nkek = {kek:?}\n\
             # Chunks are kept here until the server acks them (ciphertext only).\nspool_dir = {spool:?}\n",
            by = self.written_by,
            name = self.agent.as_str(),
            server = self.server,
            pins = quoted(self.pins),
            cert = self.cert,
            key = self.key,
            kek = self.kek,
            spool = self.spool_dir,
        )
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        sealstream::fsutil::write_new(path, self.text().as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The server's configuration: its `<data_dir>/pki/ca.crt` is the agent CA the
    /// certificate must come from, its `server.crt` this node's pin, its database where the
    /// certificate is registered.
    #[arg(long)]
    config: PathBuf,
    /// The agent's certificate from `sealstream ca sign`.
    #[arg(long)]
    cert: PathBuf,
    /// The agent's key from `sealstream agents csr`: read only to check that it matches the
    /// certificate. Where it is not (it stays on the endpoint), give --csr, and --key as the
    /// path the endpoint will have (written as given).
    #[arg(long)]
    key: PathBuf,
    /// The agent's request (agent.csr), to check the certificate against when the key is not
    /// on this machine.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Where to write agent.toml (a new file); relative paths in it are relative to it.
    #[arg(long)]
    out: PathBuf,
    /// The deployment's node list: one node a line, `ADDRESS PIN [BACKUP_PIN ...]` (`#`
    /// comments); the first line is `server`, the rest `servers`. Default: this node alone.
    #[arg(long, conflicts_with = "server")]
    nodes: Option<PathBuf>,
    /// Without --nodes: the address agents reach this node at (default: its listen address).
    #[arg(long)]
    server: Option<String>,
    /// The customer's public key (publickey.crt); default: kek.pem beside agent.toml.
    #[arg(long)]
    kek: Option<PathBuf>,
    /// The agent's spool directory.
    #[arg(long, default_value = "spool")]
    spool_dir: String,
}

/// `sealstream agents config`.
pub fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.out.exists(),
        "{}: exists; nothing was written (remove it or choose another --out)",
        args.out.display()
    );
    let serve = ServeConfig::load(&args.config)?;
    let pki = serve.data_dir.join("pki");
    let ca = pki.join("ca.crt");
    anyhow::ensure!(
        ca.is_file(),
        "{}: no agent CA certificate: copy the agent CA's ca.crt there (as for each node) so that agent certificates can be checked",
        ca.display()
    );
    use sealstream::pki::KeyHolder;
    let key_here = args.key.is_file();
    let holder = match (&args.csr, key_here) {
        (_, true) => KeyHolder::Key(&args.key),
        (Some(csr), false) => KeyHolder::Request(csr),
        (None, false) => anyhow::bail!(
            "{}: no such key here, so the certificate cannot be checked against it: give --csr with the agent's request (agent.csr), or run this where the key is",
            args.key.display()
        ),
    };
    let checked = sealstream::pki::check_agent_credentials(&ca, &args.cert, holder)?;
    let local_pin = local_pin(&pki.join("server.crt"))?;
    let nodes = match &args.nodes {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let nodes =
                parse_nodes(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if let Some(pin) = &local_pin {
                anyhow::ensure!(
                    nodes.iter().any(|(_, pins)| pins.contains(pin)),
                    "{}: this node's pin {pin} is not in the list: agents would refuse this node (add it to its line)",
                    file.display()
                );
            }
            nodes
        }
        None => {
            let pin = local_pin.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: absent (this node has not started yet): start it once, or give --nodes with every node's address and pin",
                    pki.join("server.crt").display()
                )
            })?;
            let server = match &args.server {
                Some(s) => s.clone(),
                None => {
                    let (addr, note) = super::agent::default_server_address(serve.listen);
                    eprintln!("{note}");
                    addr
                }
            };
            vec![(server, vec![pin])]
        }
    };
    let out_dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let kek = match &args.kek {
        Some(k) => {
            sealstream::keys::load_public_key(k)
                .with_context(|| format!("{}: the KEK (the customer's public key)", k.display()))?;
            relative_to(&out_dir, k)?
        }
        None => "kek.pem".to_owned(),
    };
    let outcome = super::runtime()?.block_on(register(&serve, &checked))?;
    let cert = relative_to(&out_dir, &args.cert)?;
    let key = match key_here {
        true => relative_to(&out_dir, &args.key)?,
        false => args.key.display().to_string(),
    };
    let servers: Vec<String> = nodes.iter().skip(1).map(|(a, _)| a.clone()).collect();
    let pins: Vec<String> = nodes.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    AgentToml {
        written_by: "sealstream agents config",
        agent: &checked.agent,
        server: &nodes[0].0,
        servers: &servers,
        pins: &pins,
        cert: &cert,
        key: &key,
        kek: &kek,
        spool_dir: &args.spool_dir,
    }
    .write(&args.out)?;
    eprintln!(
        "wrote {} for agent {:?}: certificate serial {} (valid until {}), {} node(s), {} pin(s); {}{}",
        args.out.display(),
        checked.agent.as_str(),
        checked.serial,
        super::agent::date(checked.not_after_us),
        nodes.len(),
        pins.len(),
        outcome,
        if args.kek.is_none() && !out_dir.join("kek.pem").exists() {
            format!(
                "\ncopy the customer's public key (publickey.crt) to {}/kek.pem",
                out_dir.display()
            )
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The next step after `agents csr`, as docs/deploy.md step 6 has it: on a node, the
/// endpoint's configuration directory (`endpoint_dir`, holding `base/` with agent.key) laid out
/// in `node_dir/`, then `agents config` with every node, the request, and the key's path as the
/// endpoint has it (relative to agent.toml).
pub(crate) fn config_step(node_dir: &str, base: &str, endpoint_dir: &str) -> String {
    format!(
        "then on a node (it has serve.toml, pki/ca.crt and the database), with the endpoint's {endpoint_dir}/ laid out in {node_dir}/:\n  \
         mkdir -p {node_dir}/{base} && cp agent.crt agent.csr {node_dir}/{base}/ && cp publickey.crt {node_dir}/kek.pem\n  \
         sealstream agents config --config /etc/sealstream/serve.toml --nodes /etc/sealstream/nodes.txt \
         --cert {node_dir}/{base}/agent.crt --csr {node_dir}/{base}/agent.csr --key {base}/agent.key \
         --spool-dir /var/lib/sealstream/agent-spool --out {node_dir}/agent.toml\n\
         and copy {node_dir}/agent.toml, {node_dir}/kek.pem and {node_dir}/{base}/agent.crt to the endpoint's {endpoint_dir}/ \
         (docs/deploy.md, \"Setting up the nodes and agents, in order\", step 6)"
    )
}

/// Where `agents csr` put the key, as `config_step` names it: the directory's own name, and
/// the directory agent.toml goes in on the endpoint (its parent).
pub(crate) fn endpoint_layout(dir: &Path) -> (String, String) {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let base = abs
        .file_name()
        .map_or_else(|| "agent".to_owned(), |b| b.to_string_lossy().into_owned());
    let parent = abs
        .parent()
        .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
    (base, parent)
}

/// Why `agents csr` writes nothing into `dir`: a key or request already there (an agent made
/// earlier), with what to do instead.
pub(crate) fn csr_refusal(dir: &Path) -> Option<String> {
    let found: Vec<&str> = ["agent.key", "agent.csr"]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if found.is_empty() {
        return None;
    }
    Some(format!(
        "{}: {} {} already (an agent key made earlier); nothing was written. \
         To renew or re-admit the agent, give a new --dir (for example {}.new), or move {} aside first \
         (docs/deploy.md, \"Renewing or re-admitting an offline-CA agent\")",
        dir.display(),
        found.join(" and "),
        if found.len() == 1 { "exists" } else { "exist" },
        dir.display(),
        dir.display()
    ))
}

/// How a revoked agent comes back, on this deployment: enrolled again where the node holds the
/// CA key, or a new request signed by the offline CA.
pub(crate) fn readmit_hint(data_dir: &Path, name: &str) -> String {
    if sealstream::pki::ca_is_offline(data_dir) {
        format!(
            "to let {name:?} back (the agent CA is offline, so `agents enroll` is refused here): a new key and request on the endpoint \
             (`agents csr {name} --dir` a new directory), `ca sign` where the CA is, then `agents config` on a node \
             (docs/deploy.md, \"Renewing or re-admitting an offline-CA agent\")"
        )
    } else {
        format!("to let {name:?} back: `sealstream agents enroll {name}` again")
    }
}

/// This node's pin from its `server.crt`, if it has made one (never creates it).
fn local_pin(path: &Path) -> anyhow::Result<Option<String>> {
    use rustls::pki_types::pem::PemObject;
    if !path.exists() {
        return Ok(None);
    }
    let der = rustls::pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let pin = sealstream::crypto::cert::spki_pin(&der)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(pin.to_string()))
}

/// Register the certificate as `agents enroll` registers one it issued (the agent's earlier
/// certificates are revoked as superseded), unless it is already registered; a revoked one is
/// refused. Returns what was done, for the operator.
async fn register(
    serve: &ServeConfig,
    checked: &sealstream::pki::CheckedAgent,
) -> anyhow::Result<String> {
    let md = super::agent::metadata(serve).await?;
    let rows = md.access_rows().await?;
    if let Some(c) = rows
        .credentials
        .iter()
        .find(|c| c.fingerprint == checked.fingerprint)
    {
        anyhow::ensure!(
            c.revoked_us.is_none(),
            "certificate serial {} of agent {:?} was revoked ({}): sign a new request (`agents csr`, `ca sign`); nothing was written",
            checked.serial,
            checked.agent.as_str(),
            c.revoked_reason.as_deref().unwrap_or("no reason given")
        );
        return Ok("the certificate was already registered".into());
    }
    let cred = Credential {
        fingerprint: checked.fingerprint.clone(),
        agent: checked.agent.as_str().to_owned(),
        issued_us: sealstream::metadata::now_us(),
        not_after_us: checked.not_after_us,
        revoked_us: None,
        revoked_reason: None,
    };
    let outcome = md
        .change_access(AccessChange::Register(cred), &super::agent::actor())
        .await
        .context("registering the certificate in agent_credential")?;
    md.note_serial(&checked.fingerprint, &checked.serial)
        .await?;
    Ok(format!(
        "the certificate is registered{}",
        match outcome.revoked.len() {
            0 => String::new(),
            n => format!(" and the agent's {n} earlier certificate(s) revoked"),
        }
    ))
}

/// A node list: `ADDRESS PIN [PIN ...]` per line, `#` comments, at least one node.
fn parse_nodes(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut nodes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let addr = words.next().unwrap_or_default().to_owned();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "line {}: {addr:?} is not an address HOST:PORT",
                n + 1
            ));
        }
        let pins: Vec<String> = words.map(str::to_owned).collect();
        if pins.is_empty() {
            return Err(format!(
                "line {}: node {addr} has no pin (the `server pin for agents: sha256:…` its start logs)",
                n + 1
            ));
        }
        for p in &pins {
            let hex = p.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "line {}: {p:?} is not a pin (sha256: and 64 hex digits)",
                    n + 1
                ));
            }
        }
        nodes.push((addr, pins));
    }
    if nodes.is_empty() {
        return Err("no node listed (one a line: ADDRESS PIN)".into());
    }
    Ok(nodes)
}

/// `path` as agent.toml in `dir` names it: relative when it is inside `dir`, else absolute.
fn relative_to(dir: &Path, path: &Path) -> anyhow::Result<String> {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("{}: cannot resolve", p.display()))
    };
    let (dir, path) = (canon(dir)?, canon(path)?);
    Ok(match path.strip_prefix(&dir) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PIN_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_node_list_reads_every_node_and_pin_and_names_a_bad_line() {
        let text = format!(
            "# the estate\ningest-1.example.net:7443 {PIN_A}\n\n10.0.0.2:7443 {PIN_B} {PIN_A}  # with a backup\n"
        );
        assert_eq!(
            parse_nodes(&text).unwrap(),
            vec![
                ("ingest-1.example.net:7443".into(), vec![PIN_A.to_owned()]),
                (
                    "10.0.0.2:7443".into(),
                    vec![PIN_B.to_owned(), PIN_A.to_owned()]
                ),
            ]
        );
        assert!(
            parse_nodes("ingest-1:7443\n")
                .unwrap_err()
                .contains("line 1: node ingest-1:7443 has no pin")
        );
        assert!(
            parse_nodes(&format!("ingest-1 {PIN_A}"))
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(
            parse_nodes("a:1 sha256:12\n")
                .unwrap_err()
                .contains("not a pin")
        );
        assert!(parse_nodes("# nothing\n").unwrap_err().contains("no node"));
    }

    #[test]
    fn the_next_step_after_csr_is_the_deploy_md_form_with_every_node() {
        let step = config_step("ts-01", "agent", "/etc/sealstream");
        for part in [
            "--nodes /etc/sealstream/nodes.txt",
            "--csr ts-01/agent/agent.csr",
            "--key agent/agent.key",
            "--spool-dir /var/lib/sealstream/agent-spool",
            "--out ts-01/agent.toml",
            "cp publickey.crt ts-01/kek.pem",
            "on a node",
            "step 6",
        ] {
            assert!(step.contains(part), "{part:?} not in {step}");
        }
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.new");
        std::fs::create_dir(&agent).unwrap();
        let (base, parent) = endpoint_layout(&agent);
        assert_eq!(base, "agent.new");
        assert_eq!(
            std::path::Path::new(&parent),
            std::fs::canonicalize(dir.path()).unwrap()
        );
    }

    #[test]
    fn csr_into_a_directory_with_a_key_names_the_file_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(csr_refusal(dir.path()), None);
        std::fs::write(dir.path().join("agent.key"), "k").unwrap();
        let why = csr_refusal(dir.path()).unwrap();
        assert!(why.contains("agent.key exists already"), "{why}");
        assert!(why.contains("new --dir"), "{why}");
        assert!(why.contains("Renewing or re-admitting"), "{why}");
    }

    #[test]
    fn the_written_agent_toml_is_a_valid_agent_configuration_with_every_node_and_pin() {
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentId::new("ts-01").unwrap();
        let servers = vec!["n2:7443".to_owned(), "n3:7443".to_owned()];
        let pins = vec![PIN_A.to_owned(), PIN_B.to_owned()];
        let path = dir.path().join("agent.toml");
        AgentToml {
            written_by: "sealstream agents config",
            agent: &agent,
            server: "n1:7443",
            servers: &servers,
            pins: &pins,
            cert: "ts-01.crt",
            key: "/etc/sealstream/agent/ts-01.key",
            kek: "kek.pem",
            spool_dir: "spool",
        }
        .write(&path)
        .unwrap();
        let cfg = sealstream::config::AgentConfig::load(&path).unwrap();
        assert_eq!(cfg.addresses(), ["n1:7443", "n2:7443", "n3:7443"]);
        assert_eq!(cfg.server_pins, pins);
        assert_eq!(cfg.cert, dir.path().join("ts-01.crt"));
        assert_eq!(cfg.key, Path::new("/etc/sealstream/agent/ts-01.key"));
        assert_eq!(cfg.spool_dir, Some(dir.path().join("spool")));
        assert!(cfg.e2ee);
    }
}
