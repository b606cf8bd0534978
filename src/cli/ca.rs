//! `sealstream ca init|sign`: an agent CA kept away from the ingest servers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Make an agent CA (ca.crt, ca.key) in DIR, on a machine apart from the ingest servers.
    /// Copy only ca.crt to each server's `<data_dir>/pki/`: a server without ca.key trusts the
    /// CA's agents but cannot issue an agent identity.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue an agent certificate for a request from `sealstream agents csr`.
    Sign {
        /// The CA's directory (ca.crt and ca.key).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The agent's request (agent.csr).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (agent.crt); an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = sealstream::pki::DEFAULT_AGENT_DAYS)]
        days: u32,
    },
}

pub fn ca(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init { dir } => {
            sealstream::pki::OfflineCa::init(&dir)?;
            eprintln!(
                "agent CA made: {dir}/ca.crt and {dir}/ca.key (0600; keep it off the servers).\n\
                 Copy ca.crt to each server's <data_dir>/pki/ca.crt before its first start, and give it to reviewers for --agent-ca.",
                dir = dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Sign {
            ca_dir,
            csr,
            out,
            days,
        } => {
            let ca = sealstream::pki::OfflineCa::open(&ca_dir)?;
            let request = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let issued = ca
                .sign(&request, days)
                .with_context(|| csr.display().to_string())?;
            sealstream::fsutil::write_new(&out, issued.cert_pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", issued.fingerprint);
            eprintln!(
                "issued {} (valid until {}), fingerprint {}",
                out.display(),
                super::agent::date(issued.not_after_us),
                issued.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
