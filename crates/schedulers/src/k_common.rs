//! Shared pieces of the k-diffusion family run states (Heun, LMS, KDPM2, KDPM2-ancestral):
//! a macro for the config boilerplate (beta params, registration), the interleaving of sigma
//! tables for two-evaluation samplers (`torch.cat([x[:1], x[1:].repeat_interleave(2), ...])`),
//! and the float32 log-space midpoint `exp(lerp(log a, log b, 0.5))` of
//! `diffusers/schedulers/scheduling_k_dpm_2_*.py`.

/// `torch.lerp(a, b, w)` for float32 (two-sided formula, as torch's CPU kernel).
pub(crate) fn lerp_f32(a: f32, b: f32, w: f32) -> f32 {
    if w < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// `exp(lerp(log a, log b, 0.5))` in float32 (NaN/0 cases follow IEEE like torch).
pub(crate) fn log_mid(a: f32, b: f32) -> f32 {
    lerp_f32(a.ln(), b.ln(), 0.5).exp()
}

/// `cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])`.
pub(crate) fn interleave_all(x: &[f64]) -> Vec<f64> {
    let mut v = vec![x[0]];
    for &s in &x[1..] {
        v.push(s);
        v.push(s);
    }
    v.push(x[x.len() - 1]);
    v
}

/// `cat([x[:1], x[1:-1].repeat_interleave(2), x[-1:]])` (Heun's sigmas).
pub(crate) fn interleave_inner(x: &[f64]) -> Vec<f64> {
    let mut v = vec![x[0]];
    for &s in &x[1..x.len() - 1] {
        v.push(s);
        v.push(s);
    }
    v.push(x[x.len() - 1]);
    v
}

/// Index with Python's negative wrap-around (`a[-1]` is the last element).
pub(crate) fn py_index(a: &[f64], i: isize) -> Option<f64> {
    let n = a.len() as isize;
    let j = if i < 0 { n + i } else { i };
    if j < 0 || j >= n {
        None
    } else {
        Some(a[j as usize])
    }
}
