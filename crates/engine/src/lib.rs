//! The engine: sampling, the KV block pool and the generation loop that ties
//! a model, its tokenizer and a stream of text together.

pub mod kv_pool;
pub mod prefix_cache;
pub mod rng;
pub mod sampler;
pub mod scheduler;
pub mod scheduler_types;
pub mod session;

pub use kv_pool::{KvFull, KvPool, SeqBlocks};
pub use prefix_cache::PrefixCache;
pub use sampler::{BadParam, Sampler, SamplingParams, argmax};
pub use scheduler::{
    Scheduler, SchedulerConfig, SchedulerStats, SeqEnd, SeqEvent, SeqRequest, SeqSink, SeqStats,
    StepReport, SubmitError, TokenLogprob,
};
pub use session::{Completion, FinishReason, GenerateRequest, Session};

/// Errors of generation; each says what limit or input was wrong.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(
        "the prompt is {prompt} tokens but the context holds {ctx}; raise --ctx or shorten the prompt"
    )]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error("the context of {ctx} tokens is full ({needed} needed)")]
    ContextFull { needed: usize, ctx: usize },
    #[error("context size {ctx} is out of range (1..={max})")]
    BadContext { ctx: usize, max: usize },
    #[error(transparent)]
    Sampling(#[from] BadParam),
    #[error(transparent)]
    Kv(#[from] KvFull),
    #[error(transparent)]
    Model(#[from] smelt_model::ModelError),
}
