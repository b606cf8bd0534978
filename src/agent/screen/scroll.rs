//! What changed between two screens, known only by digests (no copy of the previous screen is
//! kept): one 64-bit digest per pixel row per 32-pixel tile column ("segment"), a tile dirty
//! when any of its segments differs; and vertical scrolling found from those digests, so a
//! scrolled terminal goes as one copy (docs/format.md "Screen update", version 2) and only its
//! new lines as PNGs.
//!
//! Detection: over the band of tile columns that changed, each row's segment digests make a
//! row digest, old and new. Rows whose old digest is unique in the band (blank rows are not)
//! vote for `dy = old_y - new_y`; the best `dy` with enough votes gives the longest run of rows
//! where `new[y] == old[y + dy]`, which becomes the copy. The tiles left to send are those whose
//! new segments differ from the ones the copy predicts (old at `y + dy` inside it, old at `y`
//! elsewhere), so the reader's screen stays exact whatever was detected.

use super::Pixels;

/// Side of the square tiles compared between screens.
pub(super) const TILE: usize = 32;
/// Fewest rows that must agree on a scroll before it is sent as a copy.
const MIN_ROWS: usize = 8;

/// A vertical move of the tile columns `c0..c1`: rows `src_y..src_y + h` go to `dst_y..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Scroll {
    pub c0: usize,
    pub c1: usize,
    pub src_y: usize,
    pub dst_y: usize,
    pub h: usize,
}

/// A 64-bit digest per row segment, `y * cols + tx`: CRC-32C (hardware) beside a rotate-xor
/// fold of the segment's bytes, so a change goes unseen only if both collide; the next
/// keyframe repairs it.
pub(super) fn segment_digests(p: &Pixels<'_>) -> Vec<u64> {
    let cols = p.width.div_ceil(TILE);
    let mut out = Vec::with_capacity(cols * p.height);
    for y in 0..p.height {
        let row = &p.data[y * p.width * p.bpp..(y + 1) * p.width * p.bpp];
        for part in row.chunks(TILE * p.bpp) {
            let crc = crc32c::crc32c(part);
            let mut f = 0u32;
            let mut words = part.chunks_exact(4);
            for word in &mut words {
                f = f.rotate_left(7) ^ u32::from_le_bytes(word.try_into().expect("4 bytes"));
            }
            let rest = words.remainder();
            if !rest.is_empty() {
                let mut v = [0u8; 4];
                v[..rest.len()].copy_from_slice(rest);
                f = f.rotate_left(7) ^ u32::from_le_bytes(v);
            }
            out.push((crc as u64) << 32 | f as u64);
        }
    }
    out
}

/// Dirty tiles, row-major: those with a segment of `new` unlike what the reader will have,
/// `old` moved by `scroll` when there is one.
pub(super) fn dirty_tiles(
    old: &[u64],
    new: &[u64],
    cols: usize,
    height: usize,
    scroll: Option<&Scroll>,
) -> Vec<bool> {
    let rows = height.div_ceil(TILE);
    let mut dirty = vec![false; rows * cols];
    for y in 0..height {
        let ty = y / TILE;
        let moved = scroll.filter(|s| (s.dst_y..s.dst_y + s.h).contains(&y));
        let new_row = &new[y * cols..(y + 1) * cols];
        let old_row = &old[y * cols..(y + 1) * cols];
        let flags = &mut dirty[ty * cols..(ty + 1) * cols];
        for tx in 0..cols {
            let was = match moved {
                Some(s) if (s.c0..s.c1).contains(&tx) => old[(y + s.src_y - s.dst_y) * cols + tx],
                _ => old_row[tx],
            };
            flags[tx] |= new_row[tx] != was;
        }
    }
    dirty
}

/// A scroll that leaves fewer dirty tiles than `dirty` (the tiles changed without one), and
/// the tiles still dirty after it.
pub(super) fn detect(
    old: &[u64],
    new: &[u64],
    cols: usize,
    height: usize,
    dirty: &[bool],
) -> Option<(Scroll, Vec<bool>)> {
    let before = dirty.iter().filter(|&&d| d).count();
    // The band: the run of adjacent changed tile columns with the most changed tiles.
    let per_col: Vec<usize> = (0..cols)
        .map(|tx| dirty.iter().skip(tx).step_by(cols).filter(|&&d| d).count())
        .collect();
    let (mut best, mut tx) = ((0, 0, 0), 0);
    while tx < cols {
        let start = tx;
        let mut sum = 0;
        while tx < cols && per_col[tx] > 0 {
            sum += per_col[tx];
            tx += 1;
        }
        if sum > best.2 {
            best = (start, tx, sum);
        }
        tx += 1;
    }
    let (c0, c1, _) = best;
    if c1 == c0 {
        return None;
    }
    // Also the band without its edge columns, which may hold a static neighbour (a panel
    // beside the terminal sharing their tile column) that does not scroll.
    let mut bands = vec![(c0, c1), (c0 + 1, c1), (c0, c1 - 1), (c0 + 1, c1 - 1)];
    bands.retain(|(a, b)| a < b);
    bands.dedup();
    bands
        .into_iter()
        .filter_map(|(a, b)| band_scroll(old, new, cols, height, a, b))
        .map(|s| {
            let d = dirty_tiles(old, new, cols, height, Some(&s));
            (d.iter().filter(|&&d| d).count(), s, d)
        })
        .filter(|(n, _, _)| *n < before)
        .min_by_key(|(n, s, _)| (*n, usize::MAX - s.h))
        .map(|(_, s, d)| (s, d))
}

/// The scroll of the tile columns `c0..c1`, if enough rows agree on one.
fn band_scroll(
    old: &[u64],
    new: &[u64],
    cols: usize,
    height: usize,
    c0: usize,
    c1: usize,
) -> Option<Scroll> {
    let row = |d: &[u64], y: usize| {
        d[y * cols + c0..y * cols + c1].iter().fold(0u64, |h, &s| {
            (h ^ s).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
        })
    };
    let old_rows: Vec<u64> = (0..height).map(|y| row(old, y)).collect();
    let new_rows: Vec<u64> = (0..height).map(|y| row(new, y)).collect();
    // Old rows by digest; a digest seen twice (a blank line, a rule) names no row.
    let mut unique = std::collections::HashMap::with_capacity(height);
    for (y, &d) in old_rows.iter().enumerate() {
        unique
            .entry(d)
            .and_modify(|at: &mut Option<usize>| *at = None)
            .or_insert(Some(y));
    }
    let mut votes: Vec<isize> = new_rows
        .iter()
        .enumerate()
        .filter(|&(y, d)| *d != old_rows[y])
        .filter_map(|(y, d)| {
            unique
                .get(d)
                .copied()
                .flatten()
                .map(|oy| oy as isize - y as isize)
        })
        .collect();
    votes.sort_unstable();
    let (dy, n) = votes
        .chunk_by(|a, b| a == b)
        .map(|run| (run[0], run.len()))
        .max_by_key(|&(dy, n)| (n, std::cmp::Reverse(dy.unsigned_abs())))?;
    if n < MIN_ROWS {
        return None;
    }
    // The longest run of rows where the new screen is the old one moved by dy.
    let first = (-dy).max(0) as usize;
    let end = (height as isize - dy.max(0)) as usize;
    let (mut run, mut longest) = ((first, 0), (first, 0));
    for y in first..end {
        if new_rows[y] == old_rows[(y as isize + dy) as usize] {
            run.1 += 1;
            if run.1 > longest.1 {
                longest = run;
            }
        } else {
            run = (y + 1, 0);
        }
    }
    let (dst_y, h) = longest;
    (h >= MIN_ROWS).then(|| Scroll {
        c0,
        c1,
        src_y: (dst_y as isize + dy) as usize,
        dst_y,
        h,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Capture, Encoder, merge_tiles};
    use super::*;
    use crate::protocol::screen::{Compositor, Update};
    use std::time::{Duration, Instant};

    fn mix(mut v: u64) -> u64 {
        v = (v ^ (v >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        v ^ (v >> 29)
    }

    /// A desktop: a panel on the left (changing down its rows), a terminal at (45, 12) of
    /// 208×195 pixels showing its text from pixel row `top` on (13-pixel lines of 8-pixel
    /// glyphs, some lines empty), a background changing only across, and a clock at the top
    /// right showing `clock`.
    fn desk(top: isize, clock: u8) -> Capture {
        let (w, h) = (320, 220);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let px = if x < 45 {
                    [(y * 7) as u8, 90, (x * 3) as u8]
                } else if (45..253).contains(&x) && (12..207).contains(&y) {
                    let r = top + (y as isize - 12);
                    let (line, ry) = (r.div_euclid(13) as u64, r.rem_euclid(13) as u64);
                    let (c, cx) = (((x - 45) / 8) as u64, ((x - 45) % 8) as u64);
                    let len = if mix(line).is_multiple_of(5) {
                        0
                    } else {
                        mix(line) % 26
                    };
                    let on = ry < 10
                        && c < len
                        && mix(line << 24 ^ c << 8 ^ cx << 4 ^ ry).is_multiple_of(3);
                    if on { [200, 220, 200] } else { [20, 20, 30] }
                } else if (280..300).contains(&x) && (2..10).contains(&y) {
                    [clock, 255 - clock, 0]
                } else {
                    [(x / 4) as u8, 60, 100]
                };
                rgb.extend_from_slice(&px);
            }
        }
        Capture {
            width: w,
            height: h,
            rgb,
        }
    }

    #[test]
    fn a_scrolled_terminal_goes_as_a_copy_and_composites_back_exactly() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(Duration::from_secs(9));
        let mut reader = Compositor::default();
        // Up by a line, by lines, by 7 and 20 pixels; down by 39 and 13; a clock tick alone.
        let tops = [
            0, 13, 26, 39, 52, 59, 85, 98, 111, 72, 59, 59, 79, 92, 105, 118,
        ];
        let (mut sent, mut without, mut copied) = (0, 0, 0);
        let mut previous: Option<Vec<u64>> = None;
        for (i, &top) in tops.iter().enumerate() {
            let mut shot = desk(top, i as u8 * 9);
            let digests = segment_digests(&shot.pixels());
            let at = t0 + Duration::from_secs(i as u64);
            let u = enc.encode(&shot.pixels(), at).expect("the clock ticks");
            let update = Update::decode(&u.bytes).unwrap();
            assert_eq!(u.copies, update.copies.len());
            assert_eq!(u.bytes[3], if u.copies > 0 { 2 } else { 1 });
            let s = reader.apply(&u.bytes).unwrap();
            assert!(
                s.rgb == shot.rgb,
                "update {i} (top {top}) is not the capture"
            );
            if u.keyframe {
                assert!(update.copies.is_empty(), "a keyframe with a copy");
                assert!(i == 0 || i == 9, "keyframe at {i}");
            } else {
                copied += u.copies;
                sent += update
                    .rects
                    .iter()
                    .map(|r| r.w as usize * r.h as usize)
                    .sum::<usize>();
                let dirty = dirty_tiles(previous.as_ref().unwrap(), &digests, 10, 220, None);
                without += merge_tiles(&dirty, 320, 220)
                    .iter()
                    .map(|r| r.2 * r.3)
                    .sum::<usize>();
            }
            if i == 11 {
                assert_eq!(u.copies, 0, "only the clock changed");
            }
            previous = Some(digests);
        }
        // Every partial update but the clock's tick is a scroll sent as a copy.
        assert_eq!(copied, 13, "scrolls sent as copies");
        eprintln!("{sent} PNG pixels with copies, {without} without");
        assert!(
            sent * 3 < without,
            "{sent} PNG pixels with copies, {without} without"
        );
    }

    #[test]
    fn only_rows_that_moved_together_make_a_copy() {
        let cols = 3;
        let old: Vec<u64> = (0..96 * cols as u64).map(mix).collect();
        // The new screen: columns 0..2 moved up by 5 rows, 5 new rows below; column 2 as it
        // was.
        let mut new: Vec<u64> = (0..96 * cols as u64).map(|v| mix(v + 1_000_000)).collect();
        for y in 0..96 {
            new[y * cols + 2] = old[y * cols + 2];
        }
        for y in 0..91 {
            for tx in 0..2 {
                new[y * cols + tx] = old[(y + 5) * cols + tx];
            }
        }
        let dirty = dirty_tiles(&old, &new, cols, 96, None);
        let (s, left) = detect(&old, &new, cols, 96, &dirty).expect("a scroll");
        assert_eq!(
            s,
            Scroll {
                c0: 0,
                c1: 2,
                src_y: 5,
                dst_y: 0,
                h: 91
            }
        );
        // Only the tile row with the new rows is left to send.
        assert_eq!(dirty.iter().filter(|&&d| d).count(), 6);
        assert_eq!(
            left,
            vec![false, false, false, false, false, false, true, true, false]
        );
        // Rows that repeat (blank) do not vote: no scroll among identical rows.
        let blank = vec![7u64; 96 * cols];
        let mut shifted = blank.clone();
        shifted[0] = 8;
        let d = dirty_tiles(&blank, &shifted, cols, 96, None);
        assert!(detect(&blank, &shifted, cols, 96, &d).is_none());
    }
}
