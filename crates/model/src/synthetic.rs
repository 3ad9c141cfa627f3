//! Random-weight models of any shape, written as GGUF: for tests (tiny
//! models that exercise every code path in milliseconds) and for benchmarks
//! of shapes we have no real file for. Speed does not depend on the values;
//! correctness tests compare backends and paths on the same random model.

use smelt_backend::testing::{TestRng, random_weight};
use smelt_gguf::{GgufWriter, Value};
use smelt_tensor::DType;

/// The shape and types of a synthetic model.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    /// `general.architecture`: "llama" or "qwen2" (which adds Q/K/V biases).
    pub arch: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    /// Type of the big matrices.
    pub weight_type: DType,
    /// Type of the token embedding (and output, when untied).
    pub embd_type: DType,
    pub tied_output: bool,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            arch: "llama".into(),
            n_layers: 2,
            d_model: 64,
            d_ff: 96,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 80,
            context_length: 256,
            weight_type: DType::Q8_0,
            embd_type: DType::Q8_0,
            tied_output: true,
            seed: 1,
        }
    }
}

impl SyntheticSpec {
    /// A GGUF writer holding the model's metadata and random tensors.
    pub fn writer(&self) -> GgufWriter {
        let mut rng = TestRng::new(self.seed);
        let mut w = GgufWriter::new();
        let a = &self.arch;
        let u32v = |v: usize| Value::U32(v as u32);
        w.set("general.architecture", Value::String(a.clone()));
        w.set("general.name", Value::String(format!("synthetic {a}")));
        w.set(format!("{a}.block_count"), u32v(self.n_layers));
        w.set(format!("{a}.context_length"), u32v(self.context_length));
        w.set(format!("{a}.embedding_length"), u32v(self.d_model));
        w.set(format!("{a}.feed_forward_length"), u32v(self.d_ff));
        w.set(format!("{a}.attention.head_count"), u32v(self.n_heads));
        w.set(
            format!("{a}.attention.head_count_kv"),
            u32v(self.n_kv_heads),
        );
        w.set(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        );
        w.set(format!("{a}.rope.freq_base"), Value::F32(10_000.0));
        let head_dim = self.d_model / self.n_heads;
        let (d, q, kv, ff) = (
            self.d_model,
            self.n_heads * head_dim,
            self.n_kv_heads * head_dim,
            self.d_ff,
        );
        let mut add = |name: String, dtype: DType, n_in: usize, n_out: usize, rng: &mut TestRng| {
            let t = random_weight(rng, dtype, n_in, n_out);
            let dims: Vec<u64> = if n_out == 1 {
                vec![n_in as u64]
            } else {
                vec![n_in as u64, n_out as u64]
            };
            if let Err(e) = w.add_tensor(name.clone(), dims, dtype, t.bytes().to_vec()) {
                panic!("synthetic tensor {name}: {e}");
            }
        };
        add(
            "token_embd.weight".into(),
            self.embd_type,
            d,
            self.vocab_size,
            &mut rng,
        );
        add("output_norm.weight".into(), DType::F32, d, 1, &mut rng);
        if !self.tied_output {
            add(
                "output.weight".into(),
                self.embd_type,
                d,
                self.vocab_size,
                &mut rng,
            );
        }
        let wt = self.weight_type;
        for i in 0..self.n_layers {
            let n = |t: &str| format!("blk.{i}.{t}");
            add(n("attn_norm.weight"), DType::F32, d, 1, &mut rng);
            add(n("attn_q.weight"), wt, d, q, &mut rng);
            add(n("attn_k.weight"), wt, d, kv, &mut rng);
            add(n("attn_v.weight"), wt, d, kv, &mut rng);
            if self.arch == "qwen2" {
                add(n("attn_q.bias"), DType::F32, q, 1, &mut rng);
                add(n("attn_k.bias"), DType::F32, kv, 1, &mut rng);
                add(n("attn_v.bias"), DType::F32, kv, 1, &mut rng);
            }
            add(n("attn_output.weight"), wt, q, d, &mut rng);
            add(n("ffn_norm.weight"), DType::F32, d, 1, &mut rng);
            add(n("ffn_gate.weight"), wt, d, ff, &mut rng);
            add(n("ffn_up.weight"), wt, d, ff, &mut rng);
            add(n("ffn_down.weight"), wt, ff, d, &mut rng);
        }
        w
    }
}
