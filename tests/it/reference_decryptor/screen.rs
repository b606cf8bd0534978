use super::*;

mod v2;

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
        ("update version 3", {
            let mut u = ssu(0, 8, 8, &[dot()]);
            u[3] = 3;
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
