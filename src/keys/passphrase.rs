//! Where a passphrase comes from: `--passphrase-file F` (one trailing newline dropped, as
//! openssl's `-passin file:` reads it), else `SEALSTREAM_PASSPHRASE`, else a no-echo prompt
//! on a terminal. The bytes are zeroized when dropped and never printed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::KeyError;

/// The environment variable read when no passphrase file is given.
pub const ENV_VAR: &str = "SEALSTREAM_PASSPHRASE";

pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<secret>)")
    }
}

/// The places a command may take a passphrase from, in order of precedence.
#[derive(Clone, Debug, Default)]
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
    /// The value of `SEALSTREAM_PASSPHRASE`, read once by the caller (tests pass it directly).
    pub env: Option<String>,
    /// Whether a terminal prompt is allowed.
    pub prompt: bool,
}

impl PassphraseSource {
    /// From the process: the given file, the environment variable, and a prompt if stdin is a terminal.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        PassphraseSource {
            file,
            env: std::env::var(ENV_VAR).ok(),
            prompt: std::io::stdin().is_terminal(),
        }
    }

    /// Read the passphrase to open an existing key.
    pub fn read(&self, prompt_text: &str) -> Result<Passphrase, KeyError> {
        let pass = if let Some(path) = &self.file {
            read_file(path)?
        } else if let Some(value) = &self.env {
            Passphrase::new(value.clone().into_bytes())
        } else if self.prompt {
            let text = rpassword::prompt_password(prompt_text)
                .map_err(|e| KeyError::Passphrase(format!("cannot read from the terminal: {e}")))?;
            Passphrase::new(Zeroizing::new(text).as_bytes().to_vec())
        } else {
            return Err(KeyError::Passphrase(format!(
                "none given: use --passphrase-file FILE, set {ENV_VAR}, or run on a terminal to be asked"
            )));
        };
        if pass.is_empty() {
            return Err(KeyError::Passphrase("the passphrase is empty".into()));
        }
        Ok(pass)
    }

    /// Read a new passphrase (asked twice on a terminal) of at least `min_len` bytes.
    pub fn read_new(&self, min_len: usize) -> Result<Passphrase, KeyError> {
        let pass = self.read("New passphrase for the private key: ")?;
        if self.file.is_none() && self.env.is_none() {
            let again = self.read("Repeat the passphrase: ")?;
            if again.as_bytes() != pass.as_bytes() {
                return Err(KeyError::Passphrase("the two entries differ".into()));
            }
        }
        if pass.len() < min_len {
            return Err(KeyError::Passphrase(format!(
                "too short: use at least {min_len} characters"
            )));
        }
        Ok(pass)
    }
}

fn read_file(path: &Path) -> Result<Passphrase, KeyError> {
    let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?);
    if bytes.ends_with(b"\r\n") {
        let n = bytes.len() - 2;
        bytes.truncate(n);
    } else if bytes.ends_with(b"\n") {
        let n = bytes.len() - 1;
        bytes.truncate(n);
    }
    if bytes.contains(&b'\n') {
        return Err(KeyError::Passphrase(format!(
            "{}: holds more than one line; a passphrase file holds the passphrase and at most one newline",
            path.display()
        )));
    }
    Ok(Passphrase::new(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_may_end_with_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        for (content, expected) in [
            (&b"hunter22\n"[..], &b"hunter22"[..]),
            (b"hunter22", b"hunter22"),
            (b"hunter22\r\n", b"hunter22"),
            (b"  spaced pw  \n", b"  spaced pw  "),
        ] {
            std::fs::write(&p, content).unwrap();
            let src = PassphraseSource {
                file: Some(p.clone()),
                ..Default::default()
            };
            assert_eq!(src.read("").unwrap().as_bytes(), expected);
        }
        std::fs::write(&p, b"a\nb\n").unwrap();
        let src = PassphraseSource {
            file: Some(p.clone()),
            ..Default::default()
        };
        assert!(src.read("").is_err());
        std::fs::write(&p, b"\n").unwrap();
        assert!(src.read("").is_err());
    }

    #[test]
    fn the_file_wins_over_the_environment_and_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, b"from-file\n").unwrap();
        let src = PassphraseSource {
            file: Some(p),
            env: Some("from-env".into()),
            prompt: false,
        };
        assert_eq!(src.read("").unwrap().as_bytes(), b"from-file");
        let env = PassphraseSource {
            env: Some("from-env".into()),
            ..Default::default()
        };
        assert_eq!(env.read("").unwrap().as_bytes(), b"from-env");
        let err = PassphraseSource::default()
            .read("")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--passphrase-file"), "{err}");
    }

    #[test]
    fn new_passphrases_have_a_minimum_length() {
        let src = PassphraseSource {
            env: Some("short".into()),
            ..Default::default()
        };
        assert!(src.read_new(8).is_err());
    }
}
