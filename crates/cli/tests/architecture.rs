//! Dependency invariants of docs/ARCHITECTURE.md, checked from `cargo metadata`: components
//! depend on reel-core only (never on the pipeline crate or each other), schedulers on no model
//! crate, plugins on reel-schedulers only, and burn is pinned to one version.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

fn name_is_burn(d: &Value) -> bool {
    d["name"].as_str().is_some_and(|n| n == "burn" || n.starts_with("burn-"))
}

fn workspace() -> BTreeMap<String, Vec<(String, String)>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null() || name_is_burn(d)) // normal deps, and burn of any kind
                .map(|d| (d["name"].as_str().unwrap().to_string(), d["req"].as_str().unwrap().to_string()))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn dependency_directions_hold() {
    let ws = workspace();
    let reel_deps = |pkg: &str| -> Vec<String> {
        ws[pkg].iter().filter(|(n, _)| n.starts_with("reel-")).map(|(n, _)| n.clone()).collect()
    };
    for component in ["reel-clip", "reel-vae", "reel-unet3d"] {
        if ws.contains_key(component) {
            assert_eq!(reel_deps(component), vec!["reel-core".to_string()], "{component} may depend on reel-core only");
        }
    }
    if ws.contains_key("reel-schedulers") {
        assert!(reel_deps("reel-schedulers").is_empty(), "reel-schedulers depends on no model crate");
    }
    for (name, _) in ws.iter().filter(|(n, _)| n.starts_with("reel-scheduler-")) {
        assert_eq!(reel_deps(name), vec!["reel-schedulers".to_string()], "plugin {name}");
    }
    assert_eq!(reel_deps("reel-video"), vec!["reel-core".to_string()], "reel-video may depend on reel-core only");
    for dep in reel_deps("reel-pipeline") {
        assert_ne!(dep, "reel-cli", "the pipeline crate never depends on the CLI");
    }
    for (name, _) in ws.iter().filter(|(n, _)| *n != "reel-cli") {
        assert!(!reel_deps(name).contains(&"reel-cli".to_string()), "{name} depends on the CLI");
        if name != "reel-pipeline" {
            assert!(!reel_deps(name).contains(&"reel-pipeline".to_string()), "{name} depends on the pipeline crate");
        }
    }
    assert!(ws.contains_key("reel-core") && ws.contains_key("reel-cli") && ws.contains_key("reel-pipeline"));
}

#[test]
fn burn_is_pinned_once() {
    for (pkg, deps) in workspace() {
        for (name, req) in deps {
            if name == "burn" || name.starts_with("burn-") {
                assert_eq!(req, "=0.21.0", "{pkg} must take {name} from [workspace.dependencies]");
            }
        }
    }
}
