//! Which heavy operations a forward pass runs, and at what shapes: the inventory behind
//! `reel bench --ops` (and `benches/diffusers_baseline.py --ops-from`, which times the same list
//! in PyTorch). No diffusers counterpart; the method is "count the work first" of
//! docs/performance.md.
//!
//! [`recording`] runs a closure with recording on for the calling thread; the building blocks
//! ([`crate::nn::Linear`], [`crate::nn::Conv2d`], the norms, attention, GEGLU, the temporal
//! convolution, the upsampling) call [`record`], which costs one thread-local check when nothing records.
//! Element-wise glue (SiLU, residual adds, casts, layout moves) is not listed: it is what remains
//! of a measured step after the listed operations.

use std::cell::RefCell;

use serde::Serialize;

/// One heavy operation at one shape (the input as the block sees it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `x (rows, d_in) · Wᵀ + b` (leading axes flattened into `rows`).
    Linear { rows: usize, d_in: usize, d_out: usize, bias: bool },
    /// `conv2d` of `(n, c_in, h, w)` with a `(c_out, c_in, kh, kw)` kernel; `pad` is
    /// `[top, bottom, left, right]`.
    Conv2d { n: usize, c_in: usize, h: usize, w: usize, c_out: usize, kh: usize, kw: usize, stride: usize, pad: [usize; 4] },
    /// The UNet3D's `Conv3d(kernel (3, 1, 1), padding (1, 0, 0))` over `(b, c_in, f, pixels)`.
    TemporalConv { b: usize, c_in: usize, f: usize, pixels: usize, c_out: usize },
    /// Group norm of `(n, c, rest)` in `groups` groups.
    GroupNorm { n: usize, c: usize, rest: usize, groups: usize },
    /// Layer norm over the last axis of `(rows, dim)`.
    LayerNorm { rows: usize, dim: usize },
    /// `softmax(q kᵀ / √d) v` with `q (batch, heads, seq_q, head_dim)`, `k, v (…, seq_kv, …)`.
    Attention { batch: usize, heads: usize, seq_q: usize, seq_kv: usize, head_dim: usize },
    /// Nearest-neighbour upsampling of `(n, c, h, w)` to `(h_out, w_out)`.
    Upsample { n: usize, c: usize, h: usize, w: usize, h_out: usize, w_out: usize },
    /// GEGLU's `h * gelu(gate)` on `(rows, 2·dim)` (its projection is a separate `Linear`).
    Geglu { rows: usize, dim: usize },
}

thread_local! {
    static RECORDING: RefCell<Option<Vec<Op>>> = const { RefCell::new(None) };
}

/// Notes `op` if this thread is recording (`op` is only built then).
pub fn record(op: impl FnOnce() -> Op) {
    RECORDING.with(|r| {
        if let Some(ops) = r.borrow_mut().as_mut() {
            ops.push(op());
        }
    });
}

/// Runs `f` with recording on; returns its result and the operations it ran, in order.
/// Recordings do not nest: an inner call takes the operations of its own closure only.
pub fn recording<T>(f: impl FnOnce() -> T) -> (T, Vec<Op>) {
    let outer = RECORDING.with(|r| r.borrow_mut().replace(Vec::new()));
    let out = f();
    let ops = RECORDING.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer)).unwrap_or_default();
    (out, ops)
}

/// Distinct operations with how often each ran, in order of first appearance.
pub fn tally(ops: &[Op]) -> Vec<(Op, usize)> {
    let mut out: Vec<(Op, usize)> = Vec::new();
    for op in ops {
        match out.iter_mut().find(|(o, _)| o == op) {
            Some((_, n)) => *n += 1,
            None => out.push((op.clone(), 1)),
        }
    }
    out
}

/// The operation kinds' names, as `"op"` in a report and `reel bench --ops-only` take them.
pub const KINDS: [&str; 8] = ["linear", "conv2d", "temporal_conv", "group_norm", "layer_norm", "attention", "upsample", "geglu"];

impl Op {
    /// This operation's kind, one of [`KINDS`] (its `"op"` in a report).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::TemporalConv { .. } => "temporal_conv",
            Op::GroupNorm { .. } => "group_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Attention { .. } => "attention",
            Op::Upsample { .. } => "upsample",
            Op::Geglu { .. } => "geglu",
        }
    }

    /// Floating-point operations (a multiply-add counts 2; norms and GEGLU count their
    /// element-wise work roughly, ~8 per element).
    pub fn flops(&self) -> f64 {
        let f = |x: usize| x as f64;
        match *self {
            Op::Linear { rows, d_in, d_out, .. } => 2.0 * f(rows) * f(d_in) * f(d_out),
            Op::Conv2d { n, c_in, h, w, c_out, kh, kw, stride, pad } => {
                let ho = (h + pad[0] + pad[1] - kh) / stride + 1;
                let wo = (w + pad[2] + pad[3] - kw) / stride + 1;
                2.0 * f(n) * f(c_out) * f(ho) * f(wo) * f(c_in) * f(kh) * f(kw)
            }
            Op::TemporalConv { b, c_in, f: frames, pixels, c_out } => 2.0 * f(b) * f(c_out) * f(frames) * f(pixels) * f(c_in) * 3.0,
            Op::GroupNorm { n, c, rest, .. } => 8.0 * f(n) * f(c) * f(rest),
            Op::LayerNorm { rows, dim } => 8.0 * f(rows) * f(dim),
            Op::Attention { batch, heads, seq_q, seq_kv, head_dim } => 4.0 * f(batch) * f(heads) * f(seq_q) * f(seq_kv) * f(head_dim),
            Op::Geglu { rows, dim } => 8.0 * f(rows) * f(dim),
            Op::Upsample { n, c, h_out, w_out, .. } => f(n) * f(c) * f(h_out) * f(w_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_reports_op_name() {
        let ops = [
            Op::Linear { rows: 1, d_in: 1, d_out: 1, bias: true },
            Op::Conv2d { n: 1, c_in: 1, h: 1, w: 1, c_out: 1, kh: 1, kw: 1, stride: 1, pad: [0; 4] },
            Op::TemporalConv { b: 1, c_in: 1, f: 1, pixels: 1, c_out: 1 },
            Op::GroupNorm { n: 1, c: 1, rest: 1, groups: 1 },
            Op::LayerNorm { rows: 1, dim: 1 },
            Op::Attention { batch: 1, heads: 1, seq_q: 1, seq_kv: 1, head_dim: 1 },
            Op::Upsample { n: 1, c: 1, h: 1, w: 1, h_out: 1, w_out: 1 },
            Op::Geglu { rows: 1, dim: 1 },
        ];
        for (op, kind) in ops.iter().zip(KINDS) {
            assert_eq!(op.kind(), kind);
            assert_eq!(serde_json::to_value(op).unwrap()["op"], kind);
        }
    }

    #[test]
    fn records_only_inside_and_restores_the_outer_recording() {
        record(|| panic!("built while nothing records"));
        let a = Op::LayerNorm { rows: 2, dim: 3 };
        let b = Op::Geglu { rows: 1, dim: 4 };
        let ((), outer) = recording(|| {
            record(|| a.clone());
            let ((), inner) = recording(|| record(|| b.clone()));
            assert_eq!(inner, vec![b.clone()]);
            record(|| a.clone());
        });
        assert_eq!(outer, vec![a.clone(), a.clone()]);
        assert_eq!(tally(&outer), vec![(a, 2)]);
    }
}
