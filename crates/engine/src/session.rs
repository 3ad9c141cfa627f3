//! One sequence's generation: its KV blocks, the tokens they hold, and the
//! loop that feeds the prompt, samples, streams text and stops.

use std::time::{Duration, Instant};

use smelt_backend::Backend;
use smelt_model::{Batch, KvType, Model};
use smelt_text::stop::StopMatcher;
use smelt_text::stream::Utf8Stream;
use smelt_text::tokenizer::Tokenizer;

use crate::EngineError;
use crate::kv_pool::{KvPool, SeqBlocks};
use crate::sampler::{Sampler, SamplingParams};

/// Rows fed through the model at once while reading a prompt: bounds the
/// activation memory of a long prompt. 512 like llama.cpp's default micro-
/// batch: on a GPU a 512-row chunk has twice the output tiles of a 256-row
/// one to spread over the SMs (docs/CUDA.md, session 11).
pub const PREFILL_CHUNK: usize = 512;

/// [`PREFILL_CHUNK`], or `SMELT_PREFILL_CHUNK` (rows, at least 1) when set:
/// for measuring. Results do not depend on it: every backend computes a
/// row the same way whatever rows share its step.
pub fn prefill_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        std::env::var("SMELT_PREFILL_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n >= 1)
            .unwrap_or(PREFILL_CHUNK)
    })
}

/// The largest context Smelt will allocate for.
pub const MAX_CTX: usize = 1 << 20;

/// What to generate.
#[derive(Clone, Debug, Default)]
pub struct GenerateRequest {
    pub sampling: SamplingParams,
    /// Stop after this many new tokens.
    pub max_tokens: usize,
    /// Stop (without printing it) when the output contains one of these.
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// The output reached a stop string.
    StopString,
    /// `max_tokens` new tokens were produced.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// The outcome of one generation.
#[derive(Clone, Debug)]
pub struct Completion {
    /// Everything printed (stop strings excluded).
    pub text: String,
    /// New tokens, including a final end-of-generation token if any.
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V were already cached and not recomputed.
    pub cached_tokens: usize,
    /// Time to read the prompt and produce the first token's logits.
    pub prefill_time: Duration,
    /// Time spent after the first token.
    pub decode_time: Duration,
}

/// A sequence on a model: its KV cache and the tokens already in it.
pub struct Session<'m, B: Backend> {
    model: &'m Model<B>,
    kv: B::Kv,
    pool: KvPool,
    seq: SeqBlocks,
    tokens: Vec<u32>,
    ctx: usize,
}

impl<'m, B: Backend> Session<'m, B> {
    /// A session holding up to `ctx` tokens of context, with an f16 KV cache.
    pub fn new(model: &'m Model<B>, ctx: usize) -> Result<Self, EngineError> {
        Self::with_kv_type(model, ctx, KvType::F16)
    }

    /// A session whose KV cache stores `kv_type` values.
    pub fn with_kv_type(
        model: &'m Model<B>,
        ctx: usize,
        kv_type: KvType,
    ) -> Result<Self, EngineError> {
        if ctx == 0 || ctx > MAX_CTX {
            return Err(EngineError::BadContext { ctx, max: MAX_CTX });
        }
        let n_blocks = ctx.div_ceil(model.kv_block_size());
        let kv = model.new_kv(n_blocks, kv_type)?;
        Ok(Session {
            model,
            kv,
            pool: KvPool::new(n_blocks, model.kv_block_size()),
            seq: SeqBlocks::default(),
            tokens: Vec::new(),
            ctx,
        })
    }

    /// Tokens whose K/V the cache holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Context size in tokens.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Forgets everything after the first `n` cached tokens.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.pool.truncate(&mut self.seq, self.tokens.len());
    }

    /// Appends `tokens` to the sequence and returns the logits after the
    /// last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        match self.feed_for(tokens, Want::Logits)? {
            Next::Logits(l) => Ok(l),
            _ => Ok(Vec::new()),
        }
    }

    /// As [`Session::feed`], handing back what `want` asks of the last
    /// token's logits: all of them, the greedy token, or the largest k
    /// (the last two picked by the backend where the logits are).
    fn feed_for(&mut self, tokens: &[u32], want: Want) -> Result<Next, EngineError> {
        let Some(_) = tokens.last() else {
            return Err(EngineError::EmptyPrompt);
        };
        let total = self.tokens.len() + tokens.len();
        if total > self.ctx {
            return Err(EngineError::ContextFull {
                needed: total,
                ctx: self.ctx,
            });
        }
        self.pool.reserve(&mut self.seq, total)?;
        let mut next = Next::Logits(Vec::new());
        let chunk_rows = prefill_chunk();
        let n_chunks = tokens.len().div_ceil(chunk_rows);
        for (i, chunk) in tokens.chunks(chunk_rows).enumerate() {
            let start = self.tokens.len() as u32;
            let positions: Vec<u32> = (start..start + chunk.len() as u32).collect();
            let tables = vec![&self.seq.blocks[..]; chunk.len()];
            // Only the final chunk's last row asks for logits: a backend may
            // compute rows without logits on another path (CUDA's tensor
            // cores), so which rows want logits must depend on the request,
            // not on how its prompt was cut into chunks.
            let last = [chunk.len() - 1];
            let batch = Batch {
                tokens: chunk,
                positions: &positions,
                block_tables: &tables,
                logits_rows: if i + 1 == n_chunks { &last } else { &[] },
            };
            next = match want {
                Want::Logits => Next::Logits(self.model.forward(&mut self.kv, &batch)?.data),
                Want::Greedy => Next::Token(
                    self.model
                        .forward_greedy(&mut self.kv, &batch)?
                        .first()
                        .copied()
                        .unwrap_or(0),
                ),
                Want::TopK(k) => Next::Top(
                    self.model
                        .forward_top_k(&mut self.kv, &batch, k)?
                        .pop()
                        .unwrap_or_default(),
                ),
            };
            self.tokens.extend_from_slice(chunk);
        }
        Ok(next)
    }

    /// Generates a continuation of `prompt`, calling `on_text` with each
    /// printable piece as soon as it is safe to print (whole UTF-8
    /// characters, never part of a stop string). `on_text` returns false to
    /// cancel. The cached prefix shared with the previous call is reused.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        req: &GenerateRequest,
        tokenizer: &Tokenizer,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Completion, EngineError> {
        req.sampling.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= self.ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                ctx: self.ctx,
            });
        }
        let t0 = Instant::now();
        // Reuse the cached prefix, but always recompute the last prompt token
        // so its logits are fresh.
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.truncate(common);
        let mut sampler = Sampler::new(req.sampling.clone());
        // What the sampler needs of each step's logits: greedy and top-k
        // draws without penalties are picked (or narrowed) by the backend.
        let want = if sampler.plain_greedy() {
            Want::Greedy
        } else {
            sampler.device_top_k().map_or(Want::Logits, Want::TopK)
        };
        let mut next = self.feed_for(&prompt[common..], want)?;
        let prefill_time = t0.elapsed();
        let t1 = Instant::now();

        let mut decoder = Utf8Stream::new();
        let mut stops = StopMatcher::new(req.stop.iter().cloned());
        let mut out = Completion {
            text: String::new(),
            tokens: Vec::new(),
            finish: FinishReason::Length,
            prompt_tokens: prompt.len(),
            cached_tokens: common,
            prefill_time,
            decode_time: Duration::ZERO,
        };
        let mut emit = |piece: &str, out: &mut Completion| -> bool {
            if piece.is_empty() {
                return true;
            }
            out.text.push_str(piece);
            on_text(piece)
        };
        // Takes one generated token: false when it ends the generation
        // (`out.finish` says why).
        let mut take = |token: u32, out: &mut Completion| -> bool {
            out.tokens.push(token);
            if tokenizer.is_end_of_generation(token) {
                out.finish = FinishReason::EndOfGeneration;
                return false;
            }
            let step = stops.push(decoder.push(tokenizer.token_bytes(token)));
            let stopped = step.stopped;
            if !emit(step.text, out) {
                out.finish = FinishReason::Cancelled;
                return false;
            }
            if stopped {
                out.finish = FinishReason::StopString;
                return false;
            }
            true
        };
        let chained = self.model.backend.chains_greedy() && req.max_tokens > 0;
        match next {
            // Greedy on a backend that chains steps: one run of
            // `decode_greedy` (the same tokens; each step is queued before
            // the previous step's token is read back).
            Next::Token(first) if chained => {
                if take(first, &mut out) {
                    self.decode_chained(first, req.max_tokens, &mut out, &mut take)?;
                }
            }
            _ => {
                while out.tokens.len() < req.max_tokens {
                    let token = match &mut next {
                        Next::Token(t) => *t,
                        Next::Top(top) => sampler.sample_top_k(top),
                        Next::Logits(logits) => sampler.sample(logits, &self.tokens),
                    };
                    if !take(token, &mut out) {
                        break;
                    }
                    if self.tokens.len() >= self.ctx {
                        out.finish = FinishReason::ContextFull;
                        break;
                    }
                    next = self.feed_for(&[token], want)?;
                }
            }
        }
        if !matches!(
            out.finish,
            FinishReason::StopString | FinishReason::Cancelled
        ) {
            // Flush a dangling partial character, then text held back as a
            // possible stop-string start.
            let step = stops.push(decoder.finish());
            let stopped = step.stopped;
            emit(step.text, &mut out);
            if stopped {
                out.finish = FinishReason::StopString;
            } else {
                emit(stops.finish(), &mut out);
            }
        }
        out.decode_time = t1.elapsed();
        Ok(out)
    }
}

impl<B: Backend> Session<'_, B> {
    /// The greedy decode after `first` (already taken) through
    /// `Model::decode_greedy`: as the step-by-step loop, `first` and each
    /// token after it are fed while `take` goes on, the context allows and
    /// fewer than `max_tokens` were generated. (The step loop also feeds the
    /// last token when `max_tokens` ends it; here it is left unfed.)
    fn decode_chained(
        &mut self,
        first: u32,
        max_tokens: usize,
        out: &mut Completion,
        take: &mut impl FnMut(u32, &mut Completion) -> bool,
    ) -> Result<(), EngineError> {
        let start = self.tokens.len();
        if start >= self.ctx {
            out.finish = FinishReason::ContextFull;
            return Ok(());
        }
        let feeds = max_tokens
            .saturating_sub(out.tokens.len())
            .min(self.ctx - start);
        if feeds == 0 {
            return Ok(());
        }
        self.pool.reserve(&mut self.seq, start + feeds)?;
        let mut stopped = false;
        let generated = self.model.decode_greedy(
            &mut self.kv,
            &self.seq.blocks,
            start as u32,
            first,
            feeds,
            |t| {
                let go = take(t, out);
                stopped |= !go;
                go
            },
        )?;
        // Fed: `first`, then every generated token but the last.
        self.tokens.push(first);
        self.tokens
            .extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
        if !stopped && self.tokens.len() >= self.ctx {
            out.finish = FinishReason::ContextFull;
        }
        Ok(())
    }
}

/// What [`Session::feed_for`] brings back of the last token's logits.
#[derive(Clone, Copy)]
enum Want {
    Logits,
    Greedy,
    TopK(usize),
}

/// The answer to a [`Want`].
enum Next {
    Logits(Vec<f32>),
    Token(u32),
    Top(Vec<(u32, f32)>),
}
