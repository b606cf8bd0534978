//! The review console in tests: started beside an in-process server, a small HTTP/1.1 client
//! that keeps the login cookie and CSRF token, console accounts, and real PNG frames.

use std::net::SocketAddr;

use sealstream::config::Console as ConsoleConfig;
use sealstream::console::{Console, auth};
use sealstream::metadata::{ConsoleUser, Metadata, Role, now_us};

use super::server::Env;

/// The console on a free loopback port (plain HTTP) beside `env`'s server.
pub async fn start(env: &Env, tune: impl FnOnce(&mut ConsoleConfig)) -> Console {
    let mut cfg = ConsoleConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        agent_ca: Some(env.cfg.data_dir.join("pki").join("ca.crt")),
        ..ConsoleConfig::default()
    };
    tune(&mut cfg);
    let listener = std::net::TcpListener::bind(cfg.listen).unwrap();
    let store = sealstream::storage::open_local(&env.store_dir()).unwrap();
    Console::start_on(listener, &cfg, env.server().metadata.clone(), store)
        .await
        .unwrap()
}

/// Add a console account as `sealstream users add` does.
pub async fn add_user(md: &Metadata, name: &str, role: Role, agents: &[&str], password: &str) {
    let u = ConsoleUser {
        name: name.into(),
        role,
        password_hash: auth::hash_password(password).unwrap(),
        agents: agents.iter().map(|a| a.to_string()).collect(),
        created_us: now_us(),
        disabled_us: None,
    };
    assert!(
        md.put_console_user(u, true, "test", "user_add")
            .await
            .unwrap()
    );
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A browser-like client: one login cookie, its CSRF token sent on POSTs.
pub struct Http {
    pub addr: SocketAddr,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            cookie: None,
            csrf: None,
        }
    }

    pub async fn request(&self, method: &str, path: &str, json: Option<&str>) -> Resp {
        self.request_with(method, path, json, true).await
    }

    /// `request`, with the CSRF header left off when `csrf` is false.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        json: Option<&str>,
        csrf: bool,
    ) -> Resp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let body = json.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if json.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(c) = &self.cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            req.push_str(&format!("X-CSRF-Token: {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None).await
    }

    /// Log in; keeps the cookie and CSRF token on success.
    pub async fn login(&mut self, user: &str, password: &str) -> Resp {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let r = self.request("POST", "/api/login", Some(&body)).await;
        if r.status == 200 {
            let set = r.header("set-cookie").expect("a login cookie");
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
            self.csrf = Some(r.json()["csrf"].as_str().unwrap().to_owned());
        }
        r
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        b = &b[line_end + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

/// A real PNG (8-bit RGB) of `w × h` pixels from `rgb`.
pub fn png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    sealstream::agent::synthetic::png(w, h, rgb, None)
}

/// A test picture: frame `n`'s colours differ from every other frame's.
pub fn picture(w: u32, h: u32, n: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                (n.wrapping_mul(53) % 256) as u8,
            ]);
        }
    }
    rgb
}
