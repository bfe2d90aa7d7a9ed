//! bf16 matrix products on AVX-512 BF16 (`vdpbf16ps`: each f32 lane adds the products of a pair
//! of bf16 values, exactly, to its sum), for reel's CPU kernels (`cpu.rs`): a linear layer
//! `C (m × n, f32) += A (m × k) · Wᵀ` with bf16 `A` and `W (n × k)`, both rows contiguous along
//! `k`, as PyTorch's bf16 CPU products (oneDNN) multiply bf16 operands with f32 accumulation.
//!
//! The GotoBLAS structure (Goto & van de Geijn 2008) in its simplest form: `W` is packed once a
//! call into panels of [`NR`] = 32 output columns, each panel's `k` values as pairs
//! (`[pair][column]`, one `u32` = two bf16 per column; a transpose of `W`'s rows read as `u32`
//! pairs, 16 × 16 in registers), so one 64-byte load is a pair for 16
//! columns; a micro-kernel keeps an `MR × 32` block of `C` in 24 registers and, for every pair,
//! broadcasts row `r`'s pair of `A` straight from `A`'s rows (no packing: they are `k`-contiguous)
//! and adds its products with the panel's two vectors. Tasks are blocks of rows × groups of panels
//! (the group about 320 KiB, in L2; a row block's `A` in L1), on every thread. Measured on the
//! 2-core Zen 5 VM (docs/performance.md): 230–370 GFLOP/s a core against about 220 for f32 on
//! `gemm`. Also the bf16 `(kh, 1)` convolutions' and Winograd's products (`cpu.rs`, B packed from
//! an image's channel pairs by [`pack_columns`] / [`pack_columns_f32`]) and bf16 rounding
//! ([`round`], `vcvtneps2bf16`).

use rayon::prelude::*;

/// Output columns per packed panel (two 16-lane f32 vectors).
pub const NR: usize = 32;
/// Rows of the micro-kernel's register block (2 × 12 accumulators, 2 panel vectors).
const MR: usize = 12;
/// Rows of `C` per task.
const TASK_ROWS: usize = 16 * MR;
/// Bytes of packed panels a task works through per row block (L2).
const GROUP_BYTES: usize = 320 << 10;
/// Pairs of `k` per pass over `C` (longer sums are split: `C` is reloaded between passes).
const MAX_PAIRS: usize = 1280;

/// The longest sums ([`MAX_PAIRS`] pairs) [`product_rounded`] takes: one pass over `C`.
pub const ROUNDED_K: usize = 2 * MAX_PAIRS;

/// Whether this CPU runs the bf16 products (AVX-512 F, BW, VL and BF16), checked once.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A bf16 matrix read in place: `rows` rows of `k` contiguous values, `stride` values apart,
/// starting at `data[offset]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [half::bf16],
    pub offset: usize,
    pub stride: usize,
    pub rows: usize,
}

impl Rows<'_> {
    fn in_bounds(&self, k: usize) -> bool {
        self.rows == 0 || k == 0 || self.offset + (self.rows - 1) * self.stride + k <= self.data.len()
    }
}

/// `c (m × n, f32 row-major: its starting values, e.g. bias or residual) += a (m × k) · w (n × k)ᵀ`,
/// or `=` with `overwrite` (then `c`'s values are not read: they may be uninitialised, and
/// `k` > 0 writes them all). Panics unless [`available`] and the operands fit their slices.
pub fn product(a: Rows<'_>, w: Rows<'_>, k: usize, c: &mut [f32], overwrite: bool) {
    assert!(w.in_bounds(k), "bf16 product operands out of bounds");
    let n = w.rows;
    product_packed(a, k, &pack_rows(w, k), n, c, 0, n, overwrite);
}

/// `c[offset + i·ldc + j] += Σ_t a[i][t] · B[t][j]` for `i < a.rows`, `j < n`, with `B (k × n)`
/// given as [`pack_rows`] / [`pack_columns`] panels; with `overwrite`, `=` instead (that block of
/// `c` is not read, and written whole when `k` > 0). Panics unless [`available`] and the
/// operands fit their slices.
#[allow(clippy::too_many_arguments)]
pub fn product_packed(a: Rows<'_>, k: usize, packed: &[u32], n: usize, c: &mut [f32], offset: usize, ldc: usize, overwrite: bool) {
    let m = a.rows;
    assert!(m == 0 || n == 0 || (ldc >= n && offset + (m - 1) * ldc + n <= c.len()), "bf16 product output out of bounds");
    let c = super::cpu::Shared(c.as_mut_ptr());
    run(a, k, packed, n, (!overwrite).then_some(c), Dst::F32(c), offset, ldc);
}

/// `d (m × n, bf16 row-major) = round(init + a (m × k) · w (n × k)ᵀ)` (`init` f32, zeros when
/// `None`): the sums in f32 registers rounded once as they are stored, where [`product`] and a
/// rounding pass write and read an f32 `C` in between. Needs `k` ≤ [`ROUNDED_K`] (one pass) and
/// `k` > 0 (then every value of `d` is written). Panics unless [`available`] and the operands
/// fit their slices.
pub fn product_rounded(a: Rows<'_>, w: Rows<'_>, k: usize, init: Option<&[f32]>, d: &mut [half::bf16]) {
    assert!(w.in_bounds(k) && k > 0 && k <= ROUNDED_K, "bf16 rounded product: operands out of bounds or k {k} outside 1..={ROUNDED_K}");
    let (m, n) = (a.rows, w.rows);
    assert!(d.len() >= m * n && init.is_none_or(|c| c.len() >= m * n), "bf16 rounded product output out of bounds");
    let load = init.map(|c| super::cpu::Shared(c.as_ptr() as *mut f32));
    run(a, k, &pack_rows(w, k), n, load, Dst::Bf16(super::cpu::Shared(d.as_mut_ptr())), 0, n);
}

/// `d[offset + i·ldc + j] = round(Σ_t a[i][t] · B[t][j])` with `B (k × n)` given as
/// [`pack_rows`] / [`pack_columns`] panels, the f32 sums rounded to bf16 as they are stored (as
/// [`product_rounded`]; `k` ≤ [`ROUNDED_K`]). Panics unless [`available`] and `a` and `packed`
/// fit.
///
/// # Safety
/// `d` points at a buffer holding `offset + (a.rows − 1)·ldc + n` values (`ldc` ≥ `n`), and no
/// one else reads or writes that block meanwhile.
pub unsafe fn product_packed_rounded(a: Rows<'_>, k: usize, packed: &[u32], n: usize, d: super::cpu::Shared<half::bf16>, offset: usize, ldc: usize) {
    assert!(k <= ROUNDED_K && ldc >= n, "bf16 rounded product: k {k} over {ROUNDED_K} or rows shorter than n");
    run(a, k, packed, n, None, Dst::Bf16(d), offset, ldc);
}

/// Where [`run`] stores `C`.
#[derive(Clone, Copy)]
enum Dst {
    F32(super::cpu::Shared<f32>),
    Bf16(super::cpu::Shared<half::bf16>),
}

/// The products of [`product_packed`] / [`product_rounded`]: `C` starts from `load` (else zeros)
/// and goes to `dst` (a bf16 `dst` in one pass over `k`); both laid out from `offset`, rows
/// `ldc` apart, checked by the callers.
#[allow(clippy::too_many_arguments)]
fn run(a: Rows<'_>, k: usize, packed: &[u32], n: usize, load: Option<super::cpu::Shared<f32>>, dst: Dst, offset: usize, ldc: usize) {
    let m = a.rows;
    assert!(available(), "bf16 products need AVX-512 BF16");
    let pairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    assert!(a.in_bounds(k) && packed.len() >= panels * pairs * NR, "bf16 product operands out of bounds");
    assert!(matches!(dst, Dst::F32(_)) || pairs <= MAX_PAIRS, "a bf16 destination takes one pass over k");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let group = (GROUP_BYTES / (pairs.min(MAX_PAIRS) * NR * 4)).clamp(1, panels);
    let (row_blocks, groups) = (m.div_ceil(TASK_ROWS), panels.div_ceil(group));
    (0..row_blocks * groups).into_par_iter().for_each(|task| {
        let (rb, g) = (task / groups, task % groups);
        let (r0, r1) = (rb * TASK_ROWS, m.min((rb + 1) * TASK_ROWS));
        let (p0, p1) = (g * group, panels.min((g + 1) * group));
        let mut q0 = 0;
        while q0 < pairs {
            let q1 = pairs.min(q0 + MAX_PAIRS);
            let mut i = r0;
            while i < r1 {
                let rows = (r1 - i).min(MR);
                for p in p0..p1 {
                    let cols = (n - p * NR).min(NR);
                    // SAFETY: rows i..i+rows of `a` and pairs q0..q1 (< k/2 rounded up, the last
                    // one read as a single value when k is odd) are in bounds (checked above); the
                    // panel is `pairs · NR` values of `packed`; the C block (rows i.., columns
                    // p·NR..p·NR+cols) is in bounds of `load` and `dst` (checked by the callers)
                    // and belongs to this task alone.
                    unsafe {
                        let ap = a.data.as_ptr().add(a.offset + i * a.stride);
                        let bp = packed.as_ptr().add(p * pairs * NR);
                        let at = offset + i * ldc + p * NR;
                        let from = match (q0, load, dst) {
                            (0, None, _) => std::ptr::null(),
                            (0, Some(l), _) => l.ptr().add(at) as *const f32,
                            (_, _, Dst::F32(c)) => c.ptr().add(at) as *const f32,
                            (_, _, Dst::Bf16(_)) => unreachable!("one pass"),
                        };
                        let (to, to16) = match dst {
                            Dst::F32(c) => (c.ptr().add(at), std::ptr::null_mut()),
                            Dst::Bf16(d) => (std::ptr::null_mut(), d.ptr().add(at) as *mut u16),
                        };
                        micro_any(rows, ap, a.stride, [q0, q1], k, bp, (from, to, to16), ldc, cols);
                    }
                }
                i += rows;
            }
            q0 = q1;
        }
    });
}

/// `B = wᵀ (k × n)` as panels of [`NR`] columns, `[panel][pair][column]`, one `u32` per (pair,
/// column): values `2q` (low half) and `2q + 1` (high half; zero past `k`) of row `j` of `w`,
/// zero columns past `n = w.rows`. A row's pairs are already `u32`s in place, so a panel is a
/// transpose of `u32`s, done 16 × 16 at a time in registers ([`transpose_panel`]). Panics unless
/// [`available`] and `w` fits its slice.
pub fn pack_rows(w: Rows<'_>, k: usize) -> Vec<u32> {
    assert!(available(), "bf16 packing needs AVX-512 BF16");
    assert!(w.in_bounds(k), "bf16 rows out of bounds");
    let (n, pairs) = (w.rows, k.div_ceil(2));
    let panels = n.div_ceil(NR);
    if panels * pairs == 0 {
        return Vec::new();
    }
    // SAFETY: `transpose_panel` writes every (pair, column) of its panel (columns past `n` as
    // zeros); the rows it reads are in bounds (checked above).
    unsafe {
        super::cpu::written::<u32>(panels * pairs * NR, |out| {
            out.par_chunks_mut(pairs * NR).enumerate().for_each(|(p, dst)| {
                let cols = NR.min(n - p * NR);
                transpose_panel(w.data.as_ptr().add(w.offset + p * NR * w.stride), w.stride, cols, k, dst);
            })
        })
    }
}

/// One panel of [`pack_rows`]: `dst[q·NR + j]` = pair `q` of row `j` (`j < cols`, rows `stride`
/// values apart from `src`, `k` values each; zero for `j ≥ cols`), 16 pairs × 16 rows a block:
/// 16 masked loads of 16 pairs (the bf16 values past `k` read as zero), an in-register
/// transpose, 16 stores.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16 present ([`available`]); `cols` ≤ [`NR`] rows of `k` values at `src`,
/// `stride` apart; `dst` holds `k.div_ceil(2) · NR` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn transpose_panel(src: *const half::bf16, stride: usize, cols: usize, k: usize, dst: &mut [u32]) {
    use std::arch::x86_64::*;
    let pairs = k.div_ceil(2);
    debug_assert!(cols <= NR && dst.len() >= pairs * NR);
    let mut q0 = 0;
    while q0 < pairs {
        let (e0, nq) = (2 * q0, (pairs - q0).min(16));
        let count = (k - e0).min(32);
        let mask = if count == 32 { u32::MAX } else { (1u32 << count) - 1 };
        for half in 0..2 {
            let mut r = [_mm512_setzero_si512(); 16];
            for (j, r) in r.iter_mut().enumerate() {
                let row = half * 16 + j;
                if row < cols {
                    *r = _mm512_maskz_loadu_epi16(mask, src.add(row * stride + e0) as *const i16);
                }
            }
            // 32-bit then 64-bit interleaves within 128-bit lanes: u[4g + e] lane l holds pair
            // 4l + e of rows 4g..4g + 4
            let mut u = [_mm512_setzero_si512(); 16];
            for g in 0..4 {
                let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
                let (t0, t1) = (_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
                let (t2, t3) = (_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
                u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
                u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
                u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
                u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
            }
            // then a 4 × 4 transpose of 128-bit lanes: pair 4l + e is lane l of u[e], u[4 + e],
            // u[8 + e], u[12 + e]
            for e in 0..4 {
                let v0 = _mm512_shuffle_i32x4::<0x44>(u[e], u[4 + e]);
                let v1 = _mm512_shuffle_i32x4::<0xEE>(u[e], u[4 + e]);
                let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + e], u[12 + e]);
                let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + e], u[12 + e]);
                let out = [
                    _mm512_shuffle_i32x4::<0x88>(v0, v2),
                    _mm512_shuffle_i32x4::<0xDD>(v0, v2),
                    _mm512_shuffle_i32x4::<0x88>(v1, v3),
                    _mm512_shuffle_i32x4::<0xDD>(v1, v3),
                ];
                for (l, v) in out.into_iter().enumerate() {
                    let q = 4 * l + e;
                    if q < nq {
                        _mm512_storeu_si512(dst.as_mut_ptr().add((q0 + q) * NR + half * 16) as *mut _, v);
                    }
                }
            }
        }
        q0 += nq;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_panel(_: *const half::bf16, _: usize, _: usize, _: usize, _: &mut [u32]) {
    unreachable!("bf16 packing needs x86-64 AVX-512 BF16")
}

/// Zeros in the columns past `cols` of every pair of a packed panel `dst` (the last panel's).
fn zero_past(dst: &mut [u32], cols: usize) {
    if cols < NR {
        for d in dst.chunks_exact_mut(NR) {
            d[cols..].fill(0);
        }
    }
}

/// `B (k × n)`, row `t` at `x[offset + t·ld ..][..n]`, as panels like [`pack_rows`]'s (an
/// image's channels × pixels, pairs of channels per `u32`).
pub fn pack_columns(x: &[half::bf16], offset: usize, ld: usize, k: usize, n: usize) -> Vec<u32> {
    // SAFETY (here and in `pack_columns_f32`): `pack_columns_with` asserts `available` and
    // passes rows as long as `d`.
    pack_columns_with(x, |d, lo, hi| unsafe { pair_row_bf16(d, lo, hi) }, offset, ld, k, n)
}

/// [`pack_columns`] of f32 values, each rounded to bf16 (nearest even, as `half::bf16::from_f32`;
/// `vcvtneps2bf16`): Winograd's transformed inputs.
pub fn pack_columns_f32(x: &[f32], offset: usize, ld: usize, k: usize, n: usize) -> Vec<u32> {
    pack_columns_with(x, |d, lo, hi| unsafe { pair_row_f32(d, lo, hi) }, offset, ld, k, n)
}

fn pack_columns_with<T: Copy + Sync>(x: &[T], pair_row: impl Fn(&mut [u32], &[T], Option<&[T]>) + Sync, offset: usize, ld: usize, k: usize, n: usize) -> Vec<u32> {
    assert!(available(), "bf16 packing needs AVX-512 BF16");
    assert!(k == 0 || n == 0 || offset + (k - 1) * ld + n <= x.len(), "bf16 columns out of bounds");
    let (pairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
    if panels * pairs == 0 {
        return Vec::new();
    }
    // SAFETY: every pair of every panel is written: its columns by `pair_row`, past `n` zeros.
    unsafe {
        super::cpu::written::<u32>(panels * pairs * NR, |out| {
            out.par_chunks_mut(pairs * NR).enumerate().for_each(|(p, dst)| {
                let (j0, cols) = (p * NR, NR.min(n - p * NR));
                let row = |t: usize| &x[offset + t * ld + j0..][..cols];
                zero_past(dst, cols);
                for (q, d) in dst.chunks_exact_mut(NR).enumerate() {
                    pair_row(&mut d[..cols], row(2 * q), (2 * q + 1 < k).then(|| row(2 * q + 1)));
                }
            })
        })
    }
}

/// `d[j] = bits(lo[j]) | bits(hi[j]) << 16` (`hi` zero when `None`), 16 columns an instruction.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16 present ([`available`]); `lo` (and `hi`) as long as `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn pair_row_f32(d: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    use std::arch::x86_64::*;
    let n = d.len();
    let mut j = 0;
    while j < n {
        let m = if n - j >= 16 { 0xffff } else { ((1u32 << (n - j)) - 1) as u16 };
        let bits = |v: &[f32]| _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, v.as_ptr().add(j)))));
        let mut w = bits(lo);
        if let Some(hi) = hi {
            w = _mm512_or_si512(w, _mm512_slli_epi32::<16>(bits(hi)));
        }
        _mm512_mask_storeu_epi32(d.as_mut_ptr().add(j) as *mut i32, m, w);
        j += 16;
    }
}

/// [`pair_row_f32`] for bf16 values (their bits as they are).
///
/// # Safety
/// As [`pair_row_f32`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn pair_row_bf16(d: &mut [u32], lo: &[half::bf16], hi: Option<&[half::bf16]>) {
    use std::arch::x86_64::*;
    let n = d.len();
    let mut j = 0;
    while j < n {
        let m = if n - j >= 16 { 0xffff } else { ((1u32 << (n - j)) - 1) as u16 };
        let bits = |v: &[half::bf16]| _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, v.as_ptr().add(j) as *const i16));
        let mut w = bits(lo);
        if let Some(hi) = hi {
            w = _mm512_or_si512(w, _mm512_slli_epi32::<16>(bits(hi)));
        }
        _mm512_mask_storeu_epi32(d.as_mut_ptr().add(j) as *mut i32, m, w);
        j += 16;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pair_row_f32(_: &mut [u32], _: &[f32], _: Option<&[f32]>) {
    unreachable!("bf16 packing needs x86-64 AVX-512 BF16")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pair_row_bf16(_: &mut [u32], _: &[half::bf16], _: Option<&[half::bf16]>) {
    unreachable!("bf16 packing needs x86-64 AVX-512 BF16")
}

/// `dst[i] = src[i]` rounded to bf16 (nearest even, as `half::bf16::from_f32`; `vcvtneps2bf16`
/// takes subnormal inputs as zero), 16 values an instruction. Panics unless [`available`].
pub fn round(src: &[f32], dst: &mut [half::bf16]) {
    assert!(available() && src.len() == dst.len(), "bf16 rounding needs AVX-512 BF16 and equal lengths");
    // SAFETY: the features were checked; both slices hold `src.len()` values.
    unsafe { round_avx512(src, dst) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
unsafe fn round_avx512(src: &[f32], dst: &mut [half::bf16]) {
    use std::arch::x86_64::*;
    let (full, n) = (src.len() / 16 * 16, src.len());
    for i in (0..full).step_by(16) {
        let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
    }
    for i in full..n {
        dst[i] = half::bf16::from_f32(src[i]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn round_avx512(_: &[f32], _: &mut [half::bf16]) {
    unreachable!("bf16 rounding needs x86-64 AVX-512 BF16")
}

/// [`micro`] for `rows` ≤ [`MR`] rows.
///
/// # Safety
/// As [`micro`].
#[allow(clippy::too_many_arguments)]
unsafe fn micro_any(rows: usize, a: *const half::bf16, lda: usize, q: [usize; 2], k: usize, bp: *const u32, c: Block, ldc: usize, cols: usize) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match rows {
                $($r => micro::<$r>(a, lda, q, k, bp, c, ldc, cols),)*
                _ => unreachable!("micro-kernel rows 1..={MR}"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// A micro-kernel's `C` block `(from, to, to16)`: where its starting values are read (null:
/// zeros) and where the sums go, f32 `to` or rounded to bf16 `to16` (the other null); rows `ldc`
/// apart in each.
type Block = (*const f32, *mut f32, *mut u16);

/// `C[R × cols] = from + A[R × pairs q0..q1] · panel`, stored to `to` or rounded into `to16` (see
/// [`Block`]; columns past `cols` neither read nor written), `A` rows `lda` apart.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16 present ([`available`]); `a` has `R` rows of `k` values `lda` apart; `bp`
/// a packed panel of at least `q1` pairs; the non-null pointers of the [`Block`] `R × cols` blocks
/// with rows `ldc` apart, `to` or `to16` non-null.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const R: usize>(a: *const half::bf16, lda: usize, [q0, q1]: [usize; 2], k: usize, bp: *const u32, (from, to, to16): Block, ldc: usize, cols: usize) {
    use std::arch::x86_64::*;
    let mask = |lo: usize| -> u16 { (((1u32 << cols.saturating_sub(lo).min(16)) - 1) & 0xffff) as u16 };
    let (m0, m1) = (mask(0), mask(16));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if !from.is_null() {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_maskz_loadu_ps(m0, from.add(r * ldc));
            acc[1] = _mm512_maskz_loadu_ps(m1, from.add(r * ldc + 16));
        }
    }
    let a = a as *const u16;
    let full = q1.min(k / 2);
    // one pair of the panel times row r's pair `$pair` (a 32-bit lane pattern), for every row
    macro_rules! step {
        ($q:expr, |$r:ident| $pair:expr) => {{
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add($q * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add($q * NR + 16) as *const _));
            for ($r, acc) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32($pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }};
    }
    for q in q0..full {
        step!(q, |r| (a.add(r * lda + 2 * q) as *const i32).read_unaligned());
    }
    if full < q1 {
        // k odd: the last value alone (the panel's high halves are zero there)
        step!(full, |r| *a.add(r * lda + 2 * full) as i32);
    }
    if to16.is_null() {
        for (r, acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(to.add(r * ldc), m0, acc[0]);
            _mm512_mask_storeu_ps(to.add(r * ldc + 16), m1, acc[1]);
        }
    } else {
        for (r, acc) in acc.iter().enumerate() {
            let round = |v| std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(to16.add(r * ldc) as *mut i16, m0, round(acc[0]));
            _mm256_mask_storeu_epi16(to16.add(r * ldc + 16) as *mut i16, m1, round(acc[1]));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const R: usize>(_: *const half::bf16, _: usize, _: [usize; 2], _: usize, _: *const u32, _: Block, _: usize, _: usize) {
    unreachable!("bf16 products need x86-64 AVX-512 BF16")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_half() {
        if !available() {
            eprintln!("this CPU has no AVX-512 BF16 (skipped)");
            return;
        }
        // ties to even both ways, the largest finite values, infinities, NaN, a tail of 5
        let mut src: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37 - 170.0).powi(3) * 1e-3).collect();
        src.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -(1.0 + 1.0 / 256.0), f32::MAX, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-30, 65504.0, 3.3e38]);
        src.extend([0.1, 0.2, 0.3, 0.4, 0.5]);
        let mut ours = vec![half::bf16::ZERO; src.len()];
        round(&src, &mut ours);
        for (s, o) in src.iter().zip(&ours) {
            assert_eq!(o.to_bits(), half::bf16::from_f32(*s).to_bits(), "{s:e}");
        }
        // the packing's rounding: one row of pairs (src, src reversed)
        let rev: Vec<f32> = src.iter().rev().copied().collect();
        let both: Vec<f32> = src.iter().chain(&rev).copied().collect();
        let packed = pack_columns_f32(&both, 0, src.len(), 2, src.len());
        for (j, (s, r)) in src.iter().zip(&rev).enumerate() {
            let (p, jj) = (j / NR, j % NR);
            let v = packed[p * NR + jj];
            assert_eq!(v as u16, half::bf16::from_f32(*s).to_bits(), "packing {s:e}");
            assert_eq!((v >> 16) as u16, half::bf16::from_f32(*r).to_bits(), "packing {r:e}");
        }
        let mut nan = [half::bf16::ZERO; 1];
        round(&[f32::NAN], &mut nan);
        assert!(nan[0].is_nan());
    }

    /// The packed panels against their definition, value for value: partial panels, odd `k`,
    /// blocks of pairs that do not divide `k`, rows at odd offsets and strides.
    #[test]
    fn packing_rows_matches_definition() {
        if !available() {
            eprintln!("this CPU has no AVX-512 BF16 (skipped)");
            return;
        }
        for &(n, k, stride, offset) in &[(1, 1, 1, 0), (33, 7, 9, 3), (64, 32, 32, 0), (70, 67, 71, 1), (5, 100, 101, 2)] {
            let data: Vec<half::bf16> = (0..offset + n * stride).map(|i| half::bf16::from_bits(i as u16 ^ 0x5a5a)).collect();
            let packed = pack_rows(Rows { data: &data, offset, stride, rows: n }, k);
            let pairs = k.div_ceil(2);
            assert_eq!(packed.len(), n.div_ceil(NR) * pairs * NR);
            for (i, &v) in packed.iter().enumerate() {
                let (p, q, jj) = (i / (pairs * NR), i / NR % pairs, i % NR);
                let j = p * NR + jj;
                let at = |t: usize| if j < n && t < k { data[offset + j * stride + t].to_bits() as u32 } else { 0 };
                assert_eq!(v, at(2 * q) | (at(2 * q + 1) << 16), "n {n} k {k}: panel {p} pair {q} column {jj}");
            }
        }
    }

    /// Against f64 sums of the same bf16 values: odd and even `k`, sums longer than one pass,
    /// partial panels and row blocks, strided rows, starting values kept.
    #[test]
    fn products_match_f64_sums() {
        if !available() {
            eprintln!("this CPU has no AVX-512 BF16: the bf16 products are not used here (skipped)");
            return;
        }
        let mut s = 7u64;
        let mut rnd = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for &(m, n, k, lda, ldw) in &[(1, 1, 1, 1, 1), (13, 33, 7, 9, 7), (200, 70, 2561, 2561, 2570), (25, 64, 64, 64, 64), (197, 300, 320, 330, 320)] {
            let a: Vec<half::bf16> = (0..m * lda).map(|_| half::bf16::from_f32(rnd())).collect();
            let w: Vec<half::bf16> = (0..n * ldw + 3).map(|_| half::bf16::from_f32(rnd())).collect();
            let init: Vec<f32> = (0..m * n).map(|_| rnd()).collect();
            let mut c = init.clone();
            product(Rows { data: &a, offset: 0, stride: lda, rows: m }, Rows { data: &w, offset: 3, stride: ldw, rows: n }, k, &mut c, false);
            // overwriting: the starting values (NaN here) are not read
            let mut fresh = vec![f32::NAN; m * n];
            product(Rows { data: &a, offset: 0, stride: lda, rows: m }, Rows { data: &w, offset: 3, stride: ldw, rows: n }, k, &mut fresh, true);
            let mut worst = 0f64;
            for i in 0..m {
                for j in 0..n {
                    let mut r = init[i * n + j] as f64;
                    for t in 0..k {
                        r += a[i * lda + t].to_f64() * w[3 + j * ldw + t].to_f64();
                    }
                    worst = worst.max((c[i * n + j] as f64 - r).abs() / (k as f64).sqrt().max(1.0));
                    let alone = r - init[i * n + j] as f64;
                    worst = worst.max((fresh[i * n + j] as f64 - alone).abs() / (k as f64).sqrt().max(1.0));
                }
            }
            assert!(worst < 1e-6, "m {m} n {n} k {k}: error {worst:.2e} (per √k)");
            // rounded as stored: the same f32 sums, each rounded once
            if k <= ROUNDED_K {
                for (start, sums) in [(Some(&init[..]), &c), (None, &fresh)] {
                    let mut d = vec![half::bf16::NAN; m * n];
                    product_rounded(Rows { data: &a, offset: 0, stride: lda, rows: m }, Rows { data: &w, offset: 3, stride: ldw, rows: n }, k, start, &mut d);
                    for (got, sum) in d.iter().zip(sums.iter()) {
                        assert_eq!(got.to_bits(), half::bf16::from_f32(*sum).to_bits(), "rounded: m {m} n {n} k {k}");
                    }
                }
            }
            // the same product with B as columns (wᵀ laid out k × n, rows `n + 5` apart) into a
            // block of a wider C (rows `n + 3` apart, from column 2)
            let wt: Vec<half::bf16> = (0..k * (n + 5)).map(|i| if i % (n + 5) < n { w[3 + (i % (n + 5)) * ldw + i / (n + 5)] } else { half::bf16::NAN }).collect();
            let ldc = n + 3;
            let mut wide: Vec<f32> = (0..m * ldc).map(|i| if (2..2 + n).contains(&(i % ldc)) { init[(i / ldc) * n + i % ldc - 2] } else { 7.0 }).collect();
            product_packed(Rows { data: &a, offset: 0, stride: lda, rows: m }, k, &pack_columns(&wt, 0, n + 5, k, n), n, &mut wide, 2, ldc, false);
            for i in 0..m {
                for j in 0..ldc {
                    let got = wide[i * ldc + j];
                    if (2..2 + n).contains(&j) {
                        assert!((got - c[i * n + j - 2]).abs() <= 1e-6 * (k as f32).sqrt(), "columns: m {m} n {n} k {k} at ({i}, {j})");
                    } else {
                        assert_eq!(got, 7.0, "columns: outside the block untouched");
                    }
                }
            }
        }
    }
}
