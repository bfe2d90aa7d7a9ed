use reel_schedulers::SchedulerSpec;
#[test]
fn show() {
    let root = reel_core::testing::fixtures_dir();
    let base = std::fs::read_to_string(root.join("pipelines/pipe-b/scheduler/scheduler_config.json")).unwrap();
    let base = SchedulerSpec::from_json_str(&base).unwrap();
    for c in ["DDIMScheduler", "HeunDiscreteScheduler", "DDPMScheduler"] {
        let s = base.swap(c, &Default::default()).unwrap();
        println!("{c}: {}", s.config.to_json());
        let rec = std::fs::read_to_string(root.join(format!("reference/pipe-b/scheduler-{c}.json"))).unwrap();
        let rec = SchedulerSpec::from_json_str(&rec).unwrap();
        println!("rec {c}: {}", rec.config.to_json());
    }
}
