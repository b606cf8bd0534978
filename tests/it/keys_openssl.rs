//! Key files made by the real `openssl` CLI: every supported format is read and gives the KEK
//! id openssl computes; every unsupported or wrong input is a clear error naming the file.

use crate::common::*;
use sealstream::keys::{self, KeyError, Passphrase, load_private_key, load_public_key};

fn pass() -> Result<Passphrase, KeyError> {
    Ok(Passphrase::new(PASS.as_bytes().to_vec()))
}

fn wrong() -> Result<Passphrase, KeyError> {
    Ok(Passphrase::new(b"not the passphrase".to_vec()))
}

fn no_passphrase() -> Result<Passphrase, KeyError> {
    panic!("an unencrypted key must not ask for a passphrase")
}

/// Generate with `flags`, then: the private key opens, its id equals openssl's fingerprint of
/// the `-pubout` file, and a wrong passphrase is refused as such.
fn round_trip(bits: u32, flags: &[&str], expect_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let encrypted = !flags.iter().all(|f| *f == "-traditional");
    let private = genrsa(d, "keypair.pem", bits, flags);
    let public = pubout(d, "keypair.pem", "publickey.crt", encrypted);
    let key = if encrypted {
        load_private_key(&private, pass).unwrap()
    } else {
        load_private_key(&private, no_passphrase).unwrap()
    };
    assert_eq!(key.bits, bits as usize);
    assert!(
        key.format.contains(expect_format),
        "{} lacks {expect_format}",
        key.format
    );
    assert_eq!(key.encrypted, encrypted);
    assert_eq!(
        key.kek_id.to_string(),
        openssl_fingerprint(d, "publickey.crt")
    );
    let public = load_public_key(&public).unwrap();
    keys::check_pair(&key, &public).unwrap();
    if encrypted {
        let err = load_private_key(&private, wrong).unwrap_err();
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
        assert!(err.to_string().contains("keypair.pem"), "{err}");
    }
}

#[test]
fn openssl3_default_pkcs8_aes256_2048() {
    round_trip(
        2048,
        &["-aes256"],
        "PKCS#8, encrypted with PBES2, PBKDF2 (2048 rounds), AES-256-CBC",
    );
}

#[test]
fn openssl3_default_pkcs8_aes256_3072() {
    round_trip(3072, &["-aes256"], "AES-256-CBC");
}

#[test]
fn openssl3_default_pkcs8_aes256_4096() {
    round_trip(4096, &["-aes256"], "AES-256-CBC");
}

#[test]
fn openssl3_pkcs8_des3() {
    round_trip(2048, &["-des3"], "DES-EDE3-CBC");
}

#[test]
fn traditional_aes256() {
    round_trip(
        2048,
        &["-traditional", "-aes256"],
        "traditional PKCS#1, encrypted with AES-256-CBC",
    );
}

#[test]
fn traditional_aes128() {
    round_trip(2048, &["-traditional", "-aes128"], "AES-128-CBC");
}

#[test]
fn traditional_des3() {
    round_trip(3072, &["-traditional", "-des3"], "DES-EDE3-CBC");
}

#[test]
fn unencrypted_pkcs8_and_traditional() {
    round_trip(2048, &[], "PKCS#8, unencrypted");
    round_trip(2048, &["-traditional"], "traditional PKCS#1, unencrypted");
}

#[test]
fn pkcs8_with_hmac_sha1_prf_as_openssl_1_1_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "plain.pem", 2048, &[]);
    let p = format!("pass:{PASS}");
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "plain.pem",
            "-v2",
            "aes-128-cbc",
            "-v2prf",
            "hmacWithSHA1",
            "-passout",
            &p,
            "-out",
            "k.pem",
        ],
    );
    let key = load_private_key(&d.join("k.pem"), pass).unwrap();
    assert!(key.format.contains("AES-128-CBC"), "{}", key.format);
}

#[test]
fn every_public_format_gives_openssls_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "k.pem", 2048, &[]);
    pubout(d, "k.pem", "spki.crt", false);
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "k.pem",
            "-RSAPublicKey_out",
            "-out",
            "pkcs1.pem",
        ],
    );
    openssl(
        d,
        &[
            "req", "-x509", "-new", "-key", "k.pem", "-subj", "/CN=kek", "-days", "2", "-out",
            "cert.pem",
        ],
    );
    let expected = openssl_fingerprint(d, "spki.crt");
    for (file, format) in [
        ("spki.crt", "SPKI public key"),
        ("pkcs1.pem", "PKCS#1 RSA public key"),
        ("cert.pem", "X.509 certificate"),
    ] {
        let key = load_public_key(&d.join(file)).unwrap();
        assert_eq!(key.kek_id.to_string(), expected, "{file}");
        assert_eq!(key.format, format);
    }
}

fn expect_error(err: KeyError, file: &str, needle: &str) {
    let text = err.to_string();
    assert!(text.contains(file), "error does not name {file}: {text}");
    assert!(text.contains(needle), "error lacks {needle:?}: {text}");
}

#[test]
fn ec_keys_are_refused_as_not_rsa() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec8.pem",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-out",
            "ec-trad.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "ec8.pem", "-pubout", "-out", "ec-pub.pem"],
    );
    openssl(d, &["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"]);
    for f in ["ec8.pem", "ec-trad.pem"] {
        expect_error(
            load_private_key(&d.join(f), pass).unwrap_err(),
            f,
            "is an EC key",
        );
    }
    expect_error(
        load_public_key(&d.join("ec-pub.pem")).unwrap_err(),
        "ec-pub.pem",
        "is an EC key",
    );
    expect_error(
        load_private_key(&d.join("ed.pem"), pass).unwrap_err(),
        "ed.pem",
        "Ed25519",
    );
}

#[test]
fn rsa_under_2048_bits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "small.pem", 1024, &["-aes256"]);
    pubout(d, "small.pem", "small.crt", true);
    expect_error(
        load_private_key(&d.join("small.pem"), pass).unwrap_err(),
        "small.pem",
        "1024 bits is too small",
    );
    let err = load_public_key(&d.join("small.crt")).unwrap_err();
    expect_error(err, "small.crt", "1024");
}

#[test]
fn a_public_key_from_another_pair_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "a.pem", 2048, &["-aes256"]);
    genrsa(d, "b.pem", 2048, &[]);
    pubout(d, "b.pem", "b.crt", false);
    let a = load_private_key(&d.join("a.pem"), pass).unwrap();
    let b = load_public_key(&d.join("b.crt")).unwrap();
    let err = keys::check_pair(&a, &b).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn empty_garbage_and_misplaced_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.pem"), b"").unwrap();
    std::fs::write(d.join("garbage.pem"), b"this is not a key\n").unwrap();
    std::fs::write(d.join("binary.der"), [0x30, 0x82, 0xff, 0x00, 0x9c]).unwrap();
    std::fs::write(
        d.join("bad64.pem"),
        b"-----BEGIN PUBLIC KEY-----\n@@@@\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    expect_error(
        load_private_key(&d.join("empty.pem"), pass).unwrap_err(),
        "empty.pem",
        "file is empty",
    );
    expect_error(
        load_public_key(&d.join("empty.pem")).unwrap_err(),
        "empty.pem",
        "file is empty",
    );
    expect_error(
        load_private_key(&d.join("garbage.pem"), pass).unwrap_err(),
        "garbage.pem",
        "not a PEM file",
    );
    expect_error(
        load_public_key(&d.join("binary.der")).unwrap_err(),
        "binary.der",
        "not a PEM file",
    );
    expect_error(
        load_public_key(&d.join("bad64.pem")).unwrap_err(),
        "bad64.pem",
        "base64",
    );
    expect_error(
        load_public_key(&d.join("missing.pem")).unwrap_err(),
        "missing.pem",
        "cannot read",
    );
    genrsa(d, "k.pem", 2048, &[]);
    pubout(d, "k.pem", "k.crt", false);
    expect_error(
        load_public_key(&d.join("k.pem")).unwrap_err(),
        "k.pem",
        "holds a private key",
    );
    expect_error(
        load_private_key(&d.join("k.crt"), pass).unwrap_err(),
        "k.crt",
        "PUBLIC KEY",
    );
}

#[test]
fn generated_keys_are_read_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = keys::generate_keypair(
        &d.join("kek"),
        2048,
        &Passphrase::new(PASS.as_bytes().to_vec()),
    )
    .unwrap();
    let pw = pass_file(d);
    let pw_arg = format!("file:{}", pw.display());
    // openssl decrypts it with the same passphrase and agrees on the public key.
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "kek/keypair.pem",
            "-passin",
            &pw_arg,
            "-check",
            "-noout",
        ],
    );
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "kek/keypair.pem",
            "-passin",
            &pw_arg,
            "-pubout",
            "-out",
            "again.crt",
        ],
    );
    assert_eq!(g.kek_id.to_string(), openssl_fingerprint(d, "again.crt"));
    assert_eq!(
        g.kek_id.to_string(),
        openssl_fingerprint(d, "kek/publickey.crt")
    );
    // The KDF is stronger than openssl's default.
    let asn1 = String::from_utf8(openssl(d, &["asn1parse", "-in", "kek/keypair.pem"])).unwrap();
    assert!(
        asn1.contains(":0927C0"),
        "600000 PBKDF2 rounds expected:\n{asn1}"
    );
    assert!(asn1.contains("hmacWithSHA256") && asn1.contains("aes-256-cbc"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&g.private_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // And it refuses to overwrite.
    let err = keys::generate_keypair(
        &d.join("kek"),
        2048,
        &Passphrase::new(PASS.as_bytes().to_vec()),
    );
    assert!(matches!(err, Err(KeyError::Exists { .. })));
}

/// A wrong passphrase gets past the CBC padding check about once in 256 tries and decrypts to
/// garbage; that must still read as a wrong passphrase, never as a malformed file.
#[test]
fn many_wrong_passphrases_all_read_as_wrong_passphrases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pkcs8 = genrsa(d, "p8.pem", 2048, &["-aes256"]);
    let trad = genrsa(d, "trad.pem", 2048, &["-traditional", "-aes256"]);
    for file in [&pkcs8, &trad] {
        for i in 0..1500 {
            let err = load_private_key(file, || {
                Ok(Passphrase::new(format!("wrong {i}").into_bytes()))
            })
            .unwrap_err();
            assert!(
                matches!(err, KeyError::WrongPassphrase { .. }),
                "try {i}: {err}"
            );
        }
    }
}
