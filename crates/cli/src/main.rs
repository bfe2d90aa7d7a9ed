//! `reel`: the command-line entry point. Component tools (`tokenize`, `encode-prompt`,
//! `vae decode`, `vae encode`, `unet`) run one component of a diffusers checkpoint on `.npy` inputs so
//! anyone can compare it with Python; `generate` runs a declared pipeline (or a bare diffusers
//! checkpoint) end to end, `pipelines` lists the declared ones.

mod backend;
mod bench;
mod components;
mod generate;
mod vendor;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "reel", version, about = "Text-to-video diffusion in Rust: diffusers checkpoints, CPU or NVIDIA GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a video: text-to-video, video-to-video (--video) or a multi-stage pipeline.
    Generate(Box<generate::GenerateArgs>),
    /// Time the full-size architectures (random weights, no download) part by part.
    Bench(Box<bench::BenchArgs>),
    /// List the pipelines of the pipelines file with their stages and components.
    Pipelines(generate::PipelinesArgs),
    /// Print the CLIP token ids of each prompt: one JSON array of model_max_length ids per line.
    Tokenize(components::TokenizeArgs),
    /// Write the text encoder's last_hidden_state (n, 77, hidden) for the prompts to a .npy file.
    EncodePrompt(components::EncodePromptArgs),
    /// Run the AutoencoderKL of a checkpoint on .npy arrays.
    Vae {
        #[command(subcommand)]
        command: components::VaeCommand,
    },
    /// Run the UNet3DConditionModel of a checkpoint: sample (b, c, f, h, w), a timestep and text
    /// states (b, 77, cross_attention_dim) to the predicted `.sample` (b, c, f, h, w).
    Unet(components::UnetArgs),
    /// List the registered schedulers (built-in and plugins) with their options and defaults.
    Schedulers,
}

/// Makes glibc keep freed memory for reuse instead of returning it to the kernel: every
/// allocation from the heap (`M_MMAP_MAX = 0`; glibc still maps threads' arenas and falls back to
/// `mmap` when the heap cannot grow) and no trimming below 2 GiB of free top. By default glibc maps
/// each block over 32 MiB afresh and unmaps it when freed, so every large tensor of every step
/// (an activation of the VAE at 256² is 67–134 MiB) came back as new pages that the kernel zeroes
/// on first touch: about a fifth of a CPU VAE decode (docs/performance.md, eleventh session).
/// Skipped when the user tunes malloc through the environment (`MALLOC_*`, `GLIBC_TUNABLES`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    let tuned = std::env::vars_os().any(|(k, _)| {
        let k = k.to_string_lossy();
        k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
    });
    if !tuned {
        // SAFETY: mallopt only changes glibc's allocation parameters; called before any thread
        // of ours exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    // Plugins register through `inventory`; referencing them keeps the linker from dropping them.
    reel_scheduler_lcm::register();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate::generate(*a),
        Command::Pipelines(a) => generate::list(a),
        Command::Bench(a) => bench::bench(*a),
        Command::Tokenize(a) => components::tokenize(a),
        Command::EncodePrompt(a) => components::encode_prompt(a),
        Command::Vae { command } => components::vae(command),
        Command::Unet(a) => components::unet(a),
        Command::Schedulers => {
            print!("{}", reel_schedulers::registry::describe());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
