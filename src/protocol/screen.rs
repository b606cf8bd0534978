//! Screen updates (docs/format.md "Screen update"): the changed rectangles of a screen, each an
//! 8-bit RGB PNG, painted over the screen the stream's earlier updates made; and the one
//! compositing rule every reader follows.
//!
//! `magic "SSU" version | flags u8 (bit 0 keyframe) | width u16 | height u16 |
//! [version 2: copies u16 | copies × (sx u16 | sy u16 | w u16 | h u16 | dx u16 | dy u16)] |
//! count u16 | count × (x u16 | y u16 | w u16 | h u16 | png_len u32 | png)`.
//!
//! Version 2 adds copies (pixels already on the screen moved, as a scrolled terminal's), applied
//! before the rectangles; an update without a copy is written as version 1.

use super::wire::{DecodeError, Reader};

/// A frame whose name ends in this is a screen update.
pub const UPDATE_SUFFIX: &str = ".ssu";
/// The update version written when an update has no copy.
pub const UPDATE_VERSION: u8 = 1;
/// The update version written when an update has copies.
pub const UPDATE_VERSION_COPIES: u8 = 2;
/// Largest width or height.
pub const MAX_SIDE: u16 = 16_384;
/// Most rectangles in one update.
pub const MAX_RECTS: u16 = 4_096;
/// Most copies in one (version-2) update.
pub const MAX_COPIES: u16 = 4_096;
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

/// One copy (version 2): the `w × h` pixels at `sx, sy` go to `dx, dy`, read as they were just
/// before this copy (source and destination may overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRect {
    pub sx: u16,
    pub sy: u16,
    pub w: u16,
    pub h: u16,
    pub dx: u16,
    pub dy: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub keyframe: bool,
    pub width: u16,
    pub height: u16,
    /// Applied in order, before the rectangles; none in a keyframe or a version-1 update.
    pub copies: Vec<CopyRect>,
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
        let mut out = Vec::with_capacity(13 + 12 * self.copies.len() + body);
        out.extend_from_slice(b"SSU");
        out.push(if self.copies.is_empty() {
            UPDATE_VERSION
        } else {
            UPDATE_VERSION_COPIES
        });
        out.push(if self.keyframe { FLAG_KEYFRAME } else { 0 });
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        if !self.copies.is_empty() {
            out.extend_from_slice(&(self.copies.len() as u16).to_be_bytes());
            for c in &self.copies {
                for v in [c.sx, c.sy, c.w, c.h, c.dx, c.dy] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
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
        let version = r.version(&[UPDATE_VERSION, UPDATE_VERSION_COPIES], "1 and 2")?;
        let flags = r.u8()?;
        if flags & !FLAG_KEYFRAME != 0 {
            return Err(invalid(format!("unknown flag bits {flags:#04x}")));
        }
        let width = r.u16()?;
        let height = r.u16()?;
        for (field, v) in [("width", width), ("height", height)] {
            r.bounded(field, v.into(), 1, MAX_SIDE.into())?;
        }
        let mut copies = Vec::new();
        if version == UPDATE_VERSION_COPIES {
            let n = r.u16()?;
            r.bounded("copies", n.into(), 0, MAX_COPIES.into())?;
            copies.reserve(n as usize);
            for i in 0..n {
                let (sx, sy, w, h) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
                let (dx, dy) = (r.u16()?, r.u16()?);
                let fits = |x: u16, y: u16| {
                    x as u32 + w as u32 <= width as u32 && y as u32 + h as u32 <= height as u32
                };
                if w == 0 || h == 0 || !fits(sx, sy) || !fits(dx, dy) {
                    return Err(invalid(format!(
                        "copy {i} ({sx},{sy} {w}×{h} to {dx},{dy}) is empty or outside the \
                         {width}×{height} screen"
                    )));
                }
                copies.push(CopyRect {
                    sx,
                    sy,
                    w,
                    h,
                    dx,
                    dy,
                });
            }
        }
        let count = r.u16()?;
        let min = if version == UPDATE_VERSION { 1 } else { 0 };
        r.bounded("count", count.into(), min, MAX_RECTS.into())?;
        if copies.is_empty() && count == 0 {
            return Err(invalid("no copy and no rectangle"));
        }
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
        if keyframe && !copies.is_empty() {
            return Err(invalid("a keyframe has no copy"));
        }
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
            copies,
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

    /// Apply a copy as through a buffer: rows in the order that never reads a row already
    /// written (bottom up when moving down), each row moved with `copy_within` (memmove).
    fn copy(&mut self, c: &CopyRect) {
        let stride = self.width as usize * 3;
        let row = c.w as usize * 3;
        let one = |rgb: &mut Vec<u8>, j: usize| {
            let from = (c.sy as usize + j) * stride + c.sx as usize * 3;
            let to = (c.dy as usize + j) * stride + c.dx as usize * 3;
            rgb.copy_within(from..from + row, to);
        };
        if c.dy > c.sy {
            (0..c.h as usize).rev().for_each(|j| one(&mut self.rgb, j));
        } else {
            (0..c.h as usize).for_each(|j| one(&mut self.rgb, j));
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
        for c in &update.copies {
            screen.copy(c);
        }
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
mod tests;
#[cfg(test)]
mod vectors;
