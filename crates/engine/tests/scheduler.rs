//! Continuous batching on the real models: batch invariance (a greedy
//! request gives the same tokens alone or among 31 others), no leaked KV
//! blocks, prefix-cache reuse and eviction, cancellation, admission.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smelt_cpu::CpuBackend;
use smelt_engine::{
    FinishReason, GenerateRequest, SamplingParams, Scheduler, SchedulerConfig, SeqEnd, SeqEvent,
    SeqRequest, SeqSink, SeqStats, Session, SubmitError,
};
use smelt_model::{KvType, Model};
use smelt_text::tokenizer::Tokenizer;

fn open(name: &str) -> (Model<CpuBackend>, Tokenizer) {
    let (file, tokenizer) = common::open_file(name);
    let model = Model::load(file, CpuBackend::new(0).expect("pool")).expect("model");
    (model, tokenizer)
}

/// What a sequence delivered.
#[derive(Default)]
struct Collected {
    text: String,
    tokens: Vec<u32>,
    end: Option<SeqEnd>,
    events: usize,
}

/// A sink that records events; it reports itself closed once `closed` is
/// set, and refuses events after `accept` of them.
struct TestSink {
    out: Arc<Mutex<Collected>>,
    closed: Arc<AtomicBool>,
    accept: usize,
}

impl SeqSink for TestSink {
    fn send(&mut self, event: SeqEvent) -> bool {
        let mut out = self.out.lock().expect("lock");
        if out.events >= self.accept {
            return false;
        }
        out.events += 1;
        out.text.push_str(&event.text);
        out.tokens.extend(&event.tokens);
        if event.end.is_some() {
            out.end = event.end;
        }
        true
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

struct Handle {
    out: Arc<Mutex<Collected>>,
    closed: Arc<AtomicBool>,
}

impl Handle {
    fn stats(&self) -> SeqStats {
        match &self.out.lock().expect("lock").end {
            Some(SeqEnd::Finished(s)) => s.clone(),
            other => panic!("sequence did not finish: {other:?}"),
        }
    }
    fn text(&self) -> String {
        self.out.lock().expect("lock").text.clone()
    }
    fn tokens(&self) -> Vec<u32> {
        self.out.lock().expect("lock").tokens.clone()
    }
}

fn request(prompt: Vec<u32>, generate: GenerateRequest, accept: usize) -> (SeqRequest, Handle) {
    let out = Arc::new(Mutex::new(Collected::default()));
    let closed = Arc::new(AtomicBool::new(false));
    let sink = TestSink {
        out: out.clone(),
        closed: closed.clone(),
        accept,
    };
    let req = SeqRequest {
        prompt,
        generate,
        logprobs: None,
        sink: Box::new(sink),
        arrived: Instant::now(),
    };
    (req, Handle { out, closed })
}

fn greedy(max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens,
        stop: Vec::new(),
    }
}

fn run_to_end(s: &mut Scheduler<'_, CpuBackend>) {
    let mut steps = 0;
    while !s.is_idle() {
        s.step().expect("step");
        steps += 1;
        assert!(steps < 100_000, "the scheduler does not finish");
    }
}

/// No block is held by a sequence, and every block is free or cached.
fn assert_no_leak(s: &Scheduler<'_, CpuBackend>) {
    let st = s.stats();
    assert_eq!(st.running + st.waiting, 0);
    assert_eq!(st.kv_blocks_private, 0, "{st:?}");
    assert_eq!(st.kv_blocks_cached, st.kv_blocks_cached_idle, "{st:?}");
    assert_eq!(st.kv_blocks_free + st.kv_blocks_cached, st.kv_blocks_total);
}

/// Prompts of mixed lengths (4 to ~150 tokens), all different.
fn mixed_prompts(tok: &Tokenizer, n: usize) -> Vec<Vec<u32>> {
    let words = [
        "river", "lantern", "copper", "orchard", "signal", "meadow", "harbor", "violet", "engine",
        "thunder", "pebble", "castle",
    ];
    (0..n)
        .map(|i| {
            let len = 2 + (i * 37) % 90;
            let text: Vec<&str> = (0..len)
                .map(|j| words[(i * 7 + j * (i % 5 + 1)) % words.len()])
                .collect();
            tok.encode(&format!("Story {i}: {}", text.join(" ")), true, false)
        })
        .collect()
}

#[test]
fn greedy_tokens_are_identical_alone_and_among_31_others() {
    let (model, tok) = open("SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompts = mixed_prompts(&tok, 32);
    let max_tokens = 10;
    let mut config = SchedulerConfig::for_parallel(256, 32, model.kv_block_size());
    // Small steps: prompts are chunked and interleave with decode rows.
    config.max_step_rows = 48;
    config.prefix_cache = false;

    let mut alone = Vec::new();
    let mut s = Scheduler::new(&model, &tok, config.clone()).expect("scheduler");
    for p in &prompts {
        let (req, h) = request(p.clone(), greedy(max_tokens), usize::MAX);
        s.submit(req).expect("submit");
        run_to_end(&mut s);
        alone.push((h.tokens(), h.text()));
    }
    assert_no_leak(&s);

    // One of them through Session::generate, the CLI's path.
    let mut session = Session::new(&model, 256).expect("session");
    let done = session
        .generate(&prompts[5], &greedy(max_tokens), &tok, &mut |_| true)
        .expect("generate");
    assert_eq!(done.tokens, alone[5].0);
    assert_eq!(done.text, alone[5].1);

    let mut together = Scheduler::new(&model, &tok, config).expect("scheduler");
    let handles: Vec<Handle> = prompts
        .iter()
        .map(|p| {
            let (req, h) = request(p.clone(), greedy(max_tokens), usize::MAX);
            together.submit(req).expect("submit");
            h
        })
        .collect();
    let mut max_rows = 0;
    while !together.is_idle() {
        let r = together.step().expect("step");
        max_rows = max_rows.max(r.rows);
        assert!(r.rows <= 48);
    }
    assert_eq!(max_rows, 48, "steps should have been full");
    for (i, (h, (tokens, text))) in handles.iter().zip(&alone).enumerate() {
        assert_eq!(
            &h.tokens(),
            tokens,
            "request {i}: tokens differ in the batch"
        );
        assert_eq!(&h.text(), text, "request {i}");
        let st = h.stats();
        assert_eq!(st.prompt_tokens, prompts[i].len());
        assert_eq!(st.completion_tokens, tokens.len());
    }
    assert_no_leak(&together);
}

#[test]
fn prefix_cache_reuses_full_prompt_blocks_and_evicts_under_pressure() {
    let (model, tok) = open("stories260K.gguf");
    let bs = model.kv_block_size();
    let prompt: Vec<u32> = tok.encode(
        "Once upon a time, there was a little girl named Lily. She loved to play with her \
         friends in the park and eat apples with her mom",
        true,
        false,
    );
    assert!(prompt.len() > 2 * bs, "prompt of {} tokens", prompt.len());
    // The pool holds exactly one sequence of 128 positions.
    let config = SchedulerConfig {
        n_blocks: 128 / bs,
        kv_type: KvType::F32,
        max_seq_len: 128,
        max_running: 4,
        max_step_rows: 256,
        prefix_cache: true,
    };
    let mut uncached = config.clone();
    uncached.prefix_cache = false;
    let mut plain = Scheduler::new(&model, &tok, uncached).expect("scheduler");
    let (req, reference) = request(prompt.clone(), greedy(20), usize::MAX);
    plain.submit(req).expect("submit");
    run_to_end(&mut plain);

    let mut s = Scheduler::new(&model, &tok, config).expect("scheduler");
    let (req, first) = request(prompt.clone(), greedy(20), usize::MAX);
    s.submit(req).expect("submit");
    run_to_end(&mut s);
    assert_eq!(first.stats().cached_tokens, 0);
    let full = (prompt.len() - 1) / bs;
    // Only full blocks before the last prompt token are published.
    assert_eq!(s.stats().kv_blocks_cached, full);

    let (req, second) = request(prompt.clone(), greedy(20), usize::MAX);
    s.submit(req).expect("submit");
    run_to_end(&mut s);
    assert_eq!(second.stats().cached_tokens, full * bs);
    assert_eq!(second.tokens(), reference.tokens());
    assert_eq!(first.tokens(), reference.tokens());
    let st = s.stats();
    assert_eq!(st.prefix_hit_tokens, (full * bs) as u64);
    assert_eq!(st.prefix_query_tokens, 2 * prompt.len() as u64);
    assert_no_leak(&s);

    // A different prompt needing the whole pool evicts the cached blocks.
    let other = tok.encode("The big dog ran to the red ball.", true, false);
    let max_tokens = 128 - other.len();
    let (req, h) = request(other, greedy(max_tokens), usize::MAX);
    s.submit(req).expect("submit");
    run_to_end(&mut s);
    assert_eq!(h.stats().cached_tokens, 0);
    assert_no_leak(&s);
}

/// A prompt of exactly `k` full blocks publishes `k - 1`: the last block
/// holds the last prompt token, whose row wanted logits (a backend may
/// compute such rows on another path), so it is never shared. The next
/// request with that prompt recomputes the last block and still gets the
/// same tokens.
#[test]
fn prefix_cache_never_publishes_the_block_of_the_last_prompt_token() {
    let (model, tok) = open("stories260K.gguf");
    let bs = model.kv_block_size();
    let text = "Once upon a time, there was a little girl named Lily. She loved to play with \
                her friends in the park and eat apples with her mom and dad every day";
    let mut prompt: Vec<u32> = tok.encode(text, true, false);
    assert!(prompt.len() >= 2 * bs, "prompt of {} tokens", prompt.len());
    prompt.truncate(2 * bs);
    let config = SchedulerConfig {
        n_blocks: 128 / bs,
        kv_type: KvType::F32,
        max_seq_len: 128,
        max_running: 4,
        // Chunks of 5 rows: the prompt spans several steps.
        max_step_rows: 5,
        prefix_cache: true,
    };
    let mut s = Scheduler::new(&model, &tok, config).expect("scheduler");
    let (req, first) = request(prompt.clone(), greedy(8), usize::MAX);
    s.submit(req).expect("submit");
    run_to_end(&mut s);
    assert_eq!(s.stats().kv_blocks_cached, 1);
    let (req, second) = request(prompt.clone(), greedy(8), usize::MAX);
    s.submit(req).expect("submit");
    run_to_end(&mut s);
    assert_eq!(second.stats().cached_tokens, bs);
    assert_eq!(second.tokens(), first.tokens());
    assert_no_leak(&s);
}

#[test]
fn cancelled_sequences_free_their_blocks_at_the_next_step() {
    let (model, tok) = open("stories260K.gguf");
    let config = SchedulerConfig::for_parallel(128, 4, model.kv_block_size());
    let mut s = Scheduler::new(&model, &tok, config).expect("scheduler");
    let prompt = tok.encode("Once upon a time", true, false);
    // One listener refuses its third event, one goes away between steps,
    // one runs to the end.
    let (a, ha) = request(prompt.clone(), greedy(60), 2);
    let (b, hb) = request(prompt.clone(), greedy(60), usize::MAX);
    let (c, hc) = request(prompt.clone(), greedy(30), usize::MAX);
    for r in [a, b, c] {
        s.submit(r).expect("submit");
    }
    let first = s.step().expect("step");
    assert_eq!(first.rows, 3 * prompt.len());
    hb.closed.store(true, Ordering::SeqCst);
    let second = s.step().expect("step");
    assert_eq!(second.cancelled, 1);
    assert_eq!(second.decode_rows, 2);
    run_to_end(&mut s);
    assert!(ha.out.lock().expect("lock").end.is_none());
    assert_eq!(ha.out.lock().expect("lock").events, 2);
    assert_eq!(hc.stats().finish, FinishReason::Length);
    assert_no_leak(&s);
}

#[test]
fn admission_waits_for_slots_and_blocks_and_rejects_what_cannot_fit() {
    let (model, tok) = open("stories260K.gguf");
    let bs = model.kv_block_size();
    // Room for two sequences of 64 positions, and three slots.
    let config = SchedulerConfig {
        n_blocks: 2 * 64 / bs,
        kv_type: KvType::F16,
        max_seq_len: 64,
        max_running: 3,
        max_step_rows: 256,
        prefix_cache: false,
    };
    let mut s = Scheduler::new(&model, &tok, config).expect("scheduler");
    let prompt = tok.encode("Lily and Tom", true, false);
    let max_tokens = 64 - prompt.len();
    let handles: Vec<Handle> = (0..5)
        .map(|_| {
            let (req, h) = request(prompt.clone(), greedy(max_tokens), usize::MAX);
            s.submit(req).expect("submit");
            h
        })
        .collect();
    s.step().expect("step");
    assert_eq!((s.n_running(), s.n_waiting()), (2, 3));
    run_to_end(&mut s);
    let text = handles[0].text();
    for h in &handles {
        assert_eq!(h.text(), text);
    }
    assert_no_leak(&s);

    let (req, _) = request(prompt.clone(), greedy(max_tokens + 1), usize::MAX);
    let err = s.submit(req).unwrap_err();
    assert_eq!(
        err,
        SubmitError::TooLong {
            prompt: prompt.len(),
            max_tokens: max_tokens + 1,
            needed: 65,
            ctx: 64
        }
    );
    assert!(
        err.to_string()
            .contains("maximum context length is 64 tokens")
    );
}

#[test]
fn stop_strings_and_seeded_sampling_match_the_session() {
    let (model, tok) = open("SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = tok.encode("The capital of France is", true, false);
    let mut s = Scheduler::new(
        &model,
        &tok,
        SchedulerConfig::for_parallel(256, 4, model.kv_block_size()),
    )
    .expect("scheduler");
    let mut stop = greedy(16);
    stop.stop = vec!["ris.".into()];
    let sampled = GenerateRequest {
        sampling: SamplingParams {
            temperature: 1.0,
            seed: 42,
            repeat_penalty: 1.3,
            ..Default::default()
        },
        max_tokens: 24,
        stop: Vec::new(),
    };
    let (a, ha) = request(prompt.clone(), stop.clone(), usize::MAX);
    let (b, hb) = request(prompt.clone(), sampled.clone(), usize::MAX);
    s.submit(a).expect("submit");
    s.submit(b).expect("submit");
    run_to_end(&mut s);
    assert_eq!(ha.text(), " Pa");
    assert_eq!(ha.stats().finish, FinishReason::StopString);

    let mut session = Session::new(&model, 256).expect("session");
    let done = session
        .generate(&prompt, &sampled, &tok, &mut |_| true)
        .expect("generate");
    assert_eq!(hb.tokens(), done.tokens);
    assert_eq!(hb.text(), done.text);
}
