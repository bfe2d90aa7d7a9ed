//! Folders of png frames: written as `frame_0000.png`, `frame_0001.png`, ... (8-bit RGB); read
//! as every `.png` in the folder, sorted by file name, converted to 8-bit RGB (alpha dropped,
//! as PIL's `convert("RGB")` does).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frames::Frames;

/// Writes the frames into the folder `dir` (which exists and is empty).
pub(crate) fn write_into(dir: &Path, dest: &Path, video: &Frames) -> Result<()> {
    let (w, h) = dims_u32(dest, video)?;
    let bytes = video.to_u8();
    let n = video.frame_len();
    let digits = (video.frames - 1).to_string().len().max(4);
    for (i, frame) in bytes.chunks_exact(n).enumerate() {
        let file = dir.join(format!("frame_{i:0digits$}.png"));
        let fail = |message: String| Error::Write {
            path: dest.to_path_buf(),
            format: "png frames",
            message,
        };
        let mut out = BufWriter::new(File::create(&file).map_err(|e| Error::io(&file, e))?);
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| fail(e.to_string()))?;
        writer.write_image_data(frame).map_err(|e| fail(e.to_string()))?;
        writer.finish().map_err(|e| fail(e.to_string()))?;
        out.flush().map_err(|e| Error::io(&file, e))?;
    }
    Ok(())
}

fn dims_u32(dest: &Path, video: &Frames) -> Result<(u32, u32)> {
    match (u32::try_from(video.width), u32::try_from(video.height)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(Error::InvalidVideo {
            path: dest.to_path_buf(),
            message: format!("{}x{} is too large for png", video.width, video.height),
        }),
    }
}

/// Reads every `.png` in `dir`, sorted by file name.
pub(crate) fn read(dir: &Path) -> Result<Frames> {
    let bad = |message: String| Error::Read {
        path: dir.to_path_buf(),
        format: "png frames",
        message,
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(bad(
            "the folder holds no .png files; write frames as frame_0000.png, frame_0001.png, ...".into(),
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut data = Vec::new();
    let mut size = None;
    for file in &files {
        let (w, h, rgb) = read_png(file)?;
        match size {
            None => size = Some((w, h)),
            Some((w0, h0)) if (w0, h0) != (w, h) => {
                return Err(bad(format!(
                    "{} is {w}x{h} but {} is {w0}x{h0}; all frames must have one size",
                    file.display(),
                    files[0].display()
                )))
            }
            Some(_) => {}
        }
        data.extend(rgb.iter().map(|&v| v as f32 / 255.0));
    }
    let (w, h) = size.unwrap_or((0, 0));
    Frames::new(files.len(), h, w, data).map_err(|e| bad(e.to_string()))
}

/// One png as 8-bit RGB: (width, height, bytes).
fn read_png(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let bad = |message: String| Error::Read {
        path: path.to_path_buf(),
        format: "png",
        message,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let len = reader
        .output_buffer_size()
        .ok_or_else(|| bad("the image is too large".into()))?;
    let mut buf = vec![0; len];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let pixels = w * h;
    let src = &buf[..info.buffer_size()];
    let rgb: Vec<u8> = match info.color_type {
        png::ColorType::Rgb => src.get(..pixels * 3).map(<[u8]>::to_vec).unwrap_or_default(),
        png::ColorType::Rgba => src
            .chunks_exact(4)
            .take(pixels)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => src.iter().take(pixels).flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => src
            .chunks_exact(2)
            .take(pixels)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Indexed => return Err(bad("palette image was not expanded".into())),
    };
    if rgb.len() != pixels * 3 {
        return Err(bad("truncated image data".into()));
    }
    Ok((w, h, rgb))
}
