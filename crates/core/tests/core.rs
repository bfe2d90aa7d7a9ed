//! reel-core on its own: model_index.json, npy round trips, atomic writes, HF settings.

use reel_core::config::ModelIndex;
use reel_core::testing::fixtures_dir;
use reel_core::{npy, HubSettings, ModelRepo};

#[test]
fn model_index_lists_components_with_their_classes() {
    let repo = ModelRepo::local(fixtures_dir().join("pipelines/tiny-a")).unwrap();
    let index = ModelIndex::load(&repo).unwrap();
    assert_eq!(index.class_name, "TextToVideoSDPipeline");
    assert_eq!(index.component_class("vae"), Some("AutoencoderKL"));
    assert_eq!(index.component_class("text_encoder"), Some("CLIPTextModel"));
    assert_eq!(index.component_class("tokenizer"), Some("CLIPTokenizer"));
    assert_eq!(index.component_class("unet"), None);
}

#[test]
fn npy_round_trip_and_reading_numpy_files() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    npy::write(&p, &[2, 3, 4], &data).unwrap();
    let back = npy::read(&p).unwrap();
    assert_eq!(back.shape, vec![2, 3, 4]);
    assert_eq!(back.data, data);
    // A file numpy wrote (the fixtures): header parsed, length consistent.
    let x = npy::read(fixtures_dir().join("reference/tiny-a/vae_x.npy")).unwrap();
    assert_eq!(x.data.len(), x.shape.iter().product::<usize>());
    assert!(x.data.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn npy_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.npy");
    std::fs::write(&p, b"hello").unwrap();
    assert!(npy::read(&p).unwrap_err().to_string().contains("not a usable .npy file"));
    // Truncated data.
    npy::write(&p, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    assert!(npy::read(&p).unwrap_err().to_string().contains("needs"));
    // Writing into a missing folder fails without leaving anything.
    let err = npy::write(tmp.path().join("no/such/dir/x.npy"), &[1], &[1.0]).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn atomic_write_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.npy");
    npy::write(&p, &[2], &[1.0, 2.0]).unwrap();
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x.npy")]);
    // Shape and data disagree: an error, and the old file is untouched.
    assert!(npy::write(&p, &[3], &[1.0, 2.0]).is_err());
    assert_eq!(npy::read(&p).unwrap().data, vec![1.0, 2.0]);
}

#[test]
fn hub_settings_snapshot_lookup_by_commit_and_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let repo_dir = tmp.path().join("models--org--name");
    std::fs::create_dir_all(repo_dir.join("snapshots").join(commit)).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), format!("{commit}\n")).unwrap();
    let hub = HubSettings { cache_dir: tmp.path().to_path_buf(), offline: true, token: None, endpoint: None };
    let by_ref = hub.cached_snapshot("org/name", "main").unwrap();
    let by_commit = hub.cached_snapshot("org/name", commit).unwrap();
    assert_eq!(by_ref, by_commit);
    assert!(hub.cached_snapshot("org/other", "main").is_err());
}
