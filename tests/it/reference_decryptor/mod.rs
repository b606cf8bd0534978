//! docs/format.md is enough to decrypt a store: the independent Python decryptor in
//! tools/reference_decrypt.py (written from the spec alone) opens what `sealstream seal` wrote,
//! under a traditional-format openssl key, and gets the original bytes back.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use assert_cmd::Command as Cmd;

mod screen;
mod stores;

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
