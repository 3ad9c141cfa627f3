//! The step program (kernels/program.cu) runs the recorded launches of the
//! staged products and the attention in one persistent kernel: every
//! decode step's logits must equal, bit for bit, those of the same launches
//! sent one kernel each, for every weight type it takes, through the
//! graph's capture and its replays. The programs are opt-in: run with
//! `SMELT_CUDA_PROGRAM=1` (scripts/gpu-test.sh does), else this skips.

mod common;

use std::sync::Arc;

use common::backend;
use smelt_gguf::GgufFile;
use smelt_model::synthetic::SyntheticSpec;
use smelt_model::{Batch, KvType, Model};
use smelt_tensor::DType;

/// Logits of `n` decode steps from a 3-token prompt, with programs on or off.
fn logits(file: &Arc<GgufFile>, programs: bool, n: usize) -> (Vec<Vec<f32>>, u64) {
    let mut be = backend("step_program").expect("cuda");
    be.set_programs(programs);
    let m = Model::load(file.clone(), be).expect("load");
    let blocks = (n + 4).div_ceil(m.kv_block_size()) + 1;
    let table: Vec<u32> = (0..blocks as u32).rev().collect();
    let mut kv = m.new_kv(blocks, KvType::F16).expect("kv");
    let mut out = Vec::new();
    let prompt = [3u32, 17, 9];
    let batch = Batch {
        tokens: &prompt,
        positions: &[0, 1, 2],
        block_tables: &[&table, &table, &table],
        logits_rows: &[2],
    };
    let first = m.forward(&mut kv, &batch).expect("prompt");
    out.push(first.data.clone());
    let mut token = 5u32;
    for p in 3..3 + n as u32 {
        let batch = Batch {
            tokens: &[token],
            positions: &[p],
            block_tables: &[&table],
            logits_rows: &[0],
        };
        let l = m.forward(&mut kv, &batch).expect("step");
        // The next token from the logits, so the steps differ.
        token = l.data.iter().map(|v| v.to_bits()).fold(p, |a, b| a ^ b) % 64;
        out.push(l.data.clone());
    }
    (out, m.backend().program_launches())
}

#[test]
fn programs_give_the_logits_of_separate_launches() {
    let Some(probe) = backend("programs_give_the_logits_of_separate_launches") else {
        return;
    };
    drop(probe);
    if !smelt_cuda::compile::programs_wanted() {
        common::notice(
            "SKIPPED programs_give_the_logits_of_separate_launches: step programs are opt-in (SMELT_CUDA_PROGRAM=1)",
        );
        return;
    }
    for (i, wt) in [DType::Q4_1, DType::Q8_0, DType::Q4K, DType::Q6K]
        .into_iter()
        .enumerate()
    {
        let spec = SyntheticSpec {
            arch: "llama".into(),
            n_layers: 3,
            d_model: 256,
            d_ff: 768,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 320,
            weight_type: wt,
            embd_type: DType::Q8_0,
            seed: 70 + i as u64,
            ..SyntheticSpec::default()
        };
        let mut bytes = Vec::new();
        spec.writer().write_to(&mut bytes).expect("write");
        let file = Arc::new(GgufFile::from_bytes(bytes).expect("read back"));
        let n = 24;
        let (want, none) = logits(&file, false, n);
        assert_eq!(none, 0, "{wt}: programs ran while off");
        let (got, built) = logits(&file, true, n);
        assert!(built > 0, "{wt}: no step program was built");
        assert!(
            want[0].iter().any(|&v| v != want[0][0]),
            "{wt}: flat logits"
        );
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            let same =
                g.len() == w.len() && g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{wt}: step {s}: logits differ with the step program");
        }
    }
}
