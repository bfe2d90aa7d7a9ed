//! `.npy` videos through `reel_core::npy`: float32 `(frames, height, width, 3)` in [0, 1], as
//! diffusers returns with `output_type="np"` (a leading batch axis of 1 is accepted on read).

use std::path::Path;

use crate::error::{Error, Result};
use crate::frames::Frames;

/// Values further than this outside [0, 1] are refused (a [-1, 1] or 0..255 array by mistake).
const RANGE_SLACK: f32 = 0.01;

pub(crate) fn write(path: &Path, video: &Frames) -> Result<()> {
    Ok(reel_core::npy::write(
        path,
        &[video.frames, video.height, video.width, 3],
        &video.data,
    )?)
}

pub(crate) fn read(path: &Path) -> Result<Frames> {
    let array = reel_core::npy::read(path)?;
    let bad = |message: String| Error::Read {
        path: path.to_path_buf(),
        format: "npy",
        message,
    };
    let dims = match array.shape.as_slice() {
        &[f, h, w, 3] | &[1, f, h, w, 3] => (f, h, w),
        shape => {
            return Err(bad(format!(
                "shape {shape:?}; expected (frames, height, width, 3) or (1, frames, height, width, 3), channels last, as diffusers' output_type=\"np\""
            )))
        }
    };
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in &array.data {
        if !v.is_finite() {
            return Err(bad("it holds NaN or infinite values".into()));
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo < -RANGE_SLACK || hi > 1.0 + RANGE_SLACK {
        return Err(bad(format!(
            "values range from {lo} to {hi}; expected [0, 1] (for [-1, 1] data use (x + 1) / 2, for 0..255 use x / 255)"
        )));
    }
    let (f, h, w) = dims;
    Frames::new(f, h, w, array.data).map_err(|e| bad(e.to_string()))
}
