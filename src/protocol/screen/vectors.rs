//! The shared fixture `tests/vectors/screen.json`: a stream of updates and the screen each
//! makes (the SHA-256 of its RGB bytes), or `"malformed"`. Every reader (export, the console,
//! tools/reference_decrypt.py) composites it to the same screens.

use super::*;
use sha2::{Digest, Sha256};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/screen.json");

fn pattern(w: u16, h: u16, seed: u32) -> Vec<u8> {
    (0..w as u32 * h as u32)
        .flat_map(|i| {
            let (x, y) = (i % w as u32, i / w as u32);
            [
                (x * 16 + seed) as u8,
                (y * 32 + seed * 3) as u8,
                ((x ^ y) * 8 + seed) as u8,
            ]
        })
        .collect()
}

fn stream() -> Vec<(String, Vec<u8>)> {
    let key = |w, h, seed, c| {
        let png = encode_png(w, h, &pattern(w, h, seed), c);
        Update {
            keyframe: true,
            width: w,
            height: h,
            copies: vec![],
            rects: vec![Rect {
                x: 0,
                y: 0,
                w,
                h,
                png: &png,
            }],
        }
        .encode()
    };
    let part = |w, h, rects: &[(u16, u16, u16, u16, u32)]| copying(w, h, &[], rects);
    stream_v1(key, part)
        .into_iter()
        .chain(stream_v2())
        .collect()
}

/// A partial update: `copies` as `(sx, sy, w, h, dx, dy)`, then rectangles of `pattern(seed)`.
fn copying(
    w: u16,
    h: u16,
    copies: &[(u16, u16, u16, u16, u16, u16)],
    rects: &[(u16, u16, u16, u16, u32)],
) -> Vec<u8> {
    {
        let pngs: Vec<Vec<u8>> = rects
            .iter()
            .map(|&(_, _, rw, rh, seed)| {
                encode_png(rw, rh, &pattern(rw, rh, seed), png::Compression::High)
            })
            .collect();
        Update {
            keyframe: false,
            width: w,
            height: h,
            copies: copies
                .iter()
                .map(|&(sx, sy, w, h, dx, dy)| CopyRect {
                    sx,
                    sy,
                    w,
                    h,
                    dx,
                    dy,
                })
                .collect(),
            rects: rects
                .iter()
                .zip(&pngs)
                .map(|(&(x, y, w, h, _), png)| Rect { x, y, w, h, png })
                .collect(),
        }
        .encode()
    }
}

/// Version 1 (the fixture's first seven updates, unchanged since version 2).
fn stream_v1(
    key: impl Fn(u16, u16, u32, png::Compression) -> Vec<u8>,
    part: impl Fn(u16, u16, &[(u16, u16, u16, u16, u32)]) -> Vec<u8>,
) -> Vec<(String, Vec<u8>)> {
    let mut bad_png = part(16, 8, &[(0, 0, 4, 4, 9)]);
    let n = bad_png.len();
    bad_png[n - 20] ^= 0xff; // inside the PNG's IDAT or IEND: its CRC fails
    vec![
        (
            "screen-00000001.ssu".into(),
            key(16, 8, 1, png::Compression::Fast),
        ),
        (
            "screen-00000002.ssu".into(),
            part(16, 8, &[(3, 2, 5, 3, 40), (10, 0, 6, 8, 80)]),
        ),
        ("screen-00000003.ssu".into(), bad_png),
        (
            "screen-00000004.ssu".into(),
            part(16, 8, &[(4, 1, 6, 6, 120), (0, 7, 16, 1, 7)]),
        ),
        (
            "screen-00000005.ssu".into(),
            part(12, 6, &[(2, 2, 3, 3, 200)]),
        ),
        (
            "screen-00000006.ssu".into(),
            key(12, 6, 77, png::Compression::High),
        ),
        (
            "screen-00000007.ssu".into(),
            part(12, 6, &[(11, 5, 1, 1, 250)]),
        ),
    ]
}

/// Version 2: scrolls up and down (overlapping copies), a copy alone, copies in order, a
/// version-2 update without a copy, and malformed ones (each leaves the screen as it was).
fn stream_v2() -> Vec<(String, Vec<u8>)> {
    let png = encode_png(24, 16, &pattern(24, 16, 5), png::Compression::Fast);
    let whole = Rect {
        x: 0,
        y: 0,
        w: 24,
        h: 16,
        png: &png,
    };
    let key = |copies: Vec<CopyRect>| {
        Update {
            keyframe: true,
            width: 24,
            height: 16,
            copies,
            rects: vec![whole.clone()],
        }
        .encode()
    };
    let up = (0, 3, 24, 13, 0, 0);
    // Copy outside the screen: its source runs one pixel past the right edge.
    let outside = copying(24, 16, &[(1, 0, 24, 4, 0, 8)], &[(0, 0, 2, 2, 1)]);
    let mut bare = copying(24, 16, &[], &[(0, 0, 2, 2, 1)]); // version 1 ...
    bare[3] = UPDATE_VERSION_COPIES; // ... as version 2: copies 0, count 1
    bare.splice(9..9, [0, 0]);
    let nothing = vec![b'S', b'S', b'U', 2, 0, 0, 24, 0, 16, 0, 0, 0, 0];
    let mut v3 = copying(24, 16, &[up], &[(0, 13, 24, 3, 90)]);
    v3[3] = 3;
    let copy = CopyRect {
        sx: 0,
        sy: 0,
        w: 1,
        h: 1,
        dx: 0,
        dy: 0,
    };
    [
        key(vec![]),
        // Scroll up by 3 (source and destination overlap), the new lines below.
        copying(24, 16, &[up], &[(0, 13, 24, 3, 90)]),
        // Scroll a band down by 5, the new lines above.
        copying(24, 16, &[(2, 0, 20, 11, 2, 5)], &[(2, 0, 20, 5, 150)]),
        // A copy and no rectangle: overlapping diagonally.
        copying(24, 16, &[(4, 2, 12, 10, 7, 4)], &[]),
        outside,
        key(vec![copy]),
        nothing,
        v3,
        // Copies apply in order: the second reads what the first wrote.
        copying(
            24,
            16,
            &[(0, 0, 6, 6, 10, 2), (8, 0, 12, 8, 0, 8)],
            &[(20, 0, 4, 4, 33)],
        ),
        bare,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, u)| (format!("screen-{:08}.ssu", 8 + i), u))
    .collect()
}

fn expected() -> serde_json::Value {
    let mut c = Compositor::default();
    let updates: Vec<serde_json::Value> = stream()
        .into_iter()
        .map(|(name, image)| {
            let screen = match c.apply(&image) {
                Ok(s) => serde_json::json!({
                    "width": s.width, "height": s.height,
                    "rgb_sha256": hex::encode(Sha256::digest(&s.rgb)),
                    "png_name": png_name(&name),
                }),
                Err(_) => serde_json::json!("malformed"),
            };
            serde_json::json!({"name": name, "image_hex": hex::encode(&image), "screen": screen})
        })
        .collect();
    serde_json::json!({
        "about": "Screen updates of one frames stream, in sequence order, and the screen each makes (docs/format.md \"Compositing\"): SHA-256 of its RGB bytes, row by row, or \"malformed\" (refused; the screen stays as it was).",
        "updates": updates,
    })
}

#[test]
fn the_committed_fixture_is_what_this_reader_composites() {
    let want = serde_json::to_string_pretty(&expected()).unwrap() + "\n";
    if std::env::var_os("SEALSTREAM_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &want).unwrap();
    }
    let have = std::fs::read_to_string(PATH)
        .expect("tests/vectors/screen.json (SEALSTREAM_WRITE_VECTORS=1 writes it)");
    let have: serde_json::Value = serde_json::from_str(&have).unwrap();
    // Compare the screens, not the PNG bytes (another encoder version may compress
    // differently): composite the committed updates and check each result.
    let mut c = Compositor::default();
    let mut malformed = 0;
    for u in have["updates"].as_array().unwrap() {
        let image = hex::decode(u["image_hex"].as_str().unwrap()).unwrap();
        match (c.apply(&image), &u["screen"]) {
            (Ok(s), want) if want.is_object() => {
                assert_eq!(
                    want["rgb_sha256"],
                    hex::encode(Sha256::digest(&s.rgb)),
                    "{}",
                    u["name"]
                );
                assert_eq!(want["width"], s.width);
            }
            (Err(_), want) if want == "malformed" => malformed += 1,
            (got, want) => panic!(
                "{}: {want} expected, got {:?}",
                u["name"],
                got.map(|s| s.width)
            ),
        }
    }
    assert_eq!(malformed, 5);
    let _ = want;
}
