//! The traditional ("SSLeay") encrypted PEM key: `Proc-Type: 4,ENCRYPTED` and
//! `DEK-Info: <cipher>,<iv hex>`. The key is OpenSSL's `EVP_BytesToKey` with MD5, one round,
//! the first 8 IV bytes as salt; the body is CBC with PKCS#7 padding. RustCrypto has no
//! reader for it, so this is ours (OpenSSL 1.x wrote it by default, 3.x with `-traditional`).

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use des::TdesEde3;
use md5::{Digest, Md5};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Error {
    #[error("cipher {0} is not supported (use AES-128/192/256-CBC or DES-EDE3-CBC)")]
    Unsupported(String),
    #[error("DEK-Info is not \"<cipher>,<hex iv>\": {0}")]
    Malformed(String),
    #[error("decryption failed")]
    Decrypt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

pub(crate) struct Params {
    cipher: Cipher,
    iv: Vec<u8>,
}

impl Params {
    pub fn parse(dek_info: &str) -> Result<Self, Error> {
        let (name, iv_hex) = dek_info
            .split_once(',')
            .ok_or_else(|| Error::Malformed(dek_info.to_owned()))?;
        let cipher = match name.trim().to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Cipher::Aes128,
            "AES-192-CBC" => Cipher::Aes192,
            "AES-256-CBC" => Cipher::Aes256,
            "DES-EDE3-CBC" => Cipher::DesEde3,
            other => return Err(Error::Unsupported(other.to_owned())),
        };
        let iv = hex::decode(iv_hex.trim()).map_err(|_| Error::Malformed(dek_info.to_owned()))?;
        let want = if cipher == Cipher::DesEde3 { 8 } else { 16 };
        if iv.len() != want {
            return Err(Error::Malformed(format!(
                "IV is {} bytes, {name} needs {want}",
                iv.len()
            )));
        }
        Ok(Params { cipher, iv })
    }

    pub fn cipher_name(&self) -> &'static str {
        match self.cipher {
            Cipher::Aes128 => "AES-128-CBC",
            Cipher::Aes192 => "AES-192-CBC",
            Cipher::Aes256 => "AES-256-CBC",
            Cipher::DesEde3 => "DES-EDE3-CBC",
        }
    }

    fn key_len(&self) -> usize {
        match self.cipher {
            Cipher::Aes128 => 16,
            Cipher::Aes192 => 24,
            Cipher::Aes256 => 32,
            Cipher::DesEde3 => 24,
        }
    }

    /// Decrypt the PEM body; the result is the PKCS#1 DER (zeroized on drop).
    pub fn decrypt(&self, passphrase: &[u8], body: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let key = bytes_to_key(passphrase, &self.iv[..8], self.key_len());
        let out = match self.cipher {
            Cipher::Aes128 => cbc::Decryptor::<Aes128>::new_from_slices(&key, &self.iv)
                .map_err(|_| Error::Decrypt)?
                .decrypt_padded_vec::<Pkcs7>(body),
            Cipher::Aes192 => cbc::Decryptor::<Aes192>::new_from_slices(&key, &self.iv)
                .map_err(|_| Error::Decrypt)?
                .decrypt_padded_vec::<Pkcs7>(body),
            Cipher::Aes256 => cbc::Decryptor::<Aes256>::new_from_slices(&key, &self.iv)
                .map_err(|_| Error::Decrypt)?
                .decrypt_padded_vec::<Pkcs7>(body),
            Cipher::DesEde3 => cbc::Decryptor::<TdesEde3>::new_from_slices(&key, &self.iv)
                .map_err(|_| Error::Decrypt)?
                .decrypt_padded_vec::<Pkcs7>(body),
        };
        out.map(Zeroizing::new).map_err(|_| Error::Decrypt)
    }
}

/// OpenSSL's `EVP_BytesToKey(cipher, md5, salt, pass, count = 1)`: D_i = MD5(D_{i-1} | pass | salt).
fn bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<Zeroizing<[u8; 16]>> = None;
    while out.len() < len {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p.as_ref());
        }
        h.update(passphrase);
        h.update(salt);
        let d: Zeroizing<[u8; 16]> = Zeroizing::new(h.finalize().into());
        out.extend_from_slice(d.as_ref());
        prev = Some(d);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the `openssl` CLI derives with `EVP_BytesToKey(cipher, md5, salt, pass, 1)`:
    /// `openssl enc -<cipher> -md md5 -S <salt> -pass pass:<pw> -P` prints `key=` and `iv =`
    /// in hex (the same derivation continued: key bytes, then IV bytes).
    fn openssl_bytes_to_key(cipher: &str, passphrase: &str, salt: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let out = std::process::Command::new("openssl")
            .args(["enc", &format!("-{cipher}"), "-md", "md5", "-P", "-S"])
            .arg(hex::encode(salt))
            .arg("-pass")
            .arg(format!("pass:{passphrase}"))
            .output()
            .expect("the openssl CLI is installed");
        assert!(
            out.status.success(),
            "openssl enc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            let line = text
                .lines()
                .find(|l| l.split('=').next().unwrap().trim() == name)
                .unwrap_or_else(|| panic!("no {name}= in {text}"));
            hex::decode(line.split_once('=').unwrap().1.trim()).unwrap()
        };
        assert_eq!(field("salt"), salt, "{text}");
        (field("key"), field("iv"))
    }

    #[test]
    fn bytes_to_key_matches_openssl() {
        let cases: [(&str, usize, usize, &str, [u8; 8]); 5] = [
            ("aes-128-cbc", 16, 16, "secret", [1, 2, 3, 4, 5, 6, 7, 8]),
            ("aes-192-cbc", 24, 16, "correct horse battery", [0xff; 8]),
            ("aes-256-cbc", 32, 16, "secret", [1, 2, 3, 4, 5, 6, 7, 8]),
            (
                "aes-256-cbc",
                32,
                16,
                "p\u{e4}ss w\u{f6}rd",
                [0x9a, 0, 0x3c, 0x7e, 0, 1, 0xd2, 0x10],
            ),
            ("des-ede3-cbc", 24, 8, "x", [0, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (cipher, key_len, iv_len, pass, salt) in cases {
            let (key, iv) = openssl_bytes_to_key(cipher, pass, &salt);
            assert_eq!((key.len(), iv.len()), (key_len, iv_len), "{cipher}");
            // The key a `DEK-Info: <cipher>,<iv>` PEM decrypts with...
            assert_eq!(
                hex::encode(bytes_to_key(pass.as_bytes(), &salt, key_len)),
                hex::encode(&key),
                "{cipher} {pass:?}"
            );
            // ...and the derivation carried on past it, as openssl carries it into the IV.
            let both = bytes_to_key(pass.as_bytes(), &salt, key_len + iv_len);
            assert_eq!(
                hex::encode(&both[key_len..]),
                hex::encode(&iv),
                "{cipher} {pass:?}"
            );
        }
    }

    #[test]
    fn dek_info_is_checked() {
        assert!(Params::parse("AES-256-CBC,00112233445566778899AABBCCDDEEFF").is_ok());
        assert!(Params::parse("DES-EDE3-CBC,0011223344556677").is_ok());
        assert_eq!(
            Params::parse("BF-CBC,0011223344556677").err(),
            Some(Error::Unsupported("BF-CBC".into()))
        );
        assert!(matches!(
            Params::parse("AES-256-CBC,0011"),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            Params::parse("AES-256-CBC"),
            Err(Error::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decrypting_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..100), info in ".{0,60}") {
            if let Ok(p) = Params::parse(&info) {
                let _ = p.decrypt(b"pw", &body);
            }
            let p = Params::parse("AES-128-CBC,00112233445566778899AABBCCDDEEFF").unwrap();
            let _ = p.decrypt(b"pw", &body);
        }
    }
}
