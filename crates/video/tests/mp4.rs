//! mp4 through ffmpeg: ffprobe must count every frame at the requested size and rate, and
//! reading back gives the frames within H.264's loss.

mod common;

use std::path::Path;
use std::process::Command;

use common::{entries, mean_abs_error, smooth};
use reel_video::{read, write, WriteOptions};

/// Runs ffprobe on the video stream; fails, saying to install ffmpeg, when it is missing.
fn ffprobe(path: &Path) -> serde_json::Value {
    let out = match Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames,width,height,r_frame_rate", "-of", "json"])
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "ffprobe is not on PATH: install ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`); these tests check the mp4 output with it"
        ),
        Err(e) => panic!("running ffprobe: {e}"),
    };
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    println!("ffprobe {}: {text}", path.display());
    serde_json::from_str(&text).unwrap()
}

#[test]
fn mp4_counts_every_frame_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.mp4");
    let video = smooth(16, 48, 64);
    write(&path, &video, &WriteOptions { fps: 8.0 }).unwrap();
    assert_eq!(entries(dir.path()), ["video.mp4"]);

    let probe = ffprobe(&path);
    let stream = &probe["streams"][0];
    assert_eq!(stream["nb_read_frames"], "16", "{probe}");
    assert_eq!(stream["width"], 64, "{probe}");
    assert_eq!(stream["height"], 48, "{probe}");
    assert_eq!(stream["r_frame_rate"], "8/1", "{probe}");

    let back = read(&path).unwrap();
    assert_eq!((back.frames, back.height, back.width), (16, 48, 64));
    let err = mean_abs_error(&video, &back);
    assert!(err < 0.05, "mean abs error {err}");
}

#[test]
fn mp4_other_frame_rates() {
    let dir = tempfile::tempdir().unwrap();
    for (fps, rate) in [(24.0, "24/1"), (29.97, "2997/100")] {
        let path = dir.path().join(format!("{fps}.mp4"));
        write(&path, &smooth(5, 16, 16), &WriteOptions { fps }).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe["streams"][0]["nb_read_frames"], "5", "{probe}");
        assert_eq!(probe["streams"][0]["r_frame_rate"], rate, "{probe}");
    }
}

/// ffmpeg's own decoder (its CLI, honouring the BT.709 tags) sees the colours we wrote,
/// saturated ones included, and agrees with `read`.
#[test]
fn mp4_colours_agree_with_the_ffmpeg_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colours.mp4");
    let colours: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.9, 0.8, 0.2]];
    let (h, w) = (32, 32);
    let data: Vec<f32> = colours
        .iter()
        .flat_map(|c| std::iter::repeat_n(*c, h * w).flatten())
        .collect();
    let video = reel_video::Frames::new(colours.len(), h, w, data).unwrap();
    write(&path, &video, &WriteOptions::default()).unwrap();
    let ours = read(&path).unwrap();
    let err = mean_abs_error(&video, &ours);
    assert!(err < 0.02, "written vs read: mean abs error {err}");

    let out = match Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("ffmpeg is not on PATH: install ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`)")
        }
        Err(e) => panic!("running ffmpeg: {e}"),
    };
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = reel_video::Frames::from_u8(colours.len(), h, w, &out.stdout).unwrap();
    let err = mean_abs_error(&theirs, &ours);
    assert!(err < 0.01, "ffmpeg CLI vs read: mean abs error {err}");
    // Pure red stays pure red (a BT.601 decode of our BT.709 stream would give 232, not 254).
    assert!(ours.to_u8()[0] >= 250, "red read back as {:?}", &ours.to_u8()[..3]);
}
