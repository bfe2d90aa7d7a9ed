//! Error type of reel-schedulers: every invalid config, step count or call sequence ends here
//! (never a panic). Mirrors the `ValueError` / `NotImplementedError` raised by diffusers'
//! schedulers (`diffusers/schedulers/scheduling_*.py`, `configuration_utils.py`).

use thiserror::Error;

/// Errors of scheduler configuration, schedule construction and stepping.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// `_class_name` names no registered scheduler.
    #[error("unknown scheduler class `{name}`; known schedulers: {known}")]
    UnknownClass { name: String, known: String },
    /// The config JSON/TOML is malformed or has a value of the wrong type / an unknown variant.
    #[error("invalid scheduler config: {0}")]
    Config(String),
    /// An option value (or a combination of options) that diffusers rejects.
    #[error("invalid option `{option}`: {message}")]
    InvalidOption { option: &'static str, message: String },
    /// `num_inference_steps` out of range (0, or larger than `num_train_timesteps`).
    #[error("invalid number of inference steps {steps}: {message}")]
    InvalidSteps { steps: usize, message: String },
    /// A timestep that is not part of the current schedule, or a step past the end.
    #[error("invalid timestep {timestep}: {message}")]
    InvalidTimestep { timestep: f64, message: String },
    /// Tensor shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A step was requested in a state that does not allow it.
    #[error("invalid state: {0}")]
    State(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SchedulerError>;

pub(crate) fn opt_err<T>(option: &'static str, message: impl Into<String>) -> Result<T> {
    Err(SchedulerError::InvalidOption { option, message: message.into() })
}
