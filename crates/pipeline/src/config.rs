//! `pipelines.toml`: components declared once, pipelines as stages over them.
//!
//! ```toml
//! [components.ms]                      # a whole diffusers folder / hub repo
//! kind = "diffusers"
//! source = "ali-vilab/text-to-video-ms-1.7b"
//! variant = "fp16"
//!
//! [pipelines.ms-1_7b]
//! description = "ModelScope text-to-video"
//! [[pipelines.ms-1_7b.stages]]
//! type = "text-to-video"
//! model = "ms"                         # parts not named below come from this component
//! num_frames = 16
//! ```
//!
//! Component kinds: `diffusers` (a pipeline folder; stages take its tokenizer, text_encoder,
//! unet, vae and scheduler), or one part: `tokenizer`, `text-encoder`, `unet`, `vae`,
//! `scheduler`. A stage names its parts with `model = ID` and/or per part (`unet = ID`,
//! `text_encoder = ID`, ...); a part may name a `diffusers` component (meaning its part of that
//! kind). Parts that resolve to the same files, variant, dtype and device are loaded once and
//! shared by every stage and pipeline that uses them.
//!
//! Parsing is strict (`deny_unknown_fields`); every error names the file, the line and the key.
//! The stage semantics are those of diffusers' `TextToVideoSDPipeline` / `VideoToVideoSDPipeline`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

/// A component kind in `pipelines.toml`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// A diffusers pipeline folder (model_index.json + component folders).
    Diffusers,
    Tokenizer,
    TextEncoder,
    Unet,
    Vae,
    Scheduler,
}

impl ComponentKind {
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Diffusers => "diffusers",
            ComponentKind::Tokenizer => "tokenizer",
            ComponentKind::TextEncoder => "text-encoder",
            ComponentKind::Unet => "unet",
            ComponentKind::Vae => "vae",
            ComponentKind::Scheduler => "scheduler",
        }
    }
}

/// The parts a model stage is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartKind {
    Tokenizer,
    TextEncoder,
    Unet,
    Vae,
    Scheduler,
}

impl PartKind {
    pub const ALL: [PartKind; 5] =
        [PartKind::Tokenizer, PartKind::TextEncoder, PartKind::Unet, PartKind::Vae, PartKind::Scheduler];

    /// The folder diffusers keeps this part in, and the stage key that names it.
    pub fn folder(self) -> &'static str {
        match self {
            PartKind::Tokenizer => "tokenizer",
            PartKind::TextEncoder => "text_encoder",
            PartKind::Unet => "unet",
            PartKind::Vae => "vae",
            PartKind::Scheduler => "scheduler",
        }
    }

    pub fn component_kind(self) -> ComponentKind {
        match self {
            PartKind::Tokenizer => ComponentKind::Tokenizer,
            PartKind::TextEncoder => ComponentKind::TextEncoder,
            PartKind::Unet => ComponentKind::Unet,
            PartKind::Vae => ComponentKind::Vae,
            PartKind::Scheduler => ComponentKind::Scheduler,
        }
    }
}

/// Float type a component's weights are converted to at load time.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DTypeName {
    F32,
    F16,
    Bf16,
}

impl DTypeName {
    pub fn to_dtype(self) -> burn::tensor::DType {
        match self {
            DTypeName::F32 => burn::tensor::DType::F32,
            DTypeName::F16 => burn::tensor::DType::F16,
            DTypeName::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

/// `[components.<id>]`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ComponentDecl {
    pub kind: ComponentKind,
    /// A Hugging Face repo id (`owner/name`) or a local folder (relative paths resolve against
    /// the TOML file's folder).
    pub source: Spanned<String>,
    /// Folder inside the source: for `diffusers`, where model_index.json is (default: the
    /// root); for a part, the part's folder (default: diffusers' name for it, e.g. `unet`).
    pub subfolder: Option<String>,
    /// Hub revision (branch, tag or commit).
    pub revision: Option<String>,
    /// Weights variant (`fp16` for `*.fp16.safetensors`).
    pub variant: Option<String>,
    /// Float type at load time (default: the run's `--dtype`).
    pub dtype: Option<DTypeName>,
    /// Device name understood by the run's backend (`cpu`, `cuda`, `cuda:1`); default: the
    /// run's `--device`.
    pub device: Option<Spanned<String>>,
    pub description: Option<String>,
}

/// What a stage does.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// diffusers' `TextToVideoSDPipeline`.
    TextToVideo,
    /// diffusers' `VideoToVideoSDPipeline` (on the previous stage's frames or `--video`).
    VideoToVideo,
    /// Resize the previous stage's frames (Lanczos, as diffusers' image processor).
    Resize,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::TextToVideo => "text-to-video",
            StageKind::VideoToVideo => "video-to-video",
            StageKind::Resize => "resize",
        }
    }
}

/// `[[pipelines.<id>.stages]]`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct StageDecl {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<StageKind>>,
    /// A `diffusers` component: the parts not named below come from it.
    pub model: Option<Spanned<String>>,
    pub tokenizer: Option<Spanned<String>>,
    pub text_encoder: Option<Spanned<String>>,
    pub unet: Option<Spanned<String>>,
    pub vae: Option<Spanned<String>>,
    pub scheduler: Option<Spanned<String>>,
    /// Swap the scheduler class like diffusers' `Class.from_config(scheduler.config)`.
    pub scheduler_class: Option<Spanned<String>>,
    /// Options set on top of the scheduler config (`from_config(config, **options)`).
    pub scheduler_options: Option<Spanned<toml::Table>>,
    pub height: Option<Spanned<usize>>,
    pub width: Option<Spanned<usize>>,
    pub num_frames: Option<Spanned<usize>>,
    pub num_inference_steps: Option<Spanned<usize>>,
    pub guidance_scale: Option<Spanned<f64>>,
    pub strength: Option<Spanned<f64>>,
    pub eta: Option<Spanned<f64>>,
    pub clip_skip: Option<Spanned<usize>>,
    pub negative_prompt: Option<String>,
    /// diffusers' `enable_vae_slicing()`.
    pub vae_slicing: Option<bool>,
    /// diffusers' `unet.enable_forward_chunking(chunk_size, dim=1)`.
    pub forward_chunk: Option<Spanned<usize>>,
}

/// `[pipelines.<id>]`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PipelineDecl {
    pub description: Option<String>,
    /// Frames per second of the written video (default 8, diffusers' `export_to_video`).
    pub fps: Option<Spanned<f64>>,
    pub stages: Spanned<Vec<StageDecl>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    components: BTreeMap<String, Spanned<ComponentDecl>>,
    #[serde(default)]
    pipelines: BTreeMap<String, Spanned<PipelineDecl>>,
}

/// Where a stage's part comes from: a component id plus the folder inside it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartRef {
    pub component: String,
    pub kind: PartKind,
    pub subfolder: String,
}

/// Per-stage defaults (the CLI's flags override them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageDefaults {
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    pub strength: Option<f64>,
    pub eta: Option<f64>,
    pub clip_skip: Option<usize>,
    pub negative_prompt: Option<String>,
    pub scheduler_class: Option<String>,
    pub scheduler_options: serde_json::Map<String, serde_json::Value>,
    pub vae_slicing: bool,
    pub forward_chunk: Option<usize>,
}

/// A validated stage.
#[derive(Clone, Debug)]
pub struct Stage {
    pub kind: StageKind,
    /// The five parts (model stages only).
    pub parts: Option<BTreeMap<PartKind, PartRef>>,
    pub defaults: StageDefaults,
}

/// A validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub id: String,
    pub description: Option<String>,
    pub fps: Option<f64>,
    pub stages: Vec<Stage>,
}

/// A parsed and validated pipelines file.
#[derive(Clone, Debug)]
pub struct PipelineFile {
    /// The file (for messages).
    pub path: PathBuf,
    /// Relative local sources resolve against this folder.
    pub base_dir: PathBuf,
    pub components: BTreeMap<String, ComponentDecl>,
    pub pipelines: BTreeMap<String, Pipeline>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&b| b == b'\n').count() + 1
    }
    fn err_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Error {
        Error::Config { file: self.path.to_path_buf(), line: Some(self.line(span.start)), message: message.into() }
    }
}

fn known_list<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = ids.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "none declared".into()
    } else {
        v.join(", ")
    }
}

impl PipelineFile {
    /// Reads and validates a pipelines file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read the pipelines file: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses and validates `text` (named `path` in messages; local sources relative to
    /// `base_dir`).
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Self> {
        let cx = Ctx { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| cx.line(s.start));
            Error::Config { file: path.to_path_buf(), line, message: e.message().trim().to_string() }
        })?;
        let mut components = BTreeMap::new();
        for (id, decl) in &raw.components {
            let span = decl.span();
            let d = decl.get_ref();
            if d.source.get_ref().trim().is_empty() {
                return Err(cx.err_at(d.source.span(), format!("components.{id}.source is empty: give a hub repo id or a folder")));
            }
            if d.kind == ComponentKind::Scheduler && (d.variant.is_some() || d.dtype.is_some() || d.device.is_some()) {
                return Err(cx.err_at(span, format!("components.{id}: a scheduler has no weights; drop variant/dtype/device")));
            }
            components.insert(id.clone(), d.clone());
        }
        let mut pipelines = BTreeMap::new();
        for (id, decl) in &raw.pipelines {
            let p = decl.get_ref();
            if p.stages.get_ref().is_empty() {
                return Err(cx.err_at(p.stages.span(), format!("pipelines.{id}.stages is empty: declare at least one stage")));
            }
            if let Some(fps) = &p.fps {
                if !(fps.get_ref().is_finite() && *fps.get_ref() > 0.0) {
                    return Err(cx.err_at(fps.span(), format!("pipelines.{id}.fps must be a positive number")));
                }
            }
            let mut stages = Vec::new();
            for (i, s) in p.stages.get_ref().iter().enumerate() {
                let key = format!("pipelines.{id}.stages[{i}]");
                stages.push(validate_stage(&cx, &key, s, i, decl.span(), &components)?);
            }
            pipelines.insert(
                id.clone(),
                Pipeline { id: id.clone(), description: p.description.clone(), fps: p.fps.as_ref().map(|f| *f.get_ref()), stages },
            );
        }
        Ok(PipelineFile { path: path.to_path_buf(), base_dir: base_dir.to_path_buf(), components, pipelines })
    }

    /// The pipeline `id`, or an error listing the declared ones.
    pub fn pipeline(&self, id: &str) -> Result<&Pipeline> {
        self.pipelines.get(id).ok_or_else(|| Error::Config {
            file: self.path.clone(),
            line: None,
            message: format!("no pipeline `{id}`; declared pipelines: {}", known_list(self.pipelines.keys())),
        })
    }

    /// A one-stage pipeline over a bare diffusers folder or hub repo id (`reel generate --model`).
    pub fn for_model(source: &str, revision: Option<&str>, variant: Option<&str>, kind: StageKind) -> Result<Self> {
        let mut text = String::from("[components.model]\nkind = \"diffusers\"\n");
        text += &format!("source = {}\n", toml::Value::String(source.to_string()));
        if let Some(r) = revision {
            text += &format!("revision = {}\n", toml::Value::String(r.to_string()));
        }
        if let Some(v) = variant {
            text += &format!("variant = {}\n", toml::Value::String(v.to_string()));
        }
        text += &format!("\n[pipelines.model]\n[[pipelines.model.stages]]\ntype = \"{}\"\nmodel = \"model\"\n", kind.name());
        Self::parse(&text, Path::new("--model"), Path::new(""))
    }
}

fn validate_stage(
    cx: &Ctx,
    key: &str,
    s: &StageDecl,
    index: usize,
    pipeline_span: std::ops::Range<usize>,
    components: &BTreeMap<String, ComponentDecl>,
) -> Result<Stage> {
    let kind = match &s.kind {
        Some(k) => *k.get_ref(),
        None => {
            let at = s.model.as_ref().map(|m| m.span()).unwrap_or(pipeline_span);
            return Err(cx.err_at(at, format!("{key}: missing `type` (text-to-video, video-to-video or resize)")));
        }
    };
    let kind_span = s.kind.as_ref().map(|k| k.span()).unwrap_or(0..0);
    let check_size = |v: &Option<Spanned<usize>>, name: &str| -> Result<Option<usize>> {
        match v {
            None => Ok(None),
            Some(x) => {
                let n = *x.get_ref();
                if n == 0 || n % 8 != 0 {
                    Err(cx.err_at(x.span(), format!("{key}.{name} = {n}: must be a positive multiple of 8")))
                } else {
                    Ok(Some(n))
                }
            }
        }
    };
    let height = check_size(&s.height, "height")?;
    let width = check_size(&s.width, "width")?;
    if kind == StageKind::Resize {
        let model_keys = [
            ("model", s.model.is_some()),
            ("tokenizer", s.tokenizer.is_some()),
            ("text_encoder", s.text_encoder.is_some()),
            ("unet", s.unet.is_some()),
            ("vae", s.vae.is_some()),
            ("scheduler", s.scheduler.is_some()),
            ("scheduler_class", s.scheduler_class.is_some()),
            ("scheduler_options", s.scheduler_options.is_some()),
            ("num_frames", s.num_frames.is_some()),
            ("num_inference_steps", s.num_inference_steps.is_some()),
            ("guidance_scale", s.guidance_scale.is_some()),
            ("strength", s.strength.is_some()),
            ("eta", s.eta.is_some()),
            ("clip_skip", s.clip_skip.is_some()),
            ("negative_prompt", s.negative_prompt.is_some()),
            ("vae_slicing", s.vae_slicing.is_some()),
            ("forward_chunk", s.forward_chunk.is_some()),
        ];
        if let Some((k, _)) = model_keys.iter().find(|(_, set)| *set) {
            return Err(cx.err_at(kind_span, format!("{key}: a resize stage takes only `height` and `width`, not `{k}`")));
        }
        if height.is_none() || width.is_none() {
            return Err(cx.err_at(kind_span, format!("{key}: a resize stage needs both `height` and `width`")));
        }
        if index == 0 {
            log::debug!("{key}: resize as the first stage works on the input video");
        }
        return Ok(Stage { kind, parts: None, defaults: StageDefaults { height, width, ..Default::default() } });
    }
    if kind == StageKind::TextToVideo && index > 0 {
        return Err(cx.err_at(kind_span, format!("{key}: text-to-video can only be the first stage (it takes no input video)")));
    }
    if kind == StageKind::TextToVideo {
        if let Some(x) = &s.strength {
            return Err(cx.err_at(x.span(), format!("{key}.strength: only video-to-video stages take a strength")));
        }
    }
    if kind == StageKind::VideoToVideo {
        if let Some(x) = &s.num_frames {
            return Err(cx.err_at(x.span(), format!("{key}.num_frames: video-to-video takes the frame count of its input video")));
        }
    }
    // Parts.
    let lookup = |id: &Spanned<String>, field: &str| -> Result<&ComponentDecl> {
        components.get(id.get_ref()).ok_or_else(|| {
            cx.err_at(
                id.span(),
                format!("{key}.{field}: unknown component `{}`; declared components: {}", id.get_ref(), known_list(components.keys())),
            )
        })
    };
    let model = match &s.model {
        Some(m) => {
            let d = lookup(m, "model")?;
            if d.kind != ComponentKind::Diffusers {
                return Err(cx.err_at(
                    m.span(),
                    format!("{key}.model: component `{}` is a {}, but `model` needs a `diffusers` component (or name the part with `{}` = ...)",
                        m.get_ref(), d.kind.name(), d.kind.name().replace('-', "_")),
                ));
            }
            Some((m.get_ref().clone(), d))
        }
        None => None,
    };
    let mut parts = BTreeMap::new();
    for part in PartKind::ALL {
        let field = match part {
            PartKind::Tokenizer => &s.tokenizer,
            PartKind::TextEncoder => &s.text_encoder,
            PartKind::Unet => &s.unet,
            PartKind::Vae => &s.vae,
            PartKind::Scheduler => &s.scheduler,
        };
        let r = match field {
            Some(id) => {
                let d = lookup(id, part.folder())?;
                if d.kind == ComponentKind::Diffusers {
                    PartRef { component: id.get_ref().clone(), kind: part, subfolder: join(d.subfolder.as_deref(), part.folder()) }
                } else if d.kind == part.component_kind() {
                    PartRef {
                        component: id.get_ref().clone(),
                        kind: part,
                        subfolder: d.subfolder.clone().unwrap_or_else(|| part.folder().to_string()),
                    }
                } else {
                    return Err(cx.err_at(
                        id.span(),
                        format!("{key}.{}: component `{}` is a {}, not a {} (or a diffusers folder)",
                            part.folder(), id.get_ref(), d.kind.name(), part.component_kind().name()),
                    ));
                }
            }
            None => match &model {
                Some((id, d)) => PartRef { component: id.clone(), kind: part, subfolder: join(d.subfolder.as_deref(), part.folder()) },
                None => {
                    return Err(cx.err_at(
                        kind_span.clone(),
                        format!("{key}: no {} — name a diffusers component with `model = ID` or the part with `{} = ID`",
                            part.folder(), part.folder()),
                    ))
                }
            },
        };
        parts.insert(part, r);
    }
    // Defaults.
    let positive = |v: &Option<Spanned<usize>>, name: &str| -> Result<Option<usize>> {
        match v {
            Some(x) if *x.get_ref() == 0 => Err(cx.err_at(x.span(), format!("{key}.{name} must be at least 1"))),
            Some(x) => Ok(Some(*x.get_ref())),
            None => Ok(None),
        }
    };
    let finite = |v: &Option<Spanned<f64>>, name: &str, lo: f64, hi: f64| -> Result<Option<f64>> {
        match v {
            Some(x) => {
                let f = *x.get_ref();
                if !(f.is_finite() && f >= lo && f <= hi) {
                    Err(cx.err_at(x.span(), format!("{key}.{name} = {f}: must be in [{lo}, {hi}]")))
                } else {
                    Ok(Some(f))
                }
            }
            None => Ok(None),
        }
    };
    let scheduler_class = match &s.scheduler_class {
        Some(c) => {
            reel_schedulers::registry::entry(c.get_ref()).map_err(|e| cx.err_at(c.span(), format!("{key}.scheduler_class: {e}")))?;
            Some(c.get_ref().clone())
        }
        None => None,
    };
    let scheduler_options = match &s.scheduler_options {
        Some(t) => match serde_json::to_value(t.get_ref()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(cx.err_at(t.span(), format!("{key}.scheduler_options: not a table of scheduler options"))),
        },
        None => Default::default(),
    };
    for k in scheduler_options.keys() {
        if !reel_schedulers::registry::is_known_option(k) {
            let span = s.scheduler_options.as_ref().map(|t| t.span()).unwrap_or(0..0);
            return Err(cx.err_at(span, format!("{key}.scheduler_options: `{k}` is not an option of any registered scheduler (see `reel schedulers`)")));
        }
    }
    let defaults = StageDefaults {
        height,
        width,
        num_frames: positive(&s.num_frames, "num_frames")?,
        num_inference_steps: positive(&s.num_inference_steps, "num_inference_steps")?,
        guidance_scale: finite(&s.guidance_scale, "guidance_scale", f64::MIN, f64::MAX)?,
        strength: finite(&s.strength, "strength", 0.0, 1.0)?,
        eta: finite(&s.eta, "eta", 0.0, f64::MAX)?,
        clip_skip: s.clip_skip.as_ref().map(|c| *c.get_ref()),
        negative_prompt: s.negative_prompt.clone(),
        scheduler_class,
        scheduler_options,
        vae_slicing: s.vae_slicing.unwrap_or(false),
        forward_chunk: positive(&s.forward_chunk, "forward_chunk")?,
    };
    Ok(Stage { kind, parts: Some(parts), defaults })
}

fn join(root: Option<&str>, folder: &str) -> String {
    match root.map(|r| r.trim_matches('/')).filter(|r| !r.is_empty()) {
        Some(r) => format!("{r}/{folder}"),
        None => folder.to_string(),
    }
}
