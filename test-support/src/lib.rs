//! Helpers shared by sealstream's integration tests (`tests/it/common/`) and its load harness
//! (`loadtest/`), written once here:
//! - [`chromium`]: chromedriver on a free port and a headless Debian Chromium session on a
//!   profile of its own, ended with every browser process of that profile; waits, form filling
//!   and clicks on the review console's page;
//! - [`free_tcp`], [`free_udp`]: loopback addresses with a free port;
//! - [`http_get`]: a plain HTTP/1.0 GET (a server's `/metrics`);
//! - [`proc_kib`]: a size in KiB from `/proc/<pid>/status` or `smaps_rollup`.
//!
//! Errors are returned, not panicked: the tests unwrap them, the harness reports them.

pub mod chromium;

use std::net::SocketAddr;

/// A loopback TCP address whose port was free a moment ago.
pub fn free_tcp() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A loopback UDP address whose port was free a moment ago.
pub fn free_udp() -> std::io::Result<SocketAddr> {
    std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

/// GET `path` from `addr` over plain HTTP/1.0 (the server closes the connection after the
/// answer); returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// The value in KiB of `field` (`VmRSS`, `VmHWM`, `Pss`, ...) in `/proc/<pid>/<file>` (Linux;
/// `file` is `status` or `smaps_rollup`). An error when the file cannot be read or has no such
/// field.
pub fn proc_kib(pid: u32, file: &str, field: &str) -> std::io::Result<u64> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no {field} in {path}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_kib_reads_a_field_and_refuses_a_missing_one() {
        let pid = std::process::id();
        let rss = proc_kib(pid, "status", "VmRSS").unwrap();
        let peak = proc_kib(pid, "status", "VmHWM").unwrap();
        assert!(rss > 0 && peak >= rss, "VmRSS {rss} KiB, VmHWM {peak} KiB");
        // A prefix of another field is not that field.
        let e = proc_kib(pid, "status", "VmRS").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(proc_kib(pid, "no-such-file", "VmRSS").is_err());
    }

    #[tokio::test]
    async fn http_get_returns_the_status_line_and_the_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nup 1\r\n\r\nx")
                .await
                .unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let (line, body) = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(line, "HTTP/1.0 200 OK");
        assert_eq!(body, "up 1\r\n\r\nx");
        assert_eq!(server.await.unwrap(), "GET /metrics HTTP/1.0\r\n\r\n");
    }
}
