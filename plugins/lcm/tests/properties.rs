//! reel-schedulers' registry-wide property tests, run with this plugin linked in: the plugin is
//! covered automatically because the properties iterate the registry.

use reel_scheduler_lcm as _;

#[path = "../../../crates/schedulers/tests/properties.rs"]
mod properties;

#[test]
fn registry_includes_plugin() {
    reel_scheduler_lcm::register();
    assert!(reel_schedulers::registry::known().contains(&"LCMScheduler"));
}
