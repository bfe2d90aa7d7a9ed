//! Model sources: a local diffusers folder, or a Hugging Face repo id (+ revision).
//!
//! Repo ids resolve through the same cache Python's `huggingface_hub` uses
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`). With `HF_HUB_OFFLINE=1` only the cache is read (hf-hub itself
//! ignores that variable and `HF_HUB_CACHE`, so they are honoured here); otherwise missing files
//! are downloaded with `hf-hub` into that cache.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a model comes from, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local diffusers pipeline folder (or component folder).
    Local(PathBuf),
    /// A Hugging Face repo id such as `ali-vilab/text-to-video-ms-1.7b`, at a revision
    /// (branch, tag or commit hash; `main` by default).
    Hub { repo_id: String, revision: String },
}

impl ModelSource {
    /// Interprets `spec` as a local path when it exists or looks like a path
    /// (absolute, `./`, `../`, `~`), and as a hub repo id when it has the `owner/name` form.
    pub fn parse(spec: &str, revision: Option<&str>) -> Self {
        let path = Path::new(spec);
        let looks_like_path = path.is_absolute()
            || spec.starts_with('.')
            || spec.starts_with('~')
            || spec.contains('\\')
            || spec.split('/').count() != 2
            || spec.split('/').any(|s| s.is_empty());
        if path.exists() || looks_like_path {
            ModelSource::Local(path.to_path_buf())
        } else {
            ModelSource::Hub {
                repo_id: spec.to_string(),
                revision: revision.unwrap_or("main").to_string(),
            }
        }
    }

    /// Opens the source: checks a local folder exists, or prepares hub access.
    pub fn open(&self, hub: &HubSettings) -> Result<ModelRepo> {
        match self {
            ModelSource::Local(path) => {
                if !path.is_dir() {
                    return Err(Error::MissingFolder { path: path.clone() });
                }
                Ok(ModelRepo::Local { root: path.clone() })
            }
            ModelSource::Hub { repo_id, revision } => {
                if hub.offline {
                    let snapshot = hub.cached_snapshot(repo_id, revision)?;
                    Ok(ModelRepo::Local { root: snapshot })
                } else {
                    Ok(ModelRepo::Hub(HubRepo {
                        repo_id: repo_id.clone(),
                        revision: revision.clone(),
                        settings: hub.clone(),
                        listing: OnceCell::new(),
                    }))
                }
            }
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Local(p) => write!(f, "{}", p.display()),
            ModelSource::Hub { repo_id, revision } if revision == "main" => write!(f, "{repo_id}"),
            ModelSource::Hub { repo_id, revision } => write!(f, "{repo_id}@{revision}"),
        }
    }
}

/// How to reach the Hugging Face hub and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub cache folder (the one holding `models--owner--name`).
    pub cache_dir: PathBuf,
    /// Only read the cache, never the network.
    pub offline: bool,
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Hub endpoint (`HF_ENDPOINT`), when not the default.
    pub endpoint: Option<String>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

impl HubSettings {
    /// Reads the same environment variables as Python's `huggingface_hub`.
    pub fn from_env() -> Self {
        let home = || -> PathBuf {
            if let Some(h) = env_nonempty("HF_HOME") {
                return PathBuf::from(h);
            }
            if let Some(x) = env_nonempty("XDG_CACHE_HOME") {
                return PathBuf::from(x).join("huggingface");
            }
            let home = env_nonempty("HOME").unwrap_or_else(|| ".".into());
            PathBuf::from(home).join(".cache").join("huggingface")
        };
        let cache_dir = env_nonempty("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join("hub"));
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v));
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(home().join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        HubSettings { cache_dir, offline, token, endpoint: env_nonempty("HF_ENDPOINT") }
    }

    /// The snapshot folder of `repo_id` at `revision` in the cache, as Python writes it:
    /// `models--owner--name/refs/<revision>` names a commit, `snapshots/<commit>/` holds the files.
    pub fn cached_snapshot(&self, repo_id: &str, revision: &str) -> Result<PathBuf> {
        let repo_dir = self.cache_dir.join(format!("models--{}", repo_id.replace('/', "--")));
        let not_cached = |detail: String| Error::Hub {
            message: format!(
                "`{repo_id}` (revision `{revision}`) is not in the cache {} ({detail}) and HF_HUB_OFFLINE is set.\n  download it once with network access (unset HF_HUB_OFFLINE, or `huggingface-cli download {repo_id}`), or pass a local folder",
                self.cache_dir.display()
            ),
        };
        if !repo_dir.is_dir() {
            return Err(not_cached(format!("no folder {}", repo_dir.display())));
        }
        let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
        let commit = if is_commit {
            revision.to_string()
        } else {
            let ref_path = repo_dir.join("refs").join(revision);
            std::fs::read_to_string(&ref_path)
                .map_err(|_| not_cached(format!("no ref file {}", ref_path.display())))?
                .trim()
                .to_string()
        };
        let snapshot = repo_dir.join("snapshots").join(&commit);
        if !snapshot.is_dir() {
            return Err(not_cached(format!("no snapshot {}", snapshot.display())));
        }
        Ok(snapshot)
    }
}

/// An opened model source: files are addressed by their path relative to the repo root
/// (e.g. `vae/config.json`).
#[derive(Debug)]
pub enum ModelRepo {
    /// Files on disk: a local folder or a cached hub snapshot.
    Local { root: PathBuf },
    /// A hub repo, downloading on demand into the cache.
    Hub(HubRepo),
}

#[derive(Debug)]
pub struct HubRepo {
    repo_id: String,
    revision: String,
    settings: HubSettings,
    listing: OnceCell<Vec<String>>,
}

impl HubRepo {
    fn api_repo(&self) -> Result<hf_hub::api::sync::ApiRepo> {
        let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(
            self.settings.cache_dir.clone(),
        ))
        .with_token(self.settings.token.clone());
        if let Some(endpoint) = &self.settings.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let api = builder.build().map_err(|e| Error::Hub { message: e.to_string() })?;
        Ok(api.repo(hf_hub::Repo::with_revision(
            self.repo_id.clone(),
            hf_hub::RepoType::Model,
            self.revision.clone(),
        )))
    }

    fn listing(&self) -> Result<&[String]> {
        if let Some(l) = self.listing.get() {
            return Ok(l);
        }
        let info = self.api_repo()?.info().map_err(|e| Error::Hub {
            message: format!(
                "could not list `{}` (revision `{}`): {e}\n  check the repo id and your network; for gated repos set HF_TOKEN; to use the local cache only set HF_HUB_OFFLINE=1",
                self.repo_id, self.revision
            ),
        })?;
        let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
        Ok(self.listing.get_or_init(|| files))
    }
}

impl ModelRepo {
    /// Opens a local folder directly.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self> {
        ModelSource::Local(root.into()).open(&HubSettings::from_env())
    }

    /// A printable name for messages.
    pub fn describe(&self, rel: &str) -> PathBuf {
        match self {
            ModelRepo::Local { root } => root.join(rel),
            ModelRepo::Hub(h) => PathBuf::from(format!("{}@{}:{rel}", h.repo_id, h.revision)),
        }
    }

    /// Whether the repo has this file (without downloading it).
    pub fn has_file(&self, rel: &str) -> Result<bool> {
        match self {
            ModelRepo::Local { root } => Ok(root.join(rel).is_file()),
            ModelRepo::Hub(h) => Ok(h.listing()?.iter().any(|f| f == rel)),
        }
    }

    /// Files directly inside `dir` (relative names, `dir/` prefix included).
    pub fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let dir = dir.trim_end_matches('/');
        match self {
            ModelRepo::Local { root } => {
                let path = root.join(dir);
                let rd = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
                let mut out: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .filter_map(|e| e.file_name().to_str().map(|n| format!("{dir}/{n}")))
                    .collect();
                out.sort();
                Ok(out)
            }
            ModelRepo::Hub(h) => {
                let prefix = format!("{dir}/");
                Ok(h.listing()?
                    .iter()
                    .filter(|f| f.strip_prefix(&prefix).is_some_and(|r| !r.contains('/')))
                    .cloned()
                    .collect())
            }
        }
    }

    /// Whether `dir` exists as a folder of the repo.
    pub fn has_dir(&self, dir: &str) -> Result<bool> {
        match self {
            ModelRepo::Local { root } => Ok(root.join(dir).is_dir()),
            ModelRepo::Hub(_) => Ok(!self.list_dir(dir)?.is_empty()),
        }
    }

    /// The local path of a file, downloading it first for a hub repo.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        match self {
            ModelRepo::Local { root } => {
                let p = root.join(rel);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(Error::MissingFile { what: "file".into(), path: p, hint: String::new() })
                }
            }
            ModelRepo::Hub(h) => {
                if !h.listing()?.iter().any(|f| f == rel) {
                    return Err(Error::MissingFile {
                        what: "file".into(),
                        path: self.describe(rel),
                        hint: String::new(),
                    });
                }
                h.api_repo()?.get(rel).map_err(|e| Error::Hub {
                    message: format!("downloading {rel} from `{}`: {e}", h.repo_id),
                })
            }
        }
    }
}
