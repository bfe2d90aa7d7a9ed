//! The CLIP tokenizer, exactly as transformers 5's `CLIPTokenizer` (tokenizers backend, no
//! ftfy) builds it and diffusers 0.42 calls it: `tokenizer(prompts, padding="max_length",
//! max_length=tokenizer.model_max_length, truncation=True)`.
//!
//! Mirrors `transformers/models/clip/tokenization_clip.py`: BPE with `</w>` end-of-word
//! suffix, NFC + whitespace-collapse + lowercase normaliser, CLIP's split regex then
//! byte-level pre-tokenisation, `<|startoftext|> ... <|endoftext|>` around the ids, truncation
//! to `model_max_length` (77) keeping both, and padding with the checkpoint's pad token.
//! Like transformers, the pipeline is rebuilt from the vocabulary and merges whether the repo
//! ships `vocab.json` + `merges.txt` (real checkpoints) or `tokenizer.json`; the bos / eos /
//! unk / pad tokens come from `tokenizer_config.json` / `special_tokens_map.json` and are
//! special added tokens, so a pad token `!` turns a literal `!` in a prompt into the pad id,
//! as transformers does.

use std::path::Path;

use reel_core::config::join;
use reel_core::{Error, ModelRepo, Result};
use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

/// CLIP's pre-tokenisation regex (transformers `CLIPTokenizer.__init__`).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The four special tokens of a CLIP tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        SpecialTokens {
            bos: "<|startoftext|>".into(),
            eos: "<|endoftext|>".into(),
            unk: "<|endoftext|>".into(),
            pad: "<|endoftext|>".into(),
        }
    }
}

/// A CLIP tokenizer producing fixed-length (`model_max_length`) id rows.
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub model_max_length: usize,
    pub special: SpecialTokens,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("model_max_length", &self.model_max_length)
            .field("special", &self.special)
            .finish()
    }
}

fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

fn read_json_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json { path: path.to_path_buf(), source: e })
}

impl ClipTokenizer {
    /// Loads the tokenizer of a pipeline (`subfolder` is usually `tokenizer`).
    pub fn load(repo: &ModelRepo, subfolder: &str) -> Result<Self> {
        let file = |name: &str| -> Result<Option<std::path::PathBuf>> {
            let rel = join(subfolder, name);
            if repo.has_file(&rel)? {
                repo.file(&rel).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut special = SpecialTokens::default();
        let mut model_max_length = 77usize;
        let mut apply = |cfg: &Value| {
            for (key, slot) in [
                ("bos_token", &mut special.bos),
                ("eos_token", &mut special.eos),
                ("unk_token", &mut special.unk),
                ("pad_token", &mut special.pad),
            ] {
                if let Some(t) = cfg.get(key).and_then(token_text) {
                    *slot = t;
                }
            }
        };
        if let Some(p) = file("tokenizer_config.json")? {
            let cfg = read_json_file(&p)?;
            apply(&cfg);
            if let Some(n) = cfg.get("model_max_length").and_then(Value::as_u64) {
                // transformers writes a huge sentinel when unset; CLIP's context is 77.
                model_max_length = if n > 1_000_000 { 77 } else { n as usize };
            }
        }
        if let Some(p) = file("special_tokens_map.json")? {
            apply(&read_json_file(&p)?);
        }

        let (vocab, merges, extra_added) = if let (Some(v), Some(m)) = (file("vocab.json")?, file("merges.txt")?) {
            let vocab = read_json_file(&v)?;
            let text = std::fs::read_to_string(&m).map_err(|e| Error::io(&m, e))?;
            let merges: Vec<Value> = text
                .lines()
                .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
                .map(|l| Value::String(l.to_string()))
                .collect();
            (vocab, merges, Vec::new())
        } else if let Some(t) = file("tokenizer.json")? {
            let tj = read_json_file(&t)?;
            let model = tj.get("model").cloned().unwrap_or(Value::Null);
            if model.get("type").and_then(Value::as_str) != Some("BPE") {
                return Err(Error::InvalidConfig {
                    path: t,
                    message: "expected a BPE model (a CLIP tokenizer)".into(),
                });
            }
            let merges = model.get("merges").and_then(Value::as_array).cloned().unwrap_or_default();
            let added = tj.get("added_tokens").and_then(Value::as_array).cloned().unwrap_or_default();
            (model.get("vocab").cloned().unwrap_or(Value::Null), merges, added)
        } else {
            return Err(Error::MissingFile {
                what: "tokenizer files".into(),
                path: repo.describe(subfolder),
                hint: "\n  expected vocab.json + merges.txt (as real checkpoints ship) or tokenizer.json".into(),
            });
        };
        let vocab_obj: Map<String, Value> = vocab.as_object().cloned().ok_or_else(|| Error::InvalidConfig {
            path: repo.describe(subfolder),
            message: "the vocabulary is not a JSON object of token → id".into(),
        })?;
        let id_of = |tok: &str| -> Result<u32> {
            vocab_obj.get(tok).and_then(Value::as_u64).map(|i| i as u32).ok_or_else(|| Error::InvalidConfig {
                path: repo.describe(subfolder),
                message: format!("special token {tok:?} is not in the vocabulary"),
            })
        };
        let (bos_id, eos_id, pad_id) = (id_of(&special.bos)?, id_of(&special.eos)?, id_of(&special.pad)?);
        id_of(&special.unk)?;

        // Added tokens: the special tokens (special, not normalised, as transformers adds them),
        // plus any others a tokenizer.json declares.
        let mut added: Vec<Value> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for tok in [&special.pad, &special.bos, &special.eos, &special.unk] {
            if seen.insert(tok.clone()) {
                added.push(json!({"id": id_of(tok)?, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true}));
            }
        }
        for a in extra_added {
            if let Some(c) = a.get("content").and_then(Value::as_str) {
                if seen.insert(c.to_string()) {
                    added.push(a);
                }
            }
        }
        added.sort_by_key(|a| a.get("id").and_then(Value::as_u64).unwrap_or(0));

        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "post_processor": {"type": "RobertaProcessing", "sep": [special.eos, eos_id],
                "cls": [special.bos, bos_id], "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": special.unk, "continuing_subword_prefix": "",
                "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": Value::Object(vocab_obj.clone()), "merges": merges},
        });
        let inner: Tokenizer = spec.to_string().parse().map_err(|e| Error::InvalidConfig {
            path: repo.describe(subfolder),
            message: format!("could not build the CLIP tokenizer: {e}"),
        })?;
        Ok(ClipTokenizer { inner, model_max_length, special, bos_id, eos_id, pad_id })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of one prompt without special tokens, truncation or padding.
    pub fn content_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| Error::input(format!("tokenizing {prompt:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `model_max_length` ids: BOS, up to `model_max_length - 2` content ids, EOS, padding.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let content = self.content_ids(prompt)?;
        let keep = content.len().min(self.model_max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(self.model_max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.eos_id);
        ids.resize(self.model_max_length.max(ids.len()), self.pad_id);
        Ok(ids)
    }

    /// Whether a prompt is longer than the model sees (diffusers logs a warning then).
    pub fn is_truncated(&self, prompt: &str) -> Result<bool> {
        Ok(self.content_ids(prompt)?.len() + 2 > self.model_max_length)
    }

    /// Encodes several prompts into one `(n, model_max_length)` id matrix.
    pub fn encode_batch(&self, prompts: &[String]) -> Result<Vec<Vec<u32>>> {
        prompts.iter().map(|p| self.encode(p)).collect()
    }
}
