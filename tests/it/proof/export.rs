use super::*;

#[test]
fn export_selects_by_agent_and_capture_time() {
    let f = Fixture::new();
    // Captured 2026-11-27T10:00:00Z onwards, half a second apart.
    let (record, chunks) = f.record(Some("agent"), 3);
    let store = f.store("s", &record, &chunks);
    let streams = |out: &str, extra: &[&str]| {
        let a = f.export(&store, out, extra).code(0);
        let text = stdout(&a);
        text.lines()
            .find_map(|l| {
                l.split(" stream(s)")
                    .next()?
                    .rsplit(", ")
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{text}"))
    };
    assert_eq!(streams("all", &[]), 1);
    assert_eq!(streams("by-agent", &["--agent", AGENT]), 1);
    assert_eq!(streams("other-agent", &["--agent", "someone-else"]), 0);
    assert_eq!(streams("since-day", &["--since", "2026-11-27"]), 1);
    assert_eq!(
        streams("since-later", &["--since", "2026-11-27T10:05:00Z"]),
        0
    );
    assert_eq!(streams("until-day", &["--until", "2026-11-27"]), 1);
    assert_eq!(streams("until-before", &["--until", "2026-11-26"]), 0);
    let a = f.export(&store, "bad", &["--since", "yesterday"]).code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("give RFC 3339"), "{err}");
}

#[test]
fn an_export_resumes_into_its_directory_and_never_overwrites() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 4);
    let store = f.store("s", &record, &chunks);
    f.export(&store, "out", &[]).code(0);
    // Again into the same directory: identical files are kept.
    f.export(&store, "out", &[]).code(0);
    let frames: Vec<PathBuf> = crate::common::walk(&f.path("out"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(frames.len(), 4);
    // A file changed since: refused, and left as it was.
    std::fs::write(&frames[0], b"changed by hand").unwrap();
    let a = f.export(&store, "out", &[]).code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("exists with different contents"), "{err}");
    assert_eq!(std::fs::read(&frames[0]).unwrap(), b"changed by hand");
}

#[test]
fn video_export_needs_ffmpeg_and_names_the_package() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 2);
    let store = f.store("s", &record, &chunks);
    let a = Command::cargo_bin("sealstream")
        .unwrap()
        .current_dir(f.dir.path())
        .env("SEALSTREAM_FFMPEG", "/nonexistent/ffmpeg")
        .args([
            "export",
            "--store",
            store.to_str().unwrap(),
            "--out",
            "out",
            "--key",
            "keypair.pem",
            "--passphrase-file",
            "pass.txt",
            "--video",
        ])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("apt-get install ffmpeg"), "{err}");
    assert!(!f.path("out").exists(), "nothing exported before the check");
}

#[test]
fn video_export_writes_an_mp4_at_capture_times() {
    sealstream::video::find_ffmpeg()
        .expect("this test needs ffmpeg (Debian's ffmpeg package; .ci/run installs it)");
    let f = Fixture::new();
    // 6 real PNG frames, 2 s apart: a 12 s video (the last frame shown for the median gap).
    let png = |i: u64| {
        let rgb: Vec<u8> = (0..64 * 48)
            .flat_map(|p| [(p % 251) as u8, (i * 40) as u8, 90])
            .collect();
        sealstream::agent::synthetic::png(64, 48, &rgb, None)
    };
    let (record, chunks) = f.record_images(Some("agent"), 6, png, 2_000_000);
    let store = f.store("s", &record, &chunks);
    let a = f
        .export(&store, "out", &["--video", "--agent-ca", "ca/ca.crt"])
        .code(0);
    let out = stdout(&a);
    let mp4 = crate::common::walk(&f.path("out"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "mp4"))
        .unwrap_or_else(|| panic!("no mp4 written: {out}"));
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height:format=duration",
            "-of",
            "default=nw=1",
        ])
        .arg(&mp4)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(info.contains("codec_name=h264"), "{info}");
    assert!(
        info.contains("width=64") && info.contains("height=48"),
        "{info}"
    );
    let duration: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((11.0..=13.0).contains(&duration), "{info}");
    // Resumed: the video is kept, not made again or overwritten.
    let a = f.export(&store, "out", &["--video"]).code(0);
    assert!(stdout(&a).contains("(already there)"), "{}", stdout(&a));
}

/// Every key `verify --json` and `report.json` hold is in docs/format.md's schema ("The verify
/// report", "Export output"), and every key the schema gives is there (issue 22: a third reader
/// writes these from the spec).
#[test]
fn the_json_reports_hold_exactly_the_fields_the_spec_gives() {
    fn keys(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    out.insert(k.clone());
                    keys(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
            _ => {}
        }
    }
    /// The quoted names before a `:` in the first code block after `heading`.
    fn documented(heading: &str, block: usize) -> std::collections::BTreeSet<String> {
        let spec =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/format.md"))
                .unwrap();
        let section = spec.split(heading).nth(1).unwrap();
        let code = section.split("```").nth(2 * block + 1).unwrap();
        code.split('"')
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[1].trim_start().starts_with(':'))
            .map(|w| w[0].to_owned())
            .filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect()
    }
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 3);
    let store = f.store("s", &record, &chunks);
    f.verify(&store, Some("ca/ca.crt")).code(0);
    sealstream(
        f.dir.path(),
        &[
            "verify",
            "--store",
            "s",
            "--agent-ca",
            "ca/ca.crt",
            "--json",
            "verify.json",
        ],
    )
    .code(0);
    let mut got = Default::default();
    keys(
        &serde_json::from_slice(&std::fs::read(f.path("verify.json")).unwrap()).unwrap(),
        &mut got,
    );
    let mut want = documented("## The verify report", 0);
    // "signature": as in report.json.
    want.extend(
        [
            "proof",
            "cert",
            "fingerprint",
            "serial",
            "ca_checked",
            "checkpoint",
            "proven",
            "unproven",
        ]
        .map(String::from),
    );
    assert_eq!(got, want, "verify --json against docs/format.md");

    f.export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(0);
    let mut got = Default::default();
    keys(
        &serde_json::from_slice(&std::fs::read(f.path("out/report.json")).unwrap()).unwrap(),
        &mut got,
    );
    let want = documented("## Export output", 1);
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(extra.is_empty(), "not in docs/format.md: {extra:?}");
    // A complete stream without gaps has no detail and no gap fields.
    let missing: Vec<_> = want
        .difference(&got)
        .filter(|k| !["detail", "first_seq", "last_seq", "count"].contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not written: {missing:?}"
    );
    let mut got = Default::default();
    keys(
        &serde_json::from_slice(&std::fs::read(f.path("out/receipt.json")).unwrap()).unwrap(),
        &mut got,
    );
    assert_eq!(got, documented("## Export output", 0), "receipt.json");
}
