//! docs/format.md is enough to decrypt a store: the independent Python decryptor in
//! tools/reference_decrypt.py (written from the spec alone) opens what `sealstream seal` wrote,
//! under a traditional-format openssl key, and gets the original bytes back.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use assert_cmd::Command as Cmd;

#[test]
fn the_python_reference_decryptor_reads_our_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "k.pem", 2048, &["-traditional", "-aes256"]);
    pubout(d, "k.pem", "k.crt", true);
    pass_file(d);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    Cmd::cargo_bin("sealstream")
        .unwrap()
        .current_dir(d)
        .args([
            "seal",
            "--kek",
            "k.crt",
            "--store",
            "store",
            "--agent-id",
            "ref",
        ])
        .arg(&samples)
        .assert()
        .success();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["store", "k.pem", "pass.txt", "out"])
        .current_dir(d)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "reference decryptor failed (needs `pip install cryptography`): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("complete").count(), 2, "{stdout}");
    let session = std::fs::read_dir(d.join("out"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(session.join("1/keystrokes.jsonl")).unwrap(),
        std::fs::read(samples.join("keystrokes.jsonl")).unwrap()
    );
    for (i, f) in ["screen-000.png", "screen-001.png", "screen-002.png"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            std::fs::read(session.join(format!("0/{i:08}-{f}"))).unwrap(),
            std::fs::read(samples.join(f)).unwrap()
        );
    }
}

/// Format version 2: the reference decryptor checks the published signed vectors (stored as a
/// real store) against their agent CA, decrypts them, and refuses each signed negative vector;
/// `sealstream verify` agrees with it on every one.
#[test]
fn the_python_reference_decryptor_checks_signatures_as_sealstream_does() {
    use bytes::Bytes;
    use sealstream::protocol::{DekRecord, SealedChunk};
    let vectors_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir.join("vectors.json")).unwrap()).unwrap();
    let s = &v["signed"];
    let unhex = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), s["agent_ca"].as_str().unwrap()).unwrap();
    let write_store = |name: &str, record: &[u8], chunks: Vec<Vec<u8>>| {
        let store = sealstream::storage::open_local(&d.join(name)).unwrap();
        let record = DekRecord::decode(record).unwrap();
        let chunks: Vec<SealedChunk> = chunks
            .into_iter()
            .map(|c| SealedChunk::decode(Bytes::from(c)).unwrap())
            .collect();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(sealstream::recorder::store_recording(
                store.as_ref(),
                &record,
                &chunks,
            ))
            .unwrap();
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let python = |args: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .args(args)
            .current_dir(d)
            .output()
            .expect("python3 is installed")
    };
    let ours = |store: &str| {
        Cmd::cargo_bin("sealstream")
            .unwrap()
            .current_dir(d)
            .args(["verify", "--store", store, "--agent-ca", "ca.pem"])
            .output()
            .unwrap()
    };
    let good: Vec<Vec<u8>> = s["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unhex(&c["sealed"]))
        .collect();
    write_store("good", &unhex(&s["dek_record"]), good);
    let out = python(&["--verify", "good", "--agent-ca", "ca.pem"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("signed by sha256:") && text.contains("up to checkpoint 2"),
        "{text}"
    );
    assert_eq!(ours("good").status.code(), Some(0));
    // Decrypting too, with the vectors' KEK.
    let out = python(&[
        "good",
        vectors_dir.join("kek.pem").to_str().unwrap(),
        vectors_dir.join("passphrase.txt").to_str().unwrap(),
        "out",
        "--agent-ca",
        "ca.pem",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, n) in s["negative"].as_array().unwrap().iter().enumerate() {
        let name = format!("neg{i}");
        let record = n.get("dek_record").unwrap_or(&s["dek_record"]);
        write_store(
            &name,
            &unhex(record),
            n["stream"].as_array().unwrap().iter().map(unhex).collect(),
        );
        let out = python(&["--verify", &name, "--agent-ca", "ca.pem"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}: {}",
            n["name"],
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(ours(&name).status.code(), Some(3), "{}", n["name"]);
    }
}

/// The `readers` section of the vectors (issue 22): the Python reader, written from the spec,
/// gives every whole-store case, with the agent CA pinned and without, verifying and
/// decrypting, with and without --allow-incomplete, the exit code, outcome, verdicts, proofs,
/// capture times and malformed chunks the case gives, and puts a stream's files in the
/// quarantine exactly when `sealstream export` does (tests/it/vectors.rs holds sealstream to the
/// same case).
#[test]
fn the_python_reference_decryptor_gives_every_reader_case_its_verdicts() {
    let vectors_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir.join("vectors.json")).unwrap()).unwrap();
    let section = &v["readers"];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), section["agent_ca"].as_str().unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let (key, pass) = (
        vectors_dir.join("kek.pem"),
        vectors_dir.join("passphrase.txt"),
    );
    let mut wrong = Vec::new();
    for (i, case) in section["cases"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let store = format!("store-{i}");
        for (k, hex_bytes) in case["objects"].as_object().unwrap() {
            let path = d.join(&store).join(k);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, hex::decode(hex_bytes.as_str().unwrap()).unwrap()).unwrap();
        }
        for mode in ["without_ca", "with_ca"] {
            for decrypt in [false, true] {
                for allow in [false, true] {
                    let tag = format!("{i}-{mode}-{decrypt}-{allow}");
                    let json_path = format!("{tag}.json");
                    let mut args: Vec<String> = Vec::new();
                    if mode == "with_ca" {
                        args.extend(["--agent-ca".into(), "ca.pem".into()]);
                    }
                    if allow {
                        args.push("--allow-incomplete".into());
                    }
                    args.extend(["--json".into(), json_path.clone()]);
                    if decrypt {
                        args.extend([
                            store.clone(),
                            key.display().to_string(),
                            pass.display().to_string(),
                            format!("out-{tag}"),
                        ]);
                    } else {
                        args.extend(["--verify".into(), store.clone()]);
                    }
                    let out = Command::new("python3")
                        .arg(&script)
                        .args(&args)
                        .current_dir(d)
                        .output()
                        .expect("python3 is installed");
                    let what = format!(
                        "{name} ({mode}, {}{})",
                        if decrypt { "decrypting" } else { "verifying" },
                        if allow { ", --allow-incomplete" } else { "" }
                    );
                    let want = &case[mode][if decrypt { "export" } else { "verify" }];
                    let code = if allow {
                        "exit_allow_incomplete"
                    } else {
                        "exit"
                    };
                    if out.status.code() != want[code].as_i64().map(|c| c as i32) {
                        wrong.push(format!(
                            "{what}: exit {:?}, want {}: {}{}",
                            out.status.code(),
                            want[code],
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    let Ok(got) = std::fs::read(d.join(&json_path))
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            serde_json::from_slice::<serde_json::Value>(&b)
                                .map_err(|e| e.to_string())
                        })
                    else {
                        wrong.push(format!("{what}: no JSON report"));
                        continue;
                    };
                    if got["outcome"] != want["outcome"] {
                        wrong.push(format!(
                            "{what}: outcome {}, want {}",
                            got["outcome"], want["outcome"]
                        ));
                    }
                    for s in case["streams"].as_array().unwrap() {
                        let Some(g) =
                            got["streams"].as_array().unwrap().iter().find(|g| {
                                g["session"] == s["session"] && g["stream"] == s["stream"]
                            })
                        else {
                            wrong.push(format!("{what}: stream {} not reported", s["session"]));
                            continue;
                        };
                        let says = &s[mode];
                        let verdict = &says[if decrypt { "export_verdict" } else { "verdict" }];
                        let mut fields = vec![
                            ("verdict", &g["verdict"], verdict),
                            ("proof", &g["proof"], &says["proof"]),
                            ("chunks", &g["chunks"], &s["chunks"]),
                            (
                                "first_capture_us",
                                &g["first_capture_us"],
                                &s["first_capture_us"],
                            ),
                            (
                                "last_capture_us",
                                &g["last_capture_us"],
                                &s["last_capture_us"],
                            ),
                        ];
                        if decrypt {
                            fields.push((
                                "malformed_chunks",
                                &g["malformed_chunks"],
                                &s["malformed_chunks"],
                            ));
                        }
                        for (field, got, want) in fields {
                            if got != want {
                                wrong.push(format!("{what}: {field} {got}, want {want}"));
                            }
                        }
                        if decrypt {
                            // The same number of files, quarantined exactly when export's are.
                            let placement = |files: &serde_json::Value| {
                                let files = files.as_array().unwrap();
                                let quarantined = files
                                    .iter()
                                    .filter(|f| f.as_str().unwrap().starts_with("@quarantine/"))
                                    .count();
                                (files.len(), quarantined)
                            };
                            if placement(&g["files"]) != placement(&says["files"]) {
                                wrong.push(format!(
                                    "{what}: files {}, export writes {}",
                                    g["files"], says["files"]
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Screen updates and activity batches (format.md "Screen update", "Compositing", "Activity
// batch"; issue 20). The stores are sealed by sealstream's own sealer; every PNG going in is the
// `png` crate's, with each of the five filters, and every PNG coming out is read back with it, so
// the Python reader's inflating, unfiltering and PNG writing are checked against another
// implementation, and the pixels against the compositing rule as the tests below spell it out.

use sealstream::protocol::payload::{Frame, Gap};
use sealstream::protocol::{AgentId, Kind, SealedChunk, SessionId, StreamId};
use sealstream::recorder::Recorder;

/// `w × h` RGB pixels, pseudo-random for each seed: half the bytes anything, half a multiple of
/// 30, so that every PNG filter has work to do and Paeth's predictor meets its ties.
fn pattern(w: usize, h: usize, seed: usize) -> Vec<u8> {
    let mut state = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..w * h * 3)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = (state >> 33) as u32;
            if r & 1 == 0 {
                (r >> 8) as u8
            } else {
                (r >> 8) as u8 % 9 * 30
            }
        })
        .collect()
}

/// A PNG of `w × h` pixels of `data` (as many bytes a pixel as `color` and `depth` take).
fn png_as(
    w: usize,
    h: usize,
    data: &[u8],
    color: png::ColorType,
    depth: png::BitDepth,
    filter: png::Filter,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
    enc.set_color(color);
    enc.set_depth(depth);
    enc.set_filter(filter);
    if color == png::ColorType::Indexed {
        enc.set_palette(vec![0u8, 0, 0, 255, 255, 255]);
    }
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

/// A changed rectangle: where it goes, its pixels and their 8-bit RGB PNG.
struct Rect {
    x: u16,
    y: u16,
    w: u16,
    h: u16,
    rgb: Vec<u8>,
    png: Vec<u8>,
}

fn rect(x: u16, y: u16, w: u16, h: u16, seed: usize, filter: png::Filter) -> Rect {
    let rgb = pattern(w.into(), h.into(), seed);
    let png = png_as(
        w.into(),
        h.into(),
        &rgb,
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        filter,
    );
    Rect {
        x,
        y,
        w,
        h,
        rgb,
        png,
    }
}

/// A screen update's bytes, laid out as format.md's table gives it.
fn ssu(flags: u8, width: u16, height: u16, rects: &[Rect]) -> Vec<u8> {
    let mut out = b"SSU\x01".to_vec();
    out.push(flags);
    for v in [width, height, rects.len() as u16] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for r in rects {
        for v in [r.x, r.y, r.w, r.h] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(r.png.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.png);
    }
    out
}

/// The screen a frames stream shows, as "Compositing" says: a keyframe, the first update or a
/// change of size starts from black; then each rectangle replaces the pixels under it, in order.
#[derive(Clone, Default)]
struct Expected {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Expected {
    fn apply(&mut self, keyframe: bool, width: u16, height: u16, rects: &[Rect]) -> Expected {
        let (width, height) = (width as usize, height as usize);
        if keyframe || self.rgb.is_empty() || (self.width, self.height) != (width, height) {
            *self = Expected {
                width,
                height,
                rgb: vec![0; width * height * 3],
            };
        }
        for r in rects {
            let row = r.w as usize * 3;
            for j in 0..r.h as usize {
                let at = ((r.y as usize + j) * width + r.x as usize) * 3;
                self.rgb[at..at + row].copy_from_slice(&r.rgb[j * row..(j + 1) * row]);
            }
        }
        self.clone()
    }
}

/// An exported screen, read with the `png` crate: (width, height, RGB bytes). It must be an
/// 8-bit RGB PNG.
fn read_screen(path: &Path) -> (usize, usize, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight),
        "{}",
        path.display()
    );
    rgb.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, rgb)
}

fn assert_screen(path: &Path, want: &Expected) {
    let (w, h, rgb) = read_screen(path);
    assert_eq!((w, h), (want.width, want.height), "{}", path.display());
    if let Some(i) = (0..rgb.len()).find(|&i| rgb[i] != want.rgb[i]) {
        let p = i / 3;
        panic!(
            "{}: pixel ({}, {}) is {:?}, want {:?}",
            path.display(),
            p % w,
            p / w,
            &rgb[p * 3..p * 3 + 3],
            &want.rgb[p * 3..p * 3 + 3]
        );
    }
}

/// CRC-32 as PNG uses it, to re-seal a PNG chunk changed on purpose.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    })
}

/// `png` with its IHDR's data (13 bytes at offset 16) changed by `edit`, its CRC made right.
fn with_ihdr(mut png: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut png[16..29]);
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// `w × h` pixels as an 8-bit RGB PNG whose first row has filter type `filter_type` (stored
/// deflate blocks, so the filter byte can be written as is; zlib and PNG checksums right).
fn png_with_row_filter(w: usize, h: usize, rgb: &[u8], filter_type: u8) -> Vec<u8> {
    let mut png = sealstream::agent::synthetic::png(w as u32, h as u32, rgb, None);
    // Signature 8, IHDR 25, then the IDAT: length 4, type 4, zlib header 2, block header 5.
    let idat = 33;
    let len = u32::from_be_bytes(png[idat..idat + 4].try_into().unwrap()) as usize;
    let zlib = idat + 8;
    assert!(len < 65_535 + 11 && png[zlib + 2] == 1, "one stored block");
    png[zlib + 7] = filter_type;
    let raw = &png[zlib + 7..zlib + len - 4];
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    png[zlib + len - 4..zlib + len].copy_from_slice(&((b << 16) | a).to_be_bytes());
    let crc = crc32(&png[idat + 4..zlib + len]);
    png[zlib + len..zlib + len + 4].copy_from_slice(&crc.to_be_bytes());
    png
}

fn frame(name: &str, image: &[u8]) -> Vec<u8> {
    Frame { name, image }.encode()
}

/// Write the DEK record and `chunks` as a store, under the vectors' KEK.
fn store_chunks(dir: &Path, recorder: &Recorder, chunks: &[SealedChunk]) {
    let store = sealstream::storage::open_local(dir).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(sealstream::recorder::store_recording(
            store.as_ref(),
            recorder.dek_record(),
            chunks,
        ))
        .unwrap();
}

fn vectors_kek() -> (Recorder, std::path::PathBuf, std::path::PathBuf) {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let kek = sealstream::keys::load_public_key(&vectors.join("kek.crt")).unwrap();
    (
        Recorder::new(AgentId::new("screens").unwrap(), &kek),
        vectors.join("kek.pem"),
        vectors.join("passphrase.txt"),
    )
}

/// Runs the reference decryptor; returns its exit code, stdout and JSON report.
fn reference(d: &Path, args: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--json", "report.json"])
        .args(args)
        .current_dir(d)
        .output()
        .expect("python3 is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read(d.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no JSON report: {text}"));
    (out.status.code(), text, report)
}

fn stream_report(report: &serde_json::Value, stream: u32) -> &serde_json::Value {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == stream)
        .unwrap_or_else(|| panic!("stream {stream} not reported: {report}"))
}

/// One chunk of the frames stream the screen test seals.
enum Step {
    /// A screen update (flags, width, height, rectangles), stored, or sealed and then dropped by
    /// the agent (never stored).
    Update(u8, u16, u16, Vec<Rect>, bool),
    /// The gap record for the updates dropped just before it.
    Gap,
    /// An ordinary image frame.
    Image,
}

const PHOTO: &[u8] = b"\xff\xd8 an image, kept as it is";

/// A frames stream of screen updates — a keyframe, partial updates whose rectangles overlap
/// (their PNGs using each of the five filters), an ordinary image between them, a gap, a change
/// of size without a keyframe, the largest width and height and the most rectangles an update
/// may have — and an activity stream: the reference decryptor writes each update's whole screen
/// as `<seq>-<stem>.png` with exactly the pixels "Compositing" gives, the image as it was, and
/// the activity events as activity.jsonl.
#[test]
fn the_python_reference_decryptor_composites_screen_updates_and_writes_activity() {
    use png::Filter::*;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (recorder, key, pass) = vectors_kek();
    let session = SessionId::random();
    let update = |flags, width, height, rects| Step::Update(flags, width, height, rects, true);
    let dropped = |rects| Step::Update(0, 40, 30, rects, false);
    let steps = vec![
        update(1, 40, 30, vec![rect(0, 0, 40, 30, 1, Adaptive)]),
        // Overlapping rectangles: a later one is painted over an earlier.
        update(
            0,
            40,
            30,
            vec![
                rect(0, 0, 8, 6, 2, NoFilter),
                rect(10, 5, 12, 7, 3, Sub),
                rect(30, 20, 10, 10, 4, Up),
                rect(5, 3, 10, 10, 5, Avg),
            ],
        ),
        Step::Image,
        update(0, 40, 30, vec![rect(20, 10, 15, 15, 6, Paeth)]),
        // Two updates the agent dropped, then its gap record: the screen is not reset.
        dropped(vec![rect(0, 0, 40, 30, 99, NoFilter)]),
        dropped(vec![rect(0, 0, 40, 30, 98, NoFilter)]),
        Step::Gap,
        update(0, 40, 30, vec![rect(1, 1, 3, 3, 7, Adaptive)]),
        // Another size without a keyframe: black but for its rectangle.
        update(0, 24, 16, vec![rect(2, 2, 5, 5, 8, Sub)]),
        // Another size of the same area: black again.
        update(0, 16, 24, vec![rect(10, 20, 6, 4, 11, Avg)]),
        // The widest screen, the most rectangles, the tallest screen.
        update(1, 16_384, 1, vec![rect(0, 0, 16_384, 1, 9, Paeth)]),
        update(
            0,
            16_384,
            1,
            (0..4096)
                .map(|i| rect(i * 4 + 1, 0, 1, 1, i as usize % 3, NoFilter))
                .collect(),
        ),
        update(1, 3, 16_384, vec![rect(0, 0, 3, 16_384, 10, Up)]),
    ];
    let mut frames = recorder.open_stream(session, StreamId(0), Kind::Frame);
    let (mut chunks, mut files, mut screens, mut dropped_seqs) = (vec![], vec![], vec![], vec![]);
    let mut screen = Expected::default();
    let (mut t, mut n, count) = (1_700_000_000_000_000i64, 0, steps.len());
    for (i, step) in steps.into_iter().enumerate() {
        let (seq, last) = (frames.next_seq(), i + 1 == count);
        t += 40_000;
        match step {
            Step::Update(flags, width, height, rects, kept) => {
                n += 1;
                let image = ssu(flags, width, height, &rects);
                let chunk = frames
                    .seal(&frame(&format!("screen-{n:08}.ssu"), &image), t, last)
                    .unwrap();
                if kept {
                    chunks.push(chunk);
                    files.push(format!("{seq:08}-screen-{n:08}.png"));
                    screens.push((seq, screen.apply(flags & 1 == 1, width, height, &rects)));
                } else {
                    dropped_seqs.push((seq, t));
                }
            }
            Step::Gap => chunks.push(
                frames
                    .seal_gap(&Gap {
                        first_seq: dropped_seqs[0].0,
                        last_seq: dropped_seqs[dropped_seqs.len() - 1].0,
                        first_capture_us: dropped_seqs[0].1,
                        last_capture_us: dropped_seqs[dropped_seqs.len() - 1].1,
                        count: dropped_seqs.len() as u64,
                    })
                    .unwrap(),
            ),
            Step::Image => {
                chunks.push(frames.seal(&frame("photo.jpg", PHOTO), t, last).unwrap());
                files.push(format!("{seq:08}-photo.jpg"));
            }
        }
    }
    let mut activity = recorder.open_stream(session, StreamId(2), Kind::Activity);
    let batches: [&[u8]; 2] = [
        b"{\"ts\":1700000000000,\"event\":\"session_start\",\"user\":\"ana\",\"display\":\":0\",\
          \"host\":\"ws-1\",\"width\":40,\"height\":30}\n\
          {\"ts\":1700000000100,\"event\":\"focus\",\"title\":\"Terminal\",\"class\":\"xterm\"}\n",
        b"{\"ts\":1700000000300,\"event\":\"resize\",\"width\":24,\"height\":16}\n",
    ];
    for b in batches {
        chunks.push(activity.seal(b, t, false).unwrap());
    }
    chunks.push(activity.seal(b"", t, true).unwrap());
    store_chunks(&d.join("store"), &recorder, &chunks);

    // Verifying needs no key, and reads kind 3 like the others.
    let (code, text, report) = reference(d, &["--verify", "store"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(stream_report(&report, 2)["kind"], "activity", "{report}");

    let (code, text, report) = reference(
        d,
        &[
            "store",
            key.to_str().unwrap(),
            pass.to_str().unwrap(),
            "out",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("gap 4..5 (2 dropped"), "{text}");
    let out = d.join("out").join(session.to_string());
    let s0 = stream_report(&report, 0);
    assert_eq!(s0["kind"], "frames");
    assert_eq!(s0["verdict"], "ok");
    let paths: Vec<String> = files.iter().map(|f| format!("{session}/0/{f}")).collect();
    assert_eq!(s0["files"], serde_json::json!(paths));
    for (seq, want) in &screens {
        let file = files
            .iter()
            .find(|f| f.starts_with(&format!("{seq:08}-")))
            .unwrap();
        assert_screen(&out.join("0").join(file), want);
    }
    assert_eq!(
        std::fs::read(out.join("0/00000002-photo.jpg")).unwrap(),
        PHOTO
    );
    let s2 = stream_report(&report, 2);
    assert_eq!(s2["kind"], "activity");
    assert_eq!(s2["verdict"], "ok");
    assert_eq!(
        s2["files"],
        serde_json::json!([format!("{session}/2/activity.jsonl")])
    );
    assert_eq!(
        std::fs::read(out.join("2/activity.jsonl")).unwrap(),
        batches.concat()
    );
}

/// Screen updates that break a rule of "Screen update" (and PNGs not 8-bit truecolour,
/// interlaced or damaged): each is a malformed chunk, writes no file and leaves the screen as it
/// was, so the next update paints over the last good screen; the stream's verdict is malformed
/// (its files quarantined, exit 5), a malformed activity batch likewise.
#[test]
fn the_python_reference_decryptor_refuses_malformed_screen_updates_and_keeps_the_screen() {
    use png::{BitDepth, ColorType, Filter::NoFilter};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (recorder, key, pass) = vectors_kek();
    let session = SessionId::random();
    let key_rect = || rect(0, 0, 8, 8, 1, NoFilter);
    let dot = || rect(2, 2, 1, 1, 2, NoFilter);
    let rgb_png = |w: usize, h: usize| {
        png_as(
            w,
            h,
            &pattern(w, h, 3),
            ColorType::Rgb,
            BitDepth::Eight,
            NoFilter,
        )
    };
    let with_png = |png: Vec<u8>| Rect {
        png,
        ..rect(1, 1, 3, 2, 3, NoFilter)
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("update version 2", {
            let mut u = ssu(0, 8, 8, &[dot()]);
            u[3] = 2;
            u
        }),
        ("flag bit 1", ssu(2, 8, 8, &[dot()])),
        ("width 16,385", ssu(0, 16_385, 8, &[dot()])),
        ("height 16,385", ssu(0, 8, 16_385, &[dot()])),
        ("no rectangle", ssu(0, 8, 8, &[])),
        (
            "4,097 rectangles",
            ssu(
                0,
                16_384,
                1,
                &(0..4097)
                    .map(|i| rect(i, 0, 1, 1, 0, NoFilter))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "rectangle past the right edge",
            ssu(0, 8, 8, &[rect(6, 0, 3, 1, 4, NoFilter)]),
        ),
        (
            "rectangle past the bottom",
            ssu(0, 8, 8, &[rect(0, 7, 1, 2, 4, NoFilter)]),
        ),
        ("a byte after the last rectangle", {
            let mut u = ssu(0, 8, 8, &[dot()]);
            u.push(0);
            u
        }),
        ("png_len past the end", {
            let mut u = ssu(0, 8, 8, &[dot()]);
            u.pop();
            u
        }),
        ("keyframe of two rectangles", {
            ssu(
                1,
                8,
                8,
                &[rect(0, 0, 8, 4, 5, NoFilter), rect(0, 4, 8, 4, 5, NoFilter)],
            )
        }),
        (
            "keyframe not covering the screen",
            ssu(1, 8, 8, &[rect(0, 0, 8, 7, 5, NoFilter)]),
        ),
        (
            "PNG of another size",
            ssu(0, 8, 8, &[with_png(rgb_png(2, 3))]),
        ),
        (
            "16-bit PNG",
            ssu(
                0,
                8,
                8,
                &[with_png(png_as(
                    3,
                    2,
                    &[7; 36],
                    ColorType::Rgb,
                    BitDepth::Sixteen,
                    NoFilter,
                ))],
            ),
        ),
        (
            "RGBA PNG",
            ssu(
                0,
                8,
                8,
                &[with_png(png_as(
                    3,
                    2,
                    &[7; 24],
                    ColorType::Rgba,
                    BitDepth::Eight,
                    NoFilter,
                ))],
            ),
        ),
        (
            "greyscale PNG",
            ssu(
                0,
                8,
                8,
                &[with_png(png_as(
                    3,
                    2,
                    &[7; 6],
                    ColorType::Grayscale,
                    BitDepth::Eight,
                    NoFilter,
                ))],
            ),
        ),
        (
            "palette PNG",
            ssu(
                0,
                8,
                8,
                &[with_png(png_as(
                    3,
                    2,
                    &[1; 6],
                    ColorType::Indexed,
                    BitDepth::Eight,
                    NoFilter,
                ))],
            ),
        ),
        // IHDRs that do not describe the data (3 × 2 pixels, 8-bit RGB) after them.
        (
            "PNG that says it is 2 × 3",
            ssu(
                0,
                8,
                8,
                &[with_png(with_ihdr(rgb_png(3, 2), |h| {
                    (h[3], h[7]) = (2, 3)
                }))],
            ),
        ),
        (
            "PNG that says it is 16-bit",
            ssu(
                0,
                8,
                8,
                &[with_png(with_ihdr(rgb_png(3, 2), |h| h[8] = 16))],
            ),
        ),
        (
            "PNG that says it is RGBA",
            ssu(0, 8, 8, &[with_png(with_ihdr(rgb_png(3, 2), |h| h[9] = 6))]),
        ),
        (
            "interlaced PNG",
            ssu(
                0,
                8,
                8,
                &[with_png(with_ihdr(rgb_png(3, 2), |h| h[12] = 1))],
            ),
        ),
        (
            "PNG whose pixel data is a row short",
            ssu(0, 8, 8, &[with_png(with_ihdr(rgb_png(3, 1), |h| h[7] = 2))]),
        ),
        ("PNG with a CRC that does not match", {
            let mut png = rgb_png(3, 2);
            let n = png.len();
            png[n - 13] ^= 1; // the last byte of the IDAT's CRC
            ssu(0, 8, 8, &[with_png(png)])
        }),
        (
            "PNG row with filter type 5",
            ssu(
                0,
                8,
                8,
                &[with_png(png_with_row_filter(3, 2, &pattern(3, 2, 3), 5))],
            ),
        ),
    ];
    // The same PNG with filter type 0 is read (so the one above is refused for its 5).
    let filter_0 = png_with_row_filter(3, 2, &pattern(3, 2, 3), 0);
    let mut stream = recorder.open_stream(session, StreamId(0), Kind::Frame);
    let mut screen = Expected::default();
    let mut chunks = vec![
        stream
            .seal(&frame("a.ssu", &ssu(1, 8, 8, &[key_rect()])), 1, false)
            .unwrap(),
    ];
    let first = screen.apply(true, 8, 8, &[key_rect()]);
    for (i, (_, image)) in bad.iter().enumerate() {
        chunks.push(
            stream
                .seal(&frame(&format!("bad-{i}.ssu"), image), 2, false)
                .unwrap(),
        );
    }
    let good = with_png(filter_0);
    let last = screen.apply(false, 8, 8, std::slice::from_ref(&good));
    let last_seq = stream.next_seq();
    chunks.push(
        stream
            .seal(&frame("b.ssu", &ssu(0, 8, 8, &[good])), 3, true)
            .unwrap(),
    );
    let mut activity = recorder.open_stream(session, StreamId(2), Kind::Activity);
    chunks.push(
        activity
            .seal(b"{\"ts\":1,\"event\":\"idle\"}\n", 4, false)
            .unwrap(),
    );
    chunks.push(activity.seal(b"not an event\n", 5, true).unwrap());
    store_chunks(&d.join("store"), &recorder, &chunks);

    let (code, text, report) = reference(
        d,
        &[
            "store",
            key.to_str().unwrap(),
            pass.to_str().unwrap(),
            "out",
        ],
    );
    assert_eq!(code, Some(5), "{text}");
    assert_eq!(report["outcome"], "malformed");
    let s0 = stream_report(&report, 0);
    let refused: Vec<u64> = s0["malformed_chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let accepted: Vec<&str> = bad
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(&(*i as u64 + 1)))
        .map(|(_, (why, _))| *why)
        .collect();
    assert!(accepted.is_empty(), "read as screen updates: {accepted:?}");
    assert_eq!(refused.len(), bad.len(), "{s0}");
    let q = d
        .join("out/@quarantine")
        .join(session.to_string())
        .join("0");
    assert_eq!(
        s0["files"],
        serde_json::json!([
            format!("@quarantine/{session}/0/00000000-a.png"),
            format!("@quarantine/{session}/0/{last_seq:08}-b.png"),
        ])
    );
    assert_screen(&q.join("00000000-a.png"), &first);
    assert_screen(&q.join(format!("{last_seq:08}-b.png")), &last);
    let s2 = stream_report(&report, 2);
    assert_eq!(s2["verdict"], "malformed");
    assert_eq!(s2["malformed_chunks"], serde_json::json!([1]));
}

/// The shared fixture tests/vectors/screen.json (src/protocol/screen.rs writes it): its updates,
/// sealed in order as one frames stream, are composited by the reference decryptor to the
/// screens it gives (the SHA-256 of their RGB bytes), and those it calls malformed are refused.
#[test]
fn the_python_reference_decryptor_composites_the_shared_screen_fixture() {
    use sha2::{Digest, Sha256};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/screen.json");
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let updates = fixture["updates"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (recorder, key, pass) = vectors_kek();
    let session = SessionId::random();
    let mut frames = recorder.open_stream(session, StreamId(0), Kind::Frame);
    let chunks: Vec<SealedChunk> = updates
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let image = hex::decode(u["image_hex"].as_str().unwrap()).unwrap();
            let plain = frame(u["name"].as_str().unwrap(), &image);
            frames
                .seal(&plain, 1 + i as i64, i + 1 == updates.len())
                .unwrap()
        })
        .collect();
    store_chunks(&d.join("store"), &recorder, &chunks);
    let (code, text, report) = reference(
        d,
        &[
            "store",
            key.to_str().unwrap(),
            pass.to_str().unwrap(),
            "out",
        ],
    );
    let malformed: Vec<usize> = (0..updates.len())
        .filter(|&i| updates[i]["screen"] == "malformed")
        .collect();
    assert_eq!(
        code,
        Some(if malformed.is_empty() { 0 } else { 5 }),
        "{text}"
    );
    let s0 = stream_report(&report, 0);
    assert_eq!(
        s0["malformed_chunks"],
        serde_json::json!(malformed),
        "{text}"
    );
    let out = match malformed.is_empty() {
        true => d.join("out"),
        false => d.join("out/@quarantine"),
    };
    let out = out.join(session.to_string()).join("0");
    let mut screens = 0;
    for (seq, u) in updates.iter().enumerate() {
        let want = &u["screen"];
        if !want.is_object() {
            continue;
        }
        let file = out.join(format!("{seq:08}-{}", want["png_name"].as_str().unwrap()));
        let (w, h, rgb) = read_screen(&file);
        assert_eq!(
            (w, h),
            (
                want["width"].as_u64().unwrap() as usize,
                want["height"].as_u64().unwrap() as usize
            ),
            "{}",
            u["name"]
        );
        assert_eq!(
            hex::encode(Sha256::digest(&rgb)),
            want["rgb_sha256"],
            "{}",
            u["name"]
        );
        screens += 1;
    }
    assert!(screens > 0, "the fixture has no screen");
}
