//! `export --video`: a stream's exported frames as an MP4 (H.264) with each frame shown from
//! its capture time to the next one's, made by the system's `ffmpeg` (we do not link a
//! codec). The frames go to ffmpeg's concat demuxer as a list of files with durations.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ffmpeg` on `PATH` (or `SEALSTREAM_FFMPEG`), or an error that names the package.
pub fn find_ffmpeg() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("SEALSTREAM_FFMPEG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("ffmpeg"));
    match Command::new(&candidate).arg("-version").output() {
        Ok(out) if out.status.success() => Ok(candidate),
        _ => Err(format!(
            "--video needs ffmpeg, and {} was not found or does not run: install it (Debian/Ubuntu: `apt-get install ffmpeg`) or drop --video",
            candidate.display()
        )),
    }
}

/// What `encode` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    New,
    /// The video was already there (a resumed export); it was not overwritten.
    Kept,
}

/// Each frame's duration in seconds: until the next frame's capture; the last one shows for
/// the median of the others (one second when there is no other).
fn durations(frames: &[(PathBuf, i64)]) -> Vec<f64> {
    let mut gaps: Vec<f64> = frames
        .windows(2)
        .map(|w| ((w[1].1 - w[0].1).max(1_000)) as f64 / 1e6)
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
    gaps.push(last);
    gaps
}

/// A PNG's width and height, from its IHDR chunk (the first, right after the signature).
fn png_size(path: &Path) -> Result<(u32, u32), String> {
    use std::io::Read;
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if &head[..8] != b"\x89PNG\r\n\x1a\n" || &head[12..16] != b"IHDR" {
        return Err(format!("{}: not a PNG", path.display()));
    }
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    Ok((be(&head[16..20]), be(&head[20..24])))
}

/// The video's frame: the largest width and height among the PNG frames (a frame may be
/// another image an agent sent, which ffmpeg reads as it is), rounded up to even (H.264 in
/// 4:2:0) and at most the largest screen a screen update has; every frame is scaled to fit
/// inside it, aspect kept, and centred on black, so a session whose screen changed size is not
/// stretched to its first size.
fn filter(frames: &[(PathBuf, i64)]) -> String {
    // The largest screen side a screen update may have (docs/format.md "Screen update").
    let max = 16_384;
    let (mut w, mut h) = (0, 0);
    for (path, _) in frames {
        if let Ok((fw, fh)) = png_size(path) {
            w = w.max(fw.min(max).div_ceil(2) * 2);
            h = h.max(fh.min(max).div_ceil(2) * 2);
        }
    }
    if (w, h) == (0, 0) {
        // No PNG to size it by: each frame at its own size, made even.
        return "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p".into();
    }
    format!(
        "scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:black,format=yuv420p"
    )
}

/// Write `frames` (files with capture times, in order) as an MP4 at `out`.
pub fn encode(ffmpeg: &Path, frames: &[(PathBuf, i64)], out: &Path) -> Result<Written, String> {
    if frames.is_empty() {
        return Err("no frames".into());
    }
    if out.exists() {
        return Ok(Written::Kept);
    }
    let filter = filter(frames);
    // ffmpeg reads the list line by line: frames are linked under names of our own (digits),
    // so a frame's name (which may hold any character but `/`) never reaches the list.
    let links = out.with_extension("frames.partial");
    let _ = std::fs::remove_dir_all(&links);
    std::fs::create_dir_all(&links).map_err(|e| format!("{}: {e}", links.display()))?;
    let mut list = String::from("ffconcat version 1.0\n");
    let mut last = String::new();
    for (i, ((path, _), d)) in frames.iter().zip(durations(frames)).enumerate() {
        let link = links.join(format!("{i:08}"));
        std::fs::hard_link(path, &link)
            .or_else(|_| std::fs::copy(path, &link).map(|_| ()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let abs = std::fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
        last = abs.display().to_string().replace('\'', "'\\''");
        list.push_str(&format!("file '{last}'\nduration {d:.6}\n"));
    }
    // The concat demuxer takes the last duration only when the file is listed again.
    list.push_str(&format!("file '{last}'\n"));
    let partial = out.with_extension("mp4.partial");
    let list_path = out.with_extension("ffconcat");
    std::fs::write(&list_path, list).map_err(|e| format!("{}: {e}", list_path.display()))?;
    let result = Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(&list_path)
        .args([
            "-fps_mode",
            "vfr",
            "-vf",
            &filter,
            "-c:v",
            "libx264",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ])
        .arg(&partial)
        .output();
    let _ = std::fs::remove_file(&list_path);
    let _ = std::fs::remove_dir_all(&links);
    let out_cmd = result.map_err(|e| format!("cannot run {}: {e}", ffmpeg.display()))?;
    if !out_cmd.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "ffmpeg failed ({}): {}",
            out_cmd.status,
            String::from_utf8_lossy(&out_cmd.stderr).trim()
        ));
    }
    std::fs::rename(&partial, out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(Written::New)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_lasts_until_the_next_capture() {
        let f = |t: i64| (PathBuf::from("x"), t);
        let d = durations(&[f(0), f(500_000), f(2_500_000)]);
        assert_eq!(d, vec![0.5, 2.0, 2.0]);
        assert_eq!(durations(&[f(7)]), vec![1.0]);
    }

    fn png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        let mut enc = png::Encoder::new(std::fs::File::create(path).unwrap(), w, h);
        enc.set_color(png::ColorType::Rgb);
        let mut out = enc.write_header().unwrap();
        out.write_image_data(&rgb.repeat((w * h) as usize)).unwrap();
    }

    /// A frame an agent sent as another image (JPEG here) is not sized as a PNG: the video is
    /// made from it all the same.
    #[test]
    fn frames_that_are_not_png_make_a_video_too() {
        let ffmpeg = find_ffmpeg().expect("ffmpeg (Debian's ffmpeg; .ci/run installs it)");
        let dir = tempfile::tempdir().unwrap();
        let (jpeg, screen) = (dir.path().join("a.jpg"), dir.path().join("b.png"));
        let made = Command::new(&ffmpeg)
            .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
            .args(["color=c=red:s=64x48", "-frames:v", "1"])
            .arg(&jpeg)
            .status()
            .unwrap();
        assert!(made.success());
        png(&screen, 64, 48, [200, 200, 200]);
        for (i, frames) in [vec![(jpeg.clone(), 0)], vec![(jpeg, 0), (screen, 500_000)]]
            .into_iter()
            .enumerate()
        {
            let out = dir.path().join(format!("v{i}.mp4"));
            assert_eq!(encode(&ffmpeg, &frames, &out).unwrap(), Written::New);
            assert!(out.metadata().unwrap().len() > 0);
        }
    }

    /// A screen that changed size: the video is as large as the largest screen and a smaller
    /// one sits in it unstretched, on black (ffmpeg alone would stretch every frame to the
    /// first one's size).
    #[test]
    fn a_session_whose_screen_grew_is_not_stretched() {
        let ffmpeg = find_ffmpeg().expect("ffmpeg (Debian's ffmpeg; .ci/run installs it)");
        let dir = tempfile::tempdir().unwrap();
        let (small, large) = (dir.path().join("a.png"), dir.path().join("b.png"));
        png(&small, 64, 48, [200, 200, 200]);
        png(&large, 128, 48, [200, 200, 200]);
        let out = dir.path().join("v.mp4");
        let frames = [(small, 0), (large, 1_000_000)];
        assert_eq!(encode(&ffmpeg, &frames, &out).unwrap(), Written::New);
        let raw = Command::new(&ffmpeg)
            .args(["-nostdin", "-loglevel", "error", "-i"])
            .arg(&out)
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .unwrap();
        assert!(raw.status.success());
        // The first frame, 64x48 inside 128x48: 32 columns of black each side.
        assert_eq!(raw.stdout.len(), 128 * 48, "the video is 128x48");
        let row = &raw.stdout[24 * 128..25 * 128];
        assert!(row[..24].iter().all(|&v| v < 40), "left bar: {row:?}");
        assert!(row[104..].iter().all(|&v| v < 40), "right bar: {row:?}");
        assert!(row[40..88].iter().all(|&v| v > 160), "the screen: {row:?}");
    }
}
