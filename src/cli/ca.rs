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
                "issued {} for agent {:?} (the name in the request; valid until {}), fingerprint {}",
                out.display(),
                issued_name(&issued.cert_pem)?,
                super::agent::date(issued.not_after_us),
                issued.fingerprint
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The agent name a certificate just issued carries (taken from the request's subject), for
/// the CA holder to check before handing the certificate over.
fn issued_name(cert_pem: &str) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the certificate just issued: {e}"))?;
    let name = sealstream::crypto::cert::agent_identity(&der)
        .map_err(|e| anyhow::anyhow!("the certificate just issued: {e}"))?;
    Ok(name.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_shows_the_agent_name_it_carries() {
        let dir = tempfile::tempdir().unwrap();
        sealstream::pki::OfflineCa::init(dir.path()).unwrap();
        let ca = sealstream::pki::OfflineCa::open(dir.path()).unwrap();
        let name = sealstream::protocol::AgentId::new("ts-07".to_owned()).unwrap();
        let (csr, _key) = sealstream::pki::agent_csr(&name).unwrap();
        let issued = ca.sign(&csr, 1).unwrap();
        assert_eq!(issued_name(&issued.cert_pem).unwrap(), "ts-07");
    }
}
