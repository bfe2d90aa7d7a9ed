//! The error type of reel-video: every variant names the file at fault and says what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot tell the video format from the name; {known}")]
    UnknownFormat { path: PathBuf, known: &'static str },

    #[error("{path} not found; check the path")]
    NotFound { path: PathBuf },

    #[error("cannot write {path}: the folder {dir} does not exist; create it first")]
    MissingParent { path: PathBuf, dir: PathBuf },

    #[error("cannot write {path}: {message}")]
    InvalidVideo { path: PathBuf, message: String },

    #[error("{0}")]
    InvalidFrames(String),

    #[error("cannot write {path}: H.264 mp4 (yuv420p) needs an even width and height, got {width}x{height}; resize to even sizes (e.g. with `reel_video::resize`) or write a .gif, .npy or a folder of png frames")]
    OddSize { path: PathBuf, width: usize, height: usize },

    #[error("cannot write {path}: {path} exists and is not a folder; pick a new name or remove it")]
    NotAFolder { path: PathBuf },

    #[error("cannot write png frames into {path}: it holds {entry:?}, which is not a frame_NNNN.png from an earlier run; pick a new or empty folder (reel only replaces its own frame_NNNN.png files)")]
    FolderNotEmpty { path: PathBuf, entry: String },

    #[error("cannot read {path} as {format}: {message}")]
    Read {
        path: PathBuf,
        format: &'static str,
        message: String,
    },

    #[error("{path}: this reel was built without mp4 support (cargo feature `mp4`, which links ffmpeg); write or read a .gif, .npy or a folder of png frames instead, or rebuild with the feature")]
    NoMp4 { path: PathBuf },

    #[error("cannot write {path} as {format}: {message}")]
    Write {
        path: PathBuf,
        format: &'static str,
        message: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Npy(#[from] reel_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
