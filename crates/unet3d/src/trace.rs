//! Recording of intermediate block outputs, so a parity mismatch points at its block, and of the
//! time between block outputs, to see where a forward's time goes. No diffusers counterpart: the
//! reference harness (`tools/reference/unet3d.py`) records the same outputs with forward hooks,
//! named by diffusers' module paths (`down_blocks.0.temp_convs.1`, ...).

use std::time::Instant;

use burn::tensor::{backend::Backend, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Outputs,
    Timings,
}

/// Outputs (or timings) recorded during one forward, in execution order. A disabled trace
/// records nothing and costs nothing.
#[derive(Debug)]
pub struct Trace<B: Backend> {
    mode: Mode,
    /// `(module path, shape, flattened output)` ([`Trace::on`]).
    pub records: Vec<(String, Vec<usize>, Tensor<B, 1>)>,
    /// `(module path, seconds since the previous record)` ([`Trace::timings`]); the first entry
    /// counts from the trace's creation.
    pub times: Vec<(String, f64)>,
    last: Instant,
}

impl<B: Backend> Default for Trace<B> {
    fn default() -> Self {
        Self::off()
    }
}

impl<B: Backend> Trace<B> {
    fn new(mode: Mode) -> Self {
        Trace {
            mode,
            records: Vec::new(),
            times: Vec::new(),
            last: Instant::now(),
        }
    }

    /// A trace that records nothing.
    pub fn off() -> Self {
        Self::new(Mode::Off)
    }

    /// A trace that records every block output.
    pub fn on() -> Self {
        Self::new(Mode::Outputs)
    }

    /// A trace that records the wall time spent before each block output (meaningful on
    /// synchronous backends such as NdArray; asynchronous ones would need a sync per block).
    pub fn timings() -> Self {
        Self::new(Mode::Timings)
    }

    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Records `t` under `prefix.name` (or `name` when `prefix` is empty).
    pub fn record<const D: usize>(&mut self, prefix: &str, name: &str, t: &Tensor<B, D>) {
        if self.mode == Mode::Off {
            return;
        }
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        match self.mode {
            Mode::Outputs => {
                let shape = t.dims().to_vec();
                let n: usize = shape.iter().product();
                self.records.push((path, shape, t.clone().reshape([n])));
            }
            Mode::Timings => {
                let now = Instant::now();
                self.times
                    .push((path, now.duration_since(self.last).as_secs_f64()));
                self.last = now;
            }
            Mode::Off => {}
        }
    }
}
