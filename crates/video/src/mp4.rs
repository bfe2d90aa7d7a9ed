//! mp4 through ffmpeg (video-rs 0.12 / ffmpeg-next 9): writing H.264 (libx264, yuv420p,
//! BT.709 limited range, tagged as such) at the requested fps, and reading any container
//! ffmpeg demuxes into RGB frames.
//!
//! Writing drives ffmpeg-next (re-exported by video-rs) directly rather than
//! `video_rs::Encoder`, which sets no packet durations: the mp4 edit list then drops the last
//! frame (ffprobe counts 15 of 16). Here each packet gets a one-frame duration before its
//! timestamps are rescaled to the stream's time base, so every frame counts and
//! `r_frame_rate` is exactly the fps.

use std::path::Path;
use std::sync::OnceLock;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::color;
use video_rs::ffmpeg;

use crate::error::{Error, Result};
use crate::frames::Frames;

/// libx264 quality (constant rate factor): 18 is visually near-lossless, small for these sizes.
const CRF: &str = "18";

/// Initializes ffmpeg once: video-rs' init (which routes ffmpeg's log lines to `tracing`, so
/// nothing is printed unless the program installs a tracing subscriber) and ffmpeg's own log
/// level at errors only.
fn init() -> std::result::Result<(), String> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let result = video_rs::init().map_err(|e| format!("could not initialize ffmpeg: {e}"));
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
        result
    })
    .clone()
}

/// swscale colour-matrix ids (`SWS_CS_*` in libswscale/swscale.h).
const SWS_CS_ITU709: i32 = 1;
const SWS_CS_FCC: i32 = 4;
const SWS_CS_ITU601: i32 = 5;
const SWS_CS_SMPTE240M: i32 = 7;
const SWS_CS_BT2020: i32 = 9;

fn sws_matrix(space: color::Space) -> i32 {
    match space {
        color::Space::BT709 => SWS_CS_ITU709,
        color::Space::FCC => SWS_CS_FCC,
        color::Space::SMPTE240M => SWS_CS_SMPTE240M,
        color::Space::BT2020NCL | color::Space::BT2020CL => SWS_CS_BT2020,
        // BT.470BG, SMPTE 170M and untagged video: swscale's (and ffmpeg's) default, BT.601.
        _ => SWS_CS_ITU601,
    }
}

/// Sets the YUV matrix and ranges of an RGB <-> YUV scaler (swscale defaults to BT.601
/// limited range whatever the stream says). RGB is always full range.
fn set_colorspace(scaler: &mut scaling::Context, matrix: i32, yuv_full_range: bool, yuv_is_source: bool) {
    let (src_full, dst_full) = if yuv_is_source {
        (yuv_full_range, true)
    } else {
        (true, yuv_full_range)
    };
    // SAFETY: the context is valid for the scaler's lifetime; sws_getCoefficients returns a
    // pointer to a static table of 4 ints for any id (unknown ids give the default table).
    unsafe {
        let table = ffmpeg::ffi::sws_getCoefficients(matrix);
        ffmpeg::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            table,
            src_full as i32,
            table,
            dst_full as i32,
            0,
            1 << 16,
            1 << 16,
        );
    }
}

/// Writes `video` as H.264 mp4 into the file `tmp` (renamed onto `dest` by the caller, which
/// has checked that the width and height are even).
pub(crate) fn write(tmp: &Path, dest: &Path, video: &Frames, fps: f64) -> Result<()> {
    let fail = |message: String| Error::Write {
        path: dest.to_path_buf(),
        format: "mp4",
        message,
    };
    let (w, h) = match (u32::try_from(video.width), u32::try_from(video.height)) {
        (Ok(w), Ok(h)) if w <= 16384 && h <= 16384 => (w, h),
        _ => {
            return Err(fail(format!(
                "{}x{} is larger than H.264 allows",
                video.width, video.height
            )))
        }
    };
    init().map_err(fail)?;
    encode(tmp, video, fps, w, h).map_err(fail)
}

fn encode(tmp: &Path, video: &Frames, fps: f64, w: u32, h: u32) -> std::result::Result<(), String> {
    let av = |what: &str| {
        let what = what.to_string();
        move |e: ffmpeg::Error| format!("{what}: {e}")
    };
    let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(
        "this ffmpeg has no libx264 H.264 encoder; install an ffmpeg built with libx264 (Debian's and Ubuntu's ffmpeg packages include it), or write a .gif / png frames instead",
    )?;
    let rate = ffmpeg::Rational::from(fps);
    let time_base = rate.invert();

    let mut output = ffmpeg::format::output_as(tmp, "mp4").map_err(av("opening the output"))?;
    let global_header = output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER);
    let mut context = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(av("creating the encoder"))?;
    context.set_width(w);
    context.set_height(h);
    context.set_format(Pixel::YUV420P);
    context.set_time_base(time_base);
    context.set_frame_rate(Some(rate));
    context.set_colorspace(color::Space::BT709);
    context.set_color_range(color::Range::MPEG);
    context.set_color_primaries(color::Primaries::BT709);
    context.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
    if global_header {
        context.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
    }
    let mut options = ffmpeg::Dictionary::new();
    options.set("preset", "medium");
    options.set("crf", CRF);
    let mut encoder = context.open_with(options).map_err(av("opening libx264"))?;
    let index = {
        let mut stream = output.add_stream(codec).map_err(av("adding the video stream"))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(time_base);
        stream.set_avg_frame_rate(rate);
        stream.set_rate(rate);
        stream.index()
    };
    let mut mux_options = ffmpeg::Dictionary::new();
    mux_options.set("movflags", "+faststart");
    output
        .write_header_with(mux_options)
        .map_err(av("writing the mp4 header"))?;
    let stream_time_base = output
        .stream(index)
        .ok_or("the muxer lost the video stream")?
        .time_base();

    let mut scaler = scaling::Context::get(Pixel::RGB24, w, h, Pixel::YUV420P, w, h, scaling::Flags::BICUBIC)
        .map_err(av("creating the RGB -> YUV converter"))?;
    set_colorspace(&mut scaler, SWS_CS_ITU709, false, false);
    let mut rgb = ffmpeg::frame::Video::new(Pixel::RGB24, w, h);
    let bytes = video.to_u8();
    let row = w as usize * 3;
    let drain = |encoder: &mut ffmpeg::encoder::video::Encoder,
                 output: &mut ffmpeg::format::context::Output|
     -> std::result::Result<(), String> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(index);
                    // One frame per packet, in the encoder's time base (1 / fps), *before*
                    // rescaling: without it the mp4 edit list drops the last frame.
                    packet.set_duration(1);
                    packet.rescale_ts(time_base, stream_time_base);
                    packet.write_interleaved(output).map_err(av("writing a packet"))?;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => return Ok(()),
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) => return Err(av("encoding")(e)),
            }
        }
    };
    for (i, frame) in bytes.chunks_exact(video.frame_len()).enumerate() {
        let stride = rgb.stride(0);
        let plane = rgb.data_mut(0);
        for (y, src) in frame.chunks_exact(row).enumerate() {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        let mut yuv = ffmpeg::frame::Video::empty();
        scaler.run(&rgb, &mut yuv).map_err(av("converting RGB to YUV"))?;
        yuv.set_pts(Some(i as i64));
        encoder.send_frame(&yuv).map_err(av("encoding"))?;
        drain(&mut encoder, &mut output)?;
    }
    encoder.send_eof().map_err(av("finishing the encoding"))?;
    drain(&mut encoder, &mut output)?;
    output.write_trailer().map_err(av("writing the mp4 trailer"))?;
    Ok(())
}

/// Reads the best video stream of any container ffmpeg demuxes, as RGB frames.
///
/// This drives ffmpeg-next directly rather than `video_rs::Decoder`, which converts every frame
/// to RGB with swscale's BT.601 defaults whatever the stream's colour matrix says (a BT.709
/// red 255 comes back as 232); here the conversion follows the stream's matrix and range, as
/// the ffmpeg CLI does.
pub(crate) fn read(path: &Path) -> Result<Frames> {
    let bad = |message: String| Error::Read {
        path: path.to_path_buf(),
        format: "video",
        message,
    };
    init().map_err(bad)?;
    let mut input = ffmpeg::format::input(path).map_err(|e| {
        bad(format!(
            "{e}; is it a video file ffmpeg can read (try `ffprobe {}`)?",
            path.display()
        ))
    })?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| bad("it has no video stream".into()))?;
    let index = stream.index();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| bad(format!("no decoder for its video codec: {e}")))?;
    let mut rgb = RgbFrames::default();
    for (stream, packet) in input.packets() {
        if stream.index() == index {
            decoder
                .send_packet(&packet)
                .map_err(|e| bad(format!("decoding frame {}: {e}", rgb.frames)))?;
            rgb.receive(&mut decoder).map_err(bad)?;
        }
    }
    decoder
        .send_eof()
        .map_err(|e| bad(format!("finishing decoding: {e}")))?;
    rgb.receive(&mut decoder).map_err(bad)?;
    if rgb.frames == 0 {
        return Err(bad("it holds no video frames".into()));
    }
    let (w, h) = rgb.size.unwrap_or((0, 0));
    Frames::new(rgb.frames, h as usize, w as usize, rgb.data).map_err(|e| bad(e.to_string()))
}

/// Decoded frames converted to RGB as they come out of the decoder.
#[derive(Default)]
struct RgbFrames {
    frames: usize,
    size: Option<(u32, u32)>,
    data: Vec<f32>,
    /// The converter and the (pixel format, matrix, full range) it was made for.
    scaler: Option<((Pixel, i32, bool), scaling::Context)>,
}

impl RgbFrames {
    /// Takes every frame the decoder has ready.
    fn receive(&mut self, decoder: &mut ffmpeg::decoder::Video) -> std::result::Result<(), String> {
        let mut frame = ffmpeg::frame::Video::empty();
        loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => self.push(&frame)?,
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => return Ok(()),
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(e) => return Err(format!("decoding frame {}: {e}", self.frames)),
            }
        }
    }

    fn push(&mut self, frame: &ffmpeg::frame::Video) -> std::result::Result<(), String> {
        let (w, h) = (frame.width(), frame.height());
        match self.size {
            None => self.size = Some((w, h)),
            Some((w0, h0)) if (w0, h0) != (w, h) => {
                return Err(format!(
                    "frame {} is {w}x{h} but the first frame is {w0}x{h0}; reel needs one size throughout",
                    self.frames
                ))
            }
            Some(_) => {}
        }
        let format = frame.format();
        let full = frame.color_range() == color::Range::JPEG
            || matches!(
                format,
                Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P
            );
        let key = (format, sws_matrix(frame.color_space()), full);
        if self.scaler.as_ref().is_none_or(|(k, _)| *k != key) {
            let mut context = scaling::Context::get(format, w, h, Pixel::RGB24, w, h, scaling::Flags::BICUBIC)
                .map_err(|e| format!("converting {format:?} frames to RGB: {e}"))?;
            set_colorspace(&mut context, key.1, full, true);
            self.scaler = Some((key, context));
        }
        let mut rgb = ffmpeg::frame::Video::empty();
        if let Some((_, context)) = self.scaler.as_mut() {
            context
                .run(frame, &mut rgb)
                .map_err(|e| format!("converting frame {} to RGB: {e}", self.frames))?;
        }
        let (stride, row) = (rgb.stride(0), w as usize * 3);
        let plane = rgb.data(0);
        for y in 0..h as usize {
            let line = plane.get(y * stride..y * stride + row).ok_or("short RGB frame")?;
            self.data.extend(line.iter().map(|&v| v as f32 / 255.0));
        }
        self.frames += 1;
        Ok(())
    }
}
