//! The pipeline crate's error type: a `pipelines.toml` problem names the file, line and key; a
//! bad generation input says what to change; component, scheduler and video errors pass through.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in a pipelines TOML file, at a line (1-based) where known.
    #[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config { file: PathBuf, line: Option<usize>, message: String },

    /// A generation input that cannot work (sizes, strength, frames, ...).
    #[error("{0}")]
    Input(String),

    /// The output contains NaN or infinite values (e.g. an f16 overflow).
    #[error("{0}")]
    NonFinite(String),

    #[error(transparent)]
    Core(#[from] reel_core::Error),

    #[error("scheduler: {0}")]
    Scheduler(#[from] reel_schedulers::SchedulerError),

    #[error(transparent)]
    Video(#[from] reel_video::Error),
}

impl Error {
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(message.into())
    }
}
