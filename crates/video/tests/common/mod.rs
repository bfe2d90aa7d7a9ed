//! Helpers shared by the reel-video tests: smooth synthetic videos and folder listings.
#![allow(dead_code)]

use std::path::Path;

use reel_video::Frames;

/// A smooth moving colour pattern in [0.1, 0.9]: easy on lossy codecs.
pub fn smooth(frames: usize, height: usize, width: usize) -> Frames {
    let mut data = Vec::with_capacity(frames * height * width * 3);
    for f in 0..frames {
        for y in 0..height {
            for x in 0..width {
                for c in 0..3 {
                    let u = x as f32 / width as f32 + f as f32 / 16.0 + c as f32 / 3.0;
                    let v = y as f32 / height as f32;
                    let s = (2.0 * std::f32::consts::PI * u).sin() * (std::f32::consts::PI * v).cos();
                    data.push(0.5 + 0.4 * s);
                }
            }
        }
    }
    Frames::new(frames, height, width, data).unwrap()
}

/// `video` quantized to 8 bits, as it comes back from an 8-bit format.
pub fn quantized(video: &Frames) -> Frames {
    Frames::from_u8(video.frames, video.height, video.width, &video.to_u8()).unwrap()
}

pub fn mean_abs_error(a: &Frames, b: &Frames) -> f32 {
    assert_eq!(a.data.len(), b.data.len());
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.data.len() as f32
}

pub fn max_abs_error(a: &Frames, b: &Frames) -> f32 {
    assert_eq!(a.data.len(), b.data.len());
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The sorted names in `dir` (hidden temporaries included).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
