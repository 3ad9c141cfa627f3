//! `Model::decode_greedy` on CUDA chains its steps on the device (each
//! step's input is the previous step's argmax where the logits are, queued
//! before the host reads that token): it must give exactly the tokens of
//! `forward_greedy` step by step, also across a stop and a continued run.

mod common;

use std::sync::Arc;

use common::backend;
use smelt_backend::Backend;
use smelt_engine::{GenerateRequest, SamplingParams, Session};
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;
use smelt_text::tokenizer::Tokenizer;

fn step_by_step<B: Backend>(m: &Model<B>, table: &[u32], first: u32, n: usize) -> Vec<u32> {
    let mut kv = m.new_kv(table.len(), KvType::F16).expect("kv");
    let mut out = Vec::new();
    let mut token = first;
    for p in 0..n as u32 {
        let batch = Batch {
            tokens: &[token],
            positions: &[p],
            block_tables: &[table],
            logits_rows: &[0],
        };
        token = match m.forward_greedy(&mut kv, &batch) {
            Ok(t) => t[0],
            Err(e) => panic!("step {p}: {e}"),
        };
        out.push(token);
    }
    out
}

#[test]
fn chained_decode_matches_step_by_step() {
    let Some(probe) = backend("chained_decode_matches_step_by_step") else {
        return;
    };
    drop(probe);
    for (i, (wt, vocab)) in [(DType::Q4_1, 96usize), (DType::Q4K, 300)]
        .into_iter()
        .enumerate()
    {
        let spec = SyntheticSpec {
            arch: "llama".into(),
            n_layers: 2,
            d_model: 256,
            d_ff: 512,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: vocab,
            weight_type: wt,
            embd_type: DType::Q8_0,
            seed: 40 + i as u64,
            ..SyntheticSpec::default()
        };
        let mut bytes = Vec::new();
        spec.writer().write_to(&mut bytes).expect("write");
        let file = Arc::new(GgufFile::from_bytes(bytes).expect("read back"));
        let mut be = backend("chained_decode_matches_step_by_step").expect("cuda");
        be.set_chained(true);
        assert!(be.chains_greedy());
        let m = Model::load(file, be).expect("load");
        let n: usize = 40;
        let blocks = (n + 1).div_ceil(m.kv_block_size()) + 1;
        let table: Vec<u32> = (0..blocks as u32).rev().collect();
        let want = step_by_step(&m, &table, 5, n);
        assert!(want.iter().any(|&t| t != want[0]), "{wt}: {want:?}");

        let mut kv = m.new_kv(blocks, KvType::F16).expect("kv");
        let got = m
            .decode_greedy(&mut kv, &table, 0, 5, n, |_| true)
            .expect("decode");
        assert_eq!(got, want, "{wt}: chained tokens differ");
        // The steady state replays one graph.
        let (replays, _) = m.backend.graph_counts();
        assert!(replays >= n as u64 / 2, "{wt}: {replays} graph replays");

        // Stopped after 9 tokens (one more step already ran), continued.
        let mut kv = m.new_kv(blocks, KvType::F16).expect("kv");
        let mut count = 0;
        let head = m
            .decode_greedy(&mut kv, &table, 0, 5, n, |_| {
                count += 1;
                count < 9
            })
            .expect("decode");
        assert_eq!(head, want[..9], "{wt}: stopped run");
        let tail = m
            .decode_greedy(&mut kv, &table, 9, head[8], n - 9, |_| true)
            .expect("decode");
        assert_eq!(tail, want[9..], "{wt}: continued run");
        // A stale ticket is an error, not a panic or a wrong token.
        assert!(m.backend.chained_ids(0).is_err());
    }
}

/// `Session::generate` decodes greedily through the chained steps on CUDA:
/// the same text and tokens as stepping one token at a time, with a stop
/// string, a token limit and a continued conversation.
#[test]
fn session_generate_chained_matches_step_by_step() {
    let Some(probe) = backend("session_generate_chained_matches_step_by_step") else {
        return;
    };
    drop(probe);
    let Some(path) = common::asset("stories260K.gguf") else {
        return;
    };
    let file = Arc::new(GgufFile::open(&path).expect("open"));
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let run = |chained: bool| {
        let mut be = backend("session_generate_chained_matches_step_by_step").expect("cuda");
        be.set_chained(chained);
        assert_eq!(be.chains_greedy(), chained);
        let model = Model::load(file.clone(), be).expect("load");
        let mut session = Session::new(&model, 256).expect("session");
        let mut outs = Vec::new();
        let prompt = tok.encode("Once upon a time", true, false);
        for (max_tokens, stop) in [(40, vec![]), (60, vec!["the".to_string()]), (300, vec![])] {
            let req = GenerateRequest {
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..Default::default()
                },
                max_tokens,
                stop,
            };
            let mut streamed = String::new();
            let done = session
                .generate(&prompt, &req, &tok, &mut |piece| {
                    streamed.push_str(piece);
                    true
                })
                .expect("generate");
            assert_eq!(streamed, done.text);
            outs.push((done.text, done.tokens, done.finish));
        }
        outs
    };
    let step = run(false);
    let chained = run(true);
    for (s, c) in step.iter().zip(&chained) {
        println!("{:?} after {} tokens: {:?}", s.2, s.1.len(), s.0);
        assert_eq!(c, s, "chained generation differs");
    }
    assert!(step[0].1.len() > 10, "{:?}", step[0]);
}
