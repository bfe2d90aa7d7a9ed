//! Bad inputs are errors that say what to do, and no output (nor temporary) is left behind.

mod common;

use common::{entries, smooth};
use reel_video::{read, write, Error, Format, Frames, WriteOptions};

fn opts() -> WriteOptions {
    WriteOptions::default()
}

#[test]
fn unknown_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let video = smooth(2, 4, 4);
    for name in ["video.txt", "video.avi", "video.png"] {
        let err = write(&dir.path().join(name), &video, &opts()).unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(".mp4") && msg.contains(".gif") && msg.contains(".npy") && msg.contains("folder"),
            "{msg}"
        );
    }
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = read(&dir.path().join("notes.txt")).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err}");
    assert_eq!(entries(dir.path()), ["notes.txt"]);
    assert!(Format::for_output(std::path::Path::new("a.MP4")).is_ok());
}

#[test]
fn missing_inputs() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["none.mp4", "none.gif", "none.npy", "none"] {
        let err = read(&dir.path().join(name)).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{name}: {err}");
    }
    // A folder with no png frames.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let err = read(&dir.path().join("empty")).unwrap_err().to_string();
    assert!(err.contains("no .png"), "{err}");
}

#[test]
fn corrupt_inputs() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x.mp4", "x.gif", "x.npy", "x.webm"] {
        let path = dir.path().join(name);
        std::fs::write(&path, "this is not a video\n").unwrap();
        let err = read(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg}");
        println!("{name}: {msg}");
    }
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("frame_0000.png"), "not a png").unwrap();
    assert!(read(&frames).is_err());

    // npy of the wrong shape or range.
    let npy = dir.path().join("bad.npy");
    reel_core::npy::write(&npy, &[2, 4, 4], &[0.5; 32]).unwrap();
    assert!(read(&npy).unwrap_err().to_string().contains("shape"));
    reel_core::npy::write(&npy, &[1, 1, 1, 3], &[-1.0, 0.0, 1.0]).unwrap();
    assert!(read(&npy).unwrap_err().to_string().contains("[0, 1]"));
}

#[test]
fn odd_mp4_size() {
    let dir = tempfile::tempdir().unwrap();
    for (h, w) in [(48, 63), (47, 64)] {
        let err = write(&dir.path().join("odd.mp4"), &smooth(2, h, w), &opts()).unwrap_err();
        assert!(matches!(err, Error::OddSize { .. }), "{err}");
        assert!(err.to_string().contains("even"), "{err}");
    }
    // Other formats take odd sizes.
    write(&dir.path().join("odd.gif"), &smooth(2, 5, 7), &opts()).unwrap();
    assert_eq!(entries(dir.path()), ["odd.gif"]);
}

#[test]
fn missing_parent_folder() {
    let dir = tempfile::tempdir().unwrap();
    let video = smooth(2, 4, 4);
    for name in ["video.mp4", "video.gif", "video.npy", "frames", "frames/"] {
        let path = dir.path().join("missing").join(name);
        let err = write(&path, &video, &opts()).unwrap_err();
        assert!(matches!(err, Error::MissingParent { .. }), "{name}: {err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn empty_videos_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let empty = Frames::new(0, 4, 4, vec![]).unwrap();
    let flat = Frames::new(2, 0, 4, vec![]).unwrap();
    let inconsistent = Frames {
        frames: 2,
        height: 4,
        width: 4,
        data: vec![0.0; 5],
    };
    for name in ["v.mp4", "v.gif", "v.npy", "frames"] {
        let path = dir.path().join(name);
        for video in [&empty, &flat, &inconsistent] {
            let err = write(&path, video, &opts()).unwrap_err();
            assert!(matches!(err, Error::InvalidVideo { .. }), "{name}: {err}");
        }
        for fps in [0.0, 1e-9, -8.0, 1001.0, f64::NAN, f64::INFINITY] {
            let err = write(&path, &smooth(2, 4, 4), &WriteOptions { fps }).unwrap_err();
            assert!(err.to_string().contains("fps"), "{err}");
        }
    }
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn too_large_for_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let wide = Frames::new(1, 1, 70_000, vec![0.5; 70_000 * 3]).unwrap();
    let err = write(&dir.path().join("wide.gif"), &wide, &opts()).unwrap_err();
    assert!(err.to_string().contains("65535"), "{err}");
    let wide = Frames::new(1, 2, 20_000, vec![0.5; 40_000 * 3]).unwrap();
    assert!(write(&dir.path().join("wide.mp4"), &wide, &opts()).is_err());
    assert!(entries(dir.path()).is_empty());
}
