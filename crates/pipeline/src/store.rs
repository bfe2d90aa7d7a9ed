//! Loaded components, shared: every part (tokenizer, text encoder, UNet, VAE, scheduler config)
//! is keyed by what it is loaded from — source, revision, folder, variant, dtype, device — and
//! loaded once however many stages and pipelines name it. With model CPU offload
//! (diffusers' `enable_model_cpu_offload`) nothing is kept: a part is loaded onto its device
//! right before the phase that uses it and dropped right after, so only one model sits on the
//! device at a time. Every load is recorded (what, how long) for the run summary and tests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use burn::tensor::{backend::Backend, DType};
use reel_clip::{ClipTokenizer, TextEncoder};
use reel_core::{HubSettings, ModelRepo, ModelSource};
use reel_schedulers::SchedulerSpec;
use reel_unet3d::Unet3d;
use reel_vae::Vae;

use crate::config::{ComponentDecl, PartKind, PartRef, PipelineFile};
use crate::error::{Error, Result};

/// Turns a component's `device` name (or `None`: the run's device) into a backend device.
pub type DeviceResolver<B> = Box<dyn Fn(Option<&str>) -> std::result::Result<burn::tensor::Device<B>, String>>;

/// How components are loaded.
pub struct StoreOptions<B: Backend> {
    pub hub: HubSettings,
    /// dtype for components that declare none (`None`: the backend's default float, f32).
    pub dtype: Option<DType>,
    /// dtype of every VAE, whatever the components say (diffusers' `force_upcast`: an f16
    /// pipeline whose VAE overflows runs the VAE in f32).
    pub vae_dtype: Option<DType>,
    /// diffusers' `enable_model_cpu_offload`: keep no model loaded between phases.
    pub offload: bool,
    pub device: DeviceResolver<B>,
}

/// What identifies a loaded part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartKey {
    pub kind: PartKind,
    pub source: String,
    pub revision: Option<String>,
    pub subfolder: String,
    pub variant: Option<String>,
    pub dtype: Option<String>,
    pub device: Option<String>,
}

impl std::fmt::Display for PartKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.subfolder, self.source)?;
        if let Some(r) = &self.revision {
            write!(f, "@{r}")?;
        }
        if let Some(v) = &self.variant {
            write!(f, " ({v})")?;
        }
        Ok(())
    }
}

/// One load, for the summary.
#[derive(Clone, Debug)]
pub struct LoadRecord {
    pub kind: PartKind,
    pub what: String,
    pub seconds: f64,
}

/// A loaded part and the device it lives on.
pub struct Loaded<T, D> {
    pub part: Rc<T>,
    pub device: D,
}

type Cache<T, B> = HashMap<PartKey, Loaded<T, burn::tensor::Device<B>>>;

/// The loaded parts of one pipelines file.
pub struct ComponentStore<B: Backend> {
    pub file: PipelineFile,
    options: StoreOptions<B>,
    repos: HashMap<(String, Option<String>), Rc<ModelRepo>>,
    tokenizers: Cache<ClipTokenizer, B>,
    text_encoders: Cache<TextEncoder<B>, B>,
    unets: Cache<RefCell<Unet3d<B>>, B>,
    vaes: Cache<RefCell<Vae<B>>, B>,
    schedulers: HashMap<PartKey, SchedulerSpec>,
    /// Every load so far, in order.
    pub loads: Vec<LoadRecord>,
}

impl<B: Backend> ComponentStore<B> {
    pub fn new(file: PipelineFile, options: StoreOptions<B>) -> Self {
        Self {
            file,
            options,
            repos: HashMap::new(),
            tokenizers: HashMap::new(),
            text_encoders: HashMap::new(),
            unets: HashMap::new(),
            vaes: HashMap::new(),
            schedulers: HashMap::new(),
            loads: Vec::new(),
        }
    }

    pub fn offload(&self) -> bool {
        self.options.offload
    }

    /// How many times parts of `kind` were loaded.
    pub fn load_count(&self, kind: PartKind) -> usize {
        self.loads.iter().filter(|l| l.kind == kind).count()
    }

    fn decl(&self, part: &PartRef) -> Result<&ComponentDecl> {
        self.file.components.get(&part.component).ok_or_else(|| Error::Config {
            file: self.file.path.clone(),
            line: None,
            message: format!("unknown component `{}`", part.component),
        })
    }

    fn source_of(&self, decl: &ComponentDecl) -> ModelSource {
        let s = decl.source.get_ref();
        let local = self.file.base_dir.join(s);
        if Path::new(s).is_absolute() || (!self.file.base_dir.as_os_str().is_empty() && local.exists()) {
            return ModelSource::Local(local);
        }
        ModelSource::parse(s, decl.revision.as_deref())
    }

    /// The key a part is loaded under.
    pub fn key(&self, part: &PartRef) -> Result<PartKey> {
        let decl = self.decl(part)?;
        let source = match self.source_of(decl) {
            ModelSource::Local(p) => std::fs::canonicalize(&p).unwrap_or(p).display().to_string(),
            other => other.to_string(),
        };
        let weights = part.kind != PartKind::Scheduler && part.kind != PartKind::Tokenizer;
        let dtype = self.dtype_for(part.kind, decl);
        Ok(PartKey {
            kind: part.kind,
            source,
            revision: decl.revision.clone(),
            subfolder: part.subfolder.clone(),
            variant: if weights { decl.variant.clone() } else { None },
            dtype: if weights { dtype.map(|d| format!("{d:?}")) } else { None },
            device: if weights { decl.device.as_ref().map(|d| d.get_ref().clone()) } else { None },
        })
    }

    fn repo(&mut self, part: &PartRef) -> Result<Rc<ModelRepo>> {
        let decl = self.decl(part)?.clone();
        let k = (decl.source.get_ref().clone(), decl.revision.clone());
        if let Some(r) = self.repos.get(&k) {
            return Ok(r.clone());
        }
        let repo = Rc::new(self.source_of(&decl).open(&self.options.hub)?);
        self.repos.insert(k, repo.clone());
        Ok(repo)
    }

    fn target(&self, part: &PartRef) -> Result<(Option<DType>, B::Device, Option<String>)> {
        let decl = self.decl(part)?;
        let dtype = self.dtype_for(part.kind, decl);
        let name = decl.device.as_ref().map(|d| d.get_ref().as_str());
        let device = (self.options.device)(name).map_err(|message| Error::Config {
            file: self.file.path.clone(),
            line: None,
            message: format!("components.{}.device: {message}", part.component),
        })?;
        Ok((dtype, device, decl.variant.clone()))
    }

    fn dtype_for(&self, kind: PartKind, decl: &ComponentDecl) -> Option<DType> {
        match (kind, self.options.vae_dtype) {
            (PartKind::Vae, Some(d)) => Some(d),
            _ => decl.dtype.map(|d| d.to_dtype()).or(self.options.dtype),
        }
    }

    fn record(&mut self, kind: PartKind, key: &PartKey, t0: Instant) {
        let seconds = t0.elapsed().as_secs_f64();
        log::info!("loaded {key} in {seconds:.2} s");
        self.loads.push(LoadRecord { kind, what: key.to_string(), seconds });
    }

    pub fn tokenizer(&mut self, part: &PartRef) -> Result<Rc<ClipTokenizer>> {
        let key = self.key(part)?;
        if let Some(l) = self.tokenizers.get(&key) {
            return Ok(l.part.clone());
        }
        let t0 = Instant::now();
        let repo = self.repo(part)?;
        let tok = Rc::new(ClipTokenizer::load(&repo, &part.subfolder)?);
        self.record(part.kind, &key, t0);
        let (_, device, _) = self.target(part)?;
        self.tokenizers.insert(key, Loaded { part: tok.clone(), device });
        Ok(tok)
    }

    pub fn scheduler(&mut self, part: &PartRef) -> Result<SchedulerSpec> {
        let key = self.key(part)?;
        if let Some(s) = self.schedulers.get(&key) {
            return Ok(s.clone());
        }
        let repo = self.repo(part)?;
        let rel = reel_core::config::join(&part.subfolder, "scheduler_config.json");
        let path = repo.file(&rel)?;
        let text = std::fs::read_to_string(&path).map_err(|e| reel_core::Error::io(&path, e))?;
        let spec = SchedulerSpec::from_json_str(&text)
            .map_err(|e| Error::input(format!("{}: {e}", repo.describe(&rel).display())))?;
        self.schedulers.insert(key, spec.clone());
        Ok(spec)
    }

    /// A model part from `cache`, or loaded now with `load` (and kept unless offloading).
    fn model<T>(
        &mut self,
        part: &PartRef,
        cache: fn(&mut Self) -> &mut Cache<T, B>,
        load: impl FnOnce(&ModelRepo, &str, Option<&str>, &B::Device, Option<DType>) -> reel_core::Result<T>,
    ) -> Result<Loaded<T, B::Device>> {
        let key = self.key(part)?;
        if let Some(l) = cache(self).get(&key) {
            return Ok(Loaded { part: l.part.clone(), device: l.device.clone() });
        }
        let t0 = Instant::now();
        let repo = self.repo(part)?;
        let (dtype, device, variant) = self.target(part)?;
        let loaded = Rc::new(load(&repo, &part.subfolder, variant.as_deref(), &device, dtype)?);
        self.record(part.kind, &key, t0);
        if !self.options.offload {
            cache(self).insert(key, Loaded { part: loaded.clone(), device: device.clone() });
        }
        Ok(Loaded { part: loaded, device })
    }

    pub fn text_encoder(&mut self, part: &PartRef) -> Result<Loaded<TextEncoder<B>, B::Device>> {
        self.model(part, |s| &mut s.text_encoders, TextEncoder::load)
    }

    pub fn unet(&mut self, part: &PartRef) -> Result<Loaded<RefCell<Unet3d<B>>, B::Device>> {
        self.model(part, |s| &mut s.unets, |r, f, v, d, t| Unet3d::load(r, f, v, d, t).map(RefCell::new))
    }

    pub fn vae(&mut self, part: &PartRef) -> Result<Loaded<RefCell<Vae<B>>, B::Device>> {
        self.model(part, |s| &mut s.vaes, |r, f, v, d, t| Vae::load(r, f, v, d, t).map(RefCell::new))
    }

    /// The device a part is (or would be) loaded on.
    pub fn device_of(&self, part: &PartRef) -> Result<B::Device> {
        Ok(self.target(part)?.1)
    }

    /// The float type a part is (or would be) loaded in.
    pub fn dtype_of(&self, part: &PartRef) -> Result<DType> {
        Ok(self.target(part)?.0.unwrap_or(DType::F32))
    }

    /// The VAE's `vae_scale_factor` from its config, without loading weights.
    pub fn vae_scale_factor(&mut self, part: &PartRef) -> Result<usize> {
        let repo = self.repo(part)?;
        let config: reel_vae::AutoencoderKLConfig =
            reel_core::config::load_component_config(&repo, &part.subfolder, &["AutoencoderKL"])?;
        Ok(config.downsample_factor())
    }

    /// Loads every part of `pipeline` now (without offload; with offload this only checks the
    /// tokenizers and scheduler configs, which stay on the host).
    pub fn preload(&mut self, pipeline: &str) -> Result<()> {
        let stages = self.file.pipeline(pipeline)?.stages.clone();
        for stage in &stages {
            let Some(parts) = &stage.parts else { continue };
            for (kind, part) in parts {
                match kind {
                    PartKind::Tokenizer => drop(self.tokenizer(part)?),
                    PartKind::Scheduler => drop(self.scheduler(part)?),
                    _ if self.options.offload => {}
                    PartKind::TextEncoder => drop(self.text_encoder(part)?),
                    PartKind::Unet => drop(self.unet(part)?),
                    PartKind::Vae => drop(self.vae(part)?),
                }
            }
        }
        Ok(())
    }
}
