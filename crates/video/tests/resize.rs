//! Lanczos3 resizing: identity at the same size, constants stay constant, and a smooth
//! gradient resampled at the new size.

use reel_video::{resize, Frames};

fn gradient(height: usize, width: usize) -> impl Fn(f64, f64) -> [f32; 3] {
    // A smooth function of the continuous position (x, y) in [0, 1]^2.
    let _ = (height, width);
    |x: f64, y: f64| {
        [
            (0.1 + 0.8 * x) as f32,
            (0.2 + 0.6 * y) as f32,
            (0.5 + 0.3 * (std::f64::consts::PI * x).sin() * (std::f64::consts::PI * y).cos()) as f32,
        ]
    }
}

/// Samples `f` at pixel centres.
fn sampled(frames: usize, height: usize, width: usize, f: &dyn Fn(f64, f64) -> [f32; 3]) -> Frames {
    let mut data = Vec::new();
    for _ in 0..frames {
        for y in 0..height {
            for x in 0..width {
                data.extend(f((x as f64 + 0.5) / width as f64, (y as f64 + 0.5) / height as f64));
            }
        }
    }
    Frames::new(frames, height, width, data).unwrap()
}

#[test]
fn identity_at_the_same_size() {
    let video = sampled(2, 12, 10, &gradient(12, 10));
    assert_eq!(resize(&video, 12, 10), video);
}

#[test]
fn constant_frames_stay_constant() {
    let video = Frames::new(2, 30, 40, vec![0.3; 2 * 30 * 40 * 3]).unwrap();
    for (h, w) in [(17, 23), (64, 48), (30, 7), (5, 40), (1, 1)] {
        let out = resize(&video, h, w);
        assert_eq!(
            (out.frames, out.height, out.width, out.data.len()),
            (2, h, w, 2 * h * w * 3)
        );
        let worst = out.data.iter().map(|v| (v - 0.3).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-6, "{h}x{w}: {worst}");
    }
    // Extremes stay within [0, 1] (Lanczos overshoot is clamped).
    let mut data = vec![0.0; 16 * 16 * 3];
    for (i, v) in data.iter_mut().enumerate() {
        *v = ((i / 3 / 4) % 2) as f32;
    }
    let out = resize(&Frames::new(1, 16, 16, data).unwrap(), 40, 40);
    assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn downscaled_gradient_matches_the_gradient_at_the_new_size() {
    let f = gradient(96, 128);
    let video = sampled(1, 96, 128, &f);
    for (h, w) in [(48, 64), (30, 50), (120, 160)] {
        let out = resize(&video, h, w);
        let expected = sampled(1, h, w, &f);
        // Away from the borders (where the window is cut) Lanczos reproduces a smooth
        // function closely; at the borders it is still close.
        let mut worst_inner = 0f32;
        let mut worst = 0f32;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let i = (y * w + x) * 3 + c;
                    let d = (out.data[i] - expected.data[i]).abs();
                    worst = worst.max(d);
                    if (4..h - 4).contains(&y) && (4..w - 4).contains(&x) {
                        worst_inner = worst_inner.max(d);
                    }
                }
            }
        }
        assert!(worst_inner < 2e-3, "{h}x{w}: interior error {worst_inner}");
        assert!(worst < 0.02, "{h}x{w}: error {worst}");
    }
}

#[test]
fn zero_sizes_do_not_panic() {
    let video = Frames::new(1, 4, 4, vec![0.5; 48]).unwrap();
    assert!(resize(&video, 0, 4).data.is_empty());
    let empty = Frames::new(0, 4, 4, vec![]).unwrap();
    assert_eq!(resize(&empty, 2, 2).frames, 0);
}
