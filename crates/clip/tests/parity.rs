//! Parity of the CLIP tokenizer and text encoder with what transformers 5 / diffusers 0.42
//! computed on the committed fixtures (`tools/reference/generate.py`).
//!
//! Tolerance for text-encoder states: max abs error ≤ 1e-4 × the reference's largest magnitude.

use burn::backend::NdArray;
use reel_clip::{ClipTokenizer, TextEncoder};
use reel_core::npy;
use reel_core::testing::{assert_close, fixtures_dir};
use reel_core::ModelRepo;
use serde_json::Value;

type B = NdArray<f32>;
const TOL: f32 = 1e-4;

fn json(path: std::path::PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn repo(name: &str) -> ModelRepo {
    ModelRepo::local(fixtures_dir().join("pipelines").join(name)).unwrap()
}

fn reference_tokens(name: &str) -> (Vec<String>, Vec<Vec<u32>>, Vec<usize>) {
    let t = json(fixtures_dir().join("reference").join(name).join("tokens.json"));
    let prompts = t["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    let ids = t["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect())
        .collect();
    let counts = t["content_token_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    (prompts, ids, counts)
}

fn check_tokenizer(name: &str) {
    let tok = ClipTokenizer::load(&repo(name), "tokenizer").unwrap();
    let (prompts, want, counts) = reference_tokens(name);
    assert!(prompts.len() >= 20, "{name}: the fixture should hold the broad prompt set");
    for ((prompt, want), count) in prompts.iter().zip(&want).zip(&counts) {
        let got = tok.encode(prompt).unwrap();
        assert_eq!(&got, want, "{name}: ids of {prompt:?}");
        assert_eq!(tok.content_ids(prompt).unwrap().len(), *count, "{name}: content tokens of {prompt:?}");
        assert_eq!(tok.is_truncated(prompt).unwrap(), count + 2 > 77, "{name}: truncation of {prompt:?}");
    }
}

#[test]
fn tokenizer_real_vocab_pad_endoftext() {
    check_tokenizer("tok-real-eot");
}

#[test]
fn tokenizer_real_vocab_pad_bang() {
    check_tokenizer("tok-real-bang");
}

#[test]
fn tokenizer_real_vocab_from_tokenizer_json() {
    check_tokenizer("tok-real-json");
}

#[test]
fn tokenizer_small_vocab_fixtures() {
    check_tokenizer("tiny-a");
    check_tokenizer("tiny-b");
}

#[test]
fn tokenizer_facts_of_the_real_vocab() {
    let eot = ClipTokenizer::load(&repo("tok-real-eot"), "tokenizer").unwrap();
    let bang = ClipTokenizer::load(&repo("tok-real-bang"), "tokenizer").unwrap();
    assert_eq!(eot.vocab_size(), 49408);
    assert_eq!((eot.bos_id, eot.eos_id, eot.pad_id), (49406, 49407, 49407));
    assert_eq!((bang.bos_id, bang.eos_id, bang.pad_id), (49406, 49407, 0));
    assert_eq!(eot.model_max_length, 77);
}

fn check_text_encoder(name: &str) {
    let meta = json(fixtures_dir().join("reference").join(name).join("meta.json"));
    let variant = meta["text_encoder"]["variant"].as_str();
    let device = Default::default();
    let enc = TextEncoder::<B>::load(&repo(name), "text_encoder", variant, &device, None).unwrap();
    let (_, ids, _) = reference_tokens(name);
    let cases = [(None, "clip_last_hidden_state.npy"), (Some(1), "clip_skip1.npy"), (Some(2), "clip_skip2.npy")];
    for (skip, file) in cases {
        let want = npy::read(fixtures_dir().join("reference").join(name).join(file)).unwrap();
        let got = npy::Array::from_tensor(enc.encode(&ids, skip, &device).unwrap()).unwrap();
        assert_close(&format!("{name} {file}"), &got.shape, &got.data, &want.shape, &want.data, TOL);
    }
}

#[test]
fn text_encoder_tiny_a_f32_transformers5_layout() {
    check_text_encoder("tiny-a");
}

#[test]
fn text_encoder_tiny_b_fp16_variant_legacy_layout() {
    check_text_encoder("tiny-b");
}

#[test]
fn text_encoder_rejects_bad_input() {
    let device = Default::default();
    let enc = TextEncoder::<B>::load(&repo("tiny-a"), "text_encoder", None, &device, None).unwrap();
    let err = enc.encode(&[vec![5; 78]], None, &device).unwrap_err().to_string();
    assert!(err.contains("78 tokens exceed"), "{err}");
    let err = enc.encode(&[vec![99_999; 77]], None, &device).unwrap_err().to_string();
    assert!(err.contains("outside the text encoder's vocabulary"), "{err}");
    let err = enc.encode(&[vec![1; 77]], Some(3), &device).unwrap_err().to_string();
    assert!(err.contains("clip_skip 3"), "{err}");
}
