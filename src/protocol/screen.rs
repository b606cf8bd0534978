//! Screen updates (docs/format.md "Screen update"): the changed rectangles of a screen, each an
//! 8-bit RGB PNG, painted over the screen the stream's earlier updates made; and the one
//! compositing rule every reader follows.
//!
//! `magic "SSU" 0x01 | flags u8 (bit 0 keyframe) | width u16 | height u16 | count u16 |
//! count × (x u16 | y u16 | w u16 | h u16 | png_len u32 | png)`.

use super::wire::{DecodeError, Reader};

/// A frame whose name ends in this is a screen update.
pub const UPDATE_SUFFIX: &str = ".ssu";
/// The only update version this build reads.
pub const UPDATE_VERSION: u8 = 1;
/// Largest width or height.
pub const MAX_SIDE: u16 = 16_384;
/// Most rectangles in one update.
pub const MAX_RECTS: u16 = 4_096;
const FLAG_KEYFRAME: u8 = 1;
const WHAT: &str = "screen update";

/// Whether a frame of this name carries a screen update.
pub fn is_update_name(name: &str) -> bool {
    name.ends_with(UPDATE_SUFFIX)
}

/// The exported screen's file name for an update's name: `<stem>.ssu` → `<stem>.png`.
pub fn png_name(update_name: &str) -> String {
    let stem = update_name
        .strip_suffix(UPDATE_SUFFIX)
        .unwrap_or(update_name);
    format!("{stem}.png")
}

/// One changed rectangle and its PNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rect<'a> {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub png: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub keyframe: bool,
    pub width: u16,
    pub height: u16,
    pub rects: Vec<Rect<'a>>,
}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        what: WHAT,
        reason: reason.into(),
    }
}

impl<'a> Update<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self.rects.iter().map(|r| 12 + r.png.len()).sum();
        let mut out = Vec::with_capacity(11 + body);
        out.extend_from_slice(b"SSU");
        out.push(UPDATE_VERSION);
        out.push(if self.keyframe { FLAG_KEYFRAME } else { 0 });
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&(self.rects.len() as u16).to_be_bytes());
        for r in &self.rects {
            for v in [r.x, r.y, r.w, r.h] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&(r.png.len() as u32).to_be_bytes());
            out.extend_from_slice(r.png);
        }
        out
    }

    /// Parse and check the layout (not the PNGs: `Compositor::apply` decodes those).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(WHAT, buf);
        let magic: [u8; 3] = r.array()?;
        if &magic != b"SSU" {
            return Err(invalid(format!("bad magic {magic:02x?}, expected \"SSU\"")));
        }
        r.version(&[UPDATE_VERSION], "1")?;
        let flags = r.u8()?;
        if flags & !FLAG_KEYFRAME != 0 {
            return Err(invalid(format!("unknown flag bits {flags:#04x}")));
        }
        let width = r.u16()?;
        let height = r.u16()?;
        for (field, v) in [("width", width), ("height", height)] {
            r.bounded(field, v.into(), 1, MAX_SIDE.into())?;
        }
        let count = r.u16()?;
        r.bounded("count", count.into(), 1, MAX_RECTS.into())?;
        let mut rects = Vec::with_capacity(count as usize);
        for i in 0..count {
            let (x, y, w, h) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
            if w == 0
                || h == 0
                || x as u32 + w as u32 > width as u32
                || y as u32 + h as u32 > height as u32
            {
                return Err(invalid(format!(
                    "rectangle {i} ({x},{y} {w}×{h}) is empty or outside the {width}×{height} screen"
                )));
            }
            let len = r.u32()? as usize;
            let png = r.bytes(len)?;
            rects.push(Rect { x, y, w, h, png });
        }
        r.finish()?;
        let keyframe = flags & FLAG_KEYFRAME != 0;
        if keyframe
            && (rects.len() != 1
                || rects[0]
                    != Rect {
                        x: 0,
                        y: 0,
                        w: width,
                        h: height,
                        png: rects[0].png,
                    })
        {
            return Err(invalid(
                "a keyframe must be exactly one rectangle covering the whole screen",
            ));
        }
        Ok(Update {
            keyframe,
            width,
            height,
            rects,
        })
    }
}

/// A screen: `width × height` pixels, RGB, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    pub width: u16,
    pub height: u16,
    pub rgb: Vec<u8>,
}

impl Screen {
    pub fn black(width: u16, height: u16) -> Self {
        Screen {
            width,
            height,
            rgb: vec![0; width as usize * height as usize * 3],
        }
    }

    /// The screen as an 8-bit RGB PNG.
    pub fn to_png(&self) -> Vec<u8> {
        encode_png(self.width, self.height, &self.rgb, png::Compression::Fast)
    }

    fn paint(&mut self, x: u16, y: u16, w: u16, h: u16, rgb: &[u8]) {
        let stride = self.width as usize * 3;
        let row = w as usize * 3;
        for j in 0..h as usize {
            let at = (y as usize + j) * stride + x as usize * 3;
            self.rgb[at..at + row].copy_from_slice(&rgb[j * row..(j + 1) * row]);
        }
    }
}

/// A stream's screen as the format's compositing rule makes it.
#[derive(Default)]
pub struct Compositor {
    screen: Option<Screen>,
}

impl Compositor {
    pub fn screen(&self) -> Option<&Screen> {
        self.screen.as_ref()
    }

    /// Apply one update's bytes. A malformed update (layout or PNG) is refused and leaves the
    /// screen as it was.
    pub fn apply(&mut self, image: &[u8]) -> Result<&Screen, DecodeError> {
        let update = Update::decode(image)?;
        let pixels = update
            .rects
            .iter()
            .enumerate()
            .map(|(i, r)| {
                decode_png(r.png, r.w, r.h).map_err(|e| invalid(format!("rectangle {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reset = update.keyframe
            || self
                .screen
                .as_ref()
                .is_none_or(|s| (s.width, s.height) != (update.width, update.height));
        if reset {
            self.screen = Some(Screen::black(update.width, update.height));
        }
        let screen = self.screen.as_mut().expect("set above");
        for (r, rgb) in update.rects.iter().zip(&pixels) {
            screen.paint(r.x, r.y, r.w, r.h, rgb);
        }
        Ok(screen)
    }
}

/// Encode `rgb` (`w × h × 3` bytes) as an 8-bit RGB PNG.
pub fn encode_png(w: u16, h: u16, rgb: &[u8], compression: png::Compression) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w.into(), h.into());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(compression);
    let mut writer = enc.write_header().expect("writing to a Vec");
    writer.write_image_data(rgb).expect("size matches");
    writer.finish().expect("writing to a Vec");
    out
}

/// Decode an 8-bit RGB, non-interlaced PNG of exactly `w × h` pixels into RGB bytes.
pub fn decode_png(data: &[u8], w: u16, h: u16) -> Result<Vec<u8>, String> {
    check_png_layout(data)?;
    let mut decoder = png::Decoder::new(std::io::Cursor::new(data));
    decoder.set_transformations(png::Transformations::IDENTITY);
    // Every chunk's CRC and the zlib stream's Adler-32 (format.md: a reader refuses a PNG
    // whose checksums fail, as the reference reader does).
    decoder.ignore_checksums(false);
    let mut reader = decoder.read_info().map_err(|e| format!("PNG: {e}"))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(format!(
            "PNG is {:?} {:?}, not 8-bit truecolour",
            info.color_type, info.bit_depth
        ));
    }
    if info.interlaced {
        return Err("PNG is interlaced".into());
    }
    if (info.width, info.height) != (w.into(), h.into()) {
        return Err(format!(
            "PNG is {}×{}, the rectangle {w}×{h}",
            info.width, info.height
        ));
    }
    let mut rgb = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    reader
        .next_frame(&mut rgb)
        .map_err(|e| format!("PNG: {e}"))?;
    rgb.truncate(w as usize * h as usize * 3);
    reader.finish().map_err(|e| format!("PNG: {e}"))?;
    Ok(rgb)
}

/// The chunk sequence format.md asks of a rectangle's PNG: the signature, chunks up to IEND
/// and nothing after it, the IDAT chunks in one run, no PLTE after them.
fn check_png_layout(data: &[u8]) -> Result<(), String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !data.starts_with(SIGNATURE) {
        return Err("not a PNG (no signature)".into());
    }
    let mut at = SIGNATURE.len();
    let (mut idat, mut idat_done) = (false, false);
    loop {
        let head = data
            .get(at..at + 8)
            .ok_or("PNG ends before its IEND chunk")?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let kind = &head[4..8];
        at = at
            .checked_add(12 + len)
            .filter(|end| *end <= data.len())
            .ok_or("PNG chunk runs past the end")?;
        match kind {
            b"IDAT" if idat_done => return Err("PNG IDAT chunks are not in one run".into()),
            b"IDAT" => idat = true,
            b"PLTE" if idat => return Err("PNG PLTE after IDAT".into()),
            b"IEND" => break,
            _ if idat => idat_done = true,
            _ => {}
        }
    }
    if at != data.len() {
        return Err(format!("{} bytes after the PNG's IEND", data.len() - at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u16, h: u16, c: [u8; 3]) -> Vec<u8> {
        c.repeat(w as usize * h as usize)
    }

    fn update(keyframe: bool, w: u16, h: u16, rects: &[(u16, u16, u16, u16, [u8; 3])]) -> Vec<u8> {
        let pngs: Vec<Vec<u8>> = rects
            .iter()
            .map(|&(_, _, rw, rh, c)| encode_png(rw, rh, &solid(rw, rh, c), png::Compression::Fast))
            .collect();
        Update {
            keyframe,
            width: w,
            height: h,
            rects: rects
                .iter()
                .zip(&pngs)
                .map(|(&(x, y, w, h, _), png)| Rect { x, y, w, h, png })
                .collect(),
        }
        .encode()
    }

    fn px(s: &Screen, x: usize, y: usize) -> [u8; 3] {
        let at = (y * s.width as usize + x) * 3;
        s.rgb[at..at + 3].try_into().unwrap()
    }

    #[test]
    fn updates_paint_over_the_keyframe_and_a_size_change_starts_black() {
        let mut c = Compositor::default();
        c.apply(&update(true, 8, 4, &[(0, 0, 8, 4, [9, 9, 9])]))
            .unwrap();
        let s = c
            .apply(&update(false, 8, 4, &[(2, 1, 3, 2, [200, 0, 0])]))
            .unwrap();
        assert_eq!(px(s, 0, 0), [9, 9, 9]);
        assert_eq!(px(s, 2, 1), [200, 0, 0]);
        assert_eq!(px(s, 4, 2), [200, 0, 0]);
        assert_eq!(px(s, 5, 2), [9, 9, 9]);
        // A partial update at another size: black base, then its rectangle.
        let s = c
            .apply(&update(false, 4, 4, &[(0, 0, 1, 1, [1, 2, 3])]))
            .unwrap();
        assert_eq!((s.width, s.height), (4, 4));
        assert_eq!(px(s, 0, 0), [1, 2, 3]);
        assert_eq!(px(s, 3, 3), [0, 0, 0]);
    }

    #[test]
    fn a_malformed_update_is_refused_and_leaves_the_screen() {
        let mut c = Compositor::default();
        c.apply(&update(true, 4, 4, &[(0, 0, 4, 4, [5, 5, 5])]))
            .unwrap();
        let before = c.screen().unwrap().clone();
        // A rectangle whose PNG is another size than it says.
        let png = encode_png(2, 2, &solid(2, 2, [7, 7, 7]), png::Compression::Fast);
        let bad = Update {
            keyframe: false,
            width: 4,
            height: 4,
            rects: vec![Rect {
                x: 0,
                y: 0,
                w: 3,
                h: 3,
                png: &png,
            }],
        }
        .encode();
        assert!(c.apply(&bad).is_err());
        assert_eq!(c.screen().unwrap(), &before);
        let mut trailing = update(false, 4, 4, &[(0, 0, 1, 1, [1, 1, 1])]);
        trailing.push(0);
        assert!(matches!(
            Update::decode(&trailing),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let outside = update(false, 4, 4, &[(3, 0, 2, 1, [1, 1, 1])]);
        assert!(Update::decode(&outside).is_err());
        let split_key = update(
            true,
            4,
            4,
            &[(0, 0, 4, 2, [1, 1, 1]), (0, 2, 4, 2, [1, 1, 1])],
        );
        assert!(Update::decode(&split_key).is_err());
        let mut v2 = update(false, 4, 4, &[(0, 0, 1, 1, [1, 1, 1])]);
        v2[3] = 2;
        assert!(matches!(
            Update::decode(&v2),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert_eq!(c.screen().unwrap(), &before);
    }

    #[test]
    fn the_exported_name_and_the_png_round_trip() {
        assert!(is_update_name("screen-00000001.ssu"));
        assert!(!is_update_name("screen-00000001.png"));
        assert_eq!(png_name("screen-00000001.ssu"), "screen-00000001.png");
        let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_png(5, 3, &rgb, png::Compression::Balanced);
        assert_eq!(decode_png(&png, 5, 3).unwrap(), rgb);
        assert!(decode_png(&png, 3, 5).is_err());
        // Bytes after IEND, a failed checksum, a cut PNG: refused.
        let mut after = png.clone();
        after.push(0);
        assert!(decode_png(&after, 5, 3).unwrap_err().contains("after"));
        let mut crc = png.clone();
        let n = crc.len();
        crc[n - 13] ^= 1; // the last IDAT's CRC
        assert!(decode_png(&crc, 5, 3).is_err());
        assert!(decode_png(&png[..png.len() - 12], 5, 3).is_err());
    }
}

/// The shared fixture `tests/vectors/screen.json`: a stream of updates and the screen each
/// makes (the SHA-256 of its RGB bytes), or `"malformed"`. Every reader (export, the console,
/// tools/reference_decrypt.py) composites it to the same screens.
#[cfg(test)]
mod vectors {
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
        let part = |w, h, rects: &[(u16, u16, u16, u16, u32)]| {
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
                rects: rects
                    .iter()
                    .zip(&pngs)
                    .map(|(&(x, y, w, h, _), png)| Rect { x, y, w, h, png })
                    .collect(),
            }
            .encode()
        };
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
        assert_eq!(malformed, 1);
        let _ = want;
    }
}
