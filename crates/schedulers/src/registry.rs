//! The scheduler registry: every scheduler (built-in or plugin) submits a [`SchedulerEntry`]
//! with `inventory::submit!` (use [`crate::register_scheduler!`]); lookups are by diffusers'
//! `_class_name`. `describe()` is what `reel schedulers` prints.
//!
//! A plugin crate that nothing references is dropped by the linker together with its
//! `inventory::submit!`: the binary must reference it (e.g. call its `register()` no-op).

use serde_json::Value;

use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};

/// One registered scheduler class.
pub struct SchedulerEntry {
    /// diffusers' `_class_name` (must equal the config's typetag name).
    pub class_name: &'static str,
    /// One line on what it is.
    pub summary: &'static str,
    /// The config with diffusers' defaults.
    pub default_config: fn() -> Box<dyn SchedulerConfig>,
}

inventory::collect!(SchedulerEntry);

/// Register a scheduler config type (which must implement `Default` and `SchedulerConfig` with
/// `#[typetag::serde(name = $name)]`).
#[macro_export]
macro_rules! register_scheduler {
    ($ty:ty, $name:expr, $summary:expr) => {
        $crate::inventory::submit! {
            $crate::registry::SchedulerEntry {
                class_name: $name,
                summary: $summary,
                default_config: || ::std::boxed::Box::new(<$ty as ::std::default::Default>::default()),
            }
        }
    };
}

/// All registered entries, sorted by class name.
pub fn entries() -> Vec<&'static SchedulerEntry> {
    let mut v: Vec<&'static SchedulerEntry> = inventory::iter::<SchedulerEntry>.into_iter().collect();
    v.sort_by_key(|e| e.class_name);
    let before = v.len();
    v.dedup_by_key(|e| e.class_name);
    if v.len() != before {
        log::warn!("several schedulers are registered under the same _class_name; the first one is used");
    }
    v
}

/// The registered class names, sorted.
pub fn known() -> Vec<&'static str> {
    entries().into_iter().map(|e| e.class_name).collect()
}

/// The entry of `class_name`, or an error listing the known ones.
pub fn entry(class_name: &str) -> Result<&'static SchedulerEntry> {
    entries().into_iter().find(|e| e.class_name == class_name).ok_or_else(|| SchedulerError::UnknownClass {
        name: class_name.to_owned(),
        known: known().join(", "),
    })
}

/// The default config of a registered class.
pub fn default_config(class_name: &str) -> Result<Box<dyn SchedulerConfig>> {
    Ok((entry(class_name)?.default_config)())
}

/// Whether `key` is an option of any registered scheduler.
pub fn is_known_option(key: &str) -> bool {
    entries().into_iter().any(|e| match (e.default_config)().to_json() {
        Value::Object(m) => m.contains_key(key),
        _ => false,
    })
}

/// A registered scheduler with its options and their defaults.
#[derive(Debug, Clone)]
pub struct SchedulerInfo {
    pub class_name: &'static str,
    pub summary: &'static str,
    /// (option, default), sorted by option name.
    pub options: Vec<(String, Value)>,
}

/// Structured list of registered schedulers.
pub fn list() -> Vec<SchedulerInfo> {
    entries()
        .into_iter()
        .map(|e| {
            let options = match (e.default_config)().to_json() {
                Value::Object(m) => m.into_iter().filter(|(k, _)| !k.starts_with('_')).collect(),
                _ => vec![],
            };
            SchedulerInfo { class_name: e.class_name, summary: e.summary, options }
        })
        .collect()
}

/// Human-readable listing for `reel schedulers`.
pub fn describe() -> String {
    let mut s = String::new();
    for info in list() {
        s.push_str(&format!("{}\n    {}\n", info.class_name, info.summary));
        for (k, v) in &info.options {
            s.push_str(&format!("    {k} = {v}\n"));
        }
        s.push('\n');
    }
    s
}
