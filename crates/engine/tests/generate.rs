//! End-to-end generation on the real models: text in, text out.

mod common;

use std::path::PathBuf;

use smelt_cpu::CpuBackend;
use smelt_engine::{EngineError, FinishReason, GenerateRequest, SamplingParams, Session};
use smelt_gguf::GgufFile;
use smelt_model::Model;
use smelt_text::tokenizer::Tokenizer;

fn open(name: &str) -> (Model<CpuBackend>, Tokenizer) {
    let (file, tokenizer) = common::open_file(name);
    let model = Model::load(file, CpuBackend::new(0).expect("pool")).expect("model");
    (model, tokenizer)
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

/// Generates and also checks that the streamed pieces add up to the text.
fn generate(
    session: &mut Session<'_, CpuBackend>,
    tok: &Tokenizer,
    prompt: &[u32],
    req: &GenerateRequest,
) -> smelt_engine::Completion {
    let mut streamed = String::new();
    let done = session
        .generate(prompt, req, tok, &mut |piece| {
            streamed.push_str(piece);
            true
        })
        .expect("generate");
    assert_eq!(streamed, done.text, "streamed pieces differ from the text");
    assert!(
        !done.text.contains('\u{FFFD}'),
        "replacement character in {:?}",
        done.text
    );
    done
}

#[test]
fn stories260k_greedy_from_bos_tells_the_known_story() {
    let (model, tok) = open("stories260K.gguf");
    let prompt = tok.encode("", true, false);
    assert_eq!(prompt, vec![tok.bos_id().expect("bos")]);
    let mut s = Session::new(&model, 256).expect("session");
    let done = generate(&mut s, &tok, &prompt, &greedy(60));
    println!("stories260K: {:?}", done.text);
    let want = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park";
    assert!(done.text.trim_start().starts_with(want), "{:?}", done.text);
}

#[test]
fn smollm2_knows_the_capital_of_france_and_stops_where_told() {
    let (model, tok) = open("SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = tok.encode("The capital of France is", true, false);
    let mut s = Session::new(&model, 512).expect("session");
    let done = generate(&mut s, &tok, &prompt, &greedy(16));
    println!("SmolLM2: {:?}", done.text);
    assert!(done.text.starts_with(" Paris."), "{:?}", done.text);
    assert_eq!(done.finish, FinishReason::Length);
    assert_eq!(done.cached_tokens, 0);

    // A stop string that spans tokens: the text ends right before it.
    let mut req = greedy(16);
    req.stop = vec!["ris.".into()];
    let stopped = generate(&mut s, &tok, &prompt, &req);
    assert_eq!(stopped.text, " Pa");
    assert_eq!(stopped.finish, FinishReason::StopString);
    // The second call reused the cached prompt prefix.
    assert_eq!(stopped.cached_tokens, prompt.len() - 1);
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let (model, tok) = open("SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = tok.encode("Once upon a time", true, false);
    let run = |seed| {
        let mut s = Session::new(&model, 256).expect("session");
        let req = GenerateRequest {
            sampling: SamplingParams {
                temperature: 1.0,
                seed,
                ..Default::default()
            },
            max_tokens: 24,
            stop: Vec::new(),
        };
        generate(&mut s, &tok, &prompt, &req).tokens
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
}

#[test]
fn context_limits_are_errors_or_finish_reasons() {
    let (model, tok) = open("SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = tok.encode("The capital of France is", true, false);
    let mut s = Session::new(&model, prompt.len()).expect("session");
    let err = s
        .generate(&prompt, &greedy(4), &tok, &mut |_| true)
        .unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { .. }), "{err}");
    assert!(err.to_string().contains("context"), "{err}");

    let mut s = Session::new(&model, prompt.len() + 3).expect("session");
    let done = generate(&mut s, &tok, &prompt, &greedy(100));
    assert_eq!(done.finish, FinishReason::ContextFull);
    assert_eq!(done.tokens.len(), 4);

    let bad = GenerateRequest {
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 7.0,
            ..Default::default()
        },
        max_tokens: 4,
        stop: Vec::new(),
    };
    let mut s = Session::new(&model, 64).expect("session");
    let err = s.generate(&prompt, &bad, &tok, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[test]
fn chat_turns_reuse_the_cache_and_match_a_fresh_session() {
    let (model, tok) = open("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let file = GgufFile::open(
        &std::env::var_os("SMELT_ASSETS")
            .map_or_else(
                || {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default())
                        .join(".cache/smelt/assets")
                },
                PathBuf::from,
            )
            .join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    )
    .expect("open");
    let template = smelt_text::chat_template::ChatTemplate::from_gguf(&file)
        .expect("template")
        .expect("qwen has a template");
    use smelt_text::chat_template::ChatMessage;
    let mut messages = vec![ChatMessage::new("user", "Say hello in French, one word.")];
    let p1 = tok.encode(
        &template.render(&messages, true).expect("render"),
        false,
        true,
    );
    let mut s = Session::new(&model, 1024).expect("session");
    let r1 = generate(&mut s, &tok, &p1, &greedy(12));
    assert_eq!(r1.finish, FinishReason::EndOfGeneration, "{:?}", r1.text);
    println!("turn 1: {:?}", r1.text);
    messages.push(ChatMessage::new("assistant", r1.text.trim()));
    messages.push(ChatMessage::new(
        "user",
        "And in German? Unicode is fine: ß, ü.",
    ));
    let p2 = tok.encode(
        &template.render(&messages, true).expect("render"),
        false,
        true,
    );
    let r2 = generate(&mut s, &tok, &p2, &greedy(12));
    println!(
        "turn 2: {:?} ({} of {} prompt tokens cached)",
        r2.text, r2.cached_tokens, r2.prompt_tokens
    );
    assert!(
        r2.cached_tokens >= p1.len(),
        "turn 2 recomputed the first turn"
    );
    let mut fresh = Session::new(&model, 1024).expect("session");
    let r2_fresh = generate(&mut fresh, &tok, &p2, &greedy(12));
    assert_eq!(
        r2.tokens, r2_fresh.tokens,
        "cached and fresh sessions differ"
    );
}
