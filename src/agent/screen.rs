//! Turning captured screens into screen updates (docs/format.md "Screen update"), whatever the
//! platform: regions blacked out, the cursor drawn, scaled to `max_width`, compared with the
//! previous screen tile by tile, and only the changed rectangles encoded as PNGs. A keyframe
//! at the first screen, after a size change, and at the first change `keyframe_every` after
//! the last keyframe; nothing while nothing changes.

use std::time::{Duration, Instant};

use crate::protocol::screen::{Rect, Update, encode_png};

/// Side of the square tiles compared between screens.
const TILE: usize = 32;

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

impl Capture {
    /// Paint `area` black (privacy exclusions), clipped to the screen.
    pub fn black_out(&mut self, area: Area) {
        let x0 = area.x.clamp(0, self.width as i32) as usize;
        let x1 = (area.x + area.w).clamp(0, self.width as i32) as usize;
        let y0 = area.y.clamp(0, self.height as i32) as usize;
        let y1 = (area.y + area.h).clamp(0, self.height as i32) as usize;
        for y in y0..y1 {
            let row = y * self.width * 3;
            self.rgb[row + x0 * 3..row + x1 * 3].fill(0);
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
                let d = &mut self.rgb[(y as usize * self.width + x as usize) * 3..][..3];
                for i in 0..3 {
                    d[i] = ((s[i] as u32 * a + d[i] as u32 * (255 - a) + 127) / 255) as u8;
                }
            }
        }
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
    previous: Option<Capture>,
    last_keyframe: Option<Instant>,
}

/// One encoded update and what it is.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub keyframe: bool,
    pub rects: usize,
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
    pub fn encode(&mut self, screen: Capture, now: Instant) -> Option<Encoded> {
        let (w, h) = (screen.width, screen.height);
        let same_size = self
            .previous
            .as_ref()
            .is_some_and(|p| (p.width, p.height) == (w, h));
        let changed = match &self.previous {
            Some(p) if same_size => changed_rects(p, &screen),
            _ => vec![(0, 0, w, h)],
        };
        if changed.is_empty() {
            return None;
        }
        let keyframe = !same_size
            || self
                .last_keyframe
                .is_none_or(|t| now.duration_since(t) >= self.keyframe_every);
        let rects = if keyframe {
            vec![(0, 0, w, h)]
        } else {
            changed
        };
        let pngs: Vec<Vec<u8>> = rects
            .iter()
            .map(|&(x, y, rw, rh)| {
                let mut rgb = Vec::with_capacity(rw * rh * 3);
                for row in y..y + rh {
                    rgb.extend_from_slice(&screen.rgb[(row * w + x) * 3..(row * w + x + rw) * 3]);
                }
                encode_png(rw as u16, rh as u16, &rgb, png::Compression::Fast)
            })
            .collect();
        let update = Update {
            keyframe,
            width: w as u16,
            height: h as u16,
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
        let n = rects.len();
        self.previous = Some(screen);
        Some(Encoded {
            bytes: update.encode(),
            keyframe,
            rects: n,
        })
    }
}

/// The changed tiles of two screens of one size, merged into rectangles: runs of changed tiles
/// in a tile row, then runs of rows with the same span stacked. Rectangles do not overlap.
fn changed_rects(a: &Capture, b: &Capture) -> Vec<(usize, usize, usize, usize)> {
    let (w, h) = (b.width, b.height);
    let cols = w.div_ceil(TILE);
    let rows = h.div_ceil(TILE);
    let mut spans: Vec<Vec<(usize, usize)>> = Vec::with_capacity(rows);
    for ty in 0..rows {
        let y0 = ty * TILE;
        let y1 = (y0 + TILE).min(h);
        let mut dirty = vec![false; cols];
        for y in y0..y1 {
            let ra = &a.rgb[y * w * 3..(y + 1) * w * 3];
            let rb = &b.rgb[y * w * 3..(y + 1) * w * 3];
            if ra == rb {
                continue;
            }
            for (tx, d) in dirty.iter_mut().enumerate() {
                if !*d {
                    let x0 = tx * TILE * 3;
                    let x1 = ((tx + 1) * TILE).min(w) * 3;
                    *d = ra[x0..x1] != rb[x0..x1];
                }
            }
        }
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
        let first = enc.encode(screen(200, 100, base), t0).unwrap();
        assert!(first.keyframe);
        reader.apply(&first.bytes).unwrap();
        // Nothing changed: nothing to send.
        assert!(enc.encode(screen(200, 100, base), t0).is_none());
        // Two separate changes: two rectangles, small, not a keyframe.
        let changed = |x: usize, y: usize| {
            if (5..9).contains(&x) && (5..7).contains(&y) || (150..190).contains(&x) && y > 70 {
                [255, 0, 0]
            } else {
                base(x, y)
            }
        };
        let u = enc
            .encode(screen(200, 100, changed), t0 + Duration::from_secs(1))
            .unwrap();
        assert!(!u.keyframe);
        assert_eq!(u.rects, 2);
        assert!(u.bytes.len() < first.bytes.len());
        let s = reader.apply(&u.bytes).unwrap();
        assert_eq!(s.rgb, screen(200, 100, changed).rgb);
        // After keyframe_every, the next change is a keyframe; a new size is one at once.
        let k = enc
            .encode(screen(200, 100, base), t0 + Duration::from_secs(31))
            .unwrap();
        assert!(k.keyframe);
        let r = enc
            .encode(screen(120, 90, base), t0 + Duration::from_secs(32))
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
        let rects = changed_rects(&a, &b);
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
