//! `reel bench`: times the full-size architectures (random weights from `benches/configs/*`
//! config files, no download) part by part on the chosen backend and prints a table, or the
//! JSON report `benches/compare.py` puts beside `benches/diffusers_baseline.py`'s.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use clap::Args;
use reel_pipeline::bench::{check_op_kinds, check_parts, random_parts, run_bench, run_ops, BenchEvent, BenchSpec, BenchTimes, OpTime};
use serde_json::json;

use crate::backend::{dispatch, DeviceArgs, OnBackend};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A folder with text_encoder/, unet/, vae/ and scheduler/ configs (benches/configs/ms-1.7b,
    /// benches/configs/small) or the name of one under benches/configs.
    #[arg(long, default_value = "small")]
    pub config: String,
    #[arg(long, default_value_t = 16)]
    pub frames: usize,
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    /// num_inference_steps of the whole-pipeline run.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Scheduler class swapped in from the config's (like `Class.from_config`).
    #[arg(long, default_value = "DPMSolverMultistepScheduler")]
    pub scheduler: String,
    #[arg(long, default_value_t = 9.0)]
    pub guidance_scale: f64,
    /// Timed runs per part (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Untimed runs first (autotuning, caches).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long)]
    pub vae_slicing: bool,
    /// diffusers' enable_model_cpu_offload(): the random weights are kept in host memory and
    /// each model is uploaded to the device for its part (before the timed runs of text_encoder,
    /// unet_step, vae_decode; inside the timed run for each phase of the pipeline) and released
    /// after it, so the device holds one model at a time.
    #[arg(long)]
    pub cpu_offload: bool,
    /// Time only these parts (comma-separated: text_encoder, unet_step, scheduler_step,
    /// vae_decode, pipeline); default all. On a GPU each part's first use compiles its kernels.
    #[arg(long, value_delimiter = ',', value_name = "PART,...")]
    pub parts: Vec<String>,
    /// Also list the heavy operations (linear, convolutions, norms, attention, GEGLU) of one UNet
    /// step and one VAE decode with their shapes and counts, and time each alone: where a step's
    /// time goes. `benches/diffusers_baseline.py --ops-from <this report>` times the same list in
    /// PyTorch.
    #[arg(long)]
    pub ops: bool,
    /// With --ops: also check each operation against the same one in f32 on the CPU (burn-flex),
    /// on the same inputs (the first 64 rows of row-wise operations, the first 2 images or batch
    /// entries of the others), and report the largest
    /// difference relative to the reference's magnitude: a wrong kernel shows up here by name.
    #[arg(long, requires = "ops")]
    pub check_ops: bool,
    /// With --ops: time only operations of these kinds (comma-separated: linear, conv2d,
    /// temporal_conv, group_norm, layer_norm, attention, upsample, geglu).
    #[arg(long, requires = "ops", value_delimiter = ',', value_name = "KIND,...")]
    pub ops_only: Vec<String>,
    /// Write the JSON report here (and print it with --json).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    reel_schedulers::registry::entry(&args.scheduler).map_err(|e| anyhow!("--scheduler: {e}"))?;
    check_parts(&args.parts).map_err(|e| anyhow!("--parts: {e}"))?;
    check_op_kinds(&args.ops_only).map_err(|e| anyhow!("--ops-only: {e}"))?;
    let device = args.device.clone();
    dispatch(&device, args)
}

fn config_dir(name: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.join("unet/config.json").is_file() {
        return Ok(direct);
    }
    for root in [PathBuf::from("benches/configs"), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/configs")] {
        let p = root.join(name);
        if p.join("unet/config.json").is_file() {
            return Ok(p);
        }
    }
    Err(anyhow!("--config {name}: not a folder with unet/config.json, nor a name under benches/configs (ms-1.7b, small)"))
}

impl OnBackend for BenchArgs {
    fn run<B: Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()> {
        let dir = config_dir(&self.config)?;
        let t0 = std::time::Instant::now();
        let parts = random_parts::<B>(&dir, &device, dtype)?;
        // The random weights are drawn in f32 and cast: give the pool's freed f32 buffers back,
        // so the memory measured is the models' and the run's, as when loading a checkpoint
        // (converted on the host, uploaded in the target dtype). Under offload the weights
        // move to the host first.
        let (mut resident, mut host) = if self.cpu_offload { (None, Some(parts.into_host())) } else { (Some(parts), None) };
        reel_pipeline::memory::release_device_memory::<B>(&device)?;
        let build_seconds = t0.elapsed().as_secs_f64();
        let spec = BenchSpec {
            frames: self.frames,
            height: self.height,
            width: self.width,
            steps: self.steps,
            scheduler: Some(self.scheduler.clone()),
            guidance_scale: self.guidance_scale,
            runs: self.runs,
            warmup: self.warmup,
            vae_slicing: self.vae_slicing,
            parts: self.parts.clone(),
            ops_only: self.ops_only.clone(),
        };
        let quiet = self.json;
        let spec_runs = spec.runs;
        let mut pool_peak = 0u64;
        let source: &mut dyn reel_pipeline::bench::PartSource<B> = match (&mut resident, &mut host) {
            (Some(parts), _) => parts,
            (None, Some(host)) => host,
            (None, None) => unreachable!("the parts are resident or on the host"),
        };
        let t = run_bench(source, &spec, &device, &mut |e| match e {
            BenchEvent::Start(p) if !quiet => eprintln!("timing {p} ..."),
            // Always on stderr: a run cut short (a time limit, a failure later on) keeps these.
            BenchEvent::FirstCall(p, ms) => eprintln!("  {p}: first call {:.1} s", ms / 1e3),
            BenchEvent::Done(p, ms) => {
                let pool = crate::backend::device_memory(&self.device).map(|m| m.reserved);
                pool_peak = pool_peak.max(pool.unwrap_or(0));
                let pool = pool.map(|b| format!(", GPU pool {:.0} MiB", b as f64 / 1048576.0)).unwrap_or_default();
                eprintln!("  {p}: {ms:.3} ms (median of {spec_runs}){pool}");
            }
            BenchEvent::Start(_) => {}
        })?;
        let write = |report: &serde_json::Value| -> Result<()> {
            if let Some(p) = &self.out {
                reel_core::files::write_atomic(p, serde_json::to_string_pretty(report)?.as_bytes())?;
            }
            Ok(())
        };
        let mut ops: Vec<OpTime> = Vec::new();
        let mut dispatch: Option<f64> = None;
        let mut report = self.report::<B>(&device, &dir, build_seconds, &t, (&ops, dispatch), pool_peak);
        // Written now, and again after the operations: a run cut short keeps the parts.
        write(&report)?;
        if self.ops {
            if !quiet {
                eprintln!("timing the operations of one UNet step and one VAE decode ...");
            }
            let cpu = burn::backend::flex::FlexDevice;
            let reference = self.check_ops.then_some(&cpu);
            let parts = match (resident, &host) {
                (Some(parts), _) => parts,
                (None, Some(host)) => host.to_device(&device)?,
                (None, None) => unreachable!("the parts are resident or on the host"),
            };
            ops = run_ops::<B, burn::backend::Flex>(&parts, &spec, &device, reference)?;
            let dtype = parts.unet.dtype();
            dispatch = Some(reel_pipeline::bench::dispatch_us::<B>(dtype, &device, self.runs)?);
            report = self.report::<B>(&device, &dir, build_seconds, &t, (&ops, dispatch), pool_peak);
            write(&report)?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let device_name = self.device.device_name();
            let dtype_name = self.device.dtype_name();
            println!("reel bench: {} on {device_name} {dtype_name}, {} frames {}×{}, {} {} steps, median of {}", report["config"].as_str().unwrap_or("?"), self.frames, self.width, self.height, self.scheduler, self.steps, self.runs);
            for (k, part, v) in [
                ("text encoder (batch 2)", "text_encoder", t.text_encoder),
                ("UNet step (CFG, batch 2)", "unet_step", t.unet_step),
                ("scheduler step", "scheduler_step", t.scheduler_step),
                ("VAE decode", "vae_decode", t.vae_decode),
                ("whole pipeline", "pipeline", t.pipeline),
            ] {
                if let Some(v) = v {
                    let host = t.host_ms.iter().find(|(p, _)| *p == part).map(|(_, h)| format!("  (host {h:.3} ms)")).unwrap_or_default();
                    println!("  {k:<26} {v:>12.3} ms{host}");
                    if let Some((_, threads)) = t.thread_cpu_ms.iter().find(|(p, _)| *p == part).filter(|(_, t)| !t.is_empty()) {
                        let busy: Vec<String> = threads.iter().map(|(n, ms)| format!("{n} {ms:.1}")).collect();
                        println!("  {:<26} threads' CPU ms a run: {}", "", busy.join(", "));
                    }
                }
            }
            if !t.first_use_ms.is_empty() {
                let first: Vec<String> = t.first_use_ms.iter().map(|(k, v)| format!("{k} {:.1} s", v / 1e3)).collect();
                println!("  first (warm-up) calls: {}", first.join(", "));
            }
            if let Some(n) = &t.nonfinite_output {
                println!("  note: the pipeline's frames were not finite (random weights): {n}");
            }
            print_ops(&ops, &[("unet", t.unet_step.unwrap_or(f64::NAN)), ("vae", t.vae_decode.unwrap_or(f64::NAN))]);
            if let Some(us) = dispatch {
                println!("\none linear layer in a chain of {} queued back to back: {us:.1} µs (the per-operation floor)", reel_pipeline::bench::DISPATCH_CHAIN);
            }
        }
        #[cfg(feature = "cuda-base")]
        if crate::vendor::cuda::job_times::enabled() {
            eprintln!("vendor operations (REEL_JOB_TIMES): kind, count, µs a call on the host (of it inside cubecl's device thread)");
            for (kind, n, call, inside) in crate::vendor::cuda::job_times::take() {
                eprintln!("  {kind:<24} {n:>8} {call:>10.1} ({inside:.1})");
            }
        }
        Ok(())
    }
}

impl BenchArgs {
    /// The JSON report (`benches/compare.py` reads it beside `diffusers_baseline.py`'s).
    fn report<B: Backend>(
        &self,
        device: &B::Device,
        dir: &std::path::Path,
        build_seconds: f64,
        t: &BenchTimes,
        (ops, dispatch): (&[OpTime], Option<f64>),
        pool_peak: u64,
    ) -> serde_json::Value {
        let device_memory = crate::backend::device_memory(&self.device);
        let host_peak = reel_pipeline::memory::peak_rss_bytes();
        let dtype_name = self.device.dtype_name();
        let device_name = self.device.device_name();
        json!({
            "tool": "reel",
            "versions": {"reel": env!("CARGO_PKG_VERSION"), "burn": "0.21.0", "backend": B::name(device), "autotune": (self.device.device == crate::backend::DeviceKind::Cuda).then_some(cfg!(feature = "cuda")), "kernels": crate::backend::kernels_name::<B>()},
            "device": device_name,
            "dtype": dtype_name,
            "config": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "frames": self.frames,
            "height": self.height,
            "width": self.width,
            "steps": self.steps,
            "scheduler": self.scheduler,
            "guidance_scale": self.guidance_scale,
            "runs": self.runs,
            "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "options": {"vae_slicing": self.vae_slicing, "compile": false, "offload": self.cpu_offload},
            "build_seconds": build_seconds,
            "times_ms": {
                "text_encoder": t.text_encoder,
                "unet_step": t.unet_step,
                "scheduler_step": t.scheduler_step,
                "vae_decode": t.vae_decode,
                "pipeline": t.pipeline,
            },
            "first_use_ms": t.first_use_ms.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "host_ms": t.host_ms.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "thread_cpu_ms": t.thread_cpu_ms.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "nonfinite_output": t.nonfinite_output,
            "ops": ops,
            "dispatch_us": dispatch,
            "peak_memory_bytes": match device_memory {
                Some(m) => Some(m.reserved.max(pool_peak)),
                None => host_peak,
            },
            "peak_memory_kind": if device_memory.is_some() { "cubecl_pool_reserved" } else { "host_rss" },
            "host_peak_rss_bytes": host_peak,
        })
    }
}

/// The operations of each model call, largest total first, with the share of the measured call
/// they explain; what is left is the unlisted element-wise glue and layout moves.
fn print_ops(ops: &[reel_pipeline::bench::OpTime], calls: &[(&str, f64)]) {
    let total = |o: &reel_pipeline::bench::OpTime| o.ms.unwrap_or(0.0) * o.count as f64;
    for &(model, call_ms) in calls {
        let mut rows: Vec<_> = ops.iter().filter(|o| o.model == model).collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| total(b).total_cmp(&total(a)));
        println!("\n{model}: {} distinct operations (one call measured {call_ms:.3} ms)", rows.len());
        let checked = rows.iter().any(|o| o.max_rel_err.is_some());
        let err = |o: &reel_pipeline::bench::OpTime| match (checked, o.max_rel_err) {
            (false, _) => String::new(),
            (true, Some(e)) => format!(" {e:>9.2e}"),
            (true, None) => format!(" {:>9}", "-"),
        };
        let err_head = if checked { format!(" {:>9}", "rel err") } else { String::new() };
        println!("  {:>5} {:>10} {:>10} {:>6} {:>9}{err_head}  operation", "count", "ms each", "ms total", "share", "TFLOP/s");
        let mut listed = 0.0;
        for o in rows {
            let op = serde_json::to_string(&o.op).unwrap_or_default();
            let Some(ms) = o.ms else {
                println!("  {:>5} {:>10} {:>10} {:>6} {:>9}{}  {op}: {}", o.count, "-", "-", "-", "-", err(o), o.error.as_deref().unwrap_or("?"));
                continue;
            };
            let total = ms * o.count as f64;
            listed += total;
            let rate = o.op.flops() / (ms * 1e-3) / 1e12;
            let note = o.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            println!("  {:>5} {:>10.4} {:>10.3} {:>5.1}% {:>9.3}{}  {op}{note}", o.count, ms, total, 100.0 * total / call_ms, rate, err(o));
        }
        println!("  listed operations alone: {listed:.3} ms; unlisted (element-wise glue, layout moves, launches): {:.3} ms", call_ms - listed);
    }
}
