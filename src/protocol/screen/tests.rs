//! Unit tests of screen updates: layout, versions 1 and 2, compositing.

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
        copies: vec![],
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
        copies: vec![],
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
    let mut v3 = update(false, 4, 4, &[(0, 0, 1, 1, [1, 1, 1])]);
    v3[3] = 3;
    let err = Update::decode(&v3).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedVersion { version: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("version 3"), "{err}");
    assert!(c.apply(&v3).is_err());
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

/// A screen whose every pixel differs from the others (so any misplaced copy shows).
fn numbered(w: u16, h: u16) -> Screen {
    let rgb = (0..w as usize * h as usize)
        .flat_map(|i| [i as u8, (i >> 8) as u8, 77])
        .collect();
    Screen {
        width: w,
        height: h,
        rgb,
    }
}

fn with_copies(w: u16, h: u16, copies: &[CopyRect], rects: &[Rect<'_>]) -> Vec<u8> {
    Update {
        keyframe: false,
        width: w,
        height: h,
        copies: copies.to_vec(),
        rects: rects.to_vec(),
    }
    .encode()
}

fn cp(sx: u16, sy: u16, w: u16, h: u16, dx: u16, dy: u16) -> CopyRect {
    CopyRect {
        sx,
        sy,
        w,
        h,
        dx,
        dy,
    }
}

/// What a copy makes, the slow way: the source read into a buffer, then written.
fn copied_through_a_buffer(s: &Screen, c: &CopyRect) -> Screen {
    let mut out = s.clone();
    let mut buf = Vec::new();
    for j in 0..c.h as usize {
        for i in 0..c.w as usize {
            buf.push(px(s, c.sx as usize + i, c.sy as usize + j));
        }
    }
    for j in 0..c.h as usize {
        for i in 0..c.w as usize {
            let at = ((c.dy as usize + j) * s.width as usize + c.dx as usize + i) * 3;
            out.rgb[at..at + 3].copy_from_slice(&buf[j * c.w as usize + i]);
        }
    }
    out
}

#[test]
fn overlapping_copies_move_pixels_as_through_a_buffer() {
    let (w, h) = (40u16, 30u16);
    let start = numbered(w, h);
    let key_png = encode_png(w, h, &start.rgb, png::Compression::Fast);
    let key = Update {
        keyframe: true,
        width: w,
        height: h,
        copies: vec![],
        rects: vec![Rect {
            x: 0,
            y: 0,
            w,
            h,
            png: &key_png,
        }],
    }
    .encode();
    let cases = [
        cp(0, 3, 40, 27, 0, 0),   // scroll up by 3
        cp(0, 0, 40, 25, 0, 5),   // scroll down by 5
        cp(5, 1, 20, 20, 2, 0),   // up and left
        cp(2, 0, 20, 20, 9, 1),   // down and right
        cp(3, 4, 30, 10, 7, 4),   // along its own rows, right
        cp(7, 4, 30, 10, 3, 4),   // along its own rows, left
        cp(10, 10, 5, 5, 10, 10), // onto itself
    ];
    for c in cases {
        let mut comp = Compositor::default();
        comp.apply(&key).unwrap();
        let want = copied_through_a_buffer(&start, &c);
        let got = comp.apply(&with_copies(w, h, &[c], &[])).unwrap();
        assert!(got == &want, "{c:?} is not as through a buffer");
        let moved = (c.sx, c.sy) != (c.dx, c.dy);
        assert_eq!(got != &start, moved, "{c:?}");
    }
    // Copies in order, then rectangles over them; the version byte follows the copies.
    let mut comp = Compositor::default();
    comp.apply(&key).unwrap();
    let (a, b) = (cp(0, 3, 40, 27, 0, 0), cp(0, 0, 10, 10, 20, 15));
    let red = encode_png(40, 3, &solid(40, 3, [255, 0, 0]), png::Compression::Fast);
    let rect = Rect {
        x: 0,
        y: 27,
        w: 40,
        h: 3,
        png: &red,
    };
    let bytes = with_copies(w, h, &[a, b], std::slice::from_ref(&rect));
    assert_eq!(bytes[3], 2);
    assert_eq!(with_copies(w, h, &[], std::slice::from_ref(&rect))[3], 1);
    let decoded = Update::decode(&bytes).unwrap();
    assert_eq!(
        (decoded.copies.clone(), decoded.rects.len()),
        (vec![a, b], 1)
    );
    let mut want = copied_through_a_buffer(&copied_through_a_buffer(&start, &a), &b);
    want.paint(0, 27, 40, 3, &solid(40, 3, [255, 0, 0]));
    assert!(
        comp.apply(&bytes).unwrap() == &want,
        "copies, then the rectangle"
    );
}

#[test]
fn malformed_version_2_updates_are_refused_and_leave_the_screen() {
    let (w, h) = (16u16, 8u16);
    let start = numbered(w, h);
    let key_png = encode_png(w, h, &start.rgb, png::Compression::Fast);
    let whole = Rect {
        x: 0,
        y: 0,
        w,
        h,
        png: &key_png,
    };
    let mut comp = Compositor::default();
    comp.apply(&with_copies(w, h, &[], std::slice::from_ref(&whole)))
        .unwrap();
    let ok = cp(0, 1, 16, 7, 0, 0);
    let mut bad: Vec<(&str, Vec<u8>)> = [
        ("source past the right edge", cp(1, 0, 16, 2, 0, 0)),
        ("source past the bottom", cp(0, 1, 4, 8, 0, 0)),
        ("destination past the right edge", cp(0, 0, 4, 2, 13, 0)),
        ("destination past the bottom", cp(0, 0, 4, 2, 0, 7)),
        ("empty width", cp(0, 0, 0, 2, 0, 0)),
        ("empty height", cp(0, 0, 2, 0, 0, 0)),
        ("far outside (no u16 wrap)", cp(65_535, 0, 2, 2, 0, 0)),
    ]
    .into_iter()
    .map(|(why, c)| (why, with_copies(w, h, &[ok, c], &[])))
    .collect();
    bad.push((
        "a keyframe with a copy",
        Update {
            keyframe: true,
            width: w,
            height: h,
            copies: vec![ok],
            rects: vec![whole.clone()],
        }
        .encode(),
    ));
    bad.push((
        "no copy and no rectangle",
        vec![b'S', b'S', b'U', 2, 0, 0, 16, 0, 8, 0, 0, 0, 0],
    ));
    let too_many = MAX_COPIES as usize + 1;
    let mut many = vec![b'S', b'S', b'U', 2, 0, 0, 16, 0, 8];
    many.extend_from_slice(&(too_many as u16).to_be_bytes());
    many.extend(std::iter::repeat_n([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0], too_many).flatten());
    many.extend_from_slice(&[0, 0]);
    bad.push(("4,097 copies", many));
    let mut cut = with_copies(w, h, &[ok], &[]);
    cut.truncate(cut.len() - 3);
    bad.push(("cut inside a copy", cut));
    let mut trailing = with_copies(w, h, &[ok], &[]);
    trailing.push(0);
    bad.push(("a byte after the end", trailing));
    for (why, bytes) in &bad {
        assert!(Update::decode(bytes).is_err(), "{why} accepted");
        assert!(comp.apply(bytes).is_err(), "{why} applied");
        assert!(comp.screen().unwrap() == &start, "{why} changed the screen");
    }
    // The same update with only the good copy is fine (so each case fails for its reason),
    // and so is a version-2 update with rectangles and no copy.
    assert!(comp.apply(&with_copies(w, h, &[ok], &[])).is_ok());
    let mut bare = with_copies(w, h, &[], std::slice::from_ref(&whole));
    bare[3] = 2;
    bare.splice(9..9, [0, 0]);
    assert!(
        comp.apply(&bare).unwrap() == &start,
        "version 2 without a copy"
    );
}
