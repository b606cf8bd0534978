//! Command-line parsing and the commands' wiring (anyhow lives here, not in the library).

mod agent;
mod agent_toml;
mod audit;
mod ca;
mod console;
mod export;
mod keys;
mod quickstart;
mod seal;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code when tampering or a damaged object was found (`audit verify`; export's and
/// verify's codes come from `inspect::Verdict::exit_code`, docs/format.md's table).
pub const EXIT_TAMPERED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "sealstream",
    version,
    about = "End-to-end-encrypted recording ingest"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (coloured only on a terminal) or as JSON objects, one per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SEALSTREAM_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Without `SEALSTREAM_LOG`: the long-running services log their lifecycle (listening, KEKs
    /// loaded or refused, agents connected, refused or replaced) at `info`; one-shot commands
    /// print their own results and log warnings only.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve { .. } | Command::Agent(_) | Command::Console { .. } => {
                "info,quinn=warn,rustls=warn"
            }
            _ => "warn",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect, check and make KEK files (openssl-compatible).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Seal image files and keystroke .jsonl files as one recording into a store directory.
    Seal(seal::SealArgs),
    /// Decrypt a store's recordings into files, verifying every stream.
    Export(export::ExportArgs),
    /// Check a store without keys: objects, names, numbering, completeness and signatures.
    Verify(verify::VerifyArgs),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// An agent CA kept offline: make it, and sign agents' requests.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Run the QUIC ingest service.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Benchmark baseline: same QUIC and TLS, ack every message without verifying or storing.
        #[arg(long)]
        sink: bool,
    },
    /// Run an agent: capture (synthetic or --replay), seal and stream to the server.
    Agent(agent::AgentArgs),
    /// Enroll agents (client certificates from the deployment's agent CA).
    #[command(subcommand)]
    Agents(agent::AgentsCommand),
    /// Review console accounts (argon2id passwords, roles, agent grants).
    #[command(subcommand)]
    Users(console::UsersCommand),
    /// Run the review console alone (the config's [console] section), against the same
    /// database and store as the ingest nodes.
    Console {
        #[arg(long)]
        config: PathBuf,
    },
    /// The whole pipeline on embedded defaults: KEK, server, agent with several users, export.
    Quickstart(quickstart::QuickstartArgs),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a public key's KEK id: sha256 of its SubjectPublicKeyInfo DER.
    Fingerprint {
        /// Public key: SPKI PEM (`openssl rsa -pubout`), PKCS#1 PEM or X.509 certificate.
        pubfile: PathBuf,
    },
    /// Open a private key with its passphrase, print its KEK id, optionally match a public key.
    Check {
        privfile: PathBuf,
        /// Public key that should belong to this private key.
        #[arg(long)]
        public: Option<PathBuf>,
        /// File holding the passphrase (one trailing newline allowed).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Register a KEK with a server, as the how-to's `insert into encryption_kek` does.
    Register {
        /// The server's configuration (for its database).
        #[arg(long)]
        config: PathBuf,
        /// Public key file (pub_datafile).
        #[arg(long)]
        public: PathBuf,
        /// Private key file (priv_datafile); read only when an operator decrypts.
        #[arg(long)]
        private: PathBuf,
        /// A server-held KEK (priv_encrypted = false) instead of a customer's E2EE key.
        #[arg(long)]
        server_held: bool,
    },
    /// Re-encrypt a private key file (traditional `Proc-Type`, DES-EDE3, scrypt, AES-192, …) into
    /// openssl 3's default PKCS#8 form, which the review console opens in the browser.
    Convert {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// File holding the current passphrase (one trailing newline allowed).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// File holding a new passphrase; without it the passphrase stays the same.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Make a new KEK: DIR/keypair.pem (passphrase-protected) and DIR/publickey.crt.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// File holding the new passphrase (one trailing newline allowed).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keys(KeysCommand::Fingerprint { pubfile }) => keys::fingerprint(&pubfile),
        Command::Keys(KeysCommand::Check {
            privfile,
            public,
            passphrase_file,
        }) => keys::check(&privfile, public.as_deref(), passphrase_file),
        Command::Keys(KeysCommand::Generate {
            out,
            bits,
            passphrase_file,
        }) => keys::generate(&out, bits, passphrase_file),
        Command::Keys(KeysCommand::Convert {
            input,
            out,
            passphrase_file,
            new_passphrase_file,
        }) => keys::convert(&input, &out, passphrase_file, new_passphrase_file),
        Command::Keys(KeysCommand::Register {
            config,
            public,
            private,
            server_held,
        }) => keys::register(&config, &public, &private, server_held),
        Command::Seal(args) => seal::run(args),
        Command::Serve { config, sink } => serve::run(&config, sink),
        Command::Agent(args) => agent::run(args),
        Command::Agents(cmd) => agent::agents(cmd),
        Command::Export(args) => export::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Ca(cmd) => ca::ca(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Users(cmd) => console::users(cmd),
        Command::Console { config } => console::run(&config),
    }
}

/// A current-thread runtime for the commands that talk to the object store.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
