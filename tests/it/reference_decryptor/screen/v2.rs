//! Screen update version 2 (format.md "Screen update", "Compositing"): copies of pixels already
//! on the screen (`sx sy w h dx dy`), applied in order before the rectangles, each reading its
//! source as it was just before that copy, however source and destination overlap.

use super::*;
use png::Filter::*;

/// A copy: `[sx, sy, w, h, dx, dy]`.
type ScreenCopy = [u16; 6];

/// A version-2 update's bytes: version 1's layout with the magic's last byte 2 and the copies
/// (a u16 count, then six u16 each) between the height and the rectangle count.
fn ssu2(flags: u8, width: u16, height: u16, copies: &[ScreenCopy], rects: &[Rect]) -> Vec<u8> {
    ssu_v(2, flags, width, height, copies, rects)
}

/// The same layout under any version byte (to write one no reader knows).
fn ssu_v(
    version: u8,
    flags: u8,
    width: u16,
    height: u16,
    copies: &[ScreenCopy],
    rects: &[Rect],
) -> Vec<u8> {
    let v1 = ssu(flags, width, height, rects); // magic 4 | flags 1 | width 2 | height 2 | count …
    let mut out = b"SSU".to_vec();
    out.push(version);
    out.extend_from_slice(&v1[4..9]);
    out.extend_from_slice(&(copies.len() as u16).to_be_bytes());
    for v in copies.iter().flatten() {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&v1[9..]);
    out
}

/// One update of the streams below; `v1`: written as version 1 (it has no copies).
struct Update {
    flags: u8,
    width: u16,
    height: u16,
    copies: Vec<ScreenCopy>,
    rects: Vec<Rect>,
    v1: bool,
}

fn v2(flags: u8, width: u16, height: u16, copies: Vec<ScreenCopy>, rects: Vec<Rect>) -> Update {
    Update {
        flags,
        width,
        height,
        copies,
        rects,
        v1: false,
    }
}

fn v1(flags: u8, width: u16, height: u16, rects: Vec<Rect>) -> Update {
    Update {
        v1: true,
        ..v2(flags, width, height, vec![], rects)
    }
}

impl Update {
    fn bytes(&self) -> Vec<u8> {
        match self.v1 {
            true => ssu(self.flags, self.width, self.height, &self.rects),
            false => ssu2(
                self.flags,
                self.width,
                self.height,
                &self.copies,
                &self.rects,
            ),
        }
    }

    /// "Compositing", straight from its text: the screen reset as in version 1; then each copy,
    /// pixel by pixel from a snapshot of the whole screen taken just before it; then the
    /// rectangles.
    fn apply(&self, screen: &mut Expected) -> Expected {
        screen.apply(self.flags & 1 == 1, self.width, self.height, &[]);
        let w = self.width as usize;
        for &[sx, sy, cw, ch, dx, dy] in &self.copies {
            let before = screen.rgb.clone();
            for j in 0..ch as usize {
                for i in 0..cw as usize {
                    let s = ((sy as usize + j) * w + sx as usize + i) * 3;
                    let d = ((dy as usize + j) * w + dx as usize + i) * 3;
                    screen.rgb[d..d + 3].copy_from_slice(&before[s..s + 3]);
                }
            }
        }
        screen.apply(false, self.width, self.height, &self.rects)
    }
}

/// A frame of the streams below: an update, or the bytes of one the reference must refuse.
enum Step {
    Good(Update),
    Bad(&'static str, Vec<u8>),
}

/// Seals `steps` as one frames stream, runs the reference decryptor, and checks that it refuses
/// the bad ones and writes every other screen as [`Update::apply`] makes it; returns its JSON
/// report's stream.
fn run_reference(steps: &[Step]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (recorder, key, pass) = vectors_kek();
    let session = SessionId::random();
    let mut frames = recorder.open_stream(session, StreamId(0), Kind::Frame);
    let mut screen = Expected::default();
    let (mut chunks, mut files, mut screens, mut bad) = (vec![], vec![], vec![], vec![]);
    for (i, step) in steps.iter().enumerate() {
        let name = format!("screen-{:08}", i + 1);
        let image = match step {
            Step::Good(u) => {
                files.push(format!("{i:08}-{name}.png"));
                screens.push(u.apply(&mut screen));
                u.bytes()
            }
            Step::Bad(why, bytes) => {
                bad.push((i, *why));
                bytes.clone()
            }
        };
        let plain = frame(&format!("{name}.ssu"), &image);
        chunks.push(
            frames
                .seal(&plain, 1 + i as i64, i + 1 == steps.len())
                .unwrap(),
        );
    }
    store_chunks(&d.join("store"), &recorder, &chunks);
    let args = [
        "store",
        key.to_str().unwrap(),
        pass.to_str().unwrap(),
        "out",
    ];
    let (code, text, report) = reference(d, &args);
    assert_eq!(code, Some(if bad.is_empty() { 0 } else { 5 }), "{text}");
    let s0 = stream_report(&report, 0).clone();
    let refused = &s0["malformed_chunks"];
    let accepted: Vec<&str> = bad
        .iter()
        .filter(|(i, _)| !refused.as_array().unwrap().contains(&serde_json::json!(i)))
        .map(|(_, why)| *why)
        .collect();
    assert!(accepted.is_empty(), "read as screen updates: {accepted:?}");
    let bad: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
    assert_eq!(*refused, serde_json::json!(bad), "{text}");
    let (prefix, out) = match bad.is_empty() {
        true => (String::new(), d.join("out")),
        false => ("@quarantine/".to_string(), d.join("out/@quarantine")),
    };
    let paths: Vec<String> = files
        .iter()
        .map(|f| format!("{prefix}{session}/0/{f}"))
        .collect();
    assert_eq!(s0["files"], serde_json::json!(paths), "{text}");
    for (file, want) in files.iter().zip(&screens) {
        assert_screen(&out.join(session.to_string()).join("0").join(file), want);
    }
    s0
}

/// A terminal scrolled up and down (copies whose source and destination overlap, in either
/// direction, vertical and horizontal), a version-2 update of copies only, copies that read what
/// an earlier copy of the same update wrote, rectangles painted after the copies over their
/// sources, version-2 updates without a copy (a keyframe among them), a change of size that
/// copies black, and the largest screen with the most copies.
#[test]
fn the_python_reference_decryptor_composites_version_2_copies_overlap_safely() {
    let updates = vec![
        v1(1, 40, 30, vec![rect(0, 0, 40, 30, 1, Adaptive)]),
        // Scroll up by 4 lines, the new line painted at the bottom.
        v2(
            0,
            40,
            30,
            vec![[0, 4, 40, 26, 0, 0]],
            vec![rect(0, 26, 40, 4, 2, Sub)],
        ),
        // Scroll down by 3 lines, no rectangle: the top 3 lines stay as they were.
        v2(0, 40, 30, vec![[0, 0, 40, 27, 0, 3]], vec![]),
        // Overlapping in a row: right by 5, then left by 7 (part of the screen only).
        v2(
            0,
            40,
            30,
            vec![[0, 0, 35, 30, 5, 0], [9, 2, 30, 20, 2, 2]],
            vec![],
        ),
        // A chain: the second copy reads what the first wrote; then a rectangle over the first
        // copy's source (painted after, so the copy took the pixels from before it), and one
        // over the second copy's destination.
        v2(
            0,
            40,
            30,
            vec![
                [0, 0, 10, 10, 20, 10],
                [20, 10, 10, 10, 5, 18],
                [3, 3, 7, 7, 3, 3],
            ],
            vec![rect(0, 0, 12, 12, 3, Up), rect(8, 20, 5, 5, 4, Avg)],
        ),
        // Up by one line within a column strip, diagonal overlap.
        v2(
            0,
            40,
            30,
            vec![[4, 5, 20, 20, 6, 4], [6, 4, 20, 20, 4, 5]],
            vec![],
        ),
        // Version 2 with no copy: a partial update, then a keyframe.
        v2(0, 40, 30, vec![], vec![rect(1, 1, 3, 3, 5, Paeth)]),
        v2(1, 40, 30, vec![], vec![rect(0, 0, 40, 30, 6, Adaptive)]),
        v2(
            0,
            40,
            30,
            vec![[0, 1, 40, 29, 0, 0]],
            vec![rect(0, 29, 40, 1, 7, NoFilter)],
        ),
        // Another size without a keyframe: black, so the copy copies black, then the rectangle.
        v2(
            0,
            24,
            16,
            vec![[0, 0, 6, 6, 10, 10]],
            vec![rect(0, 0, 6, 6, 8, Sub)],
        ),
        // The widest screen: the most copies (each one pixel, each a pixel right of the last,
        // so each reads what the one before it wrote), and a whole-row copy by one pixel.
        v1(1, 16_384, 1, vec![rect(0, 0, 16_384, 1, 9, Paeth)]),
        v2(
            0,
            16_384,
            1,
            (0..4096).map(|i| [i, 0, 1, 1, i + 1, 0]).collect(),
            vec![],
        ),
        v2(
            0,
            16_384,
            1,
            vec![[0, 0, 16_383, 1, 1, 0], [1, 0, 16_383, 1, 0, 0]],
            vec![],
        ),
        v1(1, 3, 16_384, vec![rect(0, 0, 3, 16_384, 10, Up)]),
        v2(
            0,
            3,
            16_384,
            vec![[0, 1, 3, 16_383, 0, 0], [0, 0, 3, 16_000, 0, 384]],
            vec![],
        ),
    ];
    let steps: Vec<_> = updates.into_iter().map(Step::Good).collect();
    let s0 = run_reference(&steps);
    assert_eq!(s0["verdict"], "ok");
}

/// Version-2 updates that break a rule: each is malformed, writes no file and leaves the screen
/// as it was (a good copy in an update refused for its PNG is not applied either); the updates
/// around them composite as the spec says.
#[test]
fn the_python_reference_decryptor_refuses_malformed_version_2_updates() {
    let dot = || rect(2, 2, 1, 1, 2, NoFilter);
    let bad_png = Rect {
        png: b"not a PNG".to_vec(),
        ..rect(1, 1, 3, 2, 3, NoFilter)
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "version 3",
            ssu_v(3, 0, 8, 8, &[[0, 1, 8, 7, 0, 0]], &[dot()]),
        ),
        ("version 0", ssu_v(0, 0, 8, 8, &[], &[dot()])),
        ("version 255", ssu_v(255, 0, 8, 8, &[], &[dot()])),
        ("no copy and no rectangle", ssu2(0, 8, 8, &[], &[])),
        ("keyframe with a copy", {
            ssu2(
                1,
                8,
                8,
                &[[0, 0, 1, 1, 1, 1]],
                &[rect(0, 0, 8, 8, 1, NoFilter)],
            )
        }),
        (
            "keyframe of copies only",
            ssu2(1, 8, 8, &[[0, 0, 8, 8, 0, 0]], &[]),
        ),
        ("keyframe without a rectangle", ssu2(1, 8, 8, &[], &[])),
        (
            "copy source past the right edge",
            ssu2(0, 8, 8, &[[6, 0, 3, 1, 0, 0]], &[]),
        ),
        (
            "copy source past the bottom",
            ssu2(0, 8, 8, &[[0, 7, 1, 2, 0, 0]], &[]),
        ),
        (
            "copy destination past the right edge",
            ssu2(0, 8, 8, &[[0, 0, 3, 1, 6, 0]], &[]),
        ),
        (
            "copy destination past the bottom",
            ssu2(0, 8, 8, &[[0, 0, 1, 2, 0, 7]], &[]),
        ),
        (
            "copy at x 65,535",
            ssu2(0, 8, 8, &[[65_535, 0, 1, 1, 0, 0]], &[]),
        ),
        (
            "copy of width 65,535",
            ssu2(0, 8, 8, &[[1, 0, 65_535, 1, 0, 0]], &[]),
        ),
        ("copy of width 0", ssu2(0, 8, 8, &[[0, 0, 0, 1, 1, 1]], &[])),
        (
            "copy of height 0",
            ssu2(0, 8, 8, &[[0, 0, 1, 0, 1, 1]], &[]),
        ),
        ("a bad copy after a good one", {
            ssu2(0, 8, 8, &[[0, 0, 1, 1, 1, 1], [0, 0, 9, 1, 0, 0]], &[])
        }),
        (
            "4,097 copies",
            ssu2(0, 8, 8, &vec![[0, 0, 1, 1, 1, 1]; 4097], &[]),
        ),
        ("copies cut short", {
            let mut u = ssu2(0, 8, 8, &[[0, 0, 1, 1, 1, 1]], &[]);
            u.truncate(u.len() - 4); // into the copy; no rectangle count
            u
        }),
        ("no rectangle count", {
            let mut u = ssu2(0, 8, 8, &[[0, 0, 1, 1, 1, 1]], &[]);
            u.truncate(u.len() - 2);
            u
        }),
        ("a byte after copies only", {
            let mut u = ssu2(0, 8, 8, &[[0, 0, 1, 1, 1, 1]], &[]);
            u.push(0);
            u
        }),
        ("flag bit 1", ssu2(2, 8, 8, &[[0, 0, 1, 1, 1, 1]], &[])),
        ("rectangle past the right edge", {
            ssu2(
                0,
                8,
                8,
                &[[0, 0, 1, 1, 1, 1]],
                &[rect(6, 0, 3, 1, 4, NoFilter)],
            )
        }),
        (
            "a good copy and a bad PNG",
            ssu2(0, 8, 8, &[[0, 0, 8, 4, 0, 4]], &[bad_png]),
        ),
        ("4,097 rectangles", {
            let many: Vec<_> = (0..4097)
                .map(|i| rect(i % 8, 0, 1, 1, 0, NoFilter))
                .collect();
            ssu2(0, 8, 8, &[[0, 0, 1, 1, 1, 1]], &many)
        }),
        // Version 1's layout under version 2's magic: its count read as the copies.
        ("a version-1 update marked version 2", {
            let mut u = ssu(0, 8, 8, &[dot()]);
            u[3] = 2;
            u
        }),
        // Version 2's layout under version 1's magic.
        ("a version-2 update marked version 1", {
            ssu_v(1, 0, 8, 8, &[[0, 0, 1, 1, 1, 1]], &[dot()])
        }),
    ];
    let mut steps = vec![
        Step::Good(v1(1, 8, 8, vec![rect(0, 0, 8, 8, 1, NoFilter)])),
        Step::Good(v2(0, 8, 8, vec![[0, 1, 8, 7, 0, 0]], vec![dot()])),
    ];
    let n = bad.len();
    steps.extend(bad.into_iter().map(|(why, bytes)| Step::Bad(why, bytes)));
    // The screen is still the one before them: scrolled down, a dot painted.
    steps.push(Step::Good(v2(
        0,
        8,
        8,
        vec![[0, 0, 8, 7, 0, 1]],
        vec![dot()],
    )));
    let s0 = run_reference(&steps);
    assert_eq!(s0["verdict"], "malformed");
    assert_eq!(s0["malformed_chunks"].as_array().unwrap().len(), n);
}
