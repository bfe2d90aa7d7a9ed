//! How a row-major batched product of strided operands becomes one
//! `cublasGemmStridedBatchedEx` call (cuBLAS is column-major; see the cuBLAS documentation of
//! `cublas<t>gemmStridedBatched`).
//!
//! `C (batch, m, n) = α · A (·, m, k) · B (·, k, n)` with C contiguous row-major is, read
//! column-major, `Cᵀ (n × m) = Bᵀ · Aᵀ`: cuBLAS gets B as its first operand and A as its second,
//! with `M = n`, `N = m`, `K = k`, `ldc = n`. An operand whose rows are contiguous (a column
//! stride of one) is, read column-major, its own transpose with the row stride as leading
//! dimension; one whose columns are contiguous (a transposed view) is itself. Anything else (both
//! strides above one, a broadcast inside the matrix) has no cuBLAS form and is copied to
//! row-major first. An operand with batch 1 is shared by every batch (batch stride 0).

/// One 3-D operand: sizes and element strides, as its tensor's metadata gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `cublasOperation_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// The arguments of one `cublasGemmStridedBatchedEx` call (pointers aside: `a` is the product's
/// B operand, `b` its A operand, `c` the row-major result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmCall {
    pub transa: Trans,
    pub transb: Trans,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub batch: usize,
}

/// How an operand's matrix sits in memory, read column-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// Rows contiguous: memory holds the transpose, leading dimension given.
    RowMajor(usize),
    /// Columns contiguous: memory holds the matrix itself.
    ColMajor(usize),
}

fn stored(x: &Operand) -> Option<Stored> {
    // A size-1 axis may carry any stride: treat it as whatever makes the layout valid.
    let col_unit = x.col_stride == 1 || x.cols == 1;
    let row_unit = x.row_stride == 1 || x.rows == 1;
    if col_unit && (x.rows == 1 || x.row_stride >= x.cols) {
        return Some(Stored::RowMajor(if x.rows == 1 { x.cols.max(1) } else { x.row_stride }));
    }
    if row_unit && (x.cols == 1 || x.col_stride >= x.rows) {
        return Some(Stored::ColMajor(if x.cols == 1 { x.rows.max(1) } else { x.col_stride }));
    }
    None
}

/// Why a product cannot be planned as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The shapes do not multiply (inner sizes or batches disagree).
    Shapes,
    /// Operand A (`0`) or B (`1`) has a layout cuBLAS cannot read: copy it to row-major.
    Layout(usize),
}

/// The cuBLAS call computing `A · B` (row-major `(batch, m, n)` result, contiguous).
pub fn plan(a: Operand, b: Operand) -> Result<GemmCall, PlanError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !(a.batch == b.batch || a.batch == 1 || b.batch == 1) {
        return Err(PlanError::Shapes);
    }
    let sa = stored(&a).ok_or(PlanError::Layout(0))?;
    let sb = stored(&b).ok_or(PlanError::Layout(1))?;
    // First cuBLAS operand: must read as Bᵀ (n × k).
    let (transa, lda) = match sb {
        Stored::RowMajor(ld) => (Trans::N, ld),
        Stored::ColMajor(ld) => (Trans::T, ld),
    };
    // Second: must read as Aᵀ (k × m).
    let (transb, ldb) = match sa {
        Stored::RowMajor(ld) => (Trans::N, ld),
        Stored::ColMajor(ld) => (Trans::T, ld),
    };
    let batch_stride = |x: &Operand| if x.batch == 1 { 0 } else { x.batch_stride };
    Ok(GemmCall {
        transa,
        transb,
        m: n,
        n: m,
        k,
        lda,
        ldb,
        ldc: n.max(1),
        stride_a: batch_stride(&b),
        stride_b: batch_stride(&a),
        stride_c: m * n,
        batch: a.batch.max(b.batch),
    })
}

/// The cuBLAS call computing `x (rows, in) · wᵀ` for a linear layer's weight `w (out, in)` (as
/// stored; no batch), written into the column block of a row-major result whose rows hold
/// `total ≥ out` values (the caller offsets the result's address to the block's first column):
/// several projections of one input side by side in one tensor.
pub fn projection(x: Operand, w: Operand, total: usize) -> Result<GemmCall, PlanError> {
    if w.cols != x.cols || total < w.rows || x.batch != 1 || w.batch != 1 {
        return Err(PlanError::Shapes);
    }
    let wt = Operand { rows: w.cols, cols: w.rows, row_stride: w.col_stride, col_stride: w.row_stride, ..w };
    let mut call = plan(x, wt)?;
    call.ldc = total.max(1);
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `cublasGemmStridedBatchedEx` as its documentation defines it (column-major, f64 here).
    fn cublas_reference(call: &GemmCall, alpha: f64, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; call.batch * call.stride_c];
        cublas_into(call, alpha, a, b, &mut c);
        c
    }

    /// [`cublas_reference`] into `c` (`beta = 0`), whatever its leading dimension.
    fn cublas_into(call: &GemmCall, alpha: f64, a: &[f64], b: &[f64], c: &mut [f64]) {
        for p in 0..call.batch {
            let (oa, ob, oc) = (p * call.stride_a, p * call.stride_b, p * call.stride_c);
            for i in 0..call.m {
                for j in 0..call.n {
                    let mut sum = 0.0;
                    for l in 0..call.k {
                        let x = match call.transa {
                            Trans::N => a[oa + i + l * call.lda],
                            Trans::T => a[oa + l + i * call.lda],
                        };
                        let y = match call.transb {
                            Trans::N => b[ob + l + j * call.ldb],
                            Trans::T => b[ob + j + l * call.ldb],
                        };
                        sum += x * y;
                    }
                    c[oc + i + j * call.ldc] = alpha * sum;
                }
            }
        }
    }

    /// Three projections of one (padded, row-major) input, each planned into its column block
    /// of one row-major result, give `x · w_iᵀ` side by side.
    #[test]
    fn projections_fill_their_column_blocks() {
        let (rows, d_in) = (5, 4);
        let (x, xbuf) = operand(1, rows, d_in, false, 2, false, 7);
        let weights: Vec<(Operand, Vec<f64>)> = [3, 2, 6].iter().enumerate().map(|(i, &out)| operand(1, out, d_in, false, 0, false, 11 + i as u64)).collect();
        let total: usize = weights.iter().map(|(w, _)| w.rows).sum();
        let mut c = vec![f64::NAN; rows * total];
        let mut at_col = 0;
        for (w, wbuf) in &weights {
            let call = projection(x, *w, total).unwrap();
            // cuBLAS's first operand is the product's B (wᵀ), its second the input.
            cublas_into(&call, 1.0, wbuf, &xbuf, &mut c[at_col..]);
            at_col += w.rows;
        }
        let mut at_col = 0;
        for (w, wbuf) in &weights {
            for r in 0..rows {
                for o in 0..w.rows {
                    let want: f64 = (0..d_in).map(|l| at(&x, &xbuf, 0, r, l) * at(w, wbuf, 0, o, l)).sum();
                    let got = c[r * total + at_col + o];
                    assert!((got - want).abs() < 1e-12, "row {r}, output {}: {got} vs {want}", at_col + o);
                }
            }
            at_col += w.rows;
        }
        assert_eq!(projection(x, Operand { cols: 3, ..weights[0].0 }, total), Err(PlanError::Shapes));
    }

    /// A strided buffer for a `(batch, rows, cols)` operand: `transposed` stores each matrix
    /// column-major, `pad` widens the leading dimension, `shared` keeps one matrix for every batch.
    fn operand(batch: usize, rows: usize, cols: usize, transposed: bool, pad: usize, shared: bool, seed: u64) -> (Operand, Vec<f64>) {
        let stored_batch = if shared { 1 } else { batch };
        let (row_stride, col_stride) = if transposed { (1, rows + pad) } else { (cols + pad, 1) };
        let per = if transposed { (rows + pad) * cols } else { rows * (cols + pad) };
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let buf = (0..stored_batch * per.max(1))
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % 2001) as f64 / 1000.0 - 1.0
            })
            .collect();
        let op = Operand { batch: stored_batch, rows, cols, batch_stride: per, row_stride, col_stride };
        (op, buf)
    }

    fn at(op: &Operand, buf: &[f64], p: usize, r: usize, c: usize) -> f64 {
        let p = if op.batch == 1 { 0 } else { p };
        buf[p * op.batch_stride + r * op.row_stride + c * op.col_stride]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// Every layout the layers produce (row-major, transposed views, padded leading
        /// dimensions, a shared operand, sizes of 1) planned and run as cuBLAS defines the call
        /// gives the row-major product.
        #[test]
        fn planned_call_computes_the_row_major_product(
            batch in 1usize..4, m in 1usize..7, k in 1usize..7, n in 1usize..7,
            ta in any::<bool>(), tb in any::<bool>(), pa in 0usize..3, pb in 0usize..3,
            share in 0usize..3, seed in any::<u64>(),
        ) {
            let (a, abuf) = operand(batch, m, k, ta, pa, share == 1, seed);
            let (b, bbuf) = operand(batch, k, n, tb, pb, share == 2, seed ^ 0x9e37);
            let call = plan(a, b).unwrap();
            prop_assert_eq!(call.batch, batch.max(a.batch).max(b.batch));
            let got = cublas_reference(&call, 0.5, &bbuf, &abuf);
            for p in 0..call.batch {
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 = 0.5 * (0..k).map(|l| at(&a, &abuf, p, r, l) * at(&b, &bbuf, p, l, c)).sum::<f64>();
                        let g = got[p * m * n + r * n + c];
                        prop_assert!((g - want).abs() < 1e-12, "batch {} ({}, {}): {} vs {}", p, r, c, g, want);
                    }
                }
            }
        }
    }

    #[test]
    fn layouts_cublas_cannot_read_are_refused() {
        let ok = Operand { batch: 1, rows: 4, cols: 3, batch_stride: 12, row_stride: 3, col_stride: 1 };
        // A broadcast column (stride 0) and a doubly strided view.
        let bcast = Operand { col_stride: 0, row_stride: 1, ..ok };
        let strided = Operand { row_stride: 6, col_stride: 2, ..ok };
        let b = Operand { rows: 3, cols: 2, row_stride: 2, batch_stride: 6, ..ok };
        assert_eq!(plan(bcast, b), Err(PlanError::Layout(0)));
        assert_eq!(plan(strided, b), Err(PlanError::Layout(0)));
        assert_eq!(plan(ok, Operand { col_stride: 2, row_stride: 4, ..b }), Err(PlanError::Layout(1)));
        assert_eq!(plan(ok, Operand { rows: 4, ..b }), Err(PlanError::Shapes));
        assert_eq!(plan(ok, Operand { batch: 2, ..b }).map(|c| c.stride_b), Ok(0));
    }
}
