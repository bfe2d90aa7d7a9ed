//! reel-video: video in and out for reel's pipelines.
//!
//! A video is [`Frames`]: what diffusers returns with `output_type="np"`, `(frames, height,
//! width, 3)` f32 RGB in [0, 1]. [`write`] and [`read`] move it to and from
//!
//! - **mp4**: H.264 (libx264 through ffmpeg / video-rs), yuv420p, BT.709 limited range, at
//!   [`WriteOptions::fps`]; every frame is counted by players and ffprobe. Width and height must
//!   be even. Reading accepts any container ffmpeg demuxes (`.mp4 .m4v .mov .mkv .webm .avi`).
//!   Cargo feature `mp4` (default); a build without it (no ffmpeg libraries needed, e.g. a GPU
//!   box) refuses these paths with an [`Error::NoMp4`] that names the other formats.
//! - **gif**: a palette per frame (NeuQuant), delay `round(100 / fps)` centiseconds, looping
//!   forever; read back composited to full frames.
//! - **png frames**: a folder of `frame_0000.png`, `frame_0001.png`, ... (8-bit RGB); read back
//!   as every `.png` in a folder, sorted by file name.
//! - **npy**: float32 `(frames, height, width, 3)`, exact (a leading batch axis of 1 is accepted
//!   on read).
//!
//! The format comes from the path ([`Format::for_output`], [`Format::for_input`]). 8-bit
//! formats quantize as diffusers' `numpy_to_pil`: `(x * 255).round()`.
//!
//! Outputs are atomic: written to a temporary file or folder beside the destination and renamed
//! into place when complete; on any error nothing is left at the destination. A png-frames
//! destination that already exists must be a folder that is empty or holds only
//! `frame_<digits>.png` files from an earlier run; those are replaced as a whole, anything else
//! is refused. Bad input is an [`Error`] saying what to do, never a panic.
//!
//! [`resize`] resizes every frame with Lanczos3, as PIL (and so diffusers' image processors) do.

mod error;
mod format;
mod frames;
mod gif_file;
#[cfg(feature = "mp4")]
mod mp4;
#[cfg(not(feature = "mp4"))]
#[path = "mp4_absent.rs"]
mod mp4;
mod npy_file;
mod output;
mod png_frames;
mod resize;

use std::path::Path;

pub use error::{Error, Result};
pub use format::Format;
pub use frames::Frames;
pub use resize::resize;

/// How to write a video.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Frames per second for mp4 and gif (ignored by npy and png frames). Default 8, diffusers'
    /// `export_to_video` default.
    pub fps: f64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { fps: 8.0 }
    }
}

/// The frame rates accepted.
const MIN_FPS: f64 = 0.001;
const MAX_FPS: f64 = 1000.0;

/// Writes `video` to `path` in the format its name gives ([`Format::for_output`]), atomically.
///
/// Errors on an unknown extension, a missing parent folder, an empty video (no frames or a zero
/// size), an fps outside 0.001..=1000, odd sizes for mp4, or a png-frames folder
/// holding anything but earlier `frame_<digits>.png` files.
pub fn write(path: &Path, video: &Frames, options: &WriteOptions) -> Result<()> {
    let format = Format::for_output(path)?;
    video.check_writable(path)?;
    let fps = options.fps;
    if !(MIN_FPS..=MAX_FPS).contains(&fps) {
        return Err(Error::InvalidVideo {
            path: path.to_path_buf(),
            message: format!("fps must be a number from {MIN_FPS} to {MAX_FPS}, got {fps}"),
        });
    }
    output::parent_dir(path)?;
    match format {
        Format::Npy => npy_file::write(path, video),
        Format::Mp4 => {
            if !video.width.is_multiple_of(2) || !video.height.is_multiple_of(2) {
                return Err(Error::OddSize {
                    path: path.to_path_buf(),
                    width: video.width,
                    height: video.height,
                });
            }
            output::write_file(path, |tmp| mp4::write(tmp, path, video, fps))
        }
        Format::Gif => output::write_file(path, |tmp| gif_file::write(tmp, path, video, fps)),
        Format::PngFrames => output::write_folder(path, |dir| png_frames::write_into(dir, path, video)),
    }
}

/// Reads the video at `path` ([`Format::for_input`]): an mp4 (or another container ffmpeg
/// reads: `.m4v .mov .mkv .webm .avi`), a `.gif`, a folder of `.png` frames (sorted by file
/// name) or a `.npy` float32 `(frames, height, width, 3)` / `(1, frames, height, width, 3)` in
/// [0, 1].
pub fn read(path: &Path) -> Result<Frames> {
    match Format::for_input(path)? {
        Format::Mp4 => mp4::read(path),
        Format::Gif => gif_file::read(path),
        Format::PngFrames => png_frames::read(path),
        Format::Npy => npy_file::read(path),
    }
}
