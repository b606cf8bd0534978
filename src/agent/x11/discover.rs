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

/// Whether a process named `base` (its command's file name) is an X server holding a user's
/// display: Xorg (as xrdp and display managers run it), Xvfb, the VNC servers (TigerVNC,
/// TightVNC, TurboVNC, RealVNC), X2Go's and NoMachine's NX agents, nested and Wayland ones.
fn is_x_server(base: &str) -> bool {
    matches!(
        base,
        "X" | "Xvfb"
            | "Xvnc"
            | "Xvnc4"
            | "Xvnc-core"
            | "Xtigervnc"
            | "Xtightvnc"
            | "Xephyr"
            | "Xnest"
            | "Xwayland"
            | "x2goagent"
            | "nxagent"
    ) || base.starts_with("Xorg")
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
        if !is_x_server(exe.rsplit('/').next().unwrap_or(exe)) {
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
        let Some(uid) = real_uid(&p.path()).or_else(|| p.metadata().ok().map(|m| m.uid())) else {
            continue;
        };
        let auth = auth.and_then(|f| resolve_auth(&p.path(), uid, f));
        out.insert(number, XServer { uid, auth });
    }
    out
}

/// The real uid of the process at `proc` (/proc/PID): the user a setuid-root Xorg runs for.
fn real_uid(proc: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// An X server's `-auth` file as a path the agent can open: a relative one (xrdp's sesman
/// gives `-auth .Xauthority`) is relative to the server's working directory, else (when that
/// cannot be read) to the home directory of the user it runs for.
fn resolve_auth(proc: &Path, uid: u32, file: PathBuf) -> Option<PathBuf> {
    if file.is_absolute() {
        return Some(file);
    }
    if let Ok(cwd) = std::fs::read_link(proc.join("cwd"))
        && cwd.is_dir()
    {
        return Some(cwd.join(file));
    }
    passwd(uid).map(|(_, home)| home.join(file))
}

/// The name and home directory of `uid` in /etc/passwd.
fn passwd(uid: u32) -> Option<(String, PathBuf)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok()? == uid)
            .then(|| (f[0].to_owned(), PathBuf::from(f[5])))
    })
}

fn user_name(uid: u32) -> String {
    passwd(uid).map_or_else(|| format!("uid{uid}"), |(name, _)| name)
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

/// The cookie a display is opened with, and where it was looked for.
#[derive(Default)]
pub(super) struct Auth {
    /// Protocol name and data (both empty when no cookie was found).
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// The file the cookie was found in.
    pub found_in: Option<PathBuf>,
    /// The files looked in: the server's `-auth` file, `$XAUTHORITY`.
    pub looked_in: Vec<PathBuf>,
}

impl Auth {
    /// Why the X server of `display` refused a connection made with this cookie, `reason`
    /// the server's words (on one line: servers end them with a newline).
    pub fn refused(&self, display: &str, reason: &str) -> String {
        let e = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        // Only a refusal about authorization is the cookie's fault ("Maximum number of
        // clients reached" is not).
        let about_auth = e.to_ascii_lowercase().contains("authoriz")
            || e.to_ascii_lowercase().contains("cookie");
        match (&self.found_in, self.looked_in.as_slice()) {
            (Some(f), _) if about_auth => format!(
                "the X server refused the cookie found in {} ({e})",
                f.display()
            ),
            (Some(f), _) => format!(
                "the X server refused the connection ({e}); the cookie offered came from {}",
                f.display()
            ),
            (None, []) => format!(
                "the X server refused the connection ({e}): no cookie was found for it (no X \
                 server process names an -auth file for {display} and XAUTHORITY is not set)"
            ),
            (None, files) => format!(
                "the X server refused the connection ({e}): no cookie for {display} in {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The auth cookie to open display `number` with: its server's `-auth` file, else
/// `$XAUTHORITY`, else none (a server without access control).
pub(super) fn auth_for(number: u32) -> Auth {
    let mut looked_in: Vec<PathBuf> = Vec::new();
    if let Some(s) = x_servers().remove(&number) {
        looked_in.extend(s.auth);
    }
    if let Some(f) = std::env::var_os("XAUTHORITY") {
        looked_in.push(f.into());
    }
    match looked_in
        .iter()
        .find_map(|f| Some((f.clone(), cookie(f, number)?)))
    {
        Some((file, (name, data))) => Auth {
            name,
            data,
            found_in: Some(file),
            looked_in,
        },
        None => Auth {
            looked_in,
            ..Auth::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_auth_file_is_found_in_the_servers_directory_else_its_users_home() {
        let me = Path::new("/proc/self");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            resolve_auth(me, 0, ".Xauthority".into()),
            Some(cwd.join(".Xauthority"))
        );
        assert_eq!(
            resolve_auth(me, 0, "/run/x/auth".into()),
            Some(PathBuf::from("/run/x/auth"))
        );
        // A process whose directory cannot be read (gone here): its user's home.
        let (_, root_home) = passwd(0).expect("root in /etc/passwd");
        assert_eq!(
            resolve_auth(
                Path::new("/proc/no-such-process"),
                0,
                "a/.Xauthority".into()
            ),
            Some(root_home.join("a/.Xauthority"))
        );
        assert_eq!(
            resolve_auth(
                Path::new("/proc/no-such-process"),
                u32::MAX - 7,
                ".X".into()
            ),
            None
        );
    }

    #[test]
    fn the_session_servers_of_xrdp_x2go_nomachine_and_vnc_are_known_by_name() {
        for name in [
            "Xorg",
            "Xorg.bin",
            "Xvfb",
            "Xvnc",
            "Xtigervnc",
            "x2goagent",
            "nxagent",
            "Xephyr",
        ] {
            assert!(is_x_server(name), "{name}");
        }
        for name in ["xterm", "Xsession", "xauth", "x2goclient"] {
            assert!(!is_x_server(name), "{name}");
        }
    }
}
