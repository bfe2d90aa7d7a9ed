//! Stand-in for `mp4.rs` in a build without the `mp4` cargo feature (no ffmpeg linked): every
//! mp4 read or write is refused with [`Error::NoMp4`], before any file is touched.

use std::path::Path;

use crate::error::{Error, Result};
use crate::frames::Frames;

pub(crate) fn write(_tmp: &Path, dest: &Path, _video: &Frames, _fps: f64) -> Result<()> {
    Err(Error::NoMp4 { path: dest.to_path_buf() })
}

pub(crate) fn read(path: &Path) -> Result<Frames> {
    Err(Error::NoMp4 { path: path.to_path_buf() })
}
