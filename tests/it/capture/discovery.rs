//! How the agent finds displays on its own, as a root service on a terminal server does: the
//! X servers' `-auth` files (relative ones too, as xrdp gives them), the displays it cannot
//! open told once each with the reason, `[capture] source` and repeated `--display` flags,
//! and an X server that stops answering.

use super::*;
use crate::common::xvfb::{free_number, xauth_add};

/// The agent as a child process run from `cwd`, with no `XAUTHORITY`: what it opens, it
/// opened with a cookie it found through the X servers' processes.
fn spawn_agent(config: &Path, args: &[&str], log: PathBuf, cwd: &Path) -> AgentProc {
    AgentProc::spawn_with(config, args, log, |c| {
        c.current_dir(cwd).env_remove("XAUTHORITY");
    })
}

/// A socket directory of the test's own (other tests' displays are not its business) with
/// each of `displays`' sockets linked in, and an agent.toml recording what is in it.
fn agent_dir(env: &ChildEnv, name: &str, displays: &[&Xvfb]) -> (PathBuf, PathBuf) {
    let dir = env.dir.path().join(format!("{name}-agent"));
    let sockets = dir.join("x11-unix");
    std::fs::create_dir_all(&sockets).unwrap();
    for x in displays {
        std::os::unix::fs::symlink(
            format!("/tmp/.X11-unix/X{}", x.number),
            sockets.join(format!("X{}", x.number)),
        )
        .unwrap();
    }
    let config = write_agent_toml(
        &dir,
        &env.enroll(name),
        &format!("socket_dir = \"{}\"\n", sockets.display()),
    );
    (config, sockets)
}

/// Stop the agent with SIGTERM: it exits 0 within `within` with everything acked.
async fn term_ok(agent: AgentProc, within: Duration) -> Duration {
    let log = agent.log.clone();
    let (status, stdout, took) = agent.term().await;
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {stdout}\n{log}");
    assert!(stdout.contains(" 0 not acked yet"), "{stdout}\n{log}");
    eprintln!("the agent exited {took:?} after SIGTERM");
    assert!(
        took < within,
        "the agent took {took:?} to exit after SIGTERM:\n{log}"
    );
    took
}

/// The displays of the sessions an export holds for `agent`, each stream complete.
async fn recorded_displays(env: &ChildEnv, agent: &str) -> (Vec<String>, Vec<Session>) {
    let (exported, _out, all) = export_complete(&env.store_dir(), env.private_key(), agent).await;
    assert_eq!(exported.streams.len(), 3 * all.len(), "three streams each");
    let mut displays: Vec<String> = all
        .iter()
        .map(|s| s.display().as_str().unwrap().to_owned())
        .collect();
    displays.sort();
    (displays, all)
}

fn sorted(displays: &[&Xvfb]) -> Vec<String> {
    let mut v: Vec<String> = displays.iter().map(|x| x.display()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_server_started_with_a_relative_auth_file_is_recorded_with_its_cookie() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start_with_relative_auth(640, 480);
    let (config, _) = agent_dir(&env, "ts-relative", &[&x]);
    // The agent runs elsewhere: `.Xauthority` in its own directory is not the server's.
    let cwd = tempfile::tempdir().unwrap();
    let agent = spawn_agent(
        &config,
        &["--capture", "x11"],
        env.dir.path().join("relative.log"),
        cwd.path(),
    );
    agent.wait_count("recording started", 1).await;
    let (_term, _) = x.xterm("relative-term", "40x8+10+10");
    x.type_text("typed-on-an-xrdp-like-display");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        agent.count("cannot record this display"),
        0,
        "{}",
        agent.log()
    );
    term_ok(agent, Duration::from_secs(15)).await;
    let (displays, all) = recorded_displays(&env, "ts-relative").await;
    assert_eq!(displays, [x.display()]);
    assert!(!all[0].frames.is_empty());
    let keys = typed(&all[0].keystrokes);
    assert!(keys.contains("typed-on-an-xrdp-like-display"), "{keys}");
    env.stop().await;
}

/// The agent's "cannot record this display" lines: (the display each names, the line).
fn refusals(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("cannot record this display"))
        .map(|l| {
            let display = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("display="))
                .unwrap_or_else(|| panic!("no display named in {l:?}"))
                .to_owned();
            (display, l.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_display_that_cannot_be_opened_is_one_log_line_naming_it_and_why() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let good = Xvfb::start(640, 480);
    // The server read its cookie when it started; its -auth file now holds another one. An X
    // server reads its -auth file again when a client fails and the file's mtime is later than
    // its last reading (whole seconds): dated back, the file is not read again, whatever
    // second the rewrite fell in, and the server keeps the cookie it had.
    let wrong = Xvfb::start(640, 480);
    xauth_add(&wrong.auth, &wrong.display(), [7u8; 16]);
    std::fs::File::options()
        .write(true)
        .open(&wrong.auth)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(86_400))
        .unwrap();
    // The server's -auth file is gone: no cookie anywhere.
    let gone = Xvfb::start(640, 480);
    std::fs::remove_file(&gone.auth).unwrap();
    let (config, sockets) = agent_dir(&env, "ts-refused", &[&good, &wrong, &gone]);
    // A socket nobody listens on, and one whose "server" accepts and never answers.
    let (dead, silent) = (free_number(), free_number());
    drop(std::os::unix::net::UnixListener::bind(sockets.join(format!("X{dead}"))).unwrap());
    let _silent =
        std::os::unix::net::UnixListener::bind(sockets.join(format!("X{silent}"))).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let agent = spawn_agent(
        &config,
        &["--capture", "x11"],
        env.dir.path().join("refused.log"),
        cwd.path(),
    );
    // The others are told (and recorded) at once; the silent server is given up after 10 s.
    let started = Instant::now();
    agent.wait_count("recording started", 1).await;
    agent.wait_count("cannot record this display", 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server that does not answer held up the others: {:?}\n{}",
        started.elapsed(),
        agent.log()
    );
    agent.wait_count("cannot record this display", 4).await;
    let (_term, _) = good.xterm("refused-term", "40x8+10+10");
    good.type_text("recorded-beside-four-refusals");
    // Ten more searches (every 200 ms) while the refusals wait for their retry (30 s later):
    // nothing is told twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = agent.log();
    let mut lines = refusals(&log);
    for (_, l) in &lines {
        eprintln!("{l}");
    }
    lines.sort();
    let mut named: Vec<&str> = lines.iter().map(|(d, _)| d.as_str()).collect();
    named.sort();
    let mut want = vec![
        wrong.display(),
        gone.display(),
        format!(":{dead}"),
        format!(":{silent}"),
    ];
    want.sort();
    assert_eq!(named, want, "one line per display not opened:\n{log}");
    let line = |d: &str| &lines.iter().find(|(n, _)| n == d).unwrap().1;
    let why = [
        (
            wrong.display(),
            format!(
                "the X server refused the cookie found in {}",
                wrong.auth.display()
            ),
        ),
        (
            gone.display(),
            format!(
                "no cookie for {} in {}",
                gone.display(),
                gone.auth.display()
            ),
        ),
        (
            format!(":{dead}"),
            format!("cannot connect to {}/X{dead}", sockets.display()),
        ),
        (
            format!(":{silent}"),
            "the X server did not answer within 10 s".to_owned(),
        ),
    ];
    for (display, reason) in why {
        assert!(
            line(&display).contains(&reason),
            "{display}: {reason:?} in {:?}",
            line(&display)
        );
    }
    // The attempt on the silent server still waits for it: it keeps nothing from stopping.
    term_ok(agent, Duration::from_secs(15)).await;
    let (displays, all) = recorded_displays(&env, "ts-refused").await;
    assert_eq!(displays, [good.display()]);
    let keys = typed(&all[0].keystrokes);
    assert!(keys.contains("recorded-beside-four-refusals"), "{keys}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_x11_in_agent_toml_records_without_the_capture_flag() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (config, _) = agent_dir(&env, "ts-config", &[&x]);
    let agent = spawn_agent(
        &config,
        &[],
        env.dir.path().join("config.log"),
        env.dir.path(),
    );
    agent.wait_count("recording started", 1).await;
    x.ok("xsetroot", &["-solid", "red"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    term_ok(agent, Duration::from_secs(15)).await;
    let (displays, all) = recorded_displays(&env, "ts-config").await;
    assert_eq!(displays, [x.display()]);
    assert!(!all[0].frames.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_flags_given_twice_record_those_two_displays_and_not_a_third() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let (a, b, c) = (
        Xvfb::start(640, 480),
        Xvfb::start(640, 480),
        Xvfb::start(640, 480),
    );
    let (config, _) = agent_dir(&env, "ts-flags", &[&a, &b, &c]);
    let (da, db) = (a.display(), b.display());
    let agent = spawn_agent(
        &config,
        &["--capture", "x11", "--display", &da, "--display", &db],
        env.dir.path().join("flags.log"),
        env.dir.path(),
    );
    agent.wait_count("recording started", 2).await;
    // Ten more searches (every 200 ms) find the third display and leave it alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.count("recording started"), 2, "{}", agent.log());
    term_ok(agent, Duration::from_secs(15)).await;
    let (displays, _) = recorded_displays(&env, "ts-flags").await;
    assert_eq!(displays, sorted(&[&a, &b]));
    env.stop().await;
}

/// Sends SIGCONT to a stopped X server when dropped (before the server itself is).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: a signal to the test's own child, not waited for yet.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_server_that_stops_answering_does_not_keep_the_agent_from_stopping() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let (stuck, fine) = (Xvfb::start(640, 480), Xvfb::start(640, 480));
    let (config, _) = agent_dir(&env, "ts-stuck", &[&stuck, &fine]);
    let agent = spawn_agent(
        &config,
        &["--capture", "x11"],
        env.dir.path().join("stuck.log"),
        env.dir.path(),
    );
    agent.wait_count("recording started", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // SAFETY: a signal to the test's own child, not waited for yet.
    unsafe { libc::kill(stuck.proc.id() as i32, libc::SIGSTOP) };
    let _resume = Continue(stuck.proc.id());
    // The capture thread's next request (5 a second) waits for a reply that does not come.
    fine.ok("xsetroot", &["-solid", "blue"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    term_ok(agent, Duration::from_secs(15)).await;
    let (displays, all) = recorded_displays(&env, "ts-stuck").await;
    assert_eq!(displays, sorted(&[&stuck, &fine]));
    for s in &all {
        let end = s.activity.last().unwrap();
        assert_eq!(end["event"], "session_end", "{:?}", s.activity);
        let why = end["reason"].as_str().unwrap();
        // The stopped server's session is ended without its thread, after the grace period;
        // the other's as usual.
        if s.display() == stuck.display().as_str() {
            assert!(why.contains("did not answer"), "{why}");
        } else {
            assert_eq!(why, "agent stopping");
        }
        assert!(!s.frames.is_empty());
    }
    env.stop().await;
}
