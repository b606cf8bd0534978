//! Turning captured screens into screen updates (docs/format.md "Screen update"), whatever the
//! platform: regions blacked out, the cursor drawn, scaled to `max_width`, compared with the
//! previous screen tile by tile (by 64-bit digests of each tile's rows: no copy of the previous
//! screen is kept), a vertical scroll sent as a copy (`scroll`), and only the changed rectangles
//! encoded as PNGs. A keyframe
//! at the first screen, after a size change, and at the first change `keyframe_every` after
//! the last keyframe; nothing while nothing changes.

use std::time::{Duration, Instant};

use crate::protocol::screen::{CopyRect, Rect, Update};

mod scroll;
use scroll::{Scroll, TILE, detect, dirty_tiles, segment_digests};

/// A captured screen: `width × height` pixels, RGB, row by row.
pub struct Capture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// A rectangle in capture pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

/// The cursor's image (RGBA, not premultiplied) with its top-left corner on the screen.
pub struct Cursor {
    pub x: i32,
    pub y: i32,
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// A screen's pixels where they lie (a capture's buffer, or the shared memory the X server
/// wrote): `bpp` bytes per pixel, red, green and blue at `order` within each pixel.
pub struct Pixels<'a> {
    pub width: usize,
    pub height: usize,
    pub bpp: usize,
    pub order: [usize; 3],
    pub data: &'a mut [u8],
}

/// RGB, 3 bytes per pixel.
pub const RGB: [usize; 3] = [0, 1, 2];
/// BGRX, 4 bytes per pixel: X servers' 24-bit pixels, little-endian.
pub const BGRX: [usize; 3] = [2, 1, 0];

impl Pixels<'_> {
    /// Paint `area` black (privacy exclusions), clipped to the screen.
    pub fn black_out(&mut self, area: Area) {
        let x0 = area.x.clamp(0, self.width as i32) as usize;
        let x1 = (area.x + area.w).clamp(0, self.width as i32) as usize;
        let y0 = area.y.clamp(0, self.height as i32) as usize;
        let y1 = (area.y + area.h).clamp(0, self.height as i32) as usize;
        for y in y0..y1 {
            let row = y * self.width * self.bpp;
            self.data[row + x0 * self.bpp..row + x1 * self.bpp].fill(0);
        }
    }

    /// Draw the cursor over the screen (alpha blended), clipped.
    pub fn draw_cursor(&mut self, c: &Cursor) {
        for cy in 0..c.height {
            let y = c.y + cy as i32;
            if y < 0 || y >= self.height as i32 {
                continue;
            }
            for cx in 0..c.width {
                let x = c.x + cx as i32;
                if x < 0 || x >= self.width as i32 {
                    continue;
                }
                let s = &c.rgba[(cy * c.width + cx) * 4..][..4];
                let a = s[3] as u32;
                if a == 0 {
                    continue;
                }
                let at = (y as usize * self.width + x as usize) * self.bpp;
                let d = &mut self.data[at..at + self.bpp];
                for (i, &o) in self.order.iter().enumerate() {
                    d[o] = ((s[i] as u32 * a + d[o] as u32 * (255 - a) + 127) / 255) as u8;
                }
            }
        }
    }

    /// A rectangle's pixels as RGB rows.
    fn rgb(&self, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
        let mut out = vec![0u8; w * h * 3];
        let [r, g, b] = self.order;
        for (j, row) in out.chunks_exact_mut(w * 3).enumerate() {
            let at = ((y + j) * self.width + x) * self.bpp;
            let src = &self.data[at..at + w * self.bpp];
            if self.bpp == 3 && self.order == RGB {
                row.copy_from_slice(src);
                continue;
            }
            for (d, s) in row.chunks_exact_mut(3).zip(src.chunks_exact(self.bpp)) {
                d[0] = s[r];
                d[1] = s[g];
                d[2] = s[b];
            }
        }
        out
    }
}

impl Capture {
    /// The capture as `Pixels`, to draw on and encode.
    pub fn pixels(&mut self) -> Pixels<'_> {
        Pixels {
            width: self.width,
            height: self.height,
            bpp: 3,
            order: RGB,
            data: &mut self.rgb,
        }
    }

    pub fn black_out(&mut self, area: Area) {
        self.pixels().black_out(area)
    }

    pub fn draw_cursor(&mut self, c: &Cursor) {
        self.pixels().draw_cursor(c)
    }

    /// Scaled down to `max_width` (area average) when wider; unchanged otherwise.
    pub fn fit(self, max_width: usize) -> Capture {
        if max_width == 0 || self.width <= max_width {
            return self;
        }
        let w = max_width;
        let h = ((self.height * w + self.width / 2) / self.width).max(1);
        let mut out = vec![0u8; w * h * 3];
        for y in 0..h {
            let sy0 = y * self.height / h;
            let sy1 = ((y + 1) * self.height / h).max(sy0 + 1);
            for x in 0..w {
                let sx0 = x * self.width / w;
                let sx1 = ((x + 1) * self.width / w).max(sx0 + 1);
                let mut sum = [0u32; 3];
                for sy in sy0..sy1 {
                    let row = &self.rgb[(sy * self.width + sx0) * 3..(sy * self.width + sx1) * 3];
                    for p in row.chunks_exact(3) {
                        sum[0] += p[0] as u32;
                        sum[1] += p[1] as u32;
                        sum[2] += p[2] as u32;
                    }
                }
                let n = ((sy1 - sy0) * (sx1 - sx0)) as u32;
                let d = &mut out[(y * w + x) * 3..][..3];
                for i in 0..3 {
                    d[i] = ((sum[i] + n / 2) / n) as u8;
                }
            }
        }
        Capture {
            width: w,
            height: h,
            rgb: out,
        }
    }
}

/// The previous screen and when the last keyframe went.
pub struct Encoder {
    keyframe_every: Duration,
    /// The previous screen's size and its row segments' digests (`scroll::segment_digests`).
    previous: Option<(usize, usize, Vec<u64>)>,
    last_keyframe: Option<Instant>,
}

/// A rectangle as the agent encodes it: zlib level 3 over the Sub filter (on terminal and
/// desktop content about half the bytes of the fastest setting, at a few milliseconds per
/// full-screen rectangle; docs/benchmarks.md "X11 capture").
fn encode_rect(w: u16, h: u16, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w.into(), h.into());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_deflate_compression(png::DeflateCompression::Level(3));
    enc.set_filter(png::Filter::Sub);
    let mut writer = enc.write_header().expect("writing to a Vec");
    writer.write_image_data(rgb).expect("size matches");
    writer.finish().expect("writing to a Vec");
    out
}

/// One encoded update and what it is.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub keyframe: bool,
    pub rects: usize,
    /// Copies (a scroll), 0 or 1; never in a keyframe.
    pub copies: usize,
}

impl Encoder {
    pub fn new(keyframe_every: Duration) -> Self {
        Encoder {
            keyframe_every,
            previous: None,
            last_keyframe: None,
        }
    }

    /// Forget the previous screen: the next capture is a keyframe (after a pause).
    pub fn restart(&mut self) {
        self.previous = None;
    }

    /// The update that turns the previous screen into `screen`, or `None` when nothing changed.
    pub fn encode(&mut self, screen: &Pixels<'_>, now: Instant) -> Option<Encoded> {
        let (w, h) = (screen.width, screen.height);
        let cols = w.div_ceil(TILE);
        let digests = segment_digests(screen);
        let previous = self.previous.take();
        let old = previous
            .as_ref()
            .filter(|(pw, ph, _)| (*pw, *ph) == (w, h))
            .map(|(_, _, old)| old);
        let dirty = old.map(|old| dirty_tiles(old, &digests, cols, h, None));
        if dirty.as_ref().is_some_and(|d| !d.contains(&true)) {
            self.previous = Some((w, h, digests));
            return None;
        }
        let keyframe = old.is_none()
            || self
                .last_keyframe
                .is_none_or(|t| now.duration_since(t) >= self.keyframe_every);
        let (scroll, rects) = match (old, dirty) {
            (Some(old), Some(dirty)) if !keyframe => match detect(old, &digests, cols, h, &dirty) {
                Some((s, left)) => (Some(s), merge_tiles(&left, w, h)),
                None => (None, merge_tiles(&dirty, w, h)),
            },
            _ => (None, vec![(0, 0, w, h)]),
        };
        self.previous = Some((w, h, digests));
        let copies: Vec<CopyRect> = scroll
            .iter()
            .map(|s: &Scroll| {
                let x = s.c0 * TILE;
                CopyRect {
                    sx: x as u16,
                    sy: s.src_y as u16,
                    w: ((s.c1 * TILE).min(w) - x) as u16,
                    h: s.h as u16,
                    dx: x as u16,
                    dy: s.dst_y as u16,
                }
            })
            .collect();
        let pngs: Vec<Vec<u8>> = rects
            .iter()
            .map(|&(x, y, rw, rh)| encode_rect(rw as u16, rh as u16, &screen.rgb(x, y, rw, rh)))
            .collect();
        let update = Update {
            keyframe,
            width: w as u16,
            height: h as u16,
            copies,
            rects: rects
                .iter()
                .zip(&pngs)
                .map(|(&(x, y, rw, rh), png)| Rect {
                    x: x as u16,
                    y: y as u16,
                    w: rw as u16,
                    h: rh as u16,
                    png,
                })
                .collect(),
        };
        if keyframe {
            self.last_keyframe = Some(now);
        }
        Some(Encoded {
            bytes: update.encode(),
            keyframe,
            rects: rects.len(),
            copies: scroll.iter().count(),
        })
    }
}

/// Changed tiles (row-major flags) merged into rectangles: runs of changed tiles in a tile
/// row, then runs of rows with the same span stacked. Rectangles do not overlap.
fn merge_tiles(dirty: &[bool], w: usize, h: usize) -> Vec<(usize, usize, usize, usize)> {
    let cols = w.div_ceil(TILE);
    let rows = h.div_ceil(TILE);
    let mut spans: Vec<Vec<(usize, usize)>> = Vec::with_capacity(rows);
    for ty in 0..rows {
        let dirty = &dirty[ty * cols..(ty + 1) * cols];
        let mut row = Vec::new();
        let mut tx = 0;
        while tx < cols {
            if dirty[tx] {
                let start = tx;
                while tx < cols && dirty[tx] {
                    tx += 1;
                }
                row.push((start, tx));
            } else {
                tx += 1;
            }
        }
        spans.push(row);
    }
    // Stack identical spans of consecutive tile rows.
    let mut out = Vec::new();
    let mut open: Vec<(usize, usize, usize)> = Vec::new(); // (start col, end col, first row)
    for ty in 0..=rows {
        let row = spans.get(ty).cloned().unwrap_or_default();
        let mut still = Vec::new();
        for (s, e, first) in open.drain(..) {
            if row.contains(&(s, e)) {
                still.push((s, e, first));
            } else {
                let x = s * TILE;
                let y = first * TILE;
                out.push((x, y, (e * TILE).min(w) - x, (ty * TILE).min(h) - y));
            }
        }
        for &(s, e) in &row {
            if !still.iter().any(|&(os, oe, _)| (os, oe) == (s, e)) {
                still.push((s, e, ty));
            }
        }
        open = still;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::screen::Compositor;

    fn screen(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Capture {
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&f(x, y));
            }
        }
        Capture {
            width: w,
            height: h,
            rgb,
        }
    }

    #[test]
    fn updates_carry_only_what_changed_and_composite_back_exactly() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(Duration::from_secs(30));
        let mut reader = Compositor::default();
        let base = |x: usize, y: usize| [(x * 3) as u8, (y * 5) as u8, 40];
        let first = enc.encode(&screen(200, 100, base).pixels(), t0).unwrap();
        assert!(first.keyframe);
        reader.apply(&first.bytes).unwrap();
        // Nothing changed: nothing to send.
        assert!(enc.encode(&screen(200, 100, base).pixels(), t0).is_none());
        // Two separate changes: two rectangles, small, not a keyframe.
        let changed = |x: usize, y: usize| {
            if (5..9).contains(&x) && (5..7).contains(&y) || (150..190).contains(&x) && y > 70 {
                [255, 0, 0]
            } else {
                base(x, y)
            }
        };
        let u = enc
            .encode(
                &screen(200, 100, changed).pixels(),
                t0 + Duration::from_secs(1),
            )
            .unwrap();
        assert!(!u.keyframe);
        assert_eq!(u.rects, 2);
        let area: usize = crate::protocol::screen::Update::decode(&u.bytes)
            .unwrap()
            .rects
            .iter()
            .map(|r| r.w as usize * r.h as usize)
            .sum();
        assert!(area * 5 < 200 * 100, "{area} pixels re-sent of 20000");
        let s = reader.apply(&u.bytes).unwrap();
        assert_eq!(s.rgb, screen(200, 100, changed).rgb);
        // After keyframe_every, the next change is a keyframe; a new size is one at once.
        let k = enc
            .encode(
                &screen(200, 100, base).pixels(),
                t0 + Duration::from_secs(31),
            )
            .unwrap();
        assert!(k.keyframe);
        let r = enc
            .encode(
                &screen(120, 90, base).pixels(),
                t0 + Duration::from_secs(32),
            )
            .unwrap();
        assert!(r.keyframe);
        assert_eq!(
            reader.apply(&r.bytes).unwrap().rgb,
            screen(120, 90, base).rgb
        );
    }

    #[test]
    fn rectangles_cover_every_changed_tile_without_overlap() {
        let a = screen(100, 70, |_, _| [0, 0, 0]);
        // An L shape of changes over three tile rows.
        let b = screen(100, 70, |x, y| {
            if x < 40 || y > 60 {
                [1, 1, 1]
            } else {
                [0, 0, 0]
            }
        });
        let (mut a, mut b) = (a, b);
        let (da, db) = (segment_digests(&a.pixels()), segment_digests(&b.pixels()));
        let dirty = dirty_tiles(&da, &db, 100_usize.div_ceil(TILE), 70, None);
        let rects = merge_tiles(&dirty, 100, 70);
        let mut covered = vec![0u8; 100 * 70];
        for &(x, y, w, h) in &rects {
            for yy in y..y + h {
                for xx in x..x + w {
                    covered[yy * 100 + xx] += 1;
                }
            }
        }
        assert!(
            covered.iter().all(|&c| c <= 1),
            "rectangles overlap: {rects:?}"
        );
        for y in 0..70 {
            for x in 0..100 {
                if x < 40 || y > 60 {
                    assert_eq!(
                        covered[y * 100 + x],
                        1,
                        "({x},{y}) not covered by {rects:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn black_out_cursor_and_scaling() {
        let mut c = screen(8, 4, |_, _| [100, 100, 100]);
        c.black_out(Area {
            x: -2,
            y: 1,
            w: 4,
            h: 10,
        });
        assert_eq!(&c.rgb[(8 + 1) * 3..(8 + 2) * 3], &[0, 0, 0]);
        assert_eq!(&c.rgb[(8 + 2) * 3..(8 + 3) * 3], &[100, 100, 100]);
        c.draw_cursor(&Cursor {
            x: 7,
            y: 0,
            width: 2,
            height: 1,
            rgba: vec![255, 0, 0, 255, 0, 255, 0, 255],
        });
        assert_eq!(&c.rgb[7 * 3..8 * 3], &[255, 0, 0]);
        let s = screen(4, 2, |x, _| {
            if x % 2 == 0 {
                [0, 0, 0]
            } else {
                [200, 200, 200]
            }
        })
        .fit(2);
        assert_eq!((s.width, s.height), (2, 1));
        assert_eq!(s.rgb, vec![100; 6]);
    }
}
