//! Debian's headless Chromium through chromedriver (fantoccini): a session on a profile of its
//! own, ended with every browser process of that profile, and the waits and form steps the
//! tests and the harness take on the review console's page.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Debian's chromium-driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver and the browser profile of its session: dropping it kills (and reaps)
/// chromedriver and kills every Chromium process of the profile, even when a test panics.
pub struct Driver {
    child: std::process::Child,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium outlives a killed chromedriver: end the browsers of this profile too.
        for pid in profile_pids(self.profile.path()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Driver {
    /// The browser's profile directory (its `Default/Sessions`, caches, ...).
    pub fn profile(&self) -> &Path {
        self.profile.path()
    }
}

/// The processes whose command line names the browser profile `dir`.
pub fn profile_pids(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd)
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

/// chromedriver on a free port and a headless Chromium session on a fresh profile, waited for
/// up to 10 s. `args` follow the usual flags (headless, no sandbox, no GPU, 1400x1000);
/// `prefs`, when given, are Chromium's preferences (a download directory, ...).
pub async fn start(args: &[&str], prefs: Option<Value>) -> anyhow::Result<(Driver, Client)> {
    let port = crate::free_tcp()?.port();
    let driver = Driver {
        child: std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER} (Debian's chromium-driver)"))?,
        profile: tempfile::tempdir()?,
    };
    let mut all = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1400,1000".to_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.push(format!("--user-data-dir={}", driver.profile().display()));
    let mut options = json!({ "binary": CHROMIUM, "args": all });
    if let Some(prefs) = prefs {
        options["prefs"] = prefs;
    }
    let Value::Object(caps) = json!({ "browserName": "chrome", "goog:chromeOptions": options })
    else {
        unreachable!()
    };
    // chromedriver is plain HTTP on loopback: no TLS stack needed.
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(c) = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return Ok((driver, c));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("chromedriver did not start on {url}")
}

/// Whether a script's result counts as done: not null, false, "" or 0.
pub fn truthy(v: &Value) -> bool {
    !(v.is_null() || *v == json!(false) || *v == json!("") || *v == json!(0))
}

/// Run `script` every 100 ms, up to `tries` times, until it returns something [`truthy`];
/// return that. The error names `what` when it never does.
pub async fn until(c: &Client, what: &str, script: &str, tries: u32) -> anyhow::Result<Value> {
    for _ in 0..tries {
        let v = c.execute(script, vec![]).await?;
        if truthy(&v) {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

/// Replace the text of the input with id `id` by `text`.
pub async fn fill(c: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    let e = c.find(Locator::Id(id)).await?;
    e.clear().await?;
    e.send_keys(text).await?;
    Ok(())
}

/// Click the element with id `id`.
pub async fn click(c: &Client, id: &str) -> anyhow::Result<()> {
    c.find(Locator::Id(id)).await?.click().await?;
    Ok(())
}

/// In the console's session list, click the row of a session of `agent` (the first when
/// several) once it is there, and wait for the decrypt form; each wait is `tries` x 100 ms.
pub async fn open_session(c: &Client, agent: &str, tries: u32) -> anyhow::Result<()> {
    let row = format!(
        "[...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === '{agent}')"
    );
    until(
        c,
        &format!("a session of {agent}"),
        &format!("return {row} !== undefined"),
        tries,
    )
    .await?;
    c.execute(&format!("{row}.click()"), vec![]).await?;
    until(
        c,
        "the decrypt form",
        "return !document.getElementById('decrypt-form').hidden",
        tries,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_is_javascripts_for_what_scripts_return() {
        for v in [json!(null), json!(false), json!(""), json!(0)] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [json!(true), json!(1), json!("x"), json!({}), json!([])] {
            assert!(truthy(&v), "{v}");
        }
    }
}
