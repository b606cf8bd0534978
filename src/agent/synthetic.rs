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
    let spread = spread.clamp(0.0, 1.0);
    let low = (mean as f64 * (1.0 - spread)) as usize;
    let width = (mean as f64 * 2.0 * spread) as u64;
    let size = (low + rng.below(width + 1) as usize).max(64);
    let mut img = Vec::with_capacity(size);
    img.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    img.extend_from_slice(CANARY.as_bytes());
    let start = img.len();
    img.resize(size.max(start), 0);
    rng.fill(&mut img[start..]);
    (format!("screen-{n:06}.png"), img)
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
}
