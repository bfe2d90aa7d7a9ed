//! Lanczos3 resizing of every frame, as PIL's `Image.resize(..., resample=LANCZOS)` (what
//! diffusers' `VaeImageProcessor` uses for PIL inputs, `resample="lanczos"`): separable,
//! horizontal pass then vertical, PIL's support widening when downscaling (antialiasing) and its
//! coefficient rounding of the window ends. It works on f32 values instead of PIL's 8 bits; each
//! pass clamps to [0, 1] as PIL's 8-bit passes clip.

use crate::frames::Frames;

/// Lanczos window half-width (PIL's `LANCZOS` support).
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// Per output index, the first input index and the normalised weights (PIL's `precompute_coeffs`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // PIL truncates `center ± support + 0.5` towards zero, then clamps to the input.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| lanczos3((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let weights = weights
                .iter()
                .map(|w| if total != 0.0 { (w / total) as f32 } else { *w as f32 })
                .collect();
            (xmin, weights)
        })
        .collect()
}

/// Resizes every frame to `height` x `width` with Lanczos3; returns a copy when the size
/// already matches. A zero target size gives frames with no pixels.
pub fn resize(video: &Frames, height: usize, width: usize) -> Frames {
    if (height, width) == (video.height, video.width) {
        return video.clone();
    }
    let frames = video.frames.min(video.data.len() / video.frame_len().max(1));
    if height == 0 || width == 0 || video.height == 0 || video.width == 0 || frames == 0 {
        return Frames {
            frames,
            height,
            width,
            data: vec![0.0; frames * height * width * 3],
        };
    }
    let (ih, iw) = (video.height, video.width);
    let cols = coefficients(iw, width);
    let rows = coefficients(ih, height);
    let mut data = Vec::with_capacity(frames * height * width * 3);
    let mut horizontal = vec![0f32; ih * width * 3];
    for f in 0..frames {
        let src = video.frame(f);
        if width == iw {
            horizontal.copy_from_slice(src);
        } else {
            for y in 0..ih {
                let row = &src[y * iw * 3..(y + 1) * iw * 3];
                for (x, (start, weights)) in cols.iter().enumerate() {
                    let mut acc = [0f32; 3];
                    for (k, w) in weights.iter().enumerate() {
                        let p = &row[(start + k) * 3..(start + k) * 3 + 3];
                        acc[0] += w * p[0];
                        acc[1] += w * p[1];
                        acc[2] += w * p[2];
                    }
                    let out = &mut horizontal[(y * width + x) * 3..(y * width + x) * 3 + 3];
                    for c in 0..3 {
                        out[c] = acc[c].clamp(0.0, 1.0);
                    }
                }
            }
        }
        if height == ih {
            data.extend_from_slice(&horizontal);
            continue;
        }
        let line = width * 3;
        for (start, weights) in &rows {
            let mut acc = vec![0f32; line];
            for (k, w) in weights.iter().enumerate() {
                let src_row = &horizontal[(start + k) * line..(start + k + 1) * line];
                for (a, v) in acc.iter_mut().zip(src_row) {
                    *a += w * v;
                }
            }
            data.extend(acc.into_iter().map(|v| v.clamp(0.0, 1.0)));
        }
    }
    Frames {
        frames,
        height,
        width,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIL's window for a 2x downscale of 8 -> 4 pixels: centre 1.0 at output 0, support 6.
    #[test]
    fn pil_window_bounds() {
        let c = coefficients(8, 4);
        assert_eq!(c[0].0, 0);
        assert_eq!(c[0].1.len(), 7); // int(1 + 6 + 0.5) = 7
        let sum: f32 = c[0].1.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }
}
