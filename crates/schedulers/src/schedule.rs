//! Shared host-side schedule arithmetic, written once and used by every scheduler: beta schedules
//! (`linear`, `scaled_linear`, `squaredcos_cap_v2`, DDPM's `sigmoid`), `rescale_zero_terminal_snr`,
//! `alphas_cumprod`, timestep spacing (`leading`, `trailing`, `linspace`), sigma tables,
//! `_sigma_to_t`, Karras / exponential / beta sigmas. Mirrors the helpers that diffusers copies
//! into every `diffusers/schedulers/scheduling_*.py` (`betas_for_alpha_bar`,
//! `rescale_zero_terminal_snr`, `_convert_to_karras`, ...).
//!
//! Precision (this is what diffusers computes, reproduced on purpose):
//! * `betas`, `alphas`, `alphas_cumprod` are float32 torch tensors, reproduced bit for bit:
//!   `torch.linspace` (float32) is a per-element fused multiply-add from the nearer end, and
//!   `torch.cumprod` accumulates in double on the CPU and rounds each element to f32.
//! * numpy arithmetic (timestep spacing, `np.interp`, Karras sigmas) is f64; `np.round` is
//!   round-half-to-even.
//! * sigma tables built from `alphas_cumprod` (`((1 - a) / a) ** 0.5`) are float32.

use serde::{Deserialize, Serialize};

use crate::error::{opt_err, Result, SchedulerError};

/// `beta_schedule` of diffusers' schedulers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `torch.linspace(beta_start, beta_end, T)`.
    Linear,
    /// `torch.linspace(beta_start**0.5, beta_end**0.5, T) ** 2` (Stable Diffusion, ModelScope).
    ScaledLinear,
    /// Glide cosine schedule, `betas_for_alpha_bar(T)`.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// `sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start` (DDPM only).
    Sigmoid,
    /// `betas_for_alpha_bar(T, alpha_transform_type="laplace")` (DDPM only).
    Laplace,
    /// `betas_for_alpha_bar(T, alpha_transform_type="exp")` (HeunDiscrete only).
    Exp,
}

/// `prediction_type`: what the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε.
    Epsilon,
    /// The clean sample x₀.
    Sample,
    /// v = α·ε − σ·x₀ (Imagen Video §2.4).
    VPrediction,
}

/// `timestep_spacing` (Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `arange(0, N) * (T // N) + steps_offset`, reversed.
    Leading,
    /// `round(arange(T, 0, -T / N)) - 1`.
    Trailing,
    /// `round(linspace(0, T - 1, N))`, reversed.
    Linspace,
}

/// `final_sigmas_type`: the sigma appended after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// σ = 0 (fully denoised).
    Zero,
    /// σ of the first training timestep.
    SigmaMin,
}

/// The shared beta options of every scheduler, borrowed from its config.
#[derive(Clone, Copy, Debug)]
pub struct BetaParams<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
    pub rescale_betas_zero_snr: bool,
}

/// [`BetaParams`] of a config with diffusers' usual beta fields (`num_train_timesteps`,
/// `beta_start`, `beta_end`, `beta_schedule`, `trained_betas`); `rescale_betas_zero_snr` is the
/// second argument (default `false`, for the classes without that option).
macro_rules! beta_params {
    ($cfg:expr) => {
        $crate::schedule::beta_params!($cfg, false)
    };
    ($cfg:expr, $rescale:expr) => {
        $crate::schedule::BetaParams {
            num_train_timesteps: $cfg.num_train_timesteps,
            beta_start: $cfg.beta_start,
            beta_end: $cfg.beta_end,
            beta_schedule: $cfg.beta_schedule,
            trained_betas: $cfg.trained_betas.as_deref(),
            rescale_betas_zero_snr: $rescale,
        }
    };
}
pub(crate) use beta_params;

/// numpy `np.linspace(start, stop, num)` in f64 (`arange(num) * step + start`, last = stop).
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// numpy `np.arange(start, stop, step)` for floats (`start + i * ((start + step) - start)`).
pub fn np_arange_f64(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let delta = (start + step) - start;
    (0..len as usize).map(|i| start + i as f64 * delta).collect()
}

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU, bit for bit: `step = (end -
/// start) / (steps - 1)` in f32, then a fused multiply-add per element from the nearer end
/// (`fma(i, step, start)` for the first half, `fma(-step, steps - 1 - i, end)` for the rest).
pub fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { (i as f32).mul_add(step, s) } else { (-step).mul_add((steps - 1 - i) as f32, e) })
        .collect()
}

/// `betas_for_alpha_bar(T, max_beta=0.999, "cosine")`: python floats, then a float32 tensor.
pub fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / num_diffusion_timesteps as f64;
            let t2 = (i + 1) as f64 / num_diffusion_timesteps as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// `betas_for_alpha_bar(T, max_beta, "laplace")`.
pub fn betas_for_alpha_bar_laplace(n: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        let lmb = -0.5 * (0.5 - t).signum_py() * (1.0 - 2.0 * (0.5 - t).abs() + 1e-6).ln();
        let snr = lmb.exp();
        (snr / (1.0 + snr)).sqrt()
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

trait CopySign {
    fn signum_py(self) -> f64;
}
impl CopySign for f64 {
    /// `math.copysign(1, x)`.
    fn signum_py(self) -> f64 {
        1f64.copysign(self)
    }
}

/// `torch.cumprod` of a float32 tensor on the CPU: accumulates in f64, rounds each output.
pub fn cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr(betas)` (arXiv 2305.08891, Algorithm 1), in float32 like torch.
pub fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let ac = cumprod_f32(&alphas);
    let mut s: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let s0 = s[0];
    let st = s[s.len() - 1];
    let scale = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v -= st;
        *v *= scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v.powi(2)).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// Upper bound on `num_train_timesteps` (diffusers has none; this keeps a garbage config from
/// allocating gigabytes of tables).
pub const MAX_TRAIN_TIMESTEPS: usize = 1_000_000;

/// The float32 `betas` table of a config (diffusers' `__init__`).
pub fn betas(p: &BetaParams) -> Result<Vec<f32>> {
    let t = p.num_train_timesteps;
    if !(2..=MAX_TRAIN_TIMESTEPS).contains(&t) {
        return opt_err("num_train_timesteps", format!("must be in 2..={MAX_TRAIN_TIMESTEPS}, got {t}"));
    }
    let betas = if let Some(tb) = p.trained_betas {
        if tb.len() != t {
            return opt_err(
                "trained_betas",
                format!("has {} values but num_train_timesteps is {t}", tb.len()),
            );
        }
        tb.iter().map(|&b| b as f32).collect()
    } else {
        match p.beta_schedule {
            BetaSchedule::Linear => torch_linspace_f32(p.beta_start, p.beta_end, t),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(p.beta_start.sqrt(), p.beta_end.sqrt(), t).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(t, 0.999),
            BetaSchedule::Sigmoid => torch_linspace_f32(-6.0, 6.0, t)
                .into_iter()
                .map(|x| {
                    let s = 1.0 / (1.0 + (-x).exp());
                    s * ((p.beta_end - p.beta_start) as f32) + p.beta_start as f32
                })
                .collect(),
            BetaSchedule::Laplace => betas_for_alpha_bar_laplace(t, 0.999),
            BetaSchedule::Exp => (0..t)
                .map(|i| {
                    let f = |x: f64| (x * -12.0).exp();
                    let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                    (1.0 - f(t2) / f(t1)).min(0.999) as f32
                })
                .collect(),
        }
    };
    let betas = if p.rescale_betas_zero_snr { rescale_zero_terminal_snr(&betas) } else { betas };
    if betas.iter().any(|b| !b.is_finite() || *b <= 0.0 && !p.rescale_betas_zero_snr || *b >= 1.0 + f32::EPSILON) {
        return Err(SchedulerError::InvalidOption {
            option: "beta_start/beta_end",
            message: "betas must be finite and in (0, 1]".into(),
        });
    }
    Ok(betas)
}

/// `alphas_cumprod = cumprod(1 - betas)` in float32.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    cumprod_f32(&alphas)
}

/// float32 `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` (ascending in t).
pub fn sigmas_f32(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
}

/// Check `1 <= num_inference_steps <= num_train_timesteps`.
pub fn check_steps(n: usize, num_train_timesteps: usize) -> Result<()> {
    if n == 0 {
        return Err(SchedulerError::InvalidSteps { steps: n, message: "must be at least 1".into() });
    }
    if n > num_train_timesteps {
        return Err(SchedulerError::InvalidSteps {
            steps: n,
            message: format!("cannot be larger than num_train_timesteps = {num_train_timesteps}"),
        });
    }
    Ok(())
}

/// Integer timesteps with DDIM/DDPM/PNDM-style spacing (descending):
/// `linspace`: `round(linspace(0, T-1, N))`; `leading`: `arange(N) * (T // N) + offset`;
/// `trailing`: `round(arange(T, 0, -T/N)) - 1`.
pub fn spaced_timesteps(spacing: TimestepSpacing, n: usize, t: usize, steps_offset: i64) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> =
                np_linspace(0.0, (t - 1) as f64, n).into_iter().map(|x| x.round_ties_even()).collect();
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = t / n;
            (0..n).rev().map(|i| (i * ratio) as f64 + steps_offset as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / n as f64;
            np_arange_f64(t as f64, 0.0, -ratio).into_iter().map(|x| x.round_ties_even() - 1.0).collect()
        }
    }
}

/// `np.interp(x, arange(len(fp)), fp)` in f64.
pub fn interp_index(x: f64, fp: &[f64]) -> f64 {
    let n = fp.len();
    if x <= 0.0 {
        return fp[0];
    }
    if x >= (n - 1) as f64 {
        return fp[n - 1];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    // numpy: slope * (x - xp[j]) + fp[j]
    let slope = fp[i + 1] - fp[i];
    if w == 0.0 {
        fp[i]
    } else {
        slope * w + fp[i]
    }
}

/// diffusers' `_sigma_to_t(sigma, log_sigmas)`: `log_sigmas` is the float32 `np.log` of the
/// float32 sigma table; `sigma` is f64. The `low - high` difference is float32 arithmetic.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // low_idx = cumsum(dists >= 0).argmax().clip(max=n-2): the last index with log_sigma >= ls[i]
    // (log_sigmas ascending), or 0 when none.
    let mut count = 0usize;
    let mut best = 0usize;
    let mut best_count = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            count += 1;
        }
        if count > best_count {
            best_count = count;
            best = i;
        }
    }
    let low_idx = best.min(n - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low as f64 - log_sigma) / ((low - high) as f64)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) sigmas, rho = 7 (`_convert_to_karras`), f64.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// Exponential sigmas (`_convert_to_exponential`), f64.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n).into_iter().map(f64::exp).collect()
}

/// Beta sigmas (`_convert_to_beta`, arXiv 2407.12173, alpha = beta = 0.6), f64, with
/// `scipy.stats.beta.ppf` replaced by [`beta_ppf`].
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|x| sigma_min + beta_ppf(1.0 - x, 0.6, 0.6) * (sigma_max - sigma_min))
        .collect()
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), ~1e-15 relative.
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        std::f64::consts::PI.ln() - (std::f64::consts::PI * x).sin().ln() - ln_gamma(1.0 - x)
    } else {
        let x = x - 1.0;
        let mut a = G[0];
        let t = x + 7.5;
        for (i, g) in G.iter().enumerate().skip(1) {
            a += g / (x + i as f64);
        }
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }
}

fn betacf(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let tiny = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta function I_x(a, b).
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let bt = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        bt * betacf(a, b, x) / a
    } else {
        1.0 - bt * betacf(b, a, 1.0 - x) / b
    }
}

/// Quantile of the Beta(a, b) distribution (`scipy.stats.beta.ppf`), by bisection to f64 precision.
pub fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_inc(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The (optional) Karras / exponential / beta sigma conversions of the k-diffusion schedulers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaKind {
    /// Sigmas interpolated at the spaced timesteps.
    Interpolated,
    /// `use_karras_sigmas`.
    Karras,
    /// `use_exponential_sigmas`.
    Exponential,
    /// `use_beta_sigmas`.
    Beta,
}

/// Pick the sigma kind from the three diffusers flags; more than one set is an error.
pub fn sigma_kind(karras: bool, exponential: bool, beta: bool) -> Result<SigmaKind> {
    match (karras, exponential, beta) {
        (false, false, false) => Ok(SigmaKind::Interpolated),
        (true, false, false) => Ok(SigmaKind::Karras),
        (false, true, false) => Ok(SigmaKind::Exponential),
        (false, false, true) => Ok(SigmaKind::Beta),
        _ => opt_err(
            "use_karras_sigmas/use_exponential_sigmas/use_beta_sigmas",
            "only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used",
        ),
    }
}

/// Apply a sigma conversion (`sigma_min`/`sigma_max` overrides as in the config, else the ends of
/// `in_sigmas`, which must be descending).
pub fn convert_sigmas(kind: SigmaKind, in_sigmas: &[f64], n: usize, smin: Option<f64>, smax: Option<f64>) -> Vec<f64> {
    let sigma_min = smin.unwrap_or(in_sigmas[in_sigmas.len() - 1]);
    let sigma_max = smax.unwrap_or(in_sigmas[0]);
    match kind {
        SigmaKind::Interpolated => in_sigmas.to_vec(),
        SigmaKind::Karras => karras_sigmas(sigma_min, sigma_max, n),
        SigmaKind::Exponential => exponential_sigmas(sigma_min, sigma_max, n),
        SigmaKind::Beta => beta_sigmas(sigma_min, sigma_max, n),
    }
}

/// Index of `timestep` in `schedule` the way diffusers' `index_for_timestep` picks it: the second
/// match when there are several (so image-to-image starting mid-schedule does not skip a sigma),
/// else the first; `None` when absent.
pub fn index_for_timestep(schedule: &[f64], timestep: f64) -> Option<usize> {
    let hits: Vec<usize> = schedule.iter().enumerate().filter(|(_, &t)| t == timestep).map(|(i, _)| i).collect();
    match hits.len() {
        0 => None,
        1 => Some(hits[0]),
        _ => Some(hits[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_examples() {
        assert_eq!(spaced_timesteps(TimestepSpacing::Leading, 10, 1000, 1)[0], 901.0);
        assert_eq!(spaced_timesteps(TimestepSpacing::Trailing, 10, 1000, 0)[0], 999.0);
        assert_eq!(spaced_timesteps(TimestepSpacing::Linspace, 1, 1000, 0), vec![0.0]);
    }

    #[test]
    fn beta_ppf_symmetric() {
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-12);
        let x = beta_ppf(0.3, 0.6, 0.6);
        assert!((beta_inc(0.6, 0.6, x) - 0.3).abs() < 1e-12);
    }
}

/// diffusers' `_step_index` / `_begin_index` bookkeeping of the sigma-based schedulers
/// (`_init_step_index`, `index_for_timestep`, `add_noise`'s index choice).
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
}

impl Cursor {
    /// `_init_step_index(timestep)` if not yet known; returns the current step index.
    pub fn init(&mut self, timesteps: &[f64], timestep: f64) -> Result<usize> {
        if let Some(i) = self.step_index {
            return Ok(i);
        }
        let i = match self.begin_index {
            Some(b) => b,
            None => index_for_timestep(timesteps, timestep).ok_or_else(|| SchedulerError::InvalidTimestep {
                timestep,
                message: "not one of the scheduler's timesteps".into(),
            })?,
        };
        self.step_index = Some(i);
        Ok(i)
    }
    /// Like `init`, but a timestep that is not in the schedule maps to the last index (the
    /// multistep solvers' `index_for_timestep`).
    pub fn init_or_last(&mut self, timesteps: &[f64], timestep: f64) -> usize {
        if let Some(i) = self.step_index {
            return i;
        }
        let i = match self.begin_index {
            Some(b) => b,
            None => index_for_timestep(timesteps, timestep).unwrap_or(timesteps.len() - 1),
        };
        self.step_index = Some(i);
        i
    }
    /// The index `add_noise` uses.
    pub fn add_noise_index(&self, timesteps: &[f64], timestep: f64) -> Result<usize> {
        match (self.begin_index, self.step_index) {
            (None, _) => index_for_timestep(timesteps, timestep).ok_or_else(|| SchedulerError::InvalidTimestep {
                timestep,
                message: "not one of the scheduler's timesteps".into(),
            }),
            (Some(_), Some(s)) => Ok(s),
            (Some(b), None) => Ok(b),
        }
    }
    /// `set_begin_index`, checked against the schedule length.
    pub fn set_begin(&mut self, begin_index: usize, len: usize) -> Result<()> {
        if begin_index >= len {
            return Err(SchedulerError::State(format!("begin_index {begin_index} >= {len} timesteps")));
        }
        self.begin_index = Some(begin_index);
        Ok(())
    }
}

/// The timesteps of the k-diffusion family (Euler, Heun, LMS, KDPM2, ...) before any sigma
/// conversion, as float32 values: `linspace` = `np.linspace(0, T-1, N, dtype=float32)`,
/// `leading` = `(arange(N) * (T // N)).round() + offset`, `trailing` =
/// `round(arange(T, 0, -T/N)) - 1`.
///
/// A negative timestep is an error: `trailing` spacing's float `arange(T, 0, -T/N)` can yield
/// N + 1 entries ending at -1 (e.g. T = 500, N = 487); diffusers then runs an extra step at t = -1.
pub fn k_timesteps(spacing: TimestepSpacing, n: usize, t: usize, steps_offset: i64) -> Result<Vec<f64>> {
    let v = match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> = np_linspace(0.0, (t - 1) as f64, n).into_iter().map(|x| x as f32 as f64).collect();
            v.reverse();
            v
        }
        _ => spaced_timesteps(spacing, n, t, steps_offset),
    };
    if let Some(bad) = v.iter().find(|&&x| x < 0.0) {
        return Err(SchedulerError::InvalidTimestep {
            timestep: *bad,
            message: format!("{spacing:?} spacing gives a negative timestep for N = {n}, T = {t}"),
        });
    }
    Ok(v)
}

/// Input of [`k_sigmas`].
#[derive(Clone, Copy, Debug)]
pub struct KSigmaParams<'a> {
    pub alphas_cumprod: &'a [f32],
    pub timesteps: &'a [f64],
    pub kind: SigmaKind,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: FinalSigmasType,
    /// Euler's `interpolation_type = "log_linear"`.
    pub log_linear: bool,
}

impl<'a> KSigmaParams<'a> {
    /// The schedulers without Euler's extra options (Euler-ancestral, Heun, LMS, KDPM2): no
    /// `sigma_min`/`sigma_max` override, final sigma 0, linear interpolation.
    pub fn plain(alphas_cumprod: &'a [f32], timesteps: &'a [f64], kind: SigmaKind) -> Self {
        Self {
            alphas_cumprod,
            timesteps,
            kind,
            sigma_min: None,
            sigma_max: None,
            final_sigmas_type: FinalSigmasType::Zero,
            log_linear: false,
        }
    }
}

/// The k-diffusion sigma schedule (EulerDiscrete's `set_timesteps`): interpolated (or converted)
/// sigmas, the timesteps matching them, and the final sigma; sigmas rounded to float32.
pub fn k_sigmas(p: &KSigmaParams) -> (Vec<f64>, Vec<f64>) {
    let table = sigmas_f32(p.alphas_cumprod);
    let table64: Vec<f64> = table.iter().map(|&x| x as f64).collect();
    let log_sigmas: Vec<f32> = table.iter().map(|x| x.ln()).collect();
    let n = p.timesteps.len();
    let mut sigmas: Vec<f64> = if p.log_linear {
        let lo = table[table.len() - 1].ln() as f64;
        let hi = table[0].ln() as f64;
        np_linspace(lo, hi, n + 1).into_iter().map(|x| (x as f32).exp() as f64).collect()
    } else {
        p.timesteps.iter().map(|&t| interp_index(t, &table64)).collect()
    };
    let mut timesteps = p.timesteps.to_vec();
    if p.kind != SigmaKind::Interpolated {
        sigmas = convert_sigmas(p.kind, &sigmas, n, p.sigma_min, p.sigma_max);
        timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas)).collect();
    }
    let last = match p.final_sigmas_type {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => {
            let a = p.alphas_cumprod[0];
            ((1.0 - a) / a).sqrt() as f64
        }
    };
    sigmas.push(last);
    let sigmas = sigmas.into_iter().map(|s| s as f32 as f64).collect();
    let timesteps = timesteps.into_iter().map(|t| t as f32 as f64).collect();
    (timesteps, sigmas)
}

/// `_sigma_to_t` evaluated on torch float32 tensors (as KDPM2 does for its interpolated sigmas:
/// every intermediate is float32).
pub fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f32 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let mut count = 0usize;
    let mut best = 0usize;
    let mut best_count = 0usize;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls >= 0.0 {
            count += 1;
        }
        if count > best_count {
            best_count = count;
            best = i;
        }
    }
    let low_idx = best.min(n - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f32 + w * high_idx as f32
}
