//! Helpers for parity tests against the reference fixtures that the pinned diffusers wrote
//! (`tests/fixtures/`, made by `tools/reference/generate.py`).

use std::path::PathBuf;

/// The repository's `tests/fixtures` folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Outcome of comparing a result with a reference array.
#[derive(Debug, Clone, Copy)]
pub struct Closeness {
    /// Largest absolute difference.
    pub max_abs_err: f32,
    /// Largest magnitude in the reference.
    pub ref_max_abs: f32,
}

impl Closeness {
    /// Error relative to the reference's largest magnitude.
    pub fn rel(&self) -> f32 {
        self.max_abs_err / self.ref_max_abs.max(f32::MIN_POSITIVE)
    }
}

/// Compares `got` with `want` elementwise; shape equality is the caller's to check.
pub fn closeness(got: &[f32], want: &[f32]) -> Closeness {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut max_abs_err = 0f32;
    let mut ref_max_abs = 0f32;
    for (g, w) in got.iter().zip(want) {
        let d = (g - w).abs();
        max_abs_err = if d.is_nan() { f32::INFINITY } else { max_abs_err.max(d) };
        ref_max_abs = ref_max_abs.max(w.abs());
    }
    Closeness { max_abs_err, ref_max_abs }
}

/// Asserts `got` matches `want` within `rel_tol` of the reference's largest magnitude.
#[track_caller]
pub fn assert_close(what: &str, got_shape: &[usize], got: &[f32], want_shape: &[usize], want: &[f32], rel_tol: f32) {
    assert_eq!(got_shape, want_shape, "{what}: shape");
    let c = closeness(got, want);
    eprintln!(
        "{what}: max abs err {:.3e}, reference max |x| {:.3e}, relative {:.3e} (tolerance {rel_tol:.1e})",
        c.max_abs_err, c.ref_max_abs, c.rel()
    );
    assert!(c.rel() <= rel_tol, "{what}: relative error {:.3e} exceeds {rel_tol:.1e}", c.rel());
}
