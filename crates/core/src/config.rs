//! `model_index.json` and component `config.json` files.
//!
//! Config structs in the component crates mirror diffusers' / transformers' `config.json`
//! field for field (misnomers included). Keys a struct does not know are logged as warnings,
//! never errors, so configs written by newer diffusers versions still load; diffusers'
//! bookkeeping keys (`_class_name`, `_diffusers_version`, `_name_or_path`, ...) are accepted
//! silently. `_class_name` is checked against the classes the component implements.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::source::ModelRepo;

/// Reads and parses a JSON file of the repo.
pub fn read_json(repo: &ModelRepo, rel: &str) -> Result<(std::path::PathBuf, Value)> {
    let path = repo.file(rel).map_err(|e| match e {
        Error::MissingFile { path, .. } => Error::MissingFile {
            what: "config file".into(),
            path,
            hint: "\n  is this a diffusers pipeline folder (with model_index.json and one subfolder per component)?".into(),
        },
        other => other,
    })?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), source: e })?;
    Ok((path, value))
}

/// Deserializes a config value into `T`, warning (not failing) on keys `T` does not know.
pub fn parse_config<T: DeserializeOwned>(path: &Path, value: Value) -> Result<T> {
    let mut unknown = Vec::new();
    let parsed: T = serde_ignored::deserialize(value, |p| {
        let key = p.to_string();
        if !key.starts_with('_') {
            unknown.push(key);
        }
    })
    .map_err(|e| Error::InvalidConfig { path: path.to_path_buf(), message: e.to_string() })?;
    for key in unknown {
        log::warn!("{}: ignoring unknown config key `{key}`", path.display());
    }
    Ok(parsed)
}

/// Checks `_class_name` of a diffusers config against the classes a component implements.
pub fn check_class(path: &Path, value: &Value, expected: &[&str]) -> Result<()> {
    let found = value.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if expected.contains(&found) {
        Ok(())
    } else {
        Err(Error::WrongClass {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: expected.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Reads `<subfolder>/config.json`, checks `_class_name` (diffusers) or `architectures`
/// (transformers), and parses it.
pub fn load_component_config<T: DeserializeOwned>(
    repo: &ModelRepo,
    subfolder: &str,
    classes: &[&str],
) -> Result<T> {
    let rel = join(subfolder, "config.json");
    let (path, value) = read_json(repo, &rel)?;
    if value.get("_class_name").is_some() || value.get("architectures").is_none() {
        check_class(&path, &value, classes)?;
    } else {
        let archs: Vec<String> = value["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if !archs.iter().any(|a| classes.contains(&a.as_str())) {
            return Err(Error::WrongClass {
                path,
                found: archs.join(", "),
                expected: classes.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    parse_config(&path, value)
}

/// `a/b` for a subfolder (which may be empty) and a file name.
pub fn join(subfolder: &str, file: &str) -> String {
    let sub = subfolder.trim_matches('/');
    if sub.is_empty() {
        file.to_string()
    } else {
        format!("{sub}/{file}")
    }
}

/// One entry of `model_index.json`: `"vae": ["diffusers", "AutoencoderKL"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    pub library: Option<String>,
    pub class_name: Option<String>,
}

/// A pipeline's `model_index.json`.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub class_name: String,
    pub diffusers_version: Option<String>,
    pub components: BTreeMap<String, ComponentRef>,
    /// Non-component keys (e.g. `requires_safety_checker`).
    pub extra: BTreeMap<String, Value>,
}

impl ModelIndex {
    pub fn load(repo: &ModelRepo) -> Result<Self> {
        let (path, value) = read_json(repo, "model_index.json")?;
        let obj = value.as_object().ok_or_else(|| Error::InvalidConfig {
            path: path.clone(),
            message: "expected a JSON object".into(),
        })?;
        let class_name = obj.get("_class_name").and_then(Value::as_str).unwrap_or("").to_string();
        let diffusers_version =
            obj.get("_diffusers_version").and_then(Value::as_str).map(String::from);
        let mut components = BTreeMap::new();
        let mut extra = BTreeMap::new();
        for (k, v) in obj {
            if k.starts_with('_') {
                continue;
            }
            match v.as_array().map(|a| a.as_slice()) {
                Some([lib, class]) => {
                    components.insert(
                        k.clone(),
                        ComponentRef {
                            library: lib.as_str().map(String::from),
                            class_name: class.as_str().map(String::from),
                        },
                    );
                }
                _ => {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(ModelIndex { class_name, diffusers_version, components, extra })
    }

    /// The declared class of a component, if the index names it (and it is not `null`).
    pub fn component_class(&self, name: &str) -> Option<&str> {
        self.components.get(name).and_then(|c| c.class_name.as_deref())
    }
}
