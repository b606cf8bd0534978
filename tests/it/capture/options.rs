//! The capture settings a user turns (`max_width`, `idle_seconds`), a keymap with AltGr levels,
//! `export --video` of a recorded session, and the agent's capture-to-ack histogram, each on a
//! real Xvfb display, seen as the user sees them: exported files, ffprobe, /metrics.

use super::*;
use crate::common::agents::{free_tcp, metrics_text};

/// A screenshot scaled to `max_width` by area average (as it is when no wider): each output
/// pixel the rounded mean of the source pixels from `x·W/w` to `(x+1)·W/w` (at least one)
/// across and likewise down, the height `H·w/W` rounded; docs/capture.md "Settings".
fn area_average(
    (sw, sh, rgb): &(usize, usize, Vec<u8>),
    max_width: usize,
) -> (usize, usize, Vec<u8>) {
    let (sw, sh) = (*sw, *sh);
    if sw <= max_width {
        return (sw, sh, rgb.clone());
    }
    let w = max_width;
    let h = ((sh * w) as f64 / sw as f64).round().max(1.0) as usize;
    let span = |i: usize, n: usize, of: usize| {
        let a = i * of / n;
        (a, ((i + 1) * of / n).max(a + 1))
    };
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let (y0, y1) = span(y, h, sh);
        for x in 0..w {
            let (x0, x1) = span(x, w, sw);
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            for c in 0..3 {
                let sum: u32 = (y0..y1)
                    .flat_map(|sy| (x0..x1).map(move |sx| (sy, sx)))
                    .map(|(sy, sx)| rgb[(sy * sw + sx) * 3 + c] as u32)
                    .sum();
                out.push(((sum + n / 2) / n) as u8);
            }
        }
    }
    (w, h, out)
}

/// The store exported, every stream complete (`export_complete`): the export, its directory
/// and its one session of `agent`, which ended whole.
async fn only_session(env: &ChildEnv, agent: &str) -> (export::Report, tempfile::TempDir, Session) {
    let (exported, out, mut all) =
        export_complete(&env.store_dir(), env.private_key(), agent).await;
    assert_eq!(all.len(), 1, "one session");
    let s = all.remove(0);
    assert_eq!(
        s.activity.last().unwrap()["event"],
        "session_end",
        "{:?}",
        s.activity
    );
    (exported, out, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_wider_than_max_width_is_recorded_scaled_as_its_screenshot_scaled() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    // Halved exactly; by 1.7075 (boxes of one and two source pixels across, one and two
    // down); and one exactly max_width wide, recorded as it is.
    let a = Xvfb::start(1600, 900);
    let b = Xvfb::start(1366, 768);
    let c = Xvfb::start(800, 600);
    let mut capture = capture_config(&[&a, &b, &c]);
    capture.max_width = 800;
    let (stop, agent) = start_agent(env.enroll("ts-scaled"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Text (thin strokes: averaging shows in every glyph) and odd-placed window edges.
    let mut terms = Vec::new();
    for (x, colour) in [(&a, "#3a6ea5"), (&b, "#a53a6e"), (&c, "#6ea53a")] {
        terms.push(x.xterm("scaled-term", "70x12+31+17").0);
        x.type_text("scaled-to-max-width");
        x.ok("xsetroot", &["-solid", colour]);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_dir = tempfile::tempdir().unwrap();
    let shots: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|x| x.screenshot(&shot_dir.path().join(format!("{}.png", x.number))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-scaled").await;
    assert_eq!(all.len(), 3, "one session per display");
    for (x, shot, (w, h)) in [
        (&a, &shots[0], (800, 450)),
        (&b, &shots[1], (800, 450)),
        (&c, &shots[2], (800, 600)),
    ] {
        let s = all
            .iter()
            .find(|s| s.display() == x.display())
            .expect("the display's session");
        holds_all_reported(s, &report);
        // Every screen is the display's shape at max_width (the height rounded).
        let sizes: Vec<(usize, usize)> = s.frames.iter().map(|f| png_size(f)).collect();
        assert!(sizes.len() > 1, "{sizes:?}");
        assert!(sizes.iter().all(|&d| d == (w, h)), "{sizes:?}");
        let updates = screen_updates(&env.store_dir(), &env.private_key(), &s.id).await;
        assert!(
            updates
                .iter()
                .all(|&(_, uw, uh)| (uw as usize, uh as usize) == (w, h)),
            "{updates:?}"
        );
        // The session's metadata gives the display's own size (what the user's screen is),
        // not the recorded one; the frames say theirs.
        let start = s.event("session_start").unwrap();
        assert_eq!(
            (&start["width"], &start["height"]),
            (&shot.0.into(), &shot.1.into()),
            "{start}"
        );
        assert!(s.event("resize").is_none(), "{:?}", s.activity);
        // The last screen is the screenshot scaled by the same rule, exactly: both start from
        // the same framebuffer bytes and the rule is integer arithmetic.
        let scaled = area_average(shot, 800);
        assert_eq!((scaled.0, scaled.1), (w, h));
        assert_eq!(
            differing_pixels(s.frames.last().unwrap(), &scaled),
            0,
            "{}",
            x.display()
        );
    }
    // And it is not the screenshot merely subsampled (which a scaler that skipped pixels
    // would give): a sampled copy differs where text is.
    let s = all.iter().find(|s| s.display() == a.display()).unwrap();
    let sampled: Vec<u8> = (0..450)
        .flat_map(|y| (0..800).map(move |x| (y * 2, x * 2)))
        .flat_map(|(y, x)| shots[0].2[(y * 1600 + x) * 3..][..3].to_vec())
        .collect();
    assert!(differing_pixels(s.frames.last().unwrap(), &(800, 450, sampled)) > 100);
    drop(terms);
    env.stop().await;
}

/// ffprobe's answer for the first video stream of `file`, as `key=value` lines.
fn ffprobe(file: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", entries, "-of", "default=nw=1"])
        .arg(file)
        .output()
        .expect("ffprobe (the ffmpeg package) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field<T: std::str::FromStr>(info: &str, key: &str) -> T {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} in {info}"))
}

/// The decoded video's frames as RGB (`w`x`h` each).
fn decoded_frames(file: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(file)
        // Each frame once, as stored (not repeated to a constant rate).
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() % (w * h * 3), 0);
    out.stdout.chunks(w * h * 3).map(|c| c.to_vec()).collect()
}

/// Peak signal-to-noise ratio of `a` against `b` in dB (8-bit samples).
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
        .sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_video_of_a_captured_session_shows_its_screens_at_their_times() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (stop, agent) = start_agent(env.enroll("ts-video"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for colour in ["#802020", "#208020", "#202080"] {
        x.ok("xsetroot", &["-solid", colour]);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (_term, _) = x.xterm("video-term", "50x8+40+60");
    x.type_text("shown-in-the-video");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_acked(stop, agent, "the agent stops").await;

    // The frames and their capture times, as export writes them.
    let (exported, _out, s) = only_session(&env, "ts-video").await;
    let times: Vec<i64> = exported
        .streams
        .iter()
        .find(|r| r.session == s.id && r.stream == 0)
        .expect("the frames stream")
        .frames
        .iter()
        .map(|(_, t)| *t)
        .collect();
    let n = s.frames.len();
    assert!(n >= 5, "a keyframe, three colours and the terminal: {n}");
    assert_eq!(times.len(), n);

    // `sealstream export --video`, as a reviewer runs it.
    let dir = env.dir.path();
    let cli = Command::new(env!("CARGO_BIN_EXE_sealstream"))
        .current_dir(dir)
        .args(["export", "--store"])
        .arg(env.store_dir())
        .args(["--out", "video-out", "--key"])
        .arg(&env.kek_priv)
        .args(["--passphrase-file", "pass.txt", "--video"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(
        cli.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let mp4 = dir
        .join("video-out/ts-video")
        .join(&s.id)
        .join("video-0.mp4");
    assert!(mp4.is_file(), "no {}: {said}", mp4.display());
    assert!(said.contains("video-0.mp4"), "{said}");

    // H.264 at the screen's size, a frame for each screen update, lasting from the first
    // capture to the last one plus the last frame's time (the median gap between captures).
    let info = ffprobe(
        &mp4,
        "stream=codec_name,width,height,nb_read_frames:format=duration",
    );
    assert_eq!(field::<String>(&info, "codec_name"), "h264", "{info}");
    assert_eq!(
        (
            field::<usize>(&info, "width"),
            field::<usize>(&info, "height")
        ),
        (640, 480),
        "{info}"
    );
    // The last screen comes twice: export lists it again so that ffmpeg's concat demuxer
    // takes its duration (src/video.rs), and a variable-rate video keeps that frame.
    let frames: usize = field(&info, "nb_read_frames");
    assert_eq!(frames, n + 1, "{n} screens: {info}");
    let mut gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).max(1000)).collect();
    gaps.sort();
    let want = (times[n - 1] - times[0] + gaps[gaps.len() / 2]) as f64 / 1e6;
    let duration: f64 = field(&info, "duration");
    assert!(
        (duration - want).abs() < 0.1,
        "video {duration} s, captures {want} s: {info}"
    );

    // Each decoded frame is its screen, as near as H.264 at its default quality (lossy, and
    // yuv420p halves the colour's resolution) gives: above 30 dB PSNR (41 to 48 dB here);
    // and nearer its own screen than any screen that differs from it by more than that (a
    // line of text more may be within the codec's error; a new background is not).
    let decoded = decoded_frames(&mp4, 640, 480);
    assert_eq!(decoded.len(), n + 1);
    let screens: Vec<Vec<u8>> = s
        .frames
        .iter()
        .map(|f| decode_png(&std::fs::read(f).unwrap(), 640, 480).unwrap())
        .collect();
    let mut told_apart = 0;
    for (k, frame) in decoded.iter().enumerate() {
        let i = k.min(n - 1);
        let own = psnr(frame, &screens[i]);
        assert!(own > 30.0, "frame {k}: {own:.1} dB against screen {i}");
        for (j, other) in screens.iter().enumerate() {
            if psnr(other, &screens[i]) < 30.0 {
                let p = psnr(frame, other);
                assert!(
                    p < own,
                    "frame {k} is nearer screen {j} ({p:.1} dB) than its own, {i} ({own:.1} dB)"
                );
                told_apart += 1;
            }
        }
    }
    assert!(told_apart >= n * 3, "{told_apart} comparisons");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_left_alone_goes_idle_and_input_makes_it_active() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (_term, _) = x.xterm("idle-term", "40x8+10+10");
    let mut capture = capture_config(&[&x]);
    // Two seconds: long enough that a busy host's stall between an input and the next tick
    // does not pass for idleness.
    capture.idle_seconds = 2;
    let (stop, agent) = start_agent(env.enroll("ts-idle"), capture);
    // Nobody types: idle once no input for two seconds. Then a key, and (idle again) the
    // pointer moved: each makes the session active at the next tick, idle two seconds on.
    let mut inputs = Vec::new();
    for input in [&["key", "a"][..], &["mousemove", "300", "200"][..]] {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let before = sealstream::crypto::now_us() / 1000;
        x.ok("xdotool", input);
        inputs.push((before, sealstream::crypto::now_us() / 1000));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, s) = only_session(&env, "ts-idle").await;
    let events: Vec<&serde_json::Value> = s
        .activity
        .iter()
        .filter(|e| e["event"] == "idle" || e["event"] == "active")
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["idle", "active", "idle", "active", "idle"],
        "{:?}",
        s.activity
    );
    let ts = |e: &serde_json::Value| e["ts"].as_i64().unwrap();
    let idle_ms = |e: &serde_json::Value| {
        e["idle_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("idle_ms in {e}"))
    };
    // Idle before the input, for at least idle_seconds; active after it, its idle_ms the
    // time since that input (a tick's wait, 200 ms, unless the host stalls); idle two seconds
    // on. An event's `ts - idle_ms` is when the last input came (the screen saver's clock and
    // ours agree on durations): when the input was sent, for the active and idle after it
    // (the slack: the agent reading its clock after the server answered, on a busy host).
    let first = events[0];
    assert!(ts(first) < inputs[0].0, "{first}");
    assert!(idle_ms(first) >= 2000, "{first}");
    for (i, &(before, after)) in inputs.iter().enumerate() {
        let (active, again) = (events[2 * i + 1], events[2 * i + 2]);
        assert!(ts(active) >= before, "{active}");
        assert!(idle_ms(active) < 2000, "{active}");
        assert!(idle_ms(again) >= 2000, "{again}");
        assert!(ts(again) >= before + 2000, "{again}");
        for e in [active, again] {
            let input = ts(e) - idle_ms(e);
            assert!(
                input >= before - 50 && input <= after + 500,
                "{e}: last input at {input}, the input between {before} and {after}"
            );
        }
    }
    // The key itself is recorded as typed; the pointer is no keystroke.
    assert_eq!(typed(&s.keystrokes), "a");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altgr_characters_on_a_german_keymap_are_recorded_as_text() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (_term, _) = x.xterm("altgr-term", "60x10+10+10");
    let (stop, agent) = start_agent(env.enroll("ts-altgr"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The layout switched while recorded (the agent reads the map again on MappingNotify):
    // German, where AltGr (ISO_Level3_Shift) + Q is @, + E is €, + 7 is {, + 0 is }, and
    // Y and Z trade places.
    x.ok("setxkbmap", &["de"]);
    let map = x.ok("xmodmap", &["-pke"]);
    assert!(
        map.lines()
            .any(|l| l.contains("= q Q") && l.contains(" at ")),
        "setxkbmap de took: {map}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // AltGr held while keys are pressed, as a user does.
    x.ok(
        "xdotool",
        &[
            "key",
            "--delay",
            "30",
            "ISO_Level3_Shift+q",
            "ISO_Level3_Shift+e",
            "ISO_Level3_Shift+7",
            "ISO_Level3_Shift+0",
            "z",
            "Return",
        ],
    );
    // With Caps Lock on, AltGr still gives the third level (@, not the fourth's Ω: Lock does
    // not choose the level there, XKB's FOUR_LEVEL_SEMIALPHABETIC) and Lock capitalises a
    // letter found there (æ: Æ), as xev shows on this keymap; Shift chooses the fourth.
    x.ok(
        "xdotool",
        &[
            "key",
            "--delay",
            "30",
            "Caps_Lock",
            "ISO_Level3_Shift+q",
            "ISO_Level3_Shift+a",
            "ISO_Level3_Shift+shift+q",
            "q",
            "Caps_Lock",
            "Return",
        ],
    );
    // Typed as text: xdotool finds each character on the map and presses what it needs.
    x.type_text("mail@host €5 {y}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, s) = only_session(&env, "ts-altgr").await;
    let keys = typed_keys(&s.keystrokes);
    let text: String = keys.concat();
    assert!(text.starts_with("@€{}z[Enter]"), "typed: {keys:?}");
    assert!(text.ends_with("mail@host €5 {y}[Enter]"), "typed: {keys:?}");
    assert_eq!(
        text, "@€{}z[Enter]@ÆΩQ[Enter]mail@host €5 {y}[Enter]",
        "{keys:?}"
    );
    // Each a key of its own, none a chord (AltGr is not Alt, Ctrl or Super).
    for k in ["@", "€", "{", "}"] {
        assert!(
            keys.iter().any(|x| x == k),
            "{k} not a key of its own: {keys:?}"
        );
    }
    assert!(
        !keys.iter().any(|k| k.contains('+') && k.len() > 1),
        "chords: {keys:?}"
    );
    env.stop().await;
}

/// `name`'s histogram buckets in a /metrics text: (upper bound, cumulative count), `+Inf` last.
fn buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (le, n) = rest.split_once("\"} ").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, n.trim().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_to_ack_latency_is_readable_to_tens_of_milliseconds() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let cfg = env.enroll("ts-ackhist");
    let dir = env.dir.path().join("ts-ackhist-agent");
    let config = write_agent_toml(&dir, &cfg, "");
    // The agent's own /metrics listener (a top-level setting, before `[capture]`).
    let listen = free_tcp();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("metrics_listen = \"{listen}\"\n{text}")).unwrap();
    let x = Xvfb::start(640, 480);
    let agent = AgentProc::recording(&config, &x, dir.join("agent.log")).await;
    let (_term, _) = x.xterm("ackhist-term", "60x10+10+10");
    x.type_text("latency-measured-per-chunk");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let name = sealstream::telemetry::CAPTURE_TO_ACK;
    let scraped = metrics_text(listen).await;
    let (status, stdout, _) = agent.term().await;
    assert!(status.success(), "{stdout}");

    let b = buckets(&scraped, name);
    let bounds: Vec<f64> = b.iter().map(|&(le, _)| le).collect();
    // A p99 read as a bucket bound is within 25 ms below 100 ms and within 50 ms up to
    // half a second (where a healthy agent's acks fall).
    assert!(!bounds.is_empty(), "no {name} in:\n{scraped}");
    assert_eq!(bounds.last(), Some(&f64::INFINITY));
    for w in bounds.windows(2) {
        let step = if w[1] <= 0.1 {
            0.025
        } else if w[1] <= 0.5 {
            0.05
        } else {
            f64::INFINITY
        };
        assert!(
            w[1] - w[0] <= step + 1e-9,
            "a bucket from {} to {} s: {bounds:?}",
            w[0],
            w[1]
        );
    }
    assert!(bounds[0] <= 0.025 && bounds.contains(&10.0), "{bounds:?}");
    // Every chunk acked was observed: keyframe, updates, keystroke and activity batches.
    let count = b.last().unwrap().1;
    assert!(count >= 3, "{count} observations:\n{scraped}");
    let p99 = b
        .iter()
        .find(|&&(_, n)| n as f64 >= 0.99 * count as f64)
        .unwrap()
        .0;
    eprintln!("capture to ack: {count} chunks, p99 <= {p99} s");
    assert!(p99 <= 10.0, "p99 {p99} s:\n{scraped}");
}

/// `fps` is the most screens a second: a terminal that never stops changing, recorded at 2
/// frames a second, makes at most two updates a second of the agent's life (not one per
/// change), and keeps making them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_that_never_stops_changing_is_read_at_most_fps_times_a_second() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (_term, _) = x.xterm("busy-term", "60x20+0+0");
    let mut capture = capture_config(&[&x]);
    capture.fps = 2.0;
    let born = std::time::Instant::now();
    let (stop, agent) = start_agent(env.enroll("ts-fps"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Hundreds of lines a second, longer than the agent records.
    x.type_text("for i in $(seq 20000); do echo $i; sleep 0.001; done");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_acked(stop, agent, "the agent stops").await;
    let lived = born.elapsed().as_secs_f64();

    let (_, _out, s) = only_session(&env, "ts-fps").await;
    let updates =
        decoded_updates(&env.store_dir(), &env.private_key(), &s.id, |u| u.keyframe).await;
    assert!(
        (updates.len() as f64) <= 2.0 * lived + 1.0,
        "{} updates in the agent's {lived:.1} s at fps 2",
        updates.len()
    );
    // Six busy seconds at two a second, give or take a tick.
    assert!(updates.len() >= 11, "{} updates", updates.len());
}
