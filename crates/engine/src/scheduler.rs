//! Continuous batching: many sequences share one model, one KV pool and one
//! forward pass per step.
//!
//! Each [`Scheduler::step`] builds one [`Batch`]: the decode row of every
//! running sequence first, then chunks of waiting prompts (chunked prefill)
//! up to [`SchedulerConfig::max_step_rows`] rows, so a long prompt never
//! stalls the streams already running. After the forward pass every sequence
//! with logits samples with its own [`Sampler`] (own seed and penalties), and
//! its text goes through its own [`Utf8Stream`] and [`StopMatcher`] exactly
//! as in [`Session::generate`](crate::Session::generate), then to its
//! [`SeqSink`]. Sequences join and leave between steps.
//!
//! Memory is bounded: a sequence is admitted only when the pool can hold its
//! prompt plus `max_tokens`, reserved up front, so a running sequence never
//! runs out of KV. Full prompt blocks go to the [`PrefixCache`] once written.

use std::collections::VecDeque;
use std::time::Instant;

use smelt_backend::Backend;
use smelt_model::{Batch, KvType, Model};
use smelt_text::stop::StopMatcher;
use smelt_text::stream::Utf8Stream;
use smelt_text::tokenizer::Tokenizer;

use crate::EngineError;
use crate::kv_pool::{KvPool, SeqBlocks};
use crate::prefix_cache::PrefixCache;
use crate::sampler::Sampler;
pub use crate::scheduler_types::*;
use crate::session::{FinishReason, GenerateRequest, MAX_CTX};

/// The shape of a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// KV blocks in the pool (of [`Model::kv_block_size`] positions each).
    pub n_blocks: usize,
    pub kv_type: KvType,
    /// The most positions (prompt + new tokens) one sequence may use.
    pub max_seq_len: usize,
    /// The most sequences running at once.
    pub max_running: usize,
    /// The most rows in one forward pass (decode rows plus prefill chunks).
    pub max_step_rows: usize,
    /// Reuse KV blocks of earlier prompts.
    pub prefix_cache: bool,
}

/// Rows of a server step unless configured: decode rows share a step with
/// prompt chunks, so a step's size is also the decode rows' latency (the
/// CUDA server asks for more, `smelt serve --step-rows`).
pub const DEFAULT_STEP_ROWS: usize = 256;

impl SchedulerConfig {
    /// A pool sized for `parallel` sequences of `ctx` positions each.
    pub fn for_parallel(ctx: usize, parallel: usize, block_size: usize) -> Self {
        SchedulerConfig {
            n_blocks: ctx.div_ceil(block_size.max(1)) * parallel,
            kv_type: KvType::F16,
            max_seq_len: ctx,
            max_running: parallel,
            max_step_rows: DEFAULT_STEP_ROWS,
            prefix_cache: true,
        }
    }
}

/// A sequence admitted to the pool.
struct Seq {
    /// Prompt, then every sampled token; `tokens[..n_done]` have K/V.
    tokens: Vec<u32>,
    prompt_len: usize,
    n_done: usize,
    blocks: SeqBlocks,
    /// Per block: owned by the prefix cache (released there) or private.
    shared: Vec<bool>,
    published: bool,
    max_tokens: usize,
    sampler: Sampler,
    decoder: Utf8Stream,
    stops: StopMatcher,
    logprobs: Option<usize>,
    pending: SeqEvent,
    sink: Box<dyn SeqSink>,
    arrived: Instant,
    first_token: Option<Instant>,
    cached_tokens: usize,
}

impl Seq {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
    fn prefilling(&self) -> bool {
        self.n_done < self.prompt_len
    }
    /// Greedy with nothing that needs the logits on the host: the argmax
    /// of the raw logits is the sampler's choice.
    fn plain_greedy(&self) -> bool {
        self.sampler.plain_greedy() && self.logprobs.is_none()
    }

    /// The top-k the backend may select for this sequence's draw (no
    /// log-probabilities wanted: they need the whole row).
    fn device_top_k(&self) -> Option<usize> {
        self.sampler
            .device_top_k()
            .filter(|_| self.logprobs.is_none())
    }
}

/// Many sequences on one model: the continuous-batching loop.
pub struct Scheduler<'m, B: Backend> {
    model: &'m Model<B>,
    tokenizer: &'m Tokenizer,
    config: SchedulerConfig,
    kv: B::Kv,
    pool: KvPool,
    cache: PrefixCache,
    waiting: VecDeque<SeqRequest>,
    running: Vec<Seq>,
}

impl<'m, B: Backend> Scheduler<'m, B> {
    /// Allocates the KV pool on the model's backend.
    pub fn new(
        model: &'m Model<B>,
        tokenizer: &'m Tokenizer,
        config: SchedulerConfig,
    ) -> Result<Self, EngineError> {
        let max_seq_len = config.max_seq_len;
        if max_seq_len == 0 || max_seq_len > MAX_CTX {
            return Err(EngineError::BadContext {
                ctx: max_seq_len,
                max: MAX_CTX,
            });
        }
        let bs = model.kv_block_size();
        let n_blocks = config.n_blocks.max(max_seq_len.div_ceil(bs));
        let config = SchedulerConfig {
            n_blocks,
            max_running: config.max_running.max(1),
            max_step_rows: config.max_step_rows.max(config.max_running.max(1)),
            ..config
        };
        let kv = model.new_kv(n_blocks, config.kv_type)?;
        Ok(Scheduler {
            model,
            tokenizer,
            kv,
            pool: KvPool::new(n_blocks, bs),
            cache: PrefixCache::new(bs),
            waiting: VecDeque::new(),
            running: Vec::new(),
            config,
        })
    }

    /// The configuration in force (the pool is at least one full sequence).
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Checks a request against the limits without queueing it.
    pub fn check(&self, prompt: &[u32], req: &GenerateRequest) -> Result<(), SubmitError> {
        check_request(
            prompt,
            req,
            self.config.max_seq_len,
            self.model.config.vocab_size,
        )
    }

    /// Queues a request; it starts when a running slot and KV blocks are free.
    /// A refused request is dropped (its sink with it).
    pub fn submit(&mut self, req: SeqRequest) -> Result<(), SubmitError> {
        self.check(&req.prompt, &req.generate)?;
        self.waiting.push_back(req);
        Ok(())
    }

    /// Whether no sequence is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Sequences admitted to the pool.
    pub fn n_running(&self) -> usize {
        self.running.len()
    }

    /// Requests queued for a slot.
    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Pool and cache counts.
    pub fn stats(&self) -> SchedulerStats {
        let private = self
            .running
            .iter()
            .map(|s| s.shared.iter().filter(|&&sh| !sh).count())
            .sum();
        SchedulerStats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_blocks_total: self.pool.n_blocks(),
            kv_blocks_free: self.pool.free_blocks(),
            kv_blocks_cached: self.cache.cached_blocks(),
            kv_blocks_cached_idle: self.cache.idle_blocks(),
            kv_blocks_private: private,
            prefix_hit_tokens: self.cache.hit_tokens(),
            prefix_query_tokens: self.cache.query_tokens(),
        }
    }

    /// Ends every sequence, running or waiting, without output: their sinks
    /// are dropped, which closes the listeners' streams.
    pub fn cancel_all(&mut self) -> usize {
        let n = self.running.len() + self.waiting.len();
        self.waiting.clear();
        for mut seq in std::mem::take(&mut self.running) {
            self.free(&mut seq);
        }
        n
    }

    /// Runs one forward pass over every running sequence (admitting waiting
    /// ones first) and delivers what each produced.
    pub fn step(&mut self) -> Result<StepReport, EngineError> {
        let mut report = StepReport {
            cancelled: self.drop_closed(),
            ..StepReport::default()
        };
        self.admit();
        if self.running.is_empty() {
            return Ok(report);
        }

        // The rows: each decoding sequence's next token, then prompt chunks.
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut owner = Vec::new();
        let mut logits_rows = Vec::new();
        let mut logits_seq = Vec::new();
        for (i, s) in self.running.iter().enumerate() {
            if !s.prefilling() {
                logits_rows.push(tokens.len());
                logits_seq.push(i);
                tokens.push(s.tokens[s.n_done]);
                positions.push(s.n_done as u32);
                owner.push(i);
            }
        }
        report.decode_rows = tokens.len();
        let mut fed: Vec<usize> = self
            .running
            .iter()
            .map(|s| usize::from(!s.prefilling()))
            .collect();
        for (i, s) in self.running.iter().enumerate() {
            let budget = self.config.max_step_rows.saturating_sub(tokens.len());
            if budget == 0 {
                break;
            }
            if !s.prefilling() {
                continue;
            }
            let n = (s.prompt_len - s.n_done).min(budget);
            tokens.extend_from_slice(&s.tokens[s.n_done..s.n_done + n]);
            positions.extend((s.n_done..s.n_done + n).map(|p| p as u32));
            owner.extend(std::iter::repeat_n(i, n));
            fed[i] = n;
            if s.n_done + n == s.prompt_len {
                logits_rows.push(tokens.len() - 1);
                logits_seq.push(i);
            }
        }
        report.rows = tokens.len();

        // When every sequence that samples this step picks greedily without
        // penalties or logprobs, the backend picks the tokens where the
        // logits are (the same first-largest argmax) and only ids come back.
        let greedy = logits_seq.iter().all(|&i| self.running[i].plain_greedy());
        // Likewise when every one draws from its top k without penalties:
        // the backend selects the largest k of each row (k = the largest
        // any sequence asks for; each uses its own first k).
        let top_k = logits_seq
            .iter()
            .map(|&i| self.running[i].device_top_k())
            .try_fold(0, |m, k| k.map(|k| m.max(k)))
            .filter(|&k| k > 0 && !greedy);
        let t0 = Instant::now();
        let forward = {
            let tables: Vec<&[u32]> = owner
                .iter()
                .map(|&i| &self.running[i].blocks.blocks[..])
                .collect();
            let batch = Batch {
                tokens: &tokens,
                positions: &positions,
                block_tables: &tables,
                logits_rows: &logits_rows,
            };
            if greedy {
                self.model
                    .forward_greedy(&mut self.kv, &batch)
                    .map(StepOutput::Tokens)
            } else if let Some(k) = top_k {
                self.model
                    .forward_top_k(&mut self.kv, &batch, k)
                    .map(StepOutput::Top)
            } else {
                self.model
                    .forward(&mut self.kv, &batch)
                    .map(|l| StepOutput::Logits(l.data, l.cols))
            }
        };
        report.forward_time = t0.elapsed();
        let mut output = match forward {
            Ok(l) => l,
            Err(e) => {
                // The step is lost for everyone: end each sequence with the
                // error rather than leave it half-written.
                let message = e.to_string();
                for mut seq in std::mem::take(&mut self.running) {
                    let event = SeqEvent {
                        end: Some(SeqEnd::Failed(message.clone())),
                        ..SeqEvent::default()
                    };
                    seq.sink.send(event);
                    self.free(&mut seq);
                }
                return Err(e.into());
            }
        };
        for (s, n) in self.running.iter_mut().zip(&fed) {
            s.n_done += n;
        }
        self.publish_prompts();

        // Sample, decode, stop, deliver.
        let mut done = vec![false; self.running.len()];
        for (k, &i) in logits_seq.iter().enumerate() {
            let seq = &mut self.running[i];
            let token = match &mut output {
                StepOutput::Tokens(ids) => ids.get(k).copied(),
                StepOutput::Top(rows) => rows.get(k).map(|top| seq.sampler.sample_top_k(top)),
                StepOutput::Logits(data, vocab) => data
                    .get_mut(k * *vocab..(k + 1) * *vocab)
                    .map(|row| sample(seq, row)),
            };
            let Some(token) = token else {
                continue;
            };
            let outcome = advance(seq, token, self.tokenizer);
            if seq.first_token.is_none() {
                let now = Instant::now();
                seq.first_token = Some(now);
                report.first_tokens.push(now - seq.arrived);
            }
            match outcome {
                Advance::Continue => {
                    if !seq.pending.text.is_empty() && !flush_pending(seq) {
                        done[i] = true;
                        report.cancelled += 1;
                    }
                }
                Advance::Finished(finish) => {
                    let stats = finish_seq(seq, finish);
                    report.finished.push(stats);
                    done[i] = true;
                }
            }
        }
        let mut kept = Vec::with_capacity(self.running.len());
        for (mut seq, d) in std::mem::take(&mut self.running).into_iter().zip(done) {
            if d {
                self.free(&mut seq);
            } else {
                kept.push(seq);
            }
        }
        self.running = kept;
        Ok(report)
    }

    /// Drops sequences whose listener is gone.
    fn drop_closed(&mut self) -> usize {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|r| !r.sink.is_closed());
        let mut kept = Vec::with_capacity(self.running.len());
        for mut seq in std::mem::take(&mut self.running) {
            if seq.sink.is_closed() {
                self.free(&mut seq);
            } else {
                kept.push(seq);
            }
        }
        self.running = kept;
        before - self.waiting.len() - self.running.len()
    }

    /// Moves waiting requests into the pool, in arrival order, while a slot
    /// and their KV blocks are free.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(req) = self.waiting.pop_front() else {
                return;
            };
            let total = req.prompt.len() + req.generate.max_tokens;
            let Some((blocks, hits)) = self.reserve(&req.prompt, total) else {
                self.waiting.push_front(req);
                return;
            };
            let seq = self.start(req, blocks, hits);
            self.running.push(seq);
        }
    }

    /// Reserves KV for `total` positions of a sequence starting with
    /// `prompt`, prefix-cache hits first (evicting idle cached blocks if
    /// the pool is short). Returns the blocks and how many are cache hits.
    fn reserve(&mut self, prompt: &[u32], total: usize) -> Option<(SeqBlocks, usize)> {
        let bs = self.pool.block_size();
        // The last prompt token is always recomputed: its logits are needed.
        let cacheable = &prompt[..prompt.len().saturating_sub(1)];
        let hits = if self.config.prefix_cache {
            self.cache.acquire(cacheable)
        } else {
            Vec::new()
        };
        let need = total.div_ceil(bs).saturating_sub(hits.len());
        let short = need.saturating_sub(self.pool.free_blocks());
        if short > 0 && self.cache.idle_blocks() >= short {
            let freed = self.cache.evict(short);
            self.pool.release(&mut SeqBlocks { blocks: freed });
        }
        let n_hits = hits.len();
        let mut blocks = SeqBlocks { blocks: hits };
        if self.pool.reserve(&mut blocks, total).is_err() {
            for &b in blocks.blocks.iter().rev() {
                self.cache.release(b);
            }
            return None;
        }
        if self.config.prefix_cache {
            self.cache.record(prompt.len(), n_hits * bs);
        }
        Some((blocks, n_hits))
    }

    /// A running sequence from a request and its reserved blocks.
    fn start(&self, req: SeqRequest, blocks: SeqBlocks, hits: usize) -> Seq {
        let cached_tokens = hits * self.pool.block_size();
        let mut shared = vec![true; hits];
        shared.resize(blocks.blocks.len(), false);
        let SeqRequest {
            prompt,
            generate,
            logprobs,
            sink,
            arrived,
        } = req;
        let prompt_len = prompt.len();
        let mut tokens = prompt;
        tokens.reserve(generate.max_tokens);
        Seq {
            tokens,
            prompt_len,
            n_done: cached_tokens,
            blocks,
            shared,
            published: false,
            max_tokens: generate.max_tokens,
            sampler: Sampler::new(generate.sampling),
            stops: StopMatcher::new(generate.stop),
            decoder: Utf8Stream::new(),
            logprobs,
            pending: SeqEvent::default(),
            sink,
            arrived,
            first_token: None,
            cached_tokens,
        }
    }

    /// Hands the full blocks of every freshly prefilled prompt to the cache.
    fn publish_prompts(&mut self) {
        if !self.config.prefix_cache {
            return;
        }
        let bs = self.pool.block_size();
        for s in &mut self.running {
            if s.published || s.prefilling() {
                continue;
            }
            s.published = true;
            // Only blocks wholly before the prompt's last token: that row
            // wanted logits, so a backend may have computed it on another
            // path than the prompt's other rows (CUDA's matrix-vector
            // kernels instead of tensor cores); a cached block must hold
            // only rows that a later request would compute the same way.
            let full = s.prompt_len.saturating_sub(1) / bs;
            let taken = self
                .cache
                .publish(&s.tokens[..full * bs], &s.blocks.blocks[..full]);
            for (sh, t) in s.shared.iter_mut().zip(taken) {
                *sh |= t;
            }
        }
    }

    /// Returns a sequence's blocks: shared ones to the cache, the rest to
    /// the pool.
    fn free(&mut self, seq: &mut Seq) {
        let mut private = Vec::new();
        for (&b, &sh) in seq.blocks.blocks.iter().zip(&seq.shared).rev() {
            if !(sh && self.cache.release(b)) {
                private.push(b);
            }
        }
        seq.blocks.blocks.clear();
        seq.shared.clear();
        self.pool.release(&mut SeqBlocks { blocks: private });
    }
}

/// Checks a request against a per-sequence limit and a vocabulary.
pub fn check_request(
    prompt: &[u32],
    req: &GenerateRequest,
    max_seq_len: usize,
    vocab: usize,
) -> Result<(), SubmitError> {
    req.sampling.validate()?;
    if prompt.is_empty() {
        return Err(SubmitError::EmptyPrompt);
    }
    if req.max_tokens == 0 {
        return Err(SubmitError::NoTokens);
    }
    if let Some(&token) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(SubmitError::BadToken { token, vocab });
    }
    let needed = prompt.len().saturating_add(req.max_tokens);
    if needed > max_seq_len {
        return Err(SubmitError::TooLong {
            prompt: prompt.len(),
            max_tokens: req.max_tokens,
            needed,
            ctx: max_seq_len,
        });
    }
    Ok(())
}

enum Advance {
    Continue,
    Finished(FinishReason),
}

/// What a forward pass gave back: each sampling row's logits (`vocab`
/// wide), or, for an all-greedy step, the chosen tokens.
enum StepOutput {
    Logits(Vec<f32>, usize),
    Tokens(Vec<u32>),
    /// Each row's largest logits (`Model::forward_top_k`).
    Top(Vec<Vec<(u32, f32)>>),
}

/// Picks a sequence's next token from its `logits` (noting logprobs).
fn sample(seq: &mut Seq, logits: &mut [f32]) -> u32 {
    // The sampler applies penalties in place: keep the model's own logits
    // for the reported log-probabilities.
    let raw = seq.logprobs.map(|n| (n, logits.to_vec()));
    let token = seq.sampler.sample(logits, &seq.tokens);
    if let Some((n, raw)) = raw {
        seq.pending.logprobs.push(token_logprob(&raw, token, n));
    }
    token
}

/// Runs a sequence's next token through the stream decoder and stop
/// matcher, as `Session::generate` does.
fn advance(seq: &mut Seq, token: u32, tok: &Tokenizer) -> Advance {
    seq.tokens.push(token);
    seq.pending.tokens.push(token);
    if tok.is_end_of_generation(token) {
        return Advance::Finished(FinishReason::EndOfGeneration);
    }
    let step = seq.stops.push(seq.decoder.push(tok.token_bytes(token)));
    seq.pending.text.push_str(step.text);
    if step.stopped {
        return Advance::Finished(FinishReason::StopString);
    }
    // The KV holds prompt + max_tokens positions (reserved at admission), so
    // this ends generation before the context can overflow.
    if seq.generated() >= seq.max_tokens {
        return Advance::Finished(FinishReason::Length);
    }
    Advance::Continue
}

/// Sends the pending text and tokens; false if the listener is gone.
fn flush_pending(seq: &mut Seq) -> bool {
    let event = std::mem::take(&mut seq.pending);
    seq.sink.send(event)
}

/// Flushes the decoder and stop matcher and sends the last event.
fn finish_seq(seq: &mut Seq, mut finish: FinishReason) -> SeqStats {
    if finish != FinishReason::StopString {
        let step = seq.stops.push(seq.decoder.finish());
        seq.pending.text.push_str(step.text);
        if step.stopped {
            finish = FinishReason::StopString;
        } else {
            let rest = seq.stops.finish();
            seq.pending.text.push_str(rest);
        }
    }
    let now = Instant::now();
    let first = seq.first_token.unwrap_or(now);
    let stats = SeqStats {
        finish,
        prompt_tokens: seq.prompt_len,
        completion_tokens: seq.generated(),
        cached_tokens: seq.cached_tokens,
        time_to_first_token: first - seq.arrived,
        decode_time: now - first,
    };
    let mut event = std::mem::take(&mut seq.pending);
    event.end = Some(SeqEnd::Finished(stats.clone()));
    seq.sink.send(event);
    stats
}

/// The model's log-probability of `token` and of the `n` likeliest tokens
/// (likeliest first, ties to the lower id) under `logits`.
pub fn token_logprob(logits: &[f32], token: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let logprob = |t: u32| {
        logits
            .get(t as usize)
            .map_or(f32::NEG_INFINITY, |&l| (f64::from(l) - lse) as f32)
    };
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let k = n.min(idx.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit);
    }
    idx.truncate(k);
    idx.sort_unstable_by(by_logit);
    TokenLogprob {
        token,
        logprob: logprob(token),
        top: idx.into_iter().map(|t| (t, logprob(t))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_normalized_log_softmax_with_ordered_top() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lp = token_logprob(&logits, 4, 3);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let want = |l: f32| (f64::from(l) - z.ln()) as f32;
        assert!((lp.logprob - want(0.5)).abs() < 1e-6);
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 0]);
        assert!((lp.top[0].1 - want(3.0)).abs() < 1e-6);
        let total: f64 = logits.iter().map(|&l| f64::from(want(l)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(token_logprob(&logits, 1, 0).top.is_empty());
    }
}
