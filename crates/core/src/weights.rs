//! Safetensors weights loaded by name into burn modules.
//!
//! Mirrors what diffusers' `ModelMixin.from_pretrained` reads: `<name>.safetensors`, the
//! `variant` files (`<name>.fp16.safetensors`), sharded checkpoints through
//! `<name>.safetensors.index.json` (`<name>.safetensors.index.<variant>.json`), stored
//! f32/f16/bf16/f64 converted to the model's float type. Module parameter paths equal the
//! checkpoint keys (burn field names are diffusers attribute names), so there is no remap
//! table: a missing, unused or mis-shaped tensor is an error naming the key and both shapes.
//! Pickle `.bin` checkpoints are refused (unpickling runs code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::config::join;
use crate::error::{Error, Result};
use crate::source::ModelRepo;

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the memory map (absolute).
    start: usize,
    end: usize,
}

/// A set of safetensors files (one, or the shards of one checkpoint), memory-mapped.
pub struct Weights {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    entries: BTreeMap<String, Entry>,
    /// For messages: the file, or the index file of a sharded checkpoint.
    origin: PathBuf,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("origin", &self.origin)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl Weights {
    /// Opens safetensors files directly (a checkpoint split over several files is one set).
    pub fn from_files(paths: &[PathBuf], origin: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the file is opened read-only; reel never writes weight files while reading.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let bad = |message: String| Error::BadSafetensors { path: path.clone(), message };
            let st = SafeTensors::deserialize(&mmap).map_err(|e| bad(e.to_string()))?;
            let base = mmap.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let data = view.data();
                let start = data.as_ptr() as usize - base;
                let entry = Entry {
                    file: i,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + data.len(),
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(bad(format!("tensor `{name}` appears in more than one shard")));
                }
            }
            drop(st);
            files.push((path.clone(), mmap));
        }
        Ok(Weights { files, entries, origin: origin.to_path_buf() })
    }

    /// Finds and opens the weights of a component folder the way diffusers does.
    ///
    /// `base` is the file stem (`diffusion_pytorch_model` for diffusers models, `model` for
    /// transformers models). With `variant` (e.g. `fp16`) the variant files are required.
    /// Without one, the plain files are used; when only a single variant exists it is used
    /// (with a log line) rather than failing.
    pub fn open_component(
        repo: &ModelRepo,
        subfolder: &str,
        base: &str,
        variant: Option<&str>,
    ) -> Result<Self> {
        let single = |v: Option<&str>| match v {
            Some(v) => join(subfolder, &format!("{base}.{v}.safetensors")),
            None => join(subfolder, &format!("{base}.safetensors")),
        };
        let index = |v: Option<&str>| match v {
            Some(v) => join(subfolder, &format!("{base}.safetensors.index.{v}.json")),
            None => join(subfolder, &format!("{base}.safetensors.index.json")),
        };
        if !repo.has_dir(subfolder)? && !subfolder.is_empty() {
            return Err(Error::MissingFile {
                what: "component folder".into(),
                path: repo.describe(subfolder),
                hint: "\n  the pipeline folder should hold one subfolder per component (see model_index.json)".into(),
            });
        }
        let try_variant = |v: Option<&str>| -> Result<Option<Self>> {
            if repo.has_file(&single(v))? {
                let path = repo.file(&single(v))?;
                return Self::from_files(std::slice::from_ref(&path), &path).map(Some);
            }
            if repo.has_file(&index(v))? {
                return Self::open_sharded(repo, subfolder, &index(v)).map(Some);
            }
            Ok(None)
        };
        if let Some(w) = try_variant(variant)? {
            return Ok(w);
        }
        let listing = repo.list_dir(subfolder).unwrap_or_default();
        let names: Vec<&str> =
            listing.iter().map(|f| f.rsplit('/').next().unwrap_or(f)).collect();
        // Variants present: `<base>.<variant>.safetensors` or the sharded index of one.
        let variants: BTreeSet<String> = names
            .iter()
            .filter_map(|n| {
                let rest = n.strip_prefix(&format!("{base}."))?;
                if let Some(v) = rest.strip_suffix(".safetensors") {
                    (!v.contains('-') && !v.is_empty()).then(|| v.to_string())
                } else {
                    rest.strip_prefix("safetensors.index.")?.strip_suffix(".json").map(String::from)
                }
            })
            .collect();
        if variant.is_none() && variants.len() == 1 {
            let v = variants.iter().next().unwrap();
            log::info!("{}: no plain weights, using the `{v}` variant", repo.describe(subfolder).display());
            if let Some(w) = try_variant(Some(v))? {
                return Ok(w);
            }
        }
        if let Some(bin) = names.iter().find(|n| n.ends_with(".bin") || n.ends_with(".ckpt") || n.ends_with(".pt")) {
            return Err(Error::PickleWeights { path: repo.describe(subfolder), file: bin.to_string() });
        }
        let mut expected = format!("{} or {}", single(variant), index(variant));
        if !variants.is_empty() {
            expected += &format!(
                " (variants present: {}; pass one with --variant)",
                variants.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        } else if variant.is_some() {
            expected += " (no such variant here; try without --variant)";
        }
        Err(Error::NoWeights { path: repo.describe(subfolder), expected })
    }

    fn open_sharded(repo: &ModelRepo, subfolder: &str, index_rel: &str) -> Result<Self> {
        let (index_path, value) = crate::config::read_json(repo, index_rel)?;
        let map = value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
            Error::InvalidConfig { path: index_path.clone(), message: "no `weight_map` object".into() }
        })?;
        let shard_names: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let mut paths = Vec::new();
        for name in &shard_names {
            paths.push(repo.file(&join(subfolder, name)).map_err(|e| match e {
                Error::MissingFile { path, .. } => Error::MissingFile {
                    what: "weight shard".into(),
                    path,
                    hint: format!("\n  it is listed in {}", index_path.display()),
                },
                other => other,
            })?);
        }
        let weights = Self::from_files(&paths, &index_path)?;
        for (key, shard) in map {
            let file = shard.as_str().unwrap_or_default();
            match weights.entries.get(key) {
                Some(e) if weights.files[e.file].0.file_name().and_then(|n| n.to_str()) == Some(file) => {}
                _ => {
                    return Err(Error::BadSafetensors {
                        path: index_path.clone(),
                        message: format!("the index puts `{key}` in {file}, but that shard does not hold it"),
                    })
                }
            }
        }
        Ok(weights)
    }

    /// Renames checkpoint keys before loading: `f` gives the key the module uses, or `None`
    /// for a stored tensor the model does not hold (e.g. a persisted buffer such as
    /// transformers 4's `position_ids`). For layouts that differ only by a library's
    /// convention (transformers' `base_model_prefix`), not per-key remap tables.
    pub fn rename_keys(mut self, f: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (key, entry) in std::mem::take(&mut self.entries) {
            if let Some(new) = f(&key) {
                if entries.insert(new.clone(), entry).is_some() {
                    return Err(Error::BadSafetensors {
                        path: self.origin.clone(),
                        message: format!("two tensors map to the key `{new}`"),
                    });
                }
            }
        }
        self.entries = entries;
        Ok(self)
    }

    /// The path used in messages (the file, or the shard index).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Shape of a stored tensor.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The stored tensor as host data in its stored dtype.
    pub fn tensor_data(&self, key: &str) -> Result<TensorData> {
        let e = self.entries.get(key).ok_or_else(|| Error::MissingTensor {
            key: key.into(),
            path: self.origin.clone(),
            expected: vec![],
            more: String::new(),
        })?;
        let (path, mmap) = &self.files[e.file];
        let bytes = mmap[e.start..e.end].to_vec();
        let dtype = match e.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            other => {
                return Err(Error::UnsupportedDtype {
                    key: key.into(),
                    path: path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(TensorData::from_bytes_vec(bytes, e.shape.clone(), dtype))
    }

    /// Loads every float parameter of `module` from these weights by its path, converting to
    /// `dtype` (the device's default float type when `None`). Every checkpoint tensor must be
    /// used, every parameter found, every shape equal; all problems are reported, the first
    /// one as the error.
    pub fn load_module<B: Backend, M: Module<B>>(
        &self,
        module: M,
        device: &B::Device,
        dtype: Option<DType>,
    ) -> Result<M> {
        // The float type every tensor is converted to: the requested one, else the device default.
        let dtype = dtype.unwrap_or_else(|| Tensor::<B, 1>::empty([0], device).dtype());
        let mut loader = Loader::<B> {
            weights: self,
            device: device.clone(),
            dtype,
            path: Vec::new(),
            used: BTreeSet::new(),
            errors: Vec::new(),
        };
        let module = module.map(&mut loader);
        let Loader { used, mut errors, .. } = loader;
        let unused: Vec<&String> = self.entries.keys().filter(|k| !used.contains(*k)).collect();
        let more = |n: usize| if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() };
        if let Some(first) = unused.first() {
            errors.push(Error::UnusedTensor {
                key: (*first).clone(),
                path: self.origin.clone(),
                more: more(unused.len()),
            });
        }
        let missing = errors.iter().filter(|e| matches!(e, Error::MissingTensor { .. })).count();
        for e in &errors {
            log::debug!("{e}");
        }
        match errors.into_iter().next() {
            None => Ok(module),
            Some(Error::MissingTensor { key, path, expected, .. }) => {
                Err(Error::MissingTensor { key, path, expected, more: more(missing) })
            }
            Some(e) => Err(e),
        }
    }
}

struct Loader<'a, B: Backend> {
    weights: &'a Weights,
    device: B::Device,
    dtype: DType,
    path: Vec<String>,
    used: BTreeSet<String>,
    errors: Vec<Error>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.join(".");
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some(entry) = self.weights.entries.get(&key) else {
            self.errors.push(Error::MissingTensor {
                key,
                path: self.weights.origin.clone(),
                expected,
                more: String::new(),
            });
            return param;
        };
        self.used.insert(key.clone());
        if entry.shape != expected {
            self.errors.push(Error::ShapeMismatch {
                key,
                path: self.weights.files[entry.file].0.clone(),
                found: entry.shape.clone(),
                expected,
            });
            return param;
        }
        let data = match self.weights.tensor_data(&key) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(e);
                return param;
            }
        };
        let tensor = Tensor::<B, D>::from_data(data.convert_dtype(self.dtype), (&self.device, self.dtype));
        Param::initialized(param.id, tensor)
    }
}
