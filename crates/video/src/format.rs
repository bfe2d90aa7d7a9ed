//! [`Format`]: which kind of video a path names, by its extension (`.mp4`, `.gif`, `.npy`) or
//! because it is a folder (png frames).

use std::path::Path;

use crate::error::{Error, Result};

const OUTPUT_KNOWN: &str = "reel writes .mp4 (H.264), .gif, .npy (float32 (frames, height, width, 3)) or png frames into a folder (a path with no extension, an existing folder, or one ending in '/')";
const INPUT_KNOWN: &str = "reel reads .mp4 (and .m4v .mov .mkv .webm .avi through ffmpeg), .gif, .npy (float32 (frames, height, width, 3) or (1, frames, height, width, 3) in [0, 1]) or a folder of .png frames";

/// Container extensions read through ffmpeg (as [`Format::Mp4`]).
const FFMPEG_INPUTS: &[&str] = &["mp4", "m4v", "mov", "mkv", "webm", "avi"];

/// A video file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// H.264 in mp4 when writing; when reading, any container in `FFMPEG_INPUTS` (decoded by
    /// ffmpeg).
    Mp4,
    /// An animated gif.
    Gif,
    /// A folder of `frame_0000.png`, `frame_0001.png`, ... (8-bit RGB).
    PngFrames,
    /// A float32 `.npy` array `(frames, height, width, 3)` in [0, 1] (diffusers `output_type="np"`).
    Npy,
}

fn extension(path: &Path) -> Option<String> {
    path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// [`Format::Mp4`] where this build links ffmpeg (feature `mp4`), else [`Error::NoMp4`].
fn mp4_supported(path: &Path) -> Result<Format> {
    if cfg!(feature = "mp4") {
        Ok(Format::Mp4)
    } else {
        Err(Error::NoMp4 { path: path.to_path_buf() })
    }
}

fn ends_with_separator(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    s.ends_with('/') || s.ends_with(std::path::MAIN_SEPARATOR)
}

impl Format {
    /// The format to write `path` as: `.mp4`, `.gif`, `.npy` by extension (any case); a path with
    /// no extension, an existing folder or a path ending in '/' is a folder of png frames;
    /// anything else is an error naming the known formats. In a build without the `mp4` feature
    /// an `.mp4` path is [`Error::NoMp4`].
    pub fn for_output(path: &Path) -> Result<Format> {
        if path.is_dir() || ends_with_separator(path) {
            return Ok(Format::PngFrames);
        }
        match extension(path).as_deref() {
            None => Ok(Format::PngFrames),
            Some("mp4") => mp4_supported(path),
            Some("gif") => Ok(Format::Gif),
            Some("npy") => Ok(Format::Npy),
            Some(_) => Err(Error::UnknownFormat {
                path: path.to_path_buf(),
                known: OUTPUT_KNOWN,
            }),
        }
    }

    /// The format to read `path` as: a folder is png frames; otherwise by extension (`.gif`,
    /// `.npy`, or a container ffmpeg reads: `.mp4 .m4v .mov .mkv .webm .avi`). A missing path
    /// is [`Error::NotFound`]; an ffmpeg container in a build without the `mp4` feature is
    /// [`Error::NoMp4`].
    pub fn for_input(path: &Path) -> Result<Format> {
        if path.is_dir() {
            return Ok(Format::PngFrames);
        }
        if !path.exists() {
            return Err(Error::NotFound {
                path: path.to_path_buf(),
            });
        }
        match extension(path).as_deref() {
            Some("gif") => Ok(Format::Gif),
            Some("npy") => Ok(Format::Npy),
            Some(e) if FFMPEG_INPUTS.contains(&e) => mp4_supported(path),
            _ => Err(Error::UnknownFormat {
                path: path.to_path_buf(),
                known: INPUT_KNOWN,
            }),
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mp4 => "mp4",
            Format::Gif => "gif",
            Format::PngFrames => "png frames",
            Format::Npy => "npy",
        }
    }
}
