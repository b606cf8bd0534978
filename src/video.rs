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

/// Write `frames` (files with capture times, in order) as an MP4 at `out`.
pub fn encode(ffmpeg: &Path, frames: &[(PathBuf, i64)], out: &Path) -> Result<Written, String> {
    if frames.is_empty() {
        return Err("no frames".into());
    }
    if out.exists() {
        return Ok(Written::Kept);
    }
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
            "scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p",
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
}
