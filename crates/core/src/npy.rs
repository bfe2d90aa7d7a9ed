//! Minimal numpy `.npy` reading and writing (format versions 1–3, C order), for the component
//! tools and the parity tests. Reads f32, f64, f16, i64, i32 little-endian arrays; writes f32.

use std::path::Path;

use crate::error::{Error, Result};

/// A numpy array read from disk, converted to f32 (ids as i64 are available through `ints`).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Input(format!("{}: not a usable .npy file: {}", path.display(), msg.into()))
}

/// Parses the header dict; returns (descr, fortran_order, shape, data offset).
fn header(bytes: &[u8], path: &Path) -> Result<(String, bool, Vec<usize>, usize)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "truncated header"));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(bad(path, format!("unsupported format version {v}"))),
    };
    let end = start + len;
    let text = bytes.get(start..end).ok_or_else(|| bad(path, "truncated header"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad(path, "header is not text"))?;
    let field = |name: &str| -> Option<&str> {
        let i = text.find(&format!("'{name}'"))?;
        let rest = text[i + name.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad(path, "no descr"))?
        .to_string();
    let fortran = field("fortran_order").is_some_and(|r| r.starts_with("True"));
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad(path, "no shape"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(path, format!("bad shape entry {s:?}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((descr, fortran, shape, end))
}

fn read_raw(path: &Path) -> Result<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (descr, fortran, shape, offset) = header(&bytes, path)?;
    if fortran {
        return Err(bad(path, "Fortran-order arrays are not supported; save with np.ascontiguousarray"));
    }
    Ok((descr, shape, bytes[offset..].to_vec()))
}

fn check_len(path: &Path, shape: &[usize], got: usize, size: usize) -> Result<usize> {
    let n: usize = shape.iter().product();
    if got < n * size {
        return Err(bad(path, format!("data holds {} bytes, shape {shape:?} needs {}", got, n * size)));
    }
    Ok(n)
}

/// Reads a float array (f32, f64 or f16) as f32.
pub fn read(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    let (descr, shape, raw) = read_raw(path)?;
    let data: Vec<f32> = match descr.as_str() {
        "<f4" | "=f4" => {
            let n = check_len(path, &shape, raw.len(), 4)?;
            raw[..n * 4].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        }
        "<f8" | "=f8" => {
            let n = check_len(path, &shape, raw.len(), 8)?;
            raw[..n * 8].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        "<f2" | "=f2" => {
            let n = check_len(path, &shape, raw.len(), 2)?;
            raw[..n * 2]
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        }
        other => return Err(bad(path, format!("dtype {other} is not a float32/float64/float16 array"))),
    };
    Ok(Array { shape, data })
}

/// Reads an integer array (i64 or i32) as i64.
pub fn read_ints(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<i64>)> {
    let path = path.as_ref();
    let (descr, shape, raw) = read_raw(path)?;
    let data = match descr.as_str() {
        "<i8" => {
            let n = check_len(path, &shape, raw.len(), 8)?;
            raw[..n * 8].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
        }
        "<i4" => {
            let n = check_len(path, &shape, raw.len(), 4)?;
            raw[..n * 4].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
        }
        other => return Err(bad(path, format!("dtype {other} is not an int64/int32 array"))),
    };
    Ok((shape, data))
}

/// Writes a float32 C-order array, atomically (a temporary file renamed into place), so a
/// failed run never leaves a half-written output.
pub fn write(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::Input(format!(
            "internal: writing {} values as shape {shape:?} to {}",
            data.len(),
            path.display()
        )));
    }
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut head = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    let total = 10 + head.len() + 1;
    head.push_str(&" ".repeat((64 - total % 64) % 64));
    head.push('\n');
    let mut bytes = Vec::with_capacity(10 + head.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(head.len() as u16).to_le_bytes());
    bytes.extend_from_slice(head.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::files::write_atomic(path, &bytes)
}

impl Array {
    /// Moves the array onto a burn device as a tensor of rank `D`.
    pub fn to_tensor<B: burn::tensor::backend::Backend, const D: usize>(
        &self,
        device: &B::Device,
    ) -> Result<burn::tensor::Tensor<B, D>> {
        if self.shape.len() != D {
            return Err(Error::Input(format!(
                "expected a {D}-dimensional array, got shape {:?}",
                self.shape
            )));
        }
        Ok(burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        ))
    }

    /// Reads a tensor back to the host.
    pub fn from_tensor<B: burn::tensor::backend::Backend, const D: usize>(
        t: burn::tensor::Tensor<B, D>,
    ) -> Result<Self> {
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::Input(format!("reading a tensor back: {e:?}")))?;
        Ok(Array { shape, data })
    }
}

