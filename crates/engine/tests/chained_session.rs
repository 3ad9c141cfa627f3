//! `Session::generate` on a backend that chains greedy steps
//! (`Backend::chains_greedy`, CUDA's path) gives what the step-by-step loop
//! gives: the same text, tokens and finish reasons for a token limit, a stop
//! string, end of generation and a full context, and the cache bookkeeping
//! lets the next request continue. The chaining here is emulated on the host
//! around the CPU backend (the ids of a step's argmax kept for the next
//! step's embedding), so the engine's side runs in CI without a GPU.

mod common;

use std::sync::Arc;
use std::sync::Mutex;

use smelt_backend::{
    AttnGeometry, AttnRow, Backend, BackendError, Feature, HostBuf, HostTensor, KvLayout,
    RopeParams,
};
use smelt_cpu::CpuBackend;
use smelt_engine::{FinishReason, GenerateRequest, SamplingParams, Session};
use smelt_gguf::GgufFile;
use smelt_model::Model;
use smelt_text::tokenizer::Tokenizer;

/// The CPU backend, chaining greedy steps when `chain` is set: the ids of
/// each chained argmax are kept (by ticket) for `embed_chained` and
/// `chained_ids`.
struct Chaining {
    inner: CpuBackend,
    chain: bool,
    /// (ticket, ids) of every chained argmax so far.
    picks: Mutex<Vec<(u64, Vec<u32>)>>,
}

impl Backend for Chaining {
    type Buf = <CpuBackend as Backend>::Buf;
    type Weight = <CpuBackend as Backend>::Weight;
    type Kv = <CpuBackend as Backend>::Kv;

    fn name(&self) -> &'static str {
        "chaining cpu"
    }
    fn supports(&self, feature: Feature) -> bool {
        self.inner.supports(feature)
    }
    fn place(&self, name: &str, tensor: &HostTensor) -> Result<Self::Weight, BackendError> {
        self.inner.place(name, tensor)
    }
    fn alloc(&self, rows: usize, cols: usize) -> Self::Buf {
        self.inner.alloc(rows, cols)
    }
    fn upload(&self, data: &HostBuf) -> Self::Buf {
        self.inner.upload(data)
    }
    fn download(&self, buf: &Self::Buf) -> HostBuf {
        self.inner.download(buf)
    }
    fn shape(&self, buf: &Self::Buf) -> (usize, usize) {
        self.inner.shape(buf)
    }
    fn alloc_kv(&self, layout: KvLayout) -> Result<Self::Kv, BackendError> {
        self.inner.alloc_kv(layout)
    }
    fn embed(&self, table: &Self::Weight, tokens: &[u32], scale: f32, out: &mut Self::Buf) {
        self.inner.embed(table, tokens, scale, out);
    }
    fn rms_norm(&self, x: &Self::Buf, weight: &Self::Weight, eps: f32, out: &mut Self::Buf) {
        self.inner.rms_norm(x, weight, eps, out);
    }
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight, out: &mut Self::Buf) {
        self.inner.matmul(x, w, out);
    }
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Weight) {
        self.inner.add_bias(x, bias);
    }
    fn rope(&self, x: &mut Self::Buf, n_heads: usize, positions: &[u32], params: &RopeParams) {
        self.inner.rope(x, n_heads, positions, params);
    }
    fn kv_store(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        k: &Self::Buf,
        v: &Self::Buf,
        slots: &[u32],
    ) {
        self.inner.kv_store(kv, layer, k, v, slots);
    }
    fn attention(
        &self,
        q: &Self::Buf,
        kv: &Self::Kv,
        layer: usize,
        rows: &[AttnRow<'_>],
        geom: &AttnGeometry,
        out: &mut Self::Buf,
    ) {
        self.inner.attention(q, kv, layer, rows, geom, out);
    }
    fn swiglu(&self, gate: &mut Self::Buf, up: &Self::Buf) {
        self.inner.swiglu(gate, up);
    }
    fn gelu_tanh_gate(&self, gate: &mut Self::Buf, up: &Self::Buf) {
        self.inner.gelu_tanh_gate(gate, up);
    }
    fn rms_norm_heads(&self, x: &mut Self::Buf, n_heads: usize, weight: &Self::Weight, eps: f32) {
        self.inner.rms_norm_heads(x, n_heads, weight, eps);
    }
    fn softcap(&self, x: &mut Self::Buf, cap: f32) {
        self.inner.softcap(x, cap);
    }
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf) {
        self.inner.add(x, y);
    }
    fn gather_rows(&self, x: &Self::Buf, rows: &[usize]) -> Self::Buf {
        self.inner.gather_rows(x, rows)
    }
    fn argmax_rows(&self, x: &Self::Buf) -> Vec<u32> {
        self.inner.argmax_rows(x)
    }
    fn chains_greedy(&self) -> bool {
        self.chain
    }
    fn argmax_rows_chained(&self, x: &Self::Buf) -> u64 {
        let ids = self.inner.argmax_rows(x);
        let mut picks = self.picks.lock().expect("picks");
        let ticket = picks.len() as u64;
        picks.push((ticket, ids));
        ticket
    }
    fn embed_chained(&self, table: &Self::Weight, scale: f32, out: &mut Self::Buf) {
        let picks = self.picks.lock().expect("picks");
        let last = &picks
            .last()
            .expect("a chained argmax before embed_chained")
            .1;
        self.inner.embed(table, last, scale, out);
    }
    fn chained_ids(&self, ticket: u64) -> Result<Vec<u32>, BackendError> {
        let picks = self.picks.lock().expect("picks");
        // Only the two latest are readable, as on CUDA.
        match picks.iter().rev().take(2).find(|(t, _)| *t == ticket) {
            Some((_, ids)) => Ok(ids.clone()),
            None => Err(BackendError::Device {
                backend: "chaining cpu",
                reason: format!("ticket {ticket} is not kept"),
            }),
        }
    }
}

type Outcome = (String, Vec<u32>, FinishReason, usize);

/// Runs the requests in order on one session (each continuing the cache the
/// last one left), chained or not.
fn run(
    file: &Arc<GgufFile>,
    tok: &Tokenizer,
    chain: bool,
    ctx: usize,
    requests: &[(&str, usize, &[&str])],
) -> Vec<Outcome> {
    let backend = Chaining {
        inner: CpuBackend::new(1).expect("cpu"),
        chain,
        picks: Mutex::new(Vec::new()),
    };
    let model = Model::load(file.clone(), backend).expect("load");
    let mut session = Session::new(&model, ctx).expect("session");
    let mut out = Vec::new();
    for &(prompt, max_tokens, stop) in requests {
        let req = GenerateRequest {
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens,
            stop: stop.iter().map(|s| s.to_string()).collect(),
        };
        let ids = tok.encode(prompt, true, false);
        let mut streamed = String::new();
        let done = session
            .generate(&ids, &req, tok, &mut |piece| {
                streamed.push_str(piece);
                true
            })
            .expect("generate");
        assert_eq!(streamed, done.text, "streamed pieces differ from the text");
        out.push((done.text, done.tokens, done.finish, done.cached_tokens));
    }
    out
}

#[test]
fn chained_generation_matches_the_step_loop() {
    let (file, tok) = common::open_file("stories260K.gguf");
    let requests: &[(&str, usize, &[&str])] = &[
        ("Once upon a time", 30, &[]),
        ("Once upon a time", 80, &["park"]),
        ("Tom had a red ball.", 400, &[]),
        ("Tom had a red ball. He", 1, &[]),
        ("Tom had a red ball. He", 25, &[]),
    ];
    for ctx in [256, 96] {
        let step = run(&file, &tok, false, ctx, requests);
        let chained = run(&file, &tok, true, ctx, requests);
        for (i, (s, c)) in step.iter().zip(&chained).enumerate() {
            println!(
                "ctx {ctx}, request {i}: {:?} after {} tokens: {:?}",
                s.2,
                s.1.len(),
                s.0
            );
            // Text, tokens and finish reason; the cached prefix may differ by
            // the one token the step loop feeds after its last (Length).
            assert_eq!(
                (&c.0, &c.1, c.2),
                (&s.0, &s.1, s.2),
                "ctx {ctx}, request {i}"
            );
            assert!(
                c.3.abs_diff(s.3) <= 1,
                "ctx {ctx}, request {i}: cached {} vs {}",
                c.3,
                s.3
            );
        }
        let finishes: Vec<FinishReason> = step.iter().map(|o| o.2).collect();
        assert_eq!(finishes[0], FinishReason::Length, "{finishes:?}");
        assert_eq!(finishes[1], FinishReason::StopString, "{finishes:?}");
        assert!(
            matches!(
                finishes[2],
                FinishReason::EndOfGeneration | FinishReason::ContextFull
            ),
            "{finishes:?}"
        );
        assert_eq!(finishes[3], FinishReason::Length, "{finishes:?}");
    }
}
