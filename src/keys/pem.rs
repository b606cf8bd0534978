//! A small PEM reader that keeps RFC 1421 headers (`Proc-Type`, `DEK-Info`), which the
//! traditional encrypted key format needs and strict RFC 7468 readers refuse.

use base64ct::{Base64, Encoding};
use zeroize::Zeroizing;

pub(crate) struct Block {
    pub label: String,
    pub headers: Vec<(String, String)>,
    pub der: Zeroizing<Vec<u8>>,
}

impl Block {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored (openssl does the same).
pub(crate) fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim_end);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut headers = Vec::new();
        let mut body = Zeroizing::new(String::new());
        let mut in_headers = true;
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if line.starts_with("-----") {
                return Err(format!("block \"{label}\" ends with {line:?}"));
            }
            if in_headers {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    continue;
                }
                in_headers = false;
                if line.is_empty() {
                    continue;
                }
            }
            body.push_str(line);
        }
        if !closed {
            return Err(format!("block \"{label}\" has no END line"));
        }
        let der = Base64::decode_vec(&body)
            .map_err(|_| format!("block \"{label}\" is not valid base64"))?;
        blocks.push(Block {
            label: label.to_owned(),
            headers,
            der: Zeroizing::new(der),
        });
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_headers_and_body() {
        let text = "junk\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00FF\n\nAAEC\nAw==\n-----END RSA PRIVATE KEY-----\n";
        let blocks = parse(text).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "RSA PRIVATE KEY");
        assert_eq!(blocks[0].header("dek-info"), Some("AES-256-CBC,00FF"));
        assert_eq!(&blocks[0].der[..], &[0, 1, 2, 3]);
    }

    #[test]
    fn unterminated_and_bad_base64_are_errors() {
        assert!(parse("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(parse("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_err());
        assert!(parse("no pem here").unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
            let _ = parse(&format!("-----BEGIN A-----\n{text}\n-----END A-----\n"));
        }
    }
}
