//! Finding X displays on the host: their sockets, their servers' processes (owner and `-auth`
//! file) and the cookie each is opened with.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A display found on the host.
#[derive(Clone, Debug)]
pub struct DisplaySpec {
    pub number: u32,
    pub socket: PathBuf,
    /// The user the X server runs for (its process owner, else the socket's).
    pub user: String,
}

impl DisplaySpec {
    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }
}

/// Every X display whose socket is in `dir` (`X<n>`), limited to `only` when not empty.
pub fn discover(dir: &Path, only: &[u32]) -> Vec<DisplaySpec> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let servers = x_servers();
    let mut out: Vec<DisplaySpec> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let number: u32 = name.to_str()?.strip_prefix('X')?.parse().ok()?;
            if !only.is_empty() && !only.contains(&number) {
                return None;
            }
            let uid = servers
                .get(&number)
                .map(|s| s.uid)
                .or_else(|| e.metadata().ok().map(|m| m.uid()))?;
            Some(DisplaySpec {
                number,
                socket: e.path(),
                user: user_name(uid),
            })
        })
        .collect();
    out.sort_by_key(|d| d.number);
    out
}

/// An X server process: its owner and its `-auth` file.
struct XServer {
    uid: u32,
    auth: Option<PathBuf>,
}

/// X servers running on this host by display number, read from /proc (as root, every user's).
fn x_servers() -> HashMap<u32, XServer> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(exe) = args.first().and_then(|a| std::str::from_utf8(a).ok()) else {
            continue;
        };
        let base = exe.rsplit('/').next().unwrap_or(exe);
        if !matches!(
            base,
            "Xvfb" | "Xorg" | "X" | "Xvnc" | "Xtigervnc" | "Xephyr" | "Xwayland"
        ) && !base.starts_with("Xorg")
        {
            continue;
        }
        let mut number = None;
        let mut auth = None;
        for (i, a) in args.iter().enumerate().skip(1) {
            let Ok(a) = std::str::from_utf8(a) else {
                continue;
            };
            if let Some(n) = a.strip_prefix(':').and_then(|n| n.parse::<u32>().ok()) {
                number.get_or_insert(n);
            }
            if a == "-auth" {
                auth = args
                    .get(i + 1)
                    .and_then(|f| std::str::from_utf8(f).ok())
                    .map(PathBuf::from);
            }
        }
        let Some(number) = number else { continue };
        let Ok(meta) = p.metadata() else { continue };
        out.insert(
            number,
            XServer {
                uid: meta.uid(),
                auth,
            },
        );
    }
    out
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let _ = f.next();
                (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// The cookie for display `number` in an Xauthority file: (protocol name, data).
pub(super) fn cookie(file: &Path, number: u32) -> Option<(Vec<u8>, Vec<u8>)> {
    let data = std::fs::read(file).ok()?;
    let mut at = 0;
    let field = |at: &mut usize| -> Option<Vec<u8>> {
        let len = u16::from_be_bytes(data.get(*at..*at + 2)?.try_into().ok()?) as usize;
        let v = data.get(*at + 2..*at + 2 + len)?.to_vec();
        *at += 2 + len;
        Some(v)
    };
    let want = number.to_string();
    let mut any = None;
    while at + 2 <= data.len() {
        at += 2; // family
        let _address = field(&mut at)?;
        let num = field(&mut at)?;
        let name = field(&mut at)?;
        let cookie = field(&mut at)?;
        if num == want.as_bytes() {
            return Some((name, cookie));
        }
        if num.is_empty() {
            any.get_or_insert((name, cookie));
        }
    }
    any
}

/// The auth cookie to open display `number` with: its server's `-auth` file, else
/// `$XAUTHORITY`, else none (a server without access control).
pub(super) fn auth_for(number: u32) -> (Vec<u8>, Vec<u8>) {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(s) = x_servers().remove(&number) {
        files.extend(s.auth);
    }
    if let Some(f) = std::env::var_os("XAUTHORITY") {
        files.push(f.into());
    }
    files
        .iter()
        .find_map(|f| cookie(f, number))
        .unwrap_or_default()
}
