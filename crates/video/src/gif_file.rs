//! Animated gifs: written with a palette per frame (NeuQuant, through the `gif` crate),
//! delay `round(100 / fps)` centiseconds, looping forever; read by compositing every frame onto
//! a full RGB canvas (honouring frame offsets, transparency and disposal; uncovered or
//! transparent areas read as black).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::frames::Frames;

/// NeuQuant samples every `speed`-th pixel (1 ..= 30; the `gif` crate suggests 10). It learns
/// the palette poorly from few samples, so small frames use a lower speed: at least ~16k
/// samples per frame, and speed 10 from about 320x512 up (~0.4 s for 16 such frames).
fn quantize_speed(pixels: usize) -> i32 {
    (pixels / 16_384).clamp(1, 10) as i32
}

/// The frame delay in centiseconds for `fps`: `round(100 / fps)`, at least 1.
pub(crate) fn delay_centiseconds(fps: f64) -> u16 {
    (100.0 / fps).round().clamp(1.0, u16::MAX as f64) as u16
}

/// Writes `video` as a gif into the file `tmp` (renamed onto `dest` by the caller).
pub(crate) fn write(tmp: &Path, dest: &Path, video: &Frames, fps: f64) -> Result<()> {
    let fail = |message: String| Error::Write {
        path: dest.to_path_buf(),
        format: "gif",
        message,
    };
    let (w, h) = match (u16::try_from(video.width), u16::try_from(video.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(Error::InvalidVideo {
                path: dest.to_path_buf(),
                message: format!(
                    "gif frames are at most 65535x65535, got {}x{}",
                    video.width, video.height
                ),
            })
        }
    };
    let delay = delay_centiseconds(fps);
    let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    let mut out = BufWriter::new(file);
    let mut encoder = gif::Encoder::new(&mut out, w, h, &[]).map_err(|e| fail(e.to_string()))?;
    encoder
        .set_repeat(gif::Repeat::Infinite)
        .map_err(|e| fail(e.to_string()))?;
    let bytes = video.to_u8();
    for rgb in bytes.chunks_exact(video.frame_len()) {
        let mut frame = gif::Frame::from_rgb_speed(w, h, rgb, quantize_speed(video.height * video.width));
        frame.delay = delay;
        encoder.write_frame(&frame).map_err(|e| fail(e.to_string()))?;
    }
    encoder.into_inner().map_err(|e| fail(e.to_string()))?;
    out.flush().map_err(|e| Error::io(tmp, e))
}

/// Reads a gif, compositing each frame onto the logical screen.
pub(crate) fn read(path: &Path) -> Result<Frames> {
    let bad = |message: String| Error::Read {
        path: path.to_path_buf(),
        format: "gif",
        message,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options
        .read_info(BufReader::new(file))
        .map_err(|e| bad(e.to_string()))?;
    let (width, height) = (decoder.width() as usize, decoder.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad(format!("the logical screen is {width}x{height}")));
    }
    let mut canvas = vec![0u8; width * height * 4];
    let mut data: Vec<f32> = Vec::new();
    let mut frames = 0;
    while let Some(frame) = decoder.read_next_frame().map_err(|e| bad(e.to_string()))? {
        let saved = (frame.dispose == gif::DisposalMethod::Previous).then(|| canvas.clone());
        let (left, top) = (frame.left as usize, frame.top as usize);
        let (fw, fh) = (frame.width as usize, frame.height as usize);
        if frame.buffer.len() < fw * fh * 4 {
            return Err(bad(format!("frame {frames} is truncated")));
        }
        // The part of the frame rectangle that lies on the canvas.
        let (x_end, y_end) = ((left + fw).min(width), (top + fh).min(height));
        for y in top..y_end {
            for x in left..x_end {
                let src = ((y - top) * fw + (x - left)) * 4;
                let pixel = &frame.buffer[src..src + 4];
                if pixel[3] != 0 {
                    let dst = (y * width + x) * 4;
                    canvas[dst..dst + 4].copy_from_slice(pixel);
                }
            }
        }
        data.extend(
            canvas
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .map(|v| v as f32 / 255.0),
        );
        frames += 1;
        match frame.dispose {
            gif::DisposalMethod::Background if left < x_end => {
                for y in top..y_end {
                    canvas[(y * width + left) * 4..(y * width + x_end) * 4].fill(0);
                }
            }
            gif::DisposalMethod::Previous => {
                if let Some(saved) = saved {
                    canvas = saved;
                }
            }
            _ => {}
        }
    }
    if frames == 0 {
        return Err(bad("it holds no frames".into()));
    }
    Frames::new(frames, height, width, data).map_err(|e| bad(e.to_string()))
}
