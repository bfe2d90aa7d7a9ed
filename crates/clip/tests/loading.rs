//! Loading paths and bad checkpoints: a local folder, a repo id served from a populated
//! Hugging Face cache with offline mode, and every kind of broken input giving an error that
//! names the file / key and says what to do (never a panic).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use reel_clip::{ClipTokenizer, TextEncoder};
use reel_core::testing::{assert_close, fixtures_dir};
use reel_core::{npy, Error, HubSettings, ModelRepo, ModelSource};

type B = NdArray<f32>;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn tiny_a_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tiny-a");
    copy_dir(&fixtures_dir().join("pipelines/tiny-a"), &root);
    (tmp, root)
}

fn load_err(root: &Path) -> Error {
    let repo = ModelRepo::local(root).unwrap();
    TextEncoder::<B>::load(&repo, "text_encoder", None, &Default::default(), None).unwrap_err()
}

/// Lays a pipeline folder out as huggingface_hub's cache does: blobs, a snapshot of symlinks,
/// and `refs/main` naming the commit.
fn populate_hf_cache(cache: &Path, repo_id: &str, commit: &str, src: &Path) {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    fn walk(dir: &Path, rel: &Path, snapshot: &Path, blobs: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            if e.path().is_dir() {
                walk(&e.path(), &rel, snapshot, blobs, n);
            } else {
                *n += 1;
                let blob = blobs.join(format!("blob{n:04}"));
                std::fs::copy(e.path(), &blob).unwrap();
                let link = snapshot.join(&rel);
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&blob, &link).unwrap();
            }
        }
    }
    let mut n = 0;
    walk(src, Path::new(""), &snapshot, &blobs, &mut n);
}

#[test]
fn repo_id_from_populated_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    populate_hf_cache(tmp.path(), "reel-test/tiny-a", commit, &fixtures_dir().join("pipelines/tiny-a"));
    let hub = HubSettings { cache_dir: tmp.path().to_path_buf(), offline: true, token: None, endpoint: None };
    let device = Default::default();

    for revision in [None, Some(commit)] {
        let source = ModelSource::parse("reel-test/tiny-a", revision);
        assert!(matches!(source, ModelSource::Hub { .. }), "{source:?}");
        let repo = source.open(&hub).unwrap();
        let tok = ClipTokenizer::load(&repo, "tokenizer").unwrap();
        let enc = TextEncoder::<B>::load(&repo, "text_encoder", None, &device, None).unwrap();
        let ids = tok.encode_batch(&["a cat".to_string()]).unwrap();
        let got = npy::Array::from_tensor(enc.encode(&ids, None, &device).unwrap()).unwrap();
        // Same states as loading the folder directly.
        let local = ModelRepo::local(fixtures_dir().join("pipelines/tiny-a")).unwrap();
        let enc2 = TextEncoder::<B>::load(&local, "text_encoder", None, &device, None).unwrap();
        let want = npy::Array::from_tensor(enc2.encode(&ids, None, &device).unwrap()).unwrap();
        assert_close("hub vs local", &got.shape, &got.data, &want.shape, &want.data, 0.0);
    }

    let err = ModelSource::parse("reel-test/not-there", None).open(&hub).unwrap_err().to_string();
    assert!(err.contains("reel-test/not-there") && err.contains("HF_HUB_OFFLINE"), "{err}");
    let err = ModelSource::parse("reel-test/tiny-a", Some("v9")).open(&hub).unwrap_err().to_string();
    assert!(err.contains("refs/v9") || err.contains("refs\\v9"), "{err}");
}

#[test]
fn local_paths_and_repo_ids_are_told_apart() {
    assert!(matches!(ModelSource::parse("./models/x", None), ModelSource::Local(_)));
    assert!(matches!(ModelSource::parse("/abs/x", None), ModelSource::Local(_)));
    assert!(matches!(ModelSource::parse("a/b/c", None), ModelSource::Local(_)));
    assert!(matches!(
        ModelSource::parse("ali-vilab/text-to-video-ms-1.7b", Some("fp16")),
        ModelSource::Hub { ref revision, .. } if revision == "fp16"
    ));
}

#[test]
fn missing_folder() {
    let err = ModelSource::parse("/nonexistent/reel/model", None)
        .open(&HubSettings::from_env())
        .unwrap_err();
    assert!(matches!(err, Error::MissingFolder { .. }));
    assert!(err.to_string().contains("/nonexistent/reel/model"), "{err}");
}

#[test]
fn missing_component_folder() {
    let repo = ModelRepo::local(fixtures_dir().join("pipelines/tiny-c")).unwrap();
    let err = TextEncoder::<B>::load(&repo, "text_encoder", None, &Default::default(), None).unwrap_err();
    assert!(err.to_string().contains("text_encoder/config.json"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let (_tmp, root) = tiny_a_copy();
    let file = root.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&root);
    assert!(matches!(err, Error::BadSafetensors { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("truncated"), "{msg}");
}

#[test]
fn corrupt_safetensors_header() {
    let (_tmp, root) = tiny_a_copy();
    let file = root.join("text_encoder/model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[8..40] {
        *b = b'#';
    }
    std::fs::write(&file, &bytes).unwrap();
    let err = load_err(&root);
    assert!(matches!(err, Error::BadSafetensors { .. }), "{err:?}");
}

/// Rewrites the text encoder's weights through `edit` (key → (shape, f32 data)).
fn rewrite_weights(root: &Path, edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>)) {
    let file = root.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map = std::collections::BTreeMap::new();
    for (k, v) in st.tensors() {
        let data: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        map.insert(k, (v.shape().to_vec(), data));
    }
    edit(&mut map);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .into_iter()
        .map(|(k, (s, d))| (k, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(k, s, d)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn wrong_shape_tensor_names_key_and_both_shapes() {
    let (_tmp, root) = tiny_a_copy();
    rewrite_weights(&root, |m| {
        let (shape, data) = m.get_mut("final_layer_norm.weight").unwrap();
        *shape = vec![16];
        data.truncate(16);
    });
    let err = load_err(&root);
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert!(msg.contains("text_model.final_layer_norm.weight") && msg.contains("[16]") && msg.contains("[32]"), "{msg}");
}

#[test]
fn missing_tensor_names_key() {
    let (_tmp, root) = tiny_a_copy();
    rewrite_weights(&root, |m| {
        m.remove("encoder.layers.1.mlp.fc2.bias");
    });
    let msg = load_err(&root).to_string();
    assert!(msg.contains("encoder.layers.1.mlp.fc2.bias") && msg.contains("missing"), "{msg}");
}

#[test]
fn unused_tensor_names_key() {
    let (_tmp, root) = tiny_a_copy();
    rewrite_weights(&root, |m| {
        m.insert("encoder.layers.7.extra.weight".into(), (vec![2], vec![0.0, 1.0]));
    });
    let msg = load_err(&root).to_string();
    assert!(msg.contains("encoder.layers.7.extra.weight") && msg.contains("not used"), "{msg}");
}

#[test]
fn unknown_class_name() {
    let (_tmp, root) = tiny_a_copy();
    let cfg = root.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"CLIPTextModel\"", "\"T5EncoderModel\"");
    std::fs::write(&cfg, text).unwrap();
    let err = load_err(&root);
    let msg = err.to_string();
    assert!(matches!(err, Error::WrongClass { .. }), "{err:?}");
    assert!(msg.contains("T5EncoderModel") && msg.contains("CLIPTextModel") && msg.contains("config.json"), "{msg}");
}

#[test]
fn pickle_only_checkpoint_is_refused_with_a_conversion_hint() {
    let (_tmp, root) = tiny_a_copy();
    std::fs::rename(root.join("text_encoder/model.safetensors"), root.join("text_encoder/pytorch_model.bin")).unwrap();
    let err = load_err(&root);
    let msg = err.to_string();
    assert!(matches!(err, Error::PickleWeights { .. }), "{err:?}");
    assert!(msg.contains("pytorch_model.bin") && msg.contains("safe_serialization=True"), "{msg}");
}

#[test]
fn variant_selection() {
    let repo = ModelRepo::local(fixtures_dir().join("pipelines/tiny-b")).unwrap();
    let device = Default::default();
    // Only a fp16 variant is present: asking for it works, asking for another names what exists,
    // and asking for none uses the single variant present.
    TextEncoder::<B>::load(&repo, "text_encoder", Some("fp16"), &device, None).unwrap();
    TextEncoder::<B>::load(&repo, "text_encoder", None, &device, None).unwrap();
    let msg = TextEncoder::<B>::load(&repo, "text_encoder", Some("bf16"), &device, None).unwrap_err().to_string();
    assert!(msg.contains("model.bf16.safetensors") && msg.contains("fp16"), "{msg}");
}

#[test]
fn unknown_config_keys_are_not_errors() {
    let (_tmp, root) = tiny_a_copy();
    let cfg = root.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replacen('{', "{\n  \"some_future_option\": 3,", 1);
    std::fs::write(&cfg, text).unwrap();
    let repo = ModelRepo::local(&root).unwrap();
    TextEncoder::<B>::load(&repo, "text_encoder", None, &Default::default(), None).unwrap();
}
