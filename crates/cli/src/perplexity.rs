//! `smelt perplexity MODEL FILE [--kl-base BASE]`: perplexity over a text
//! file with llama.cpp's conventions, and the KL divergence of a quantized
//! model from its base on the same predictions.
//!
//! llama.cpp's rules (tools/perplexity), followed so numbers compare: the
//! whole text is tokenized once (BOS first when the vocabulary adds one) and
//! cut into non-overlapping chunks of `ctx` tokens; each chunk runs from an
//! empty cache with its first token replaced by BOS; only the second half is
//! scored, the logits at positions `ctx/2 .. ctx-2` predicting the tokens
//! `ctx/2+1 .. ctx-1` (so every scored prediction sees at least `ctx/2`
//! tokens of context). PPL = exp(mean NLL), reported with its standard error.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use smelt_backend::Backend;
use smelt_model::{Batch, KV_BLOCK_SIZE, Model};

use crate::args::{DeviceArg, KvTypeArg, ModelArgs};
use crate::load::{Loaded, load, with_model};

/// Arguments of `smelt perplexity`.
#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// The model to evaluate (a GGUF file or a known model name).
    pub model: String,
    /// The text to score (UTF-8).
    pub file: PathBuf,
    /// Tokens per chunk (default: 512, or the model's context if smaller).
    #[arg(long, short = 'c')]
    pub ctx: Option<usize>,
    /// Rows per forward pass; at least 2 x ctx runs several chunks at once.
    #[arg(long, short = 'b', default_value_t = 512)]
    pub batch: usize,
    /// Score at most this many chunks (default: all the text holds).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Also run this base model (same tokenizer) and report the mean
    /// KL(base || model) of the next-token distributions and top-1 agreement.
    #[arg(long)]
    pub kl_base: Option<String>,
    /// CPU threads (0: one per physical core).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// KV cache element type.
    #[arg(long, value_enum, default_value_t = KvTypeArg::F16)]
    pub kv_type: KvTypeArg,
    /// Where to run: CUDA when a usable GPU is present (auto), or as told.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    // For the evaluated model: the `--kl-base` model always has f32
    // activations, so `--kl-base` on the same file measures what 8-bit
    // activations change.
    #[command(flatten)]
    pub q8: crate::args::Q8Flag,
}

/// llama.cpp's default chunk size for perplexity numbers.
const DEFAULT_CTX: usize = 512;

/// Which chunks of the token stream are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks scored.
    pub n_chunks: usize,
    /// First position whose logits are scored (`ctx / 2`).
    pub first: usize,
}

impl Plan {
    /// Checks `ctx` against the model's context and the text's length, as
    /// llama.cpp does (at least two chunks of text).
    pub fn new(
        n_tokens: usize,
        ctx: usize,
        model_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<Plan, String> {
        if ctx < 4 {
            return Err(format!("--ctx {ctx} is too small (at least 4 tokens)"));
        }
        if ctx > model_ctx {
            return Err(format!(
                "--ctx {ctx} is more than the model's context of {model_ctx} tokens"
            ));
        }
        if n_tokens < 2 * ctx {
            return Err(format!(
                "the text tokenizes to only {n_tokens} tokens; perplexity with --ctx {ctx} \
                 needs at least {} (2 x ctx)",
                2 * ctx
            ));
        }
        if max_chunks == Some(0) {
            return Err("--chunks must be at least 1".into());
        }
        let all = n_tokens / ctx;
        Ok(Plan {
            ctx,
            n_chunks: max_chunks.map_or(all, |m| m.min(all)),
            first: ctx / 2,
        })
    }

    /// Predictions scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.ctx - 1 - self.first
    }
}

/// Mean and standard error of a stream of values.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean {
    sum: f64,
    sum2: f64,
    n: usize,
}

impl Mean {
    pub fn push(&mut self, v: f64) {
        self.sum += v;
        self.sum2 += v * v;
        self.n += 1;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }

    /// The standard error of the mean (llama.cpp's `sqrt(var / (n - 1))`).
    pub fn stderr(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let m = self.mean();
        let var = (self.sum2 / self.n as f64 - m * m).max(0.0);
        (var / (self.n - 1) as f64).sqrt()
    }

    /// exp(mean) with its standard error (the perplexity of a NLL stream).
    pub fn exp_with_stderr(&self) -> (f64, f64) {
        let ppl = self.mean().exp();
        (ppl, ppl * self.stderr())
    }
}

/// `log softmax(logits)`, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&x| x as f64 - log_z).collect()
}

/// The index of the largest value (the first on ties, as argmax does).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// KL(base || quant) of two log-probability vectors.
pub fn kl_divergence(base: &[f64], quant: &[f64]) -> f64 {
    base.iter()
        .zip(quant)
        .map(|(&b, &q)| if b == q { 0.0 } else { b.exp() * (b - q) })
        .sum()
}

/// A model with its own KV cache, giving logits for batches.
trait LogitsRunner {
    fn vocab(&self) -> usize;
    /// Logits of `batch.logits_rows`, one row each.
    fn forward(&mut self, batch: &Batch<'_>) -> Result<smelt_backend::HostBuf, String>;
}

struct Runner<'m, B: Backend> {
    model: &'m Model<B>,
    kv: B::Kv,
}

impl<B: Backend> LogitsRunner for Runner<'_, B> {
    fn vocab(&self) -> usize {
        self.model.config.vocab_size
    }

    fn forward(&mut self, batch: &Batch<'_>) -> Result<smelt_backend::HostBuf, String> {
        self.model
            .forward(&mut self.kv, batch)
            .map_err(|e| e.to_string())
    }
}

fn runner<'m, B: Backend>(
    model: &'m Model<B>,
    n_blocks: usize,
    args: &PerplexityArgs,
) -> Result<Runner<'m, B>, String> {
    let kv = model
        .new_kv(n_blocks, model_args(args, 0).kv_type())
        .map_err(|e| e.to_string())?;
    Ok(Runner { model, kv })
}

fn model_args(args: &PerplexityArgs, ctx: usize) -> ModelArgs {
    ModelArgs {
        ctx,
        threads: args.threads,
        kv_type: args.kv_type,
        device: args.device,
        q8: crate::args::Q8Flag::default(),
        f32_activations: false,
    }
}

/// What one evaluation measured.
#[derive(Debug, Default)]
pub struct Report {
    /// NLL of each scored prediction of the evaluated model.
    pub nll: Mean,
    /// The base model's NLL, KL(base || model) and top-1 agreement (0/1),
    /// with `--kl-base`.
    pub base_nll: Mean,
    pub kld: Mean,
    pub same_top: Mean,
}

pub fn perplexity(args: &PerplexityArgs) -> Result<(), String> {
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{} is not UTF-8 text (byte {})",
            args.file.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let ctx_arg = args.ctx.unwrap_or(DEFAULT_CTX);
    let quant = load(
        &args.model,
        &ModelArgs {
            q8: args.q8,
            ..model_args(args, ctx_arg)
        },
    )?;
    let model_ctx = quant.model.context_length();
    let ctx = args.ctx.unwrap_or(DEFAULT_CTX.min(model_ctx));
    if ctx > model_ctx {
        return Err(format!(
            "{}: --ctx {ctx} is more than the model's context of {model_ctx} tokens",
            args.model
        ));
    }

    eprintln!("perplexity: tokenizing {}", args.file.display());
    let tokens = quant.tokenizer.encode(&text, true, false);
    let plan = Plan::new(tokens.len(), ctx, model_ctx, args.chunks)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let base = match &args.kl_base {
        Some(name) => Some(load_base(name, args, ctx, &quant, &text, &tokens)?),
        None => None,
    };
    let bos = match (quant.tokenizer.add_bos(), quant.tokenizer.bos_id()) {
        (true, Some(id)) => Some(id),
        _ => None,
    };
    let n_seq = (args.batch / plan.ctx).clamp(1, plan.n_chunks);
    eprintln!(
        "perplexity: {} tokens; scoring {} chunks of {} tokens ({} predictions each), \
         batch {}, {} chunk(s) per pass",
        tokens.len(),
        plan.n_chunks,
        plan.ctx,
        plan.scored_per_chunk(),
        args.batch,
        n_seq
    );

    let blocks = n_seq * plan.ctx.div_ceil(KV_BLOCK_SIZE);
    let start = Instant::now();
    let report = with_model!(&quant.model, |qm| {
        let mut q = runner(qm, blocks, args)?;
        match &base {
            None => evaluate(&plan, &tokens, bos, n_seq, args.batch, &mut q, None)?,
            Some(b) => with_model!(&b.model, |bm| {
                let mut b = runner(bm, blocks, args)?;
                evaluate(&plan, &tokens, bos, n_seq, args.batch, &mut q, Some(&mut b))?
            }),
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let evaluated = plan.n_chunks * plan.ctx * if base.is_some() { 2 } else { 1 };
    eprintln!(
        "perplexity: {evaluated} tokens evaluated in {secs:.1} s ({:.1} tok/s)",
        evaluated as f64 / secs.max(1e-9)
    );
    print_final(&report, base.is_some());
    Ok(())
}

/// Loads the `--kl-base` model and checks that it reads the text with the
/// same tokens as the evaluated model.
fn load_base(
    name: &str,
    args: &PerplexityArgs,
    ctx: usize,
    quant: &Loaded,
    text: &str,
    tokens: &[u32],
) -> Result<Loaded, String> {
    let base = load(
        name,
        &ModelArgs {
            f32_activations: true,
            ..model_args(args, ctx)
        },
    )?;
    let (qv, bv) = (
        with_model!(&quant.model, |m| m.config.vocab_size),
        with_model!(&base.model, |m| m.config.vocab_size),
    );
    let (qt, bt) = (quant.tokenizer.vocab_size(), base.tokenizer.vocab_size());
    if qv != bv || qt != bt {
        return Err(format!(
            "--kl-base {name} has a different vocabulary: {bv} logits and {bt} tokens, \
             against {qv} logits and {qt} tokens in {}; KL divergence needs the same tokenizer",
            args.model
        ));
    }
    if base.model.context_length() < ctx {
        return Err(format!(
            "--ctx {ctx} is more than the --kl-base model's context of {} tokens",
            base.model.context_length()
        ));
    }
    let base_tokens = base.tokenizer.encode(text, true, false);
    if base_tokens != tokens {
        let at = tokens
            .iter()
            .zip(&base_tokens)
            .position(|(a, b)| a != b)
            .unwrap_or(tokens.len().min(base_tokens.len()));
        return Err(format!(
            "--kl-base {name} tokenizes {} differently from {} (first difference at token {at}); \
             KL divergence needs the same tokenizer",
            args.file.display(),
            args.model
        ));
    }
    Ok(base)
}

/// One row of a pass: chunk `chunk`'s token at `pos`.
#[derive(Clone, Copy)]
struct Row {
    chunk: usize,
    pos: usize,
}

/// Runs every chunk of `plan` through `quant` (and `base`), `n_seq` chunks
/// at a time in passes of at most `batch` rows, and scores the second half
/// of each chunk. Prints the running values after each chunk.
fn evaluate(
    plan: &Plan,
    tokens: &[u32],
    bos: Option<u32>,
    n_seq: usize,
    batch: usize,
    quant: &mut dyn LogitsRunner,
    mut base: Option<&mut dyn LogitsRunner>,
) -> Result<Report, String> {
    let mut report = Report::default();
    let blocks_per_seq = plan.ctx.div_ceil(KV_BLOCK_SIZE);
    let tables: Vec<Vec<u32>> = (0..n_seq)
        .map(|s| {
            (s * blocks_per_seq..(s + 1) * blocks_per_seq)
                .map(|b| b as u32)
                .collect()
        })
        .collect();
    let kl = base.is_some();
    let mut out = std::io::stdout().lock();
    if kl {
        let _ = writeln!(out, "chunk    PPL(Q)  PPL(base)    mean KLD  same top");
    }
    for group in (0..plan.n_chunks).step_by(n_seq) {
        let seqs = n_seq.min(plan.n_chunks - group);
        let rows: Vec<Row> = (0..seqs)
            .flat_map(|s| {
                (0..plan.ctx).map(move |pos| Row {
                    chunk: group + s,
                    pos,
                })
            })
            .collect();
        for pass in rows.chunks(batch) {
            let ids: Vec<u32> = pass
                .iter()
                .map(|r| match (r.pos, bos) {
                    (0, Some(b)) => b,
                    _ => tokens[r.chunk * plan.ctx + r.pos],
                })
                .collect();
            let positions: Vec<u32> = pass.iter().map(|r| r.pos as u32).collect();
            let block_tables: Vec<&[u32]> = pass
                .iter()
                .map(|r| tables[r.chunk - group].as_slice())
                .collect();
            let logits_rows: Vec<usize> = (0..pass.len())
                .filter(|&i| (plan.first..plan.ctx - 1).contains(&pass[i].pos))
                .collect();
            let step = Batch {
                tokens: &ids,
                positions: &positions,
                block_tables: &block_tables,
                logits_rows: &logits_rows,
            };
            let q_logits = quant.forward(&step)?;
            let b_logits = match base.as_deref_mut() {
                Some(b) => Some(b.forward(&step)?),
                None => None,
            };
            for (j, &i) in logits_rows.iter().enumerate() {
                let row = pass[i];
                let target = tokens[row.chunk * plan.ctx + row.pos + 1] as usize;
                let q = log_softmax(q_logits.row(j));
                report.nll.push(-q[target]);
                if let Some(bl) = &b_logits {
                    let b = log_softmax(bl.row(j));
                    report.base_nll.push(-b[target]);
                    report.kld.push(kl_divergence(&b, &q));
                    report
                        .same_top
                        .push(if argmax(&b) == argmax(&q) { 1.0 } else { 0.0 });
                }
                if row.pos == plan.ctx - 2 {
                    print_running(&mut out, row.chunk, &report, kl);
                }
            }
            debug_assert_eq!(q_logits.cols, quant.vocab());
        }
    }
    if !kl {
        let _ = writeln!(out);
    }
    Ok(report)
}

/// llama.cpp's running line `[1]5.2662,[2]...`, or a table row with a base.
fn print_running(out: &mut impl Write, chunk: usize, r: &Report, kl: bool) {
    if kl {
        let _ = writeln!(
            out,
            "{:5} {:9.4} {:10.4} {:11.6} {:8.3}%",
            chunk + 1,
            r.nll.mean().exp(),
            r.base_nll.mean().exp(),
            r.kld.mean(),
            100.0 * r.same_top.mean()
        );
    } else {
        let _ = write!(out, "[{}]{:.4},", chunk + 1, r.nll.mean().exp());
    }
    let _ = out.flush();
}

fn print_final(r: &Report, kl: bool) {
    let (ppl, ppl_err) = r.nll.exp_with_stderr();
    if !kl {
        outln!("Final estimate: PPL = {ppl:.4} +/- {ppl_err:.5}");
        return;
    }
    let (base, base_err) = r.base_nll.exp_with_stderr();
    outln!("Mean PPL(Q)    : {ppl:.6} ± {ppl_err:.6}");
    outln!("Mean PPL(base) : {base:.6} ± {base_err:.6}");
    outln!(
        "Mean KLD       : {:.6} ± {:.6}",
        r.kld.mean(),
        r.kld.stderr()
    );
    let p = r.same_top.mean();
    let n = r.same_top.n;
    let p_err = if n > 1 {
        (p * (1.0 - p) / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    outln!("Same top p     : {:.3} ± {:.3} %", 100.0 * p, 100.0 * p_err);
    outln!("Predictions    : {n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_llama_cpp_chunking() {
        let p = Plan::new(2811, 128, 2048, None).unwrap();
        assert_eq!((p.n_chunks, p.first, p.scored_per_chunk()), (21, 64, 63));
        let p = Plan::new(2811, 256, 2048, Some(3)).unwrap();
        assert_eq!((p.n_chunks, p.first, p.scored_per_chunk()), (3, 128, 127));
        let p = Plan::new(2811, 255, 2048, Some(100)).unwrap();
        assert_eq!((p.n_chunks, p.first, p.scored_per_chunk()), (11, 127, 127));
    }

    #[test]
    fn plan_errors_name_the_lengths() {
        let e = Plan::new(300, 256, 2048, None).unwrap_err();
        assert!(
            e.contains("300") && e.contains("512") && e.contains("256"),
            "{e}"
        );
        let e = Plan::new(10_000, 4096, 2048, None).unwrap_err();
        assert!(e.contains("4096") && e.contains("2048"), "{e}");
        assert!(Plan::new(10_000, 64, 2048, Some(0)).is_err());
    }

    #[test]
    fn log_softmax_and_kl_match_direct_formulas() {
        let a = [1.5f32, -0.25, 3.0, 0.125, -2.0];
        let b = [1.0f32, 0.5, 2.5, -0.75, -1.0];
        let la = log_softmax(&a);
        let total: f64 = la.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let z: f64 = a.iter().map(|&x| (x as f64).exp()).sum();
        assert!((la[2] - (3.0 - z.ln())).abs() < 1e-12);
        let lb = log_softmax(&b);
        let direct: f64 = (0..5)
            .map(|i| {
                let (p, q) = (la[i].exp(), lb[i].exp());
                p * (p / q).ln()
            })
            .sum();
        let kl = kl_divergence(&la, &lb);
        assert!(kl > 0.0 && (kl - direct).abs() < 1e-12, "{kl} {direct}");
        assert_eq!(kl_divergence(&la, &la), 0.0);
        assert_eq!(argmax(&la), 2);
    }

    #[test]
    fn mean_stderr_is_the_standard_error() {
        let mut m = Mean::default();
        for v in [1.0, 2.0, 4.0, 7.0] {
            m.push(v);
        }
        // mean 3.5, population variance 5.25, stderr sqrt(5.25 / 3)
        assert!((m.mean() - 3.5).abs() < 1e-12);
        assert!((m.stderr() - (5.25f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
