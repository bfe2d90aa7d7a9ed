//! `reel_core::torch_rng` against tensors torch 2.15 produced (`tests/fixtures/torch_rng`, written by
//! `tools/reference/torch_rng.py`; `manifest.json` lists every case and the ops it replays).
//!
//! Exactness policy:
//! - Bit-exact, always: mt19937 / `random()` / `random64()`, `rand` f32/f64, `randn` f32 with
//!   numel >= 16 on the AVX2 kernel, diffusers' `randn_tensor` built from those. These use only
//!   integer and IEEE add/mul/fma/sqrt operations, so every platform must reproduce them exactly.
//! - Libm-dependent (torch calls `log1p`/`log`/`sin`/`cos`/`logf`/`cosf`/`sinf`, and so do we):
//!   `randn` with numel < 16, `randn` f64, and the portable (`Scalar`) float kernel. Bit-exact when
//!   this test runs on the C library the fixtures were made with (the manifest records it, e.g.
//!   "glibc 2.36"); on another libm at most 1 ulp (different libm roundings), reported.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use reel_core::testing::fixtures_dir;
use reel_core::torch_rng::{
    randn_tensor, randn_tensor_as, randn_tensor_per_sample, DrawDtype, NormalKernel,
    TorchGenerator, DEFAULT_SEED,
};
use serde_json::Value;

type B = NdArray<f32>;

fn dir() -> PathBuf {
    fixtures_dir().join("torch_rng")
}

/// Raw little-endian payload of a `.npy` file (the dtype is known from the file name).
fn npy_payload(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    bytes[start + len..].to_vec()
}

struct Fixtures {
    manifest: Value,
    f32: Vec<f32>,
    f64: Vec<f64>,
    i64: Vec<i64>,
}

impl Fixtures {
    fn load() -> Self {
        let d = dir();
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).unwrap())
                .unwrap();
        let f32 = npy_payload(&d.join("f32.npy"))
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let f64 = npy_payload(&d.join("f64.npy"))
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let i64 = npy_payload(&d.join("i64.npy"))
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Fixtures {
            manifest,
            f32,
            f64,
            i64,
        }
    }

    fn cases(&self, prefix: &str) -> Vec<&Value> {
        let v: Vec<&Value> = self.manifest["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
            .collect();
        assert!(!v.is_empty(), "no fixture case starts with {prefix}");
        v
    }

    fn range(rec: &Value) -> std::ops::Range<usize> {
        let off = rec["offset"].as_u64().unwrap() as usize;
        off..off + rec["numel"].as_u64().unwrap() as usize
    }

    fn want_f32(&self, rec: &Value) -> &[f32] {
        assert_eq!(rec["file"], "f32.npy");
        &self.f32[Self::range(rec)]
    }

    fn want_f64(&self, rec: &Value) -> &[f64] {
        assert_eq!(rec["file"], "f64.npy");
        &self.f64[Self::range(rec)]
    }

    fn want_i64(&self, rec: &Value) -> &[i64] {
        assert_eq!(rec["file"], "i64.npy");
        &self.i64[Self::range(rec)]
    }

    /// True when this process runs on the C library the fixtures were generated with.
    fn same_libm(&self) -> bool {
        let made_with = self.manifest["libc"].as_str().unwrap_or("");
        match runtime_libc() {
            Some(here) => made_with == here,
            None => false,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn runtime_libc() -> Option<String> {
    extern "C" {
        fn gnu_get_libc_version() -> *const std::os::raw::c_char;
    }
    // SAFETY: glibc returns a pointer to a static NUL-terminated version string.
    let v = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    Some(format!("glibc {}", v.to_str().ok()?))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn runtime_libc() -> Option<String> {
    None
}

fn seed_of(case: &Value) -> u64 {
    match &case["seed"] {
        Value::Null => DEFAULT_SEED,
        Value::String(s) => s.parse().unwrap(),
        v => panic!("bad seed {v}"),
    }
}

fn shape_of(rec: &Value) -> Vec<usize> {
    rec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// Distance in units in the last place between two finite floats of the same sign class
/// (monotone integer mapping of the bit patterns).
fn ulp32(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn ulp64(a: f64, b: f64) -> u64 {
    let key = |x: f64| {
        let i = x.to_bits() as i64;
        if i < 0 {
            (i64::MIN as i128) - i as i128
        } else {
            i as i128
        }
    };
    (key(a) - key(b)).unsigned_abs() as u64
}

#[derive(Default, Debug, Clone, Copy)]
struct Diff {
    n: usize,
    differing: usize,
    max_ulp: u64,
    max_abs: f64,
}

impl Diff {
    fn add(&mut self, ulp: u64, abs: f64) {
        self.n += 1;
        if ulp > 0 {
            self.differing += 1;
        }
        self.max_ulp = self.max_ulp.max(ulp);
        self.max_abs = self.max_abs.max(abs);
    }
    fn merge(&mut self, o: Diff) {
        self.n += o.n;
        self.differing += o.differing;
        self.max_ulp = self.max_ulp.max(o.max_ulp);
        self.max_abs = self.max_abs.max(o.max_abs);
    }
}

fn diff32(got: &[f32], want: &[f32]) -> Diff {
    assert_eq!(got.len(), want.len());
    let mut d = Diff::default();
    for (g, w) in got.iter().zip(want) {
        assert!(g.is_finite() && w.is_finite());
        d.add(ulp32(*g, *w), (*g as f64 - *w as f64).abs());
    }
    d
}

fn diff64(got: &[f64], want: &[f64]) -> Diff {
    assert_eq!(got.len(), want.len());
    let mut d = Diff::default();
    for (g, w) in got.iter().zip(want) {
        assert!(g.is_finite() && w.is_finite());
        d.add(ulp64(*g, *w), (g - w).abs());
    }
    d
}

/// Which exactness class an op belongs to (see the module docs).
fn libm_dependent(rec: &Value) -> bool {
    let numel = rec["numel"].as_u64().unwrap();
    rec["op"] == "randn" && (numel < 16 || rec["dtype"] == "float64" || rec["kernel"] == "scalar")
}

/// Replays every op of `case` on one generator and returns (op label, libm-dependent?, diff).
fn replay(fx: &Fixtures, case: &Value, kernel: NormalKernel) -> Vec<(String, bool, Diff)> {
    let mut g = TorchGenerator::new(seed_of(case)).with_normal_kernel(kernel);
    let name = case["name"].as_str().unwrap();
    let mut out = Vec::new();
    for (i, rec) in case["ops"].as_array().unwrap().iter().enumerate() {
        let shape = shape_of(rec);
        let n: usize = shape.iter().product();
        let label = format!(
            "{name}[{i}] {} {} {:?}",
            rec["op"].as_str().unwrap(),
            rec["dtype"].as_str().unwrap(),
            shape
        );
        let diff = match (rec["op"].as_str().unwrap(), rec["dtype"].as_str().unwrap()) {
            ("randn", "float32") => diff32(&g.randn_f32(&shape), fx.want_f32(rec)),
            ("randn", "float64") => diff64(&g.randn_f64(&shape), fx.want_f64(rec)),
            // Stored widened to float32 (exact), so compare the widened values bit for bit.
            ("randn", "float16") => {
                diff32(&g.randn_as_f32(&shape, DrawDtype::F16), fx.want_f32(rec))
            }
            ("randn", "bfloat16") => {
                diff32(&g.randn_as_f32(&shape, DrawDtype::BF16), fx.want_f32(rec))
            }
            ("rand", "float32") => diff32(&g.rand_f32(n), fx.want_f32(rec)),
            ("rand", "float64") => diff64(&g.rand_f64(n), fx.want_f64(rec)),
            ("random64", "int64") => {
                let want = fx.want_i64(rec);
                // random_u32 stream, checked on a clone: random64 = (first << 32) | second.
                let mut g32 = g.clone();
                for (k, w) in want.iter().enumerate() {
                    let w = *w as u64;
                    let (hi, lo) = (g32.random_u32(), g32.random_u32());
                    assert_eq!(
                        (hi, lo),
                        ((w >> 32) as u32, w as u32),
                        "{label}: random_u32 pair {k}"
                    );
                }
                let got: Vec<i64> = (0..n).map(|_| g.random_u64() as i64).collect();
                assert_eq!(got, want, "{label}");
                let mut d = Diff::default();
                (0..n).for_each(|_| d.add(0, 0.0));
                d
            }
            (op, dt) => panic!("unknown op {op} {dt}"),
        };
        out.push((label, libm_dependent(rec), diff));
    }
    out
}

/// Asserts the policy: exact, or (libm-dependent on a different libm) within 1 ulp.
fn check(fx: &Fixtures, results: &[(String, bool, Diff)]) -> (Diff, Diff) {
    let same_libm = fx.same_libm();
    let (mut exact_class, mut libm_class) = (Diff::default(), Diff::default());
    for (label, libm, d) in results {
        if *libm {
            libm_class.merge(*d);
            let tol = if same_libm { 0 } else { 1 };
            assert!(
                d.max_ulp <= tol,
                "{label}: {d:?} (libm-dependent; tolerance {tol} ulp, same libm: {same_libm})"
            );
        } else {
            exact_class.merge(*d);
            assert_eq!(d.differing, 0, "{label}: {d:?} must be bit-exact");
        }
    }
    (exact_class, libm_class)
}

#[test]
fn manifest_is_the_expected_reference() {
    let fx = Fixtures::load();
    let m = &fx.manifest;
    eprintln!(
        "fixtures: torch {}, diffusers {}, {} / {}, capability {} (normal kernel {}), scalar child {}; this process: {:?}",
        m["torch"], m["diffusers"], m["machine"], m["libc"], m["cpu_capability"], m["normal_kernel"],
        m["scalar_child_cpu_capability"], runtime_libc()
    );
    assert!(m["torch"].as_str().unwrap().starts_with("2.15.0"));
    assert_eq!(m["normal_kernel"], "avx2");
    assert_eq!(m["scalar_child_cpu_capability"], "DEFAULT");
    // The generator script checked that a forced-AVX2 torch process draws what the AVX512 one did.
    assert_eq!(m["avx2_child_draws_equal"], true);
}

#[test]
fn seeds_default_generator_and_call_sequences() {
    let fx = Fixtures::load();
    let (mut exact, mut libm) = (Diff::default(), Diff::default());
    for case in fx.cases("seq_") {
        // torch's own initial_seed() (for the unseeded generator: its default seed).
        let g = TorchGenerator::new(seed_of(case));
        assert_eq!(
            g.initial_seed().to_string(),
            case["initial_seed"].as_str().unwrap(),
            "{}",
            case["name"]
        );
        let (e, l) = check(&fx, &replay(&fx, case, NormalKernel::Avx2));
        exact.merge(e);
        libm.merge(l);
    }
    eprintln!("sequences: exact class {exact:?}; libm-dependent class {libm:?}");
    assert!(exact.n > 6 * 2000 && libm.n > 6 * 60);
}

#[test]
fn default_generator_equals_unseeded_torch_generator() {
    let fx = Fixtures::load();
    let case = fx.cases("seq_default")[0];
    assert!(case["seed"].is_null());
    let mut a = TorchGenerator::default();
    let want = fx.want_f32(&case["ops"][0]);
    assert_eq!(a.randn_f32(&[4, 4, 2, 8, 8]), want);
}

#[test]
fn manual_seed_resets_engine_and_cache() {
    let fx = Fixtures::load();
    let case = fx.cases("seq_42")[0];
    let mut g = TorchGenerator::new(7);
    g.randn_f32(&[3]); // leaves a cached Box–Muller value behind
    g.randn_f32(&[100]);
    g.manual_seed(42);
    let ops = case["ops"].as_array().unwrap();
    assert_eq!(g.randn_f32(&[4, 4, 2, 8, 8]), fx.want_f32(&ops[0]));
    // The stale cached value from seed 7 must be gone: randn(7) takes the scalar path.
    assert_eq!(g.randn_f32(&[7]), fx.want_f32(&ops[1]));
}

#[test]
fn randn_every_size_and_tail_rule() {
    // size_f32_N: N = 1..=80 and 100, 127, 255, 256, 257, 1000, 1023, 4097, each on a fresh
    // generator: the scalar path (N < 16), whole blocks, and the "recompute the last 16" tail.
    let fx = Fixtures::load();
    let (mut exact, mut libm) = (Diff::default(), Diff::default());
    let mut sizes = 0;
    for prefix in ["size_f32_", "size_f64_", "size_f16_", "size_bf16_"] {
        for case in fx.cases(prefix) {
            let (e, l) = check(&fx, &replay(&fx, case, NormalKernel::Avx2));
            exact.merge(e);
            libm.merge(l);
            sizes += 1;
        }
    }
    eprintln!("{sizes} sizes: exact class {exact:?}; libm-dependent class {libm:?}");
    assert!(sizes >= 200);
}

#[test]
fn scalar_kernel_matches_torch_default_capability() {
    // torch run with ATEN_CPU_CAPABILITY=default: the portable float kernel (logf/cosf/sinf).
    let fx = Fixtures::load();
    let mut all = Diff::default();
    for case in fx.cases("scalar_kernel_") {
        let (_, l) = check(&fx, &replay(&fx, case, NormalKernel::Scalar));
        all.merge(l);
    }
    eprintln!(
        "scalar kernel vs torch DEFAULT capability: {all:?} (same libm: {})",
        fx.same_libm()
    );
    assert!(all.n > 4000);
}

#[test]
fn plain_libm_box_muller_is_not_torchs_avx2_kernel() {
    // Measurement: how far the portable f32 libm kernel lands from torch's AVX2 results
    // (numel >= 16 float32 cases). It is close but not exact, which is why Avx2 is the default.
    let fx = Fixtures::load();
    let mut d = Diff::default();
    for case in fx.cases("seq_").into_iter().chain(fx.cases("size_f32_")) {
        let mut g = TorchGenerator::new(seed_of(case)).with_normal_kernel(NormalKernel::Scalar);
        for rec in case["ops"].as_array().unwrap() {
            let shape = shape_of(rec);
            let n: usize = shape.iter().product();
            match (rec["op"].as_str().unwrap(), rec["dtype"].as_str().unwrap()) {
                ("randn", "float32") => {
                    let got = g.randn_f32(&shape);
                    if n >= 16 {
                        d.merge(diff32(&got, fx.want_f32(rec)));
                    }
                }
                ("randn", "float64") => drop(g.randn_f64(&shape)),
                ("randn", "float16") => drop(g.randn_f16(&shape)),
                ("randn", "bfloat16") => drop(g.randn_bf16(&shape)),
                ("rand", "float32") => drop(g.rand_f32(n)),
                ("rand", "float64") => drop(g.rand_f64(n)),
                ("random64", _) => (0..n).for_each(|_| {
                    g.random_u64();
                }),
                (op, _) => panic!("{op}"),
            }
        }
    }
    eprintln!(
        "plain f32 libm kernel vs torch AVX2: {} of {} values differ ({:.1}%), max {} ulp, max abs {:.3e}",
        d.differing,
        d.n,
        100.0 * d.differing as f64 / d.n as f64,
        d.max_ulp,
        d.max_abs
    );
    assert!(d.differing > 0, "expected the kernels to differ somewhere");
    assert!(d.max_abs < 1e-5, "{d:?}");
}

fn draw_dtype(rec: &Value) -> DrawDtype {
    match rec["dtype"].as_str().unwrap() {
        "float32" => DrawDtype::F32,
        "float16" => DrawDtype::F16,
        "bfloat16" => DrawDtype::BF16,
        d => panic!("no draw dtype {d}"),
    }
}

#[test]
fn diffusers_randn_tensor_on_a_burn_device() {
    // diffusers.utils.torch_utils.randn_tensor in float32 / float16 / bfloat16, with one
    // generator or a list of them; our tensors come back from burn's ndarray backend (f32).
    let fx = Fixtures::load();
    let device = Default::default();
    let mut checked = 0;
    for case in fx.cases("diffusers_randn_tensor_") {
        let rec = &case["ops"][0];
        let shape: [usize; 5] = match shape_of(rec).try_into() {
            Ok(s) => s,
            Err(_) => continue,
        };
        let dtype = draw_dtype(rec);
        let t = match rec["op"].as_str().unwrap() {
            "randn_tensor" if dtype == DrawDtype::F32 => {
                randn_tensor::<B, 5>(&mut TorchGenerator::new(seed_of(case)), shape, &device)
            }
            "randn_tensor" => randn_tensor_as::<B, 5>(
                &mut TorchGenerator::new(seed_of(case)),
                shape,
                dtype,
                &device,
            ),
            "randn_tensor_list" => {
                let mut gens: Vec<TorchGenerator> = rec["seeds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| TorchGenerator::new(s.as_str().unwrap().parse().unwrap()))
                    .collect();
                randn_tensor_per_sample::<B, 5>(&mut gens, shape, dtype, &device)
            }
            "randn_tensor_digest" => continue,
            op => panic!("{op}"),
        };
        assert_eq!(t.dims(), shape);
        let got = t.into_data().into_vec::<f32>().unwrap();
        let d = diff32(&got, fx.want_f32(rec));
        assert_eq!(d.differing, 0, "{}: {d:?}", case["name"]);
        checked += 1;
    }
    assert_eq!(checked, 4);
}

fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[test]
fn diffusers_video_latents_full_size_digest() {
    // (1, 4, 16, 40, 64) = 163840 values: torch's FNV-1a digest of the f32 bytes plus head and tail.
    let fx = Fixtures::load();
    let case = fx.cases("diffusers_randn_tensor_big")[0];
    let rec = &case["ops"][0];
    let shape = shape_of(rec);
    let mut g = TorchGenerator::new(seed_of(case));
    let got = g.randn_f32(&shape);
    assert_eq!(
        diff32(&got[..64], fx.want_f32(&rec["head"])).differing,
        0,
        "head"
    );
    assert_eq!(
        diff32(&got[got.len() - 64..], fx.want_f32(&rec["tail"])).differing,
        0,
        "tail"
    );
    let digest = format!("{:016x}", fnv1a64(got.iter().flat_map(|v| v.to_le_bytes())));
    assert_eq!(digest, rec["fnv1a64_le_bytes"].as_str().unwrap());
}

#[test]
fn seed_uses_low_32_bits_and_random64_is_two_draws() {
    // Torch agreement for seed 2**32 + 5 is checked in the sequence test (seq_4294967301); these
    // are the relations that follow from it, on generators only.
    let mut a = TorchGenerator::new((1u64 << 32) + 5);
    let mut b = TorchGenerator::new(5);
    assert_eq!(a.initial_seed(), (1u64 << 32) + 5);
    let mut c = b.clone();
    for _ in 0..1000 {
        assert_eq!(a.random_u32(), b.random_u32());
    }
    let x = c.random_u64();
    let mut d = TorchGenerator::new(5);
    assert_eq!(
        x,
        (u64::from(d.random_u32()) << 32) | u64::from(d.random_u32())
    );
}

#[test]
fn kernel_selection() {
    let g = TorchGenerator::new(0);
    assert_eq!(g.normal_kernel(), NormalKernel::Avx2);
    assert_eq!(
        g.with_normal_kernel(NormalKernel::Scalar).normal_kernel(),
        NormalKernel::Scalar
    );
    eprintln!(
        "torch would pick {:?} on this CPU",
        NormalKernel::for_this_cpu()
    );
}
