//! A synthetic capture source: N user sessions, each producing screen frames (realistic sizes,
//! about one per second) and keystroke batches (every two seconds), so a load or a demo needs
//! no real desktop. Deterministic for a given seed.

use std::time::Duration;

use crate::protocol::Kind;

/// Text carried in every synthetic frame and keystroke event, so tests can prove it never
/// reaches the server in the clear.
pub const CANARY: &str = "sealstream-synthetic-canary";

#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub users: usize,
    pub duration: Duration,
    /// Mean time between frames per user.
    pub frame_interval: Duration,
    /// Mean frame size in bytes.
    pub frame_size: usize,
    /// Sizes spread evenly over `frame_size × (1 ± spread)`; 0 gives fixed-size frames.
    pub frame_size_spread: f64,
    pub keystroke_interval: Duration,
    pub keystroke_events: usize,
    pub seed: u64,
    /// Frames as real PNG images of random pixels (viewable in the console) instead of a PNG
    /// signature followed by random bytes. Costs a CRC-32 and Adler-32 pass per frame, so the
    /// load scenarios leave it off.
    pub images: bool,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            users: 5,
            duration: Duration::from_secs(10),
            frame_interval: Duration::from_secs(1),
            frame_size: 64 * 1024,
            frame_size_spread: 0.75,
            keystroke_interval: Duration::from_secs(2),
            keystroke_events: 20,
            seed: 1,
            images: false,
        }
    }
}

/// A small deterministic generator (xorshift64*), enough for synthetic content.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// One user's next frame: a PNG signature, the canary, then incompressible bytes; its size is
/// spread evenly over `mean × (1 ± spread)`.
pub fn frame(rng: &mut Rng, mean: usize, spread: f64, n: u64) -> (String, Vec<u8>) {
    let size = frame_size(rng, mean, spread);
    let mut img = Vec::with_capacity(size);
    img.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    img.extend_from_slice(CANARY.as_bytes());
    let start = img.len();
    img.resize(size.max(start), 0);
    rng.fill(&mut img[start..]);
    (format!("screen-{n:06}.png"), img)
}

fn frame_size(rng: &mut Rng, mean: usize, spread: f64) -> usize {
    let spread = spread.clamp(0.0, 1.0);
    let low = (mean as f64 * (1.0 - spread)) as usize;
    let width = (mean as f64 * 2.0 * spread) as u64;
    (low + rng.below(width + 1) as usize).max(64)
}

/// `frame`, as a real PNG of random pixels of about the same size, the canary in a `tEXt` chunk.
pub fn image_frame(rng: &mut Rng, mean: usize, spread: f64, n: u64) -> (String, Vec<u8>) {
    let size = frame_size(rng, mean, spread);
    // Bytes beyond the pixels: signature, IHDR, tEXt, IDAT framing, IEND, a stored block header
    // per 64 KiB.
    let overhead = 8 + 25 + 12 + 8 + CANARY.len() + 12 + 6 + 12 + 5 * (size / 65_535 + 1);
    let budget = size.saturating_sub(overhead).max(3 * 16 * 9 + 9);
    let w = ((budget as f64 / 3.0 * 16.0 / 9.0).sqrt() as usize).max(16);
    let h = (budget / (3 * w + 1)).max(1);
    let mut rgb = vec![0u8; w * h * 3];
    rng.fill(&mut rgb);
    let png = png(w as u32, h as u32, &rgb, Some(("Comment", CANARY)));
    (format!("screen-{n:06}.png"), png)
}

/// A PNG file (8-bit RGB, no compression: stored deflate blocks) of `w × h` pixels, with an
/// optional `tEXt` keyword and text.
pub fn png(w: u32, h: u32, rgb: &[u8], text: Option<(&str, &str)>) -> Vec<u8> {
    assert_eq!(rgb.len(), w as usize * h as usize * 3, "w × h RGB pixels");
    let mut raw = Vec::with_capacity(rgb.len() + h as usize);
    for row in rgb.chunks(w as usize * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = Vec::with_capacity(raw.len() + raw.len() / 65_535 * 5 + 11);
    z.extend_from_slice(&[0x78, 0x01]);
    let blocks = raw.chunks(65_535).count();
    for (i, b) in raw.chunks(65_535).enumerate() {
        z.push(u8::from(i + 1 == blocks));
        z.extend_from_slice(&(b.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in raw.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut put = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    put(b"IHDR", &ihdr);
    if let Some((key, value)) = text {
        put(b"tEXt", &[key.as_bytes(), &[0], value.as_bytes()].concat());
    }
    put(b"IDAT", &z);
    put(b"IEND", &[]);
    out
}

/// CRC-32 (ISO-HDLC, as PNG uses), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (n, e) in t.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        t[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// One user's next keystroke batch: JSON lines with timestamps, application and key.
pub fn keystrokes(rng: &mut Rng, user: usize, events: usize, now_ms: i64) -> Vec<Vec<u8>> {
    const KEYS: &[&str] = &[
        "a",
        "e",
        "i",
        "o",
        "n",
        "s",
        "t",
        "r",
        " ",
        "Enter",
        "Backspace",
        "Tab",
    ];
    const APPS: &[&str] = &[
        "WINWORD.EXE",
        "chrome.exe",
        "OUTLOOK.EXE",
        "cmd.exe",
        "notepad.exe",
    ];
    let app = APPS[rng.below(APPS.len() as u64) as usize];
    (0..events)
        .map(|i| {
            let key = KEYS[rng.below(KEYS.len() as u64) as usize];
            serde_json::json!({
                "ts": now_ms + i as i64 * 90,
                "user": format!("user{user:03}"),
                "app": app,
                "window": CANARY,
                "key": key,
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

/// The kinds a synthetic user records.
pub const KINDS: [Kind; 2] = [Kind::Frame, Kind::Keystrokes];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_sized_around_the_mean() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(frame(&mut a, 65536, 0.75, 1), frame(&mut b, 65536, 0.75, 1));
        assert_eq!(frame(&mut a, 65536, 0.0, 2).1.len(), 65536);
        let mut r = Rng::new(3);
        let sizes: Vec<usize> = (0..200)
            .map(|i| frame(&mut r, 65536, 0.75, i).1.len())
            .collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((40_000..100_000).contains(&mean), "mean {mean}");
        let ks = keystrokes(&mut r, 3, 20, 0);
        assert_eq!(ks.len(), 20);
        assert!(crate::protocol::payload::check_keystroke_event(&ks[0]).is_ok());
    }

    #[test]
    fn image_frames_are_pngs_of_about_the_asked_size() {
        let mut r = Rng::new(9);
        for target in [8 * 1024, 64 * 1024, 300 * 1024] {
            let (_, png) = image_frame(&mut r, target, 0.0, 0);
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
            assert!(
                png.len() <= target && png.len() > target * 95 / 100,
                "{} for {target}",
                png.len()
            );
            // Every PNG ends with the same IEND chunk and CRC.
            assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
            assert!(png.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
            let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
            let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
            assert!(w >= 16 && h >= 1);
        }
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926, "the CRC-32 check value");
    }
}
