//! Round trips through the lossless and 8-bit formats (npy, png frames, gif) and the
//! `Frames` conversions.

mod common;

use common::{entries, max_abs_error, quantized, smooth};
use reel_video::{read, write, Format, Frames, WriteOptions};

#[test]
fn frames_new_checks_length_and_u8_matches_numpy_to_pil() {
    assert!(Frames::new(2, 3, 4, vec![0.0; 2 * 3 * 4 * 3]).is_ok());
    let err = Frames::new(2, 3, 4, vec![0.0; 10]).unwrap_err().to_string();
    assert!(err.contains("needs 72 values, got 10"), "{err}");
    assert!(Frames::from_u8(1, 1, 1, &[1, 2]).is_err());
    assert!(Frames::new(usize::MAX, 2, 2, vec![]).is_err());

    let video = Frames::new(1, 1, 2, vec![0.0, 0.5, 1.0, -0.2, 1.7, f32::NAN]).unwrap();
    // (x * 255).round(): 0.5 * 255 = 127.5 rounds to 128; out of range clamps; NaN -> 0.
    assert_eq!(video.to_u8(), vec![0, 128, 255, 0, 255, 0]);
    let back = Frames::from_u8(1, 1, 2, &[0, 128, 255, 0, 255, 0]).unwrap();
    assert_eq!(back.data[1], 128.0 / 255.0);
    assert_eq!(back.frame(0).len(), 6);
}

#[test]
fn npy_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.npy");
    let video = smooth(3, 8, 10);
    write(&path, &video, &WriteOptions::default()).unwrap();
    assert_eq!(read(&path).unwrap(), video);
    assert_eq!(entries(dir.path()), ["video.npy"]);

    // A leading batch axis of 1 (diffusers' `.frames` before `[0]`) reads the same.
    let batched = dir.path().join("batched.npy");
    reel_core::npy::write(&batched, &[1, 3, 8, 10, 3], &video.data).unwrap();
    assert_eq!(read(&batched).unwrap(), video);
}

#[test]
fn png_frames_round_trip_is_exact_on_quantized_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let video = quantized(&smooth(3, 6, 5));
    write(&out, &video, &WriteOptions::default()).unwrap();
    assert_eq!(entries(&out), ["frame_0000.png", "frame_0001.png", "frame_0002.png"]);
    assert_eq!(entries(dir.path()), ["frames"]);
    assert_eq!(read(&out).unwrap(), video);
}

#[test]
fn png_frames_output_rules() {
    let dir = tempfile::tempdir().unwrap();
    // A trailing '/' or an existing folder means png frames, whatever the name.
    assert_eq!(Format::for_output(&dir.path().join("out/")).unwrap(), Format::PngFrames);
    std::fs::create_dir(dir.path().join("looks.mp4")).unwrap();
    assert_eq!(
        Format::for_output(&dir.path().join("looks.mp4")).unwrap(),
        Format::PngFrames
    );

    // An earlier run's frames are replaced as a whole.
    let out = dir.path().join("run");
    write(&out, &quantized(&smooth(4, 4, 4)), &WriteOptions::default()).unwrap();
    let video = quantized(&smooth(2, 4, 6));
    write(&out, &video, &WriteOptions::default()).unwrap();
    assert_eq!(entries(&out), ["frame_0000.png", "frame_0001.png"]);
    assert_eq!(read(&out).unwrap(), video);

    // An empty existing folder is filled.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    write(&empty, &video, &WriteOptions::default()).unwrap();
    assert_eq!(entries(&empty).len(), 2);

    // Anything else in the folder is refused and left untouched.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "keep me").unwrap();
    std::fs::write(busy.join("frame_0000.png"), "old").unwrap();
    let err = write(&busy, &video, &WriteOptions::default()).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
    assert_eq!(entries(&busy), ["frame_0000.png", "notes.txt"]);
    assert_eq!(std::fs::read_to_string(busy.join("frame_0000.png")).unwrap(), "old");

    // A file where the folder should go is refused.
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    assert!(write(&file, &video, &WriteOptions::default()).is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    assert_eq!(entries(dir.path()), ["busy", "empty", "looks.mp4", "plain", "run"]);
}

#[test]
fn png_folder_reads_sorted_by_name_and_any_png_colour_type() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("in");
    std::fs::create_dir(&frames).unwrap();
    // Written out of order, one grayscale and one RGBA: read sorted, as RGB.
    let save = |name: &str, color: png::ColorType, bytes: &[u8]| {
        let file = std::fs::File::create(frames.join(name)).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 2, 1);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(bytes).unwrap();
    };
    save("b.png", png::ColorType::Grayscale, &[10, 20]);
    save("a.png", png::ColorType::Rgba, &[1, 2, 3, 0, 4, 5, 6, 255]);
    std::fs::write(frames.join("readme.txt"), "ignored").unwrap();
    let video = read(&frames).unwrap();
    assert_eq!((video.frames, video.height, video.width), (2, 1, 2));
    assert_eq!(video.to_u8(), [1, 2, 3, 4, 5, 6, 10, 10, 10, 20, 20, 20]);
}

#[test]
fn gif_round_trip_is_within_palette_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.gif");
    let video = smooth(4, 48, 64);
    write(&path, &video, &WriteOptions { fps: 8.0 }).unwrap();
    assert_eq!(entries(dir.path()), ["video.gif"]);
    let back = read(&path).unwrap();
    assert_eq!((back.frames, back.height, back.width), (4, 48, 64));
    let mean = common::mean_abs_error(&video, &back);
    let max = max_abs_error(&video, &back);
    // A 256-colour palette per frame on content whose colours span a 2-D surface of the RGB
    // cube: about 0.017 mean, 0.08 max here.
    assert!(mean < 0.025, "mean abs error {mean}");
    assert!(max < 0.15, "max abs error {max}");

    // Delay round(100 / 8) = 13 cs (12.5 rounds up), looping forever.
    let file = std::fs::File::open(&path).unwrap();
    let mut decoder = gif::DecodeOptions::new().read_info(file).unwrap();
    assert_eq!(decoder.repeat(), gif::Repeat::Infinite);
    let mut delays = Vec::new();
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        delays.push(frame.delay);
        assert!(frame.palette.is_some(), "each frame has its own palette");
    }
    assert_eq!(delays, [13; 4]);
}

#[test]
fn gif_reading_composites_partial_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.gif");
    {
        let file = std::fs::File::create(&path).unwrap();
        let palette = [0, 0, 0, 255, 0, 0, 0, 255, 0];
        let mut encoder = gif::Encoder::new(file, 4, 2, &palette).unwrap();
        let full = gif::Frame {
            width: 4,
            height: 2,
            buffer: vec![1; 8].into(),
            ..Default::default()
        };
        encoder.write_frame(&full).unwrap();
        // A 1x1 green patch at (2, 1) over the red canvas, then restored to background.
        let patch = gif::Frame {
            left: 2,
            top: 1,
            width: 1,
            height: 1,
            dispose: gif::DisposalMethod::Background,
            buffer: vec![2].into(),
            ..Default::default()
        };
        encoder.write_frame(&patch).unwrap();
        let empty = gif::Frame {
            width: 1,
            height: 1,
            transparent: Some(0),
            buffer: vec![0].into(),
            ..Default::default()
        };
        encoder.write_frame(&empty).unwrap();
    }
    let video = read(&path).unwrap();
    assert_eq!((video.frames, video.height, video.width), (3, 2, 4));
    let px = |f: usize, y: usize, x: usize| video.to_u8()[((f * 2 + y) * 4 + x) * 3..][..3].to_vec();
    assert_eq!(px(0, 0, 0), [255, 0, 0]);
    assert_eq!(px(1, 1, 2), [0, 255, 0]);
    assert_eq!(px(1, 0, 0), [255, 0, 0]);
    // Frame 2 draws nothing: the patch was disposed to background (black), the rest stays red.
    assert_eq!(px(2, 1, 2), [0, 0, 0]);
    assert_eq!(px(2, 1, 1), [255, 0, 0]);
}
