//! [`Frames`]: a video held the way diffusers returns it with `output_type="np"`, as
//! `(frames, height, width, 3)` f32 RGB values in [0, 1], C order, plus the 8-bit conversions
//! diffusers uses (`numpy_to_pil`: `(x * 255).round()`).

use crate::error::{Error, Result};

/// A video as diffusers' `output_type="np"` frames: `(frames, height, width, 3)` f32 in [0, 1],
/// C order (frame, row, column, RGB channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// `frames * height * width * 3`, or `None` on overflow.
pub(crate) fn element_count(frames: usize, height: usize, width: usize) -> Option<usize> {
    frames.checked_mul(height)?.checked_mul(width)?.checked_mul(3)
}

fn check_len(frames: usize, height: usize, width: usize, len: usize) -> Result<()> {
    match element_count(frames, height, width) {
        Some(n) if n == len => Ok(()),
        Some(n) => Err(Error::InvalidFrames(format!(
            "a video of {frames} frames of {width}x{height} RGB needs {n} values, got {len}"
        ))),
        None => Err(Error::InvalidFrames(format!(
            "a video of {frames} frames of {width}x{height} is too large to hold in memory"
        ))),
    }
}

impl Frames {
    /// Wraps `data` (`frames * height * width * 3` values, C order); errors when the length does
    /// not match.
    pub fn new(frames: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        check_len(frames, height, width, data.len())?;
        Ok(Frames {
            frames,
            height,
            width,
            data,
        })
    }

    /// Converts 8-bit RGB (`frames * height * width * 3` bytes) to [0, 1] floats (`x / 255`).
    pub fn from_u8(frames: usize, height: usize, width: usize, data: &[u8]) -> Result<Self> {
        check_len(frames, height, width, data.len())?;
        let data = data.iter().map(|&v| v as f32 / 255.0).collect();
        Ok(Frames {
            frames,
            height,
            width,
            data,
        })
    }

    /// Values per frame (`height * width * 3`).
    pub fn frame_len(&self) -> usize {
        self.height * self.width * 3
    }

    /// Frame `i` as `(height, width, 3)` values. Panics if `i >= self.frames`, like slice indexing.
    pub fn frame(&self, i: usize) -> &[f32] {
        let n = self.frame_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// 8-bit RGB as diffusers' `numpy_to_pil` makes it: `(x * 255).round()`, clamped to 0..=255
    /// (NaN becomes 0).
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8(v)).collect()
    }

    /// Checks that the fields agree with each other and that the video is not empty, before
    /// writing it to `path`.
    pub(crate) fn check_writable(&self, path: &std::path::Path) -> Result<()> {
        let invalid = |message: String| Error::InvalidVideo {
            path: path.to_path_buf(),
            message,
        };
        if self.frames == 0 {
            return Err(invalid("the video has no frames".into()));
        }
        if self.height == 0 || self.width == 0 {
            return Err(invalid(format!(
                "the frames are {}x{}; width and height must be at least 1",
                self.width, self.height
            )));
        }
        check_len(self.frames, self.height, self.width, self.data.len()).map_err(|e| invalid(e.to_string()))
    }
}

/// One value to 8 bits: `(x * 255).round()` clamped (NaN → 0, as a saturating cast gives).
pub(crate) fn to_u8(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}
