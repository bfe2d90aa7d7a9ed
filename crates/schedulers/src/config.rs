//! The serialized, immutable side of a scheduler: the [`SchedulerConfig`] trait (typetag-tagged by
//! diffusers' `_class_name`), loading a checkpoint's `scheduler/scheduler_config.json`, and
//! swapping schedulers the way diffusers' `Other.from_config(old.config)` does
//! (`diffusers/configuration_utils.py`: `register_to_config`, `extract_init_dict`,
//! `_use_default_values`).
//!
//! What carries over in a swap (checked against diffusers 0.42.1): diffusers' `scheduler.config`
//! holds every init argument of the old class plus `_use_default_values`, the list of arguments
//! that were *not* given (defaults), plus "hidden" keys of the file the old class did not use.
//! `from_config` drops the `_use_default_values` keys, so only values that were explicitly set
//! (in the file, or as overrides, at any point of a swap chain) carry over; every other option
//! takes the new class's own default. So DDIM (file without `timestep_spacing`) →
//! DPMSolverMultistep keeps `steps_offset`, `beta_schedule`, … from the file but gets DPM's own
//! `timestep_spacing = "linspace"`, not DDIM's `"leading"`. [`SchedulerSpec`] keeps that explicit
//! key set next to the typed config so swaps chain the same way.

use std::fmt::Debug;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Result, SchedulerError};
use crate::registry;
use crate::run::SchedulerRun;

/// The immutable config of one scheduler class; fields mirror diffusers' `register_to_config`
/// arguments (same names, same defaults). Object-safe and non-generic so typetag can
/// (de)serialize `Box<dyn SchedulerConfig>` by `_class_name`.
#[typetag::serde(tag = "_class_name")]
pub trait SchedulerConfig: Send + Sync + Debug {
    /// Reject option values and combinations that diffusers rejects.
    fn validate(&self) -> Result<()>;
    /// diffusers' class attribute `order` (how many model evaluations one "step" of the solver
    /// takes: 2 for Heun/KDPM2, which override this, 1 otherwise).
    fn order(&self) -> usize {
        1
    }
    /// `num_train_timesteps`.
    fn num_train_timesteps(&self) -> usize;
    /// A fresh per-generation run (diffusers' `set_timesteps(num_inference_steps)`), with its own
    /// step state.
    fn start(&self, num_inference_steps: usize) -> Result<Box<dyn SchedulerRun>>;
    /// Clone behind the trait object.
    fn clone_box(&self) -> Box<dyn SchedulerConfig>;
}

impl Clone for Box<dyn SchedulerConfig> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl<'a> dyn SchedulerConfig + 'a {
    /// diffusers' `_class_name` of this config.
    pub fn class_name(&self) -> &'static str {
        self.typetag_name()
    }

    /// The config as a JSON object with every option (and `_class_name`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A fresh generation over backend `B` (schedule + empty tensor state), after a host-only
    /// dry run of every step: a config whose steps would have non-finite coefficients (where
    /// diffusers silently produces NaN/inf, e.g. epsilon prediction with zero terminal SNR in
    /// DDIM, or a Heun-type DPM-Solver update over the zero-length final step of Karras sigmas
    /// with `final_sigmas_type = "sigma_min"`) is refused here with a clear error.
    pub fn generation<B: burn::tensor::backend::Backend>(
        &self,
        num_inference_steps: usize,
    ) -> Result<crate::run::Generation<B>> {
        let run = self.start(num_inference_steps)?;
        dry_run(run.as_ref())?;
        Ok(crate::run::Generation::new(run))
    }
}

/// Plan every step of a copy of `run` with default step options and check that all
/// coefficients are finite.
pub fn dry_run(run: &dyn SchedulerRun) -> Result<()> {
    let mut r = run.clone_run();
    let opts = crate::program::StepOptions::default();
    let ts = r.timesteps().to_vec();
    for (i, &t) in ts.iter().enumerate() {
        if let Some(d) = r.scale_model_input(t)? {
            if !(d.is_finite() && d != 0.0) {
                return Err(SchedulerError::State(format!("scale_model_input factor {d} at step {i} (t = {t})")));
            }
        }
        let p = r.plan_step(t, &opts)?;
        if !p.is_finite() {
            return Err(SchedulerError::State(format!(
                "step {i} (t = {t}) has non-finite coefficients with this config and step count \
                 (diffusers would produce NaN/inf here)"
            )));
        }
    }
    Ok(())
}

/// A loaded scheduler config together with the keys that were explicitly set (diffusers'
/// complement of `_use_default_values`, plus hidden keys of other schedulers), which is what a
/// later [`SchedulerSpec::swap`] carries over.
#[derive(Debug, Clone)]
pub struct SchedulerSpec {
    /// The typed, immutable config (shareable across threads and generations).
    pub config: Arc<dyn SchedulerConfig>,
    /// Keys set explicitly in the file or by overrides (without `_`-prefixed keys).
    pub explicit: Map<String, Value>,
}

fn class_of(obj: &Map<String, Value>) -> Result<String> {
    match obj.get("_class_name") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(SchedulerError::Config(format!("`_class_name` must be a string, got {other}"))),
        None => Err(SchedulerError::Config("missing `_class_name`".into())),
    }
}

/// The explicit keys of a diffusers-style config object: drops `_use_default_values` entries and
/// private (`_`-prefixed) keys.
pub fn explicit_keys(obj: &Map<String, Value>) -> Map<String, Value> {
    let used_defaults: Vec<String> = match obj.get("_use_default_values") {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => vec![],
    };
    obj.iter()
        .filter(|(k, _)| !k.starts_with('_') && !used_defaults.iter().any(|u| u == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Build `class` from explicit keys: known options are taken, unknown ones ignored with a
/// `log::warn!` (a checkpoint's config must always load), everything else defaults.
fn build(class: &str, explicit: &Map<String, Value>, warn_unknown: bool) -> Result<Box<dyn SchedulerConfig>> {
    let entry = registry::entry(class)?;
    let defaults = match (entry.default_config)().to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut obj = Map::new();
    for (k, v) in explicit {
        match defaults.get(k) {
            Some(default) => {
                if v.is_null() && !default.is_null() {
                    log::warn!("{class}: option `{k}` is null in the config; using the default {default}");
                    continue;
                }
                obj.insert(k.clone(), v.clone());
            }
            None => {
                if warn_unknown && !registry::is_known_option(k) {
                    log::warn!("{class}: config key `{k}` is not a scheduler option; ignored");
                } else {
                    log::debug!("{class}: config key `{k}` belongs to another scheduler; ignored");
                }
            }
        }
    }
    obj.insert("_class_name".into(), Value::String(class.to_owned()));
    let cfg: Box<dyn SchedulerConfig> = serde_json::from_value(Value::Object(obj))
        .map_err(|e| SchedulerError::Config(format!("{class}: {e}")))?;
    cfg.validate()?;
    Ok(cfg)
}

impl SchedulerSpec {
    /// Load a diffusers `scheduler_config.json` object (or a diffusers `scheduler.config` dump
    /// with `_use_default_values`).
    pub fn from_json_value(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| SchedulerError::Config("config must be a JSON object".into()))?;
        let class = class_of(obj)?;
        let explicit = explicit_keys(obj);
        let config = build(&class, &explicit, true)?;
        Ok(Self { config: Arc::from(config), explicit })
    }

    /// Load from JSON text (the contents of `scheduler_config.json`). Python's JSON extensions
    /// that diffusers writes (`-Infinity` for DPM-Solver's `lambda_min_clipped`, `Infinity`,
    /// `NaN`) are read as the strings `"-inf"`, `"inf"`, `"nan"`.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let s = python_json_constants(s);
        let v: Value = serde_json::from_str(&s).map_err(|e| SchedulerError::Config(e.to_string()))?;
        Self::from_json_value(&v)
    }

    /// A spec for a typed config whose every option counts as explicit.
    pub fn from_config(config: Box<dyn SchedulerConfig>) -> Self {
        let explicit = match config.to_json() {
            Value::Object(m) => m.into_iter().filter(|(k, _)| !k.starts_with('_')).collect(),
            _ => Map::new(),
        };
        Self { config: Arc::from(config), explicit }
    }

    /// The default config of a registered class, with nothing explicit.
    pub fn default_for(class: &str) -> Result<Self> {
        let config = build(class, &Map::new(), true)?;
        Ok(Self { config: Arc::from(config), explicit: Map::new() })
    }

    /// diffusers' `NewClass.from_config(old.config, **overrides)`: explicit keys carry over,
    /// everything else takes `class`'s own defaults; `overrides` become explicit.
    pub fn swap(&self, class: &str, overrides: &Map<String, Value>) -> Result<Self> {
        let mut explicit = self.explicit.clone();
        for (k, v) in overrides {
            explicit.insert(k.clone(), v.clone());
        }
        let config = build(class, &explicit, false)?;
        Ok(Self { config: Arc::from(config), explicit })
    }

    /// The config as diffusers' `scheduler.config` would show it: every option of the class,
    /// hidden explicit keys of other classes, `_class_name` and `_use_default_values`.
    pub fn to_diffusers_json(&self) -> Value {
        let mut obj = match self.config.to_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut defaults: Vec<String> =
            obj.keys().filter(|k| !k.starts_with('_') && !self.explicit.contains_key(*k)).cloned().collect();
        defaults.sort();
        for (k, v) in &self.explicit {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
        obj.insert("_use_default_values".into(), Value::Array(defaults.into_iter().map(Value::String).collect()));
        Value::Object(obj)
    }

    /// diffusers' `_class_name`.
    pub fn class_name(&self) -> &'static str {
        self.config.class_name()
    }
}

/// Rewrites the bare tokens `-Infinity`, `Infinity` and `NaN` (outside strings) that Python's
/// `json.dumps` writes into the strings `"-inf"`, `"inf"`, `"nan"`.
pub fn python_json_constants(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains("Infinity") && !s.contains("NaN") {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        } else {
            let mut matched = false;
            for (token, text) in [("-Infinity", "\"-inf\""), ("Infinity", "\"inf\""), ("NaN", "\"nan\"")] {
                if rest.starts_with(token) {
                    out.push_str(text);
                    rest = &rest[token.len()..];
                    matched = true;
                    break;
                }
            }
            if matched {
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod python_json_tests {
    use super::*;

    #[test]
    fn python_constants_become_strings_outside_strings_only() {
        let s = r#"{"a": -Infinity, "b": Infinity, "c": NaN, "d": "x -Infinity \" NaN", "e": 1}"#;
        let v: Value = serde_json::from_str(&python_json_constants(s)).unwrap();
        assert_eq!(v["a"], "-inf");
        assert_eq!(v["b"], "inf");
        assert_eq!(v["c"], "nan");
        assert_eq!(v["d"], "x -Infinity \" NaN");
        assert_eq!(v["e"], 1);
    }

    #[test]
    fn dpm_config_with_minus_infinity_loads() {
        let s = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "algorithm_type": "sde-dpmsolver++"}"#;
        let spec = SchedulerSpec::from_json_str(s).unwrap();
        assert_eq!(spec.class_name(), "DPMSolverMultistepScheduler");
    }
}
