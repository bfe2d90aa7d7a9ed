//! The error type of reel's loading layer: every variant says which file or key is at fault
//! and, where there is one, what the user can do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model folder not found: {path}\n  pass a diffusers pipeline folder (the one holding model_index.json) or a Hugging Face repo id such as `ali-vilab/text-to-video-ms-1.7b`")]
    MissingFolder { path: PathBuf },

    #[error("{what} not found: {path}{hint}")]
    MissingFile { what: String, path: PathBuf, hint: String },

    #[error("could not read {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },

    #[error("invalid JSON in {path}: {source}")]
    Json { path: PathBuf, #[source] source: serde_json::Error },

    #[error("{path}: `_class_name` is {found:?}, but reel expected one of {expected:?}; is this the right component folder?")]
    WrongClass { path: PathBuf, found: String, expected: Vec<String> },

    #[error("{path}: {message}")]
    InvalidConfig { path: PathBuf, message: String },

    #[error("{path} holds only PyTorch pickle weights ({file}); reel reads safetensors only, because unpickling runs arbitrary code.\n  convert once in Python: `from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained(\"<folder>\").save_pretrained(\"<new folder>\", safe_serialization=True)`\n  (or for one component: `Model.from_pretrained(...).save_pretrained(..., safe_serialization=True)`)")]
    PickleWeights { path: PathBuf, file: String },

    #[error("no weights in {path}: expected {expected}")]
    NoWeights { path: PathBuf, expected: String },

    #[error("corrupt or truncated safetensors file {path}: {message}\n  delete it and download / convert it again")]
    BadSafetensors { path: PathBuf, message: String },

    #[error("tensor `{key}` in {path} has shape {found:?}, but the model built from config.json expects {expected:?}; does config.json belong to these weights?")]
    ShapeMismatch { key: String, path: PathBuf, found: Vec<usize>, expected: Vec<usize> },

    #[error("tensor `{key}` is missing from the weights in {path} (the model built from config.json needs it, shape {expected:?}){more}")]
    MissingTensor { key: String, path: PathBuf, expected: Vec<usize>, more: String },

    #[error("tensor `{key}` in {path} is not used by the model built from config.json{more}; does config.json belong to these weights?")]
    UnusedTensor { key: String, path: PathBuf, more: String },

    #[error("tensor `{key}` in {path} has dtype {dtype}, which reel cannot load (expected F32, F16, BF16 or F64)")]
    UnsupportedDtype { key: String, path: PathBuf, dtype: String },

    #[error("Hugging Face hub: {message}")]
    Hub { message: String },

    #[error("{0}")]
    Input(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(message.into())
    }
}
