//! `[capture]` in agent.toml: where an agent's recordings come from and, for a live source,
//! how it records (docs/capture.md).

use std::path::PathBuf;

use serde::Deserialize;

/// Which capture source `sealstream agent` runs when the command line names none.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    /// Generated users (a demo or a load test; `--users`, `--duration`).
    #[default]
    Synthetic,
    /// Every X display on this host, one session each.
    X11,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    pub source: CaptureSource,
    /// Only these displays (`":10"`); empty: every display found in /tmp/.X11-unix.
    pub displays: Vec<String>,
    /// Most screen updates per second.
    pub fps: f64,
    /// Screens wider than this are scaled down to it (0: never).
    pub max_width: u32,
    /// A keyframe at the first change at least this long after the last one.
    pub keyframe_seconds: u64,
    /// Draw the pointer into the frames.
    pub cursor: bool,
    /// Windows whose WM_CLASS matches one of these patterns (`*` and `?`, any case) are
    /// blacked out in frames and their keystrokes are not recorded ...
    pub exclude_classes: Vec<String>,
    /// ... nor windows whose title matches one of these.
    pub exclude_titles: Vec<String>,
    /// While this file exists, nothing is recorded (an activity event says so).
    pub pause_file: Option<PathBuf>,
    /// No input for this long makes the session idle (an activity event); input makes it
    /// active again.
    pub idle_seconds: u64,
    /// Keystroke and activity events are sealed at least this often while they come.
    pub batch_ms: u64,
    /// How often the host is searched for displays that appeared.
    pub discover_ms: u64,
    /// Where the X server sockets are.
    pub socket_dir: PathBuf,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: CaptureSource::Synthetic,
            displays: Vec::new(),
            fps: 1.0,
            max_width: 0,
            keyframe_seconds: 30,
            cursor: true,
            exclude_classes: Vec::new(),
            exclude_titles: Vec::new(),
            pause_file: None,
            idle_seconds: 300,
            batch_ms: 2_000,
            discover_ms: 2_000,
            socket_dir: PathBuf::from("/tmp/.X11-unix"),
        }
    }
}

impl CaptureConfig {
    /// Why these settings cannot record, if they cannot.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(self.fps > 0.0 && self.fps <= 60.0) {
            return Some(("capture.fps", format!("{} is not in (0, 60]", self.fps)));
        }
        if self.keyframe_seconds == 0 {
            return Some(("capture.keyframe_seconds", "must be at least 1".into()));
        }
        if self.max_width != 0 && self.max_width < 64 {
            return Some(("capture.max_width", "0 (off) or at least 64".into()));
        }
        for d in &self.displays {
            if parse_display(d).is_none() {
                return Some((
                    "capture.displays",
                    format!("{d:?} is not a display like \":10\""),
                ));
            }
        }
        None
    }
}

/// `":10"`, `":10.0"` or `"10"` → 10.
pub fn parse_display(d: &str) -> Option<u32> {
    let d = d.trim();
    let d = d.strip_prefix(':').unwrap_or(d);
    let d = d.split('.').next()?;
    d.parse().ok()
}
