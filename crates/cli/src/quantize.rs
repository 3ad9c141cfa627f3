//! `smelt quantize IN.gguf OUT.gguf --type q4_k_m` (also `smelt convert`):
//! requantize a GGUF file, or convert a Hugging Face model directory
//! (`smelt convert ./hf-model out.gguf --type f16`), with a progress bar;
//! Ctrl-C leaves nothing behind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use smelt_convert::{
    ConvertError, HfDirSource, Mix, Options, Progress, convert_to_file, quantize_file,
};

/// Arguments of `smelt quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// The GGUF file (any tensor types Smelt reads) or Hugging Face model
    /// directory (config.json, safetensors, tokenizer.json) to read.
    pub input: PathBuf,
    /// The GGUF file to write (built as OUT.tmp-<pid>, then renamed).
    pub output: PathBuf,
    /// Output type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k,
    /// q6_k, or the mixes q4_k_m, q5_k_m (see docs/QUANTIZATION.md).
    #[arg(long = "type", value_parser = parse_mix)]
    pub mix: Mix,
    /// Convert a directory that has no tokenizer.json anyway: the GGUF then
    /// has no tokenizer and cannot run on its own (llama.cpp refuses such a
    /// directory; so does Smelt without this flag).
    #[arg(long)]
    pub no_tokenizer: bool,
}

fn parse_mix(name: &str) -> Result<Mix, String> {
    Mix::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Mix::ALL.iter().map(|m| m.name()).collect();
        format!(
            "unknown type '{name}' (expected one of: {})",
            names.join(", ")
        )
    })
}

/// Set by the Ctrl-C / SIGTERM watcher; the conversion stops at its next piece.
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Watches for Ctrl-C (and SIGTERM) on a small thread of its own.
fn watch_for_interrupt() {
    let spawned = std::thread::Builder::new()
        .name("smelt-quantize-signal".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(smelt_server::shutdown_signal());
            CANCEL.store(true, Ordering::Relaxed);
            eprintln!("\nsmelt: interrupted, removing the partial output");
        });
    // Without the watcher Ctrl-C simply kills the process: the partial file
    // is then only ever OUT.tmp-<pid>, never OUT.
    drop(spawned);
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

pub fn quantize(args: &QuantizeArgs) -> Result<(), String> {
    watch_for_interrupt();
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        )
        .map_err(|e| e.to_string())?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let start = Instant::now();
    let mut on_progress = |p: Progress<'_>| {
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
        if p.writing {
            bar.set_message(format!("writing {}", args.output.display()));
        } else {
            bar.set_message(format!("[{}/{}] {}", p.index + 1, p.n_tensors, p.tensor));
        }
    };
    let mut options = Options::new(args.mix);
    options.cancel = Some(&CANCEL);
    options.progress = Some(&mut on_progress);
    let result = if args.input.is_dir() {
        let source = HfDirSource::open(&args.input);
        if let Ok(source) = &source
            && !source.has_tokenizer()
            && !args.no_tokenizer
        {
            bar.finish_and_clear();
            return Err(format!(
                "{} has no tokenizer.json: the GGUF would have no tokenizer and could not run \
                 on its own; add the model's tokenizer.json, or pass --no-tokenizer to convert \
                 the weights alone",
                args.input.display()
            ));
        }
        source.and_then(|source| {
            for note in source.notes() {
                bar.suspend(|| eprintln!("smelt: note: {note}"));
            }
            convert_to_file(&source, &args.output, &mut options)
        })
    } else {
        quantize_file(&args.input, &args.output, &mut options)
    };
    bar.finish_and_clear();
    match result {
        Ok(summary) => {
            eprintln!(
                "smelt: wrote {} ({}, {} tensors, {} of tensor data) in {:.1} s",
                args.output.display(),
                args.mix,
                summary.tensors.len(),
                human(summary.data_bytes),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(ConvertError::Cancelled) => {
            eprintln!(
                "smelt: cancelled; {} was not written",
                args.output.display()
            );
            std::process::exit(130);
        }
        Err(e) => Err(e.to_string()),
    }
}
