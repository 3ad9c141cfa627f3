//! What the scheduler hands in and out: requests, the events a sequence's
//! channel receives (text, log-probabilities, the end and its statistics),
//! and the per-step and cumulative reports.

use std::time::{Duration, Instant};

use crate::BadParam;
use crate::session::{FinishReason, GenerateRequest};

/// Why a request was refused before it ran.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    NoTokens,
    #[error(
        "this model's maximum context length is {ctx} tokens; the request needs {needed} \
         ({prompt} in the prompt, {max_tokens} in the completion)"
    )]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        needed: usize,
        ctx: usize,
    },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    BadToken { token: u32, vocab: usize },
    #[error(transparent)]
    Sampling(#[from] BadParam),
}

/// Where a sequence's output goes.
pub trait SeqSink: Send {
    /// Delivers an event; false when nobody listens any more, which cancels
    /// the sequence.
    fn send(&mut self, event: SeqEvent) -> bool;
    /// Whether the listener is gone (checked before each step, so a
    /// sequence still reading its prompt is dropped too).
    fn is_closed(&self) -> bool {
        false
    }
}

/// The log-probability of a generated token and of the likeliest tokens at
/// its position, from the model's distribution (before penalties,
/// truncation and temperature).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What a finished sequence did.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqStats {
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// New tokens, including a final end-of-generation token.
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_tokens: usize,
    /// From submission to the first new token.
    pub time_to_first_token: Duration,
    /// From the first new token to the end.
    pub decode_time: Duration,
}

/// How a sequence ended.
#[derive(Clone, Debug, PartialEq)]
pub enum SeqEnd {
    Finished(SeqStats),
    /// The forward pass failed; the message says why.
    Failed(String),
}

/// Output of one sequence in one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqEvent {
    /// Text now safe to print (possibly empty).
    pub text: String,
    /// Tokens sampled since the last event.
    pub tokens: Vec<u32>,
    /// Their log-probabilities, when the request asked for them.
    pub logprobs: Vec<TokenLogprob>,
    /// Set on the sequence's last event.
    pub end: Option<SeqEnd>,
}

/// One request for the scheduler.
pub struct SeqRequest {
    pub prompt: Vec<u32>,
    pub generate: GenerateRequest,
    /// `Some(n)`: report each token's log-probability and the `n` likeliest
    /// alternatives.
    pub logprobs: Option<usize>,
    pub sink: Box<dyn SeqSink>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Rows in the forward pass (0: nothing to do).
    pub rows: usize,
    /// Of which decode rows (one per generating sequence).
    pub decode_rows: usize,
    /// Time to first token of each sequence that produced its first token.
    pub first_tokens: Vec<Duration>,
    /// Sequences that ended this step.
    pub finished: Vec<SeqStats>,
    /// Sequences dropped because their listener went away.
    pub cancelled: usize,
    /// How long the forward pass took.
    pub forward_time: Duration,
}

/// Counts for metrics and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub running: usize,
    pub waiting: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_free: usize,
    /// Blocks owned by the prefix cache (some may be in use by sequences).
    pub kv_blocks_cached: usize,
    /// Cached blocks no sequence uses (reclaimable).
    pub kv_blocks_cached_idle: usize,
    /// Blocks held privately by sequences.
    pub kv_blocks_private: usize,
    pub prefix_hit_tokens: u64,
    pub prefix_query_tokens: u64,
}
