//! reel's fused attention, GEGLU, residual-start and layer-norm kernels
//! (`src/vendor/flash_attention.cu`, `elementwise.cu`) run on the CPU: their source, unchanged, is compiled with the host's C++ compiler against `tests/emulation/cuda_emulation.h`
//! (CUDA threads as host threads, `__syncthreads` and the warp operations as barriers, the
//! tensor-core product with the PTX ISA's register fragments) and launched as `nvrtc.rs`
//! launches it, then compared with attention computed here in f64 from the same rounded inputs.
//! This checks the kernels' indexing, tiling, masking, online softmax and strides without a
//! GPU; that the GPU's `mma.sync` matches the emulation (the fragment layout) is the GPU test's
//! to check (`tests/gpu.rs`). Needs `c++` (tools/setup.sh installs g++) or `$CXX`.
//!
//! Tolerance (attention): 4e-3 (f16) / 3e-2 (bf16) of the largest |output|: the probabilities
//! are rounded to the dtype before the product with V, and the output once more (as in
//! FlashAttention). GEGLU: one rounding of the f32 result (f32 1e-6, f16 1e-3, bf16 8e-3 of the
//! largest |output|, against erf GELU in f64).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use half::{bf16, f16};

/// The emulated kernel's driver, compiled once for all cases.
fn driver() -> &'static Path {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_driver");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let status = Command::new(&cxx)
            .args(["-std=c++17", "-O2", "-pthread", "-Wall", "-Wno-unknown-pragmas"])
            .arg("-I")
            .arg(here.join("tests/emulation"))
            .arg("-I")
            .arg(here.join("src/vendor"))
            .arg(here.join("tests/emulation/driver.cpp"))
            .arg("-o")
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("running {cxx} (a C++ compiler; tools/setup.sh installs g++, or set CXX): {e}"));
        assert!(status.success(), "{cxx} could not compile the emulated kernel");
        out
    })
}

#[derive(Clone, Copy, Debug)]
enum Dt {
    F16,
    Bf16,
}

impl Dt {
    fn bits(self, x: f32) -> u16 {
        match self {
            Dt::F16 => f16::from_f32(x).to_bits(),
            Dt::Bf16 => bf16::from_f32(x).to_bits(),
        }
    }
    fn value(self, b: u16) -> f32 {
        match self {
            Dt::F16 => f16::from_bits(b).to_f32(),
            Dt::Bf16 => bf16::from_bits(b).to_f32(),
        }
    }
}

/// One launch: `q (b, sq, ·)`, `k`, `v (b, sk, ·)` each in a buffer of its own strides, the
/// head `h` of token `s` of batch `i` at `i·batch_stride + s·seq_stride + 64·h`.
struct Case {
    name: &'static str,
    dtype: Dt,
    batch: usize,
    heads: usize,
    sq: usize,
    sk: usize,
    causal: bool,
    /// `(batch stride, sequence stride)` of q, k, v in values.
    strides: [(usize, usize); 3],
    /// The scores' spread (q is drawn in ±spread): larger gives peakier softmaxes.
    spread: f32,
}

fn noise(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn run(case: &Case) {
    let Case { batch, heads, sq, sk, causal, dtype, .. } = *case;
    let inner = heads * 64;
    let warps = if sq > 16 { 4 } else { 1 }; // as nvrtc::flash_attention launches it
    let lens: Vec<usize> = [sq, sk, sk].iter().zip(case.strides).map(|(&seq, (bs, ss))| (batch - 1) * bs + (seq - 1) * ss + inner).collect();
    let scales = [case.spread, 1.0, 1.0];
    // Rounded to the dtype here, so the reference sees exactly the kernel's inputs.
    let bufs: Vec<Vec<u16>> = (0..3).map(|i| noise(lens[i], i as u64 + 1, scales[i]).iter().map(|&x| dtype.bits(x)).collect()).collect();
    let vals: Vec<Vec<f64>> = bufs.iter().map(|b| b.iter().map(|&x| dtype.value(x) as f64).collect()).collect();

    let mut input = Vec::new();
    input.extend(0i64.to_le_bytes()); // the flash attention kernel
    let header = [
        matches!(dtype, Dt::Bf16) as usize,
        batch,
        heads,
        sq,
        sk,
        causal as usize,
        warps,
        case.strides[0].0,
        case.strides[0].1,
        case.strides[1].0,
        case.strides[1].1,
        case.strides[2].0,
        case.strides[2].1,
        lens[0],
        lens[1],
        lens[2],
    ];
    for h in header {
        input.extend((h as i64).to_le_bytes());
    }
    for b in &bufs {
        for x in b {
            input.extend(x.to_le_bytes());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    std::fs::write(&inp, input).unwrap();
    let status = Command::new(driver()).arg(&inp).arg(&outp).status().unwrap();
    assert!(status.success(), "{}: the emulated kernel failed: {status}", case.name);
    let got: Vec<f32> = std::fs::read(&outp).unwrap().chunks(2).map(|c| dtype.value(u16::from_le_bytes([c[0], c[1]]))).collect();
    assert_eq!(got.len(), batch * sq * inner, "{}: output size", case.name);

    // Reference: softmax(q·kᵀ/8 [+ causal mask])·v per head, in f64.
    let at = |i: usize, b: usize, s: usize, h: usize| case.strides[i].0 * b + case.strides[i].1 * s + 64 * h;
    let (mut worst, mut largest) = (0f64, 0f64);
    for b in 0..batch {
        for h in 0..heads {
            for r in 0..sq {
                let limit = if causal { sk.min(r + 1) } else { sk };
                let scores: Vec<f64> = (0..limit)
                    .map(|j| (0..64).map(|d| vals[0][at(0, b, r, h) + d] * vals[1][at(1, b, j, h) + d]).sum::<f64>() / 8.0)
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = p.iter().sum();
                for d in 0..64 {
                    let want: f64 = p.iter().enumerate().map(|(j, pj)| pj * vals[2][at(2, b, j, h) + d]).sum::<f64>() / total;
                    let g = got[((b * sq + r) * heads + h) * 64 + d] as f64;
                    assert!(g.is_finite(), "{}: output (batch {b}, row {r}, head {h}, {d}) not written or not finite", case.name);
                    worst = worst.max((g - want).abs());
                    largest = largest.max(want.abs());
                }
            }
        }
    }
    let tol = match dtype {
        Dt::F16 => 4e-3,
        Dt::Bf16 => 3e-2,
    };
    let rel = worst / largest;
    eprintln!("{}: max abs err {worst:.2e}, largest |out| {largest:.2e}, relative {rel:.2e} (tolerance {tol:.0e})", case.name);
    assert!(rel <= tol, "{}: relative error {rel:.3e} > {tol:e}", case.name);
}

#[test]
fn flash_attention_kernel_matches_attention_on_the_host() {
    let inner = |heads: usize| heads * 64;
    let cases = [
        // Spatial self-attention shape: 4 warps, two row blocks (the second partly past sq),
        // three key tiles (the last partial); q a slice of packed q|k|v projections.
        Case { name: "self, strided q, 3 key tiles", dtype: Dt::F16, batch: 2, heads: 3, sq: 70, sk: 150, causal: false,
               strides: [(70 * 3 * inner(3) + 64, 3 * inner(3)), (150 * inner(3), inner(3)), (150 * inner(3), inner(3))], spread: 3.0 },
        // Temporal attention: 16 frames, one warp a block.
        Case { name: "temporal, 16 tokens", dtype: Dt::F16, batch: 3, heads: 2, sq: 16, sk: 16, causal: false,
               strides: [(16 * inner(2), inner(2)); 3], spread: 2.0 },
        // CLIP: causal over 77 tokens, q, k, v slices of one packed projection.
        Case { name: "causal, packed qkv", dtype: Dt::F16, batch: 2, heads: 2, sq: 77, sk: 77, causal: true,
               strides: [(77 * 3 * inner(2), 3 * inner(2)); 3], spread: 3.0 },
        // Cross-attention on the text states: few query rows, 77 keys; bf16.
        Case { name: "cross, bf16", dtype: Dt::Bf16, batch: 1, heads: 1, sq: 5, sk: 77, causal: false,
               strides: [(5 * 64, 64), (77 * 64, 64), (77 * 64, 64)], spread: 3.0 },
        // Many rows, few keys: three row blocks, one partial key tile.
        Case { name: "long queries, 20 keys", dtype: Dt::F16, batch: 1, heads: 2, sq: 130, sk: 20, causal: false,
               strides: [(130 * inner(2), inner(2)), (20 * inner(2), inner(2)), (20 * inner(2), inner(2))], spread: 4.0 },
        // Key and value rows not 16-byte aligned (odd strides): the keys' scalar loads.
        Case { name: "unaligned strides", dtype: Dt::F16, batch: 2, heads: 2, sq: 33, sk: 70, causal: false,
               strides: [(33 * inner(2) + 1, inner(2) + 1), (70 * (inner(2) + 3), inner(2) + 3), (70 * (inner(2) + 5) + 7, inner(2) + 5)], spread: 3.0 },
    ];
    for case in &cases {
        run(case);
    }
}

/// GEGLU: `h * gelu(gate)` of the two halves of each row, in f32, f16 and bf16, with more items
/// than the launch's threads (the grid-stride loop) and a row width that is not a multiple of
/// anything in particular.
#[test]
fn geglu_kernel_matches_geglu_on_the_host() {
    let (rows, dim) = (37usize, 45usize);
    let x = noise(rows * 2 * dim, 9, 4.0);
    for (code, name, tol) in [(0i64, "f32", 1e-6), (1, "f16", 1e-3), (2, "bf16", 8e-3)] {
        let dt = match code {
            1 => Some(Dt::F16),
            2 => Some(Dt::Bf16),
            _ => None,
        };
        let mut input = Vec::new();
        for v in [1i64, code, rows as i64, dim as i64] {
            input.extend(v.to_le_bytes());
        }
        // Inputs rounded to the dtype here, so the reference sees what the kernel sees.
        let xs: Vec<f64> = match dt {
            None => {
                x.iter().for_each(|v| input.extend(v.to_le_bytes()));
                x.iter().map(|&v| v as f64).collect()
            }
            Some(dt) => x
                .iter()
                .map(|&v| {
                    let b = dt.bits(v);
                    input.extend(b.to_le_bytes());
                    dt.value(b) as f64
                })
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (inp, outp) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
        std::fs::write(&inp, input).unwrap();
        let status = Command::new(driver()).arg(&inp).arg(&outp).status().unwrap();
        assert!(status.success(), "GEGLU {name}: the emulated kernel failed: {status}");
        let bytes = std::fs::read(&outp).unwrap();
        let got: Vec<f64> = match dt {
            None => bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            Some(dt) => bytes.chunks(2).map(|c| dt.value(u16::from_le_bytes([c[0], c[1]])) as f64).collect(),
        };
        assert_eq!(got.len(), rows * dim, "GEGLU {name}: output size");
        let (mut worst, mut largest) = (0f64, 0f64);
        for r in 0..rows {
            for c in 0..dim {
                let (h, g) = (xs[r * 2 * dim + c], xs[r * 2 * dim + dim + c]);
                let want = h * 0.5 * g * (1.0 + erf(g / std::f64::consts::SQRT_2));
                let v = got[r * dim + c];
                assert!(v.is_finite(), "GEGLU {name}: value ({r}, {c}) not written");
                worst = worst.max((v - want).abs());
                largest = largest.max(want.abs());
            }
        }
        let worst = worst / largest;
        eprintln!("GEGLU {name}: largest error {worst:.2e} of the largest |output| (tolerance {tol:.0e})");
        assert!(worst <= tol, "GEGLU {name}: relative error {worst:.3e} > {tol:e}");
    }
}

/// erf to double precision (Abramowitz–Stegun 7.1.26 is too coarse for an f32 check: a series
/// for small |x| and the continued fraction of erfc beyond).
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc x = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
        let ax = x.abs();
        let mut f = ax;
        for n in (1..60).rev() {
            f = ax + (n as f64 / 2.0) / f;
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc).copysign(x)
    }
}

/// The residual start of a linear layer: `residual + bias` per column (and the residual alone
/// without a bias), rounded once to f16, over more items than the launch's threads.
#[test]
fn residual_start_kernel_adds_the_bias_per_column() {
    let (rows, cols) = (9usize, 23usize);
    let r: Vec<u16> = noise(rows * cols, 3, 2.0).iter().map(|&v| Dt::F16.bits(v)).collect();
    let b: Vec<u16> = noise(cols, 4, 2.0).iter().map(|&v| Dt::F16.bits(v)).collect();
    for with_bias in [true, false] {
        let mut input = Vec::new();
        for v in [2i64, 1, rows as i64, cols as i64, with_bias as i64] {
            input.extend(v.to_le_bytes());
        }
        r.iter().chain(if with_bias { b.iter() } else { [].iter() }).for_each(|x| input.extend(x.to_le_bytes()));
        let dir = tempfile::tempdir().unwrap();
        let (inp, outp) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
        std::fs::write(&inp, input).unwrap();
        let status = Command::new(driver()).arg(&inp).arg(&outp).status().unwrap();
        assert!(status.success(), "residual start: the emulated kernel failed: {status}");
        let got: Vec<u16> = std::fs::read(&outp).unwrap().chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        for i in 0..rows * cols {
            let bias = if with_bias { Dt::F16.value(b[i % cols]) } else { 0.0 };
            let want = Dt::F16.bits(Dt::F16.value(r[i]) + bias);
            assert_eq!(got[i], want, "value {i} (bias {with_bias})");
        }
    }
}

/// Layer norm with one warp a row: rows past the end of the last block (whose warps return
/// early), rows shorter and longer than a warp, against the two-pass statistics in f64.
#[test]
fn layer_norm_rows_kernel_matches_layer_norm_on_the_host() {
    for (rows, dim) in [(13usize, 20usize), (5, 321)] {
        let x = noise(rows * dim, 21, 3.0);
        let w = noise(dim, 22, 1.0);
        let b = noise(dim, 23, 1.0);
        let eps = 1e-5f32;
        let mut input = Vec::new();
        for v in [3i64, rows as i64, dim as i64, 4] {
            input.extend(v.to_le_bytes());
        }
        x.iter().chain(&w).chain(&b).chain([&eps]).for_each(|v| input.extend(v.to_le_bytes()));
        let dir = tempfile::tempdir().unwrap();
        let (inp, outp) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
        std::fs::write(&inp, input).unwrap();
        let status = Command::new(driver()).arg(&inp).arg(&outp).status().unwrap();
        assert!(status.success(), "layer norm: the emulated kernel failed: {status}");
        let got: Vec<f32> = std::fs::read(&outp).unwrap().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut worst = 0f64;
        for r in 0..rows {
            let row: Vec<f64> = x[r * dim..][..dim].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                let want = (row[i] - mean) / (var + eps as f64).sqrt() * w[i] as f64 + b[i] as f64;
                let g = got[r * dim + i] as f64;
                assert!(g.is_finite(), "layer norm ({rows}, {dim}): value ({r}, {i}) not written");
                worst = worst.max((g - want).abs());
            }
        }
        eprintln!("layer norm ({rows}, {dim}): max abs err {worst:.2e}");
        assert!(worst <= 1e-5, "layer norm ({rows}, {dim}): {worst:.3e} > 1e-5");
    }
}
