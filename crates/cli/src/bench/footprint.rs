//! What a model costs in memory: the weight bytes one decode step reads, the
//! KV cache of a context, and a short description of the file.

use smelt_backend::{KvLayout, KvType};
use smelt_gguf::GgufFile;
use smelt_model::{KV_BLOCK_SIZE, ModelConfig};

/// Weight bytes read from memory to decode one token, by kind. Every matrix
/// of every layer and the output matrix are read whole; the embedding lookup
/// reads one row of the token table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenBytes {
    /// Q, K, V, attention output, gate, up and down of every layer.
    pub layer_matrices: u64,
    /// The unembedding (the token table itself when the output is tied).
    pub output_matrix: u64,
    /// RMS norm weights and Q/K/V biases.
    pub norms_and_biases: u64,
    /// One row of the token embedding table.
    pub embedding_row: u64,
}

impl TokenBytes {
    /// All bytes read per decoded token.
    pub fn total(&self) -> u64 {
        self.layer_matrices + self.output_matrix + self.norms_and_biases + self.embedding_row
    }
}

/// Per-layer matrices the forward pass multiplies by (GGUF names without `blk.N.`).
const LAYER_MATRICES: &[&str] = &[
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];
/// Per-layer vectors: always-present norms, then optional biases.
const LAYER_NORMS: &[&str] = &["attn_norm.weight", "ffn_norm.weight"];
const LAYER_BIASES: &[&str] = &["attn_q.bias", "attn_k.bias", "attn_v.bias"];

/// The bytes one decode step of `config`'s forward pass reads from `file`,
/// from the tensors' stored sizes (quantized bytes, not f32).
pub fn bytes_per_token(file: &GgufFile, config: &ModelConfig) -> Result<TokenBytes, String> {
    let size = |name: &str| -> Result<u64, String> {
        file.tensor(name)
            .map(|t| t.n_bytes)
            .ok_or_else(|| format!("model file has no tensor '{name}'"))
    };
    let mut b = TokenBytes::default();
    for i in 0..config.n_layers {
        for m in LAYER_MATRICES {
            b.layer_matrices += size(&format!("blk.{i}.{m}"))?;
        }
        for n in LAYER_NORMS {
            b.norms_and_biases += size(&format!("blk.{i}.{n}"))?;
        }
        for n in LAYER_BIASES {
            b.norms_and_biases += file
                .tensor(&format!("blk.{i}.{n}"))
                .map_or(0, |t| t.n_bytes);
        }
    }
    b.norms_and_biases += size("output_norm.weight")?;
    let embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| "model file has no tensor 'token_embd.weight'".to_string())?;
    b.embedding_row = embd
        .dtype
        .row_bytes(embd.row_len())
        .map_err(|e| format!("token_embd.weight: {e}"))?;
    b.output_matrix = match file.tensor("output.weight") {
        Some(t) => t.n_bytes,
        None => embd.n_bytes,
    };
    Ok(b)
}

/// Bytes of the K and V cache of `dtype` values that holds `ctx` positions
/// (whole blocks).
pub fn kv_cache_bytes(config: &ModelConfig, ctx: usize, dtype: KvType) -> u64 {
    let layout = KvLayout {
        n_layers: config.n_layers,
        n_blocks: ctx.div_ceil(KV_BLOCK_SIZE),
        block_size: KV_BLOCK_SIZE,
        n_kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
        dtype,
    };
    layout.bytes().map_or(u64::MAX, |b| b as u64)
}

/// Parameters (elements of every tensor).
pub fn param_count(file: &GgufFile) -> u64 {
    file.tensors().iter().map(|t| t.n_elements()).sum()
}

/// The quantization mix as llama.cpp names it (`general.file_type`), or the
/// type holding the most bytes when the file states none we know.
pub fn quant_label(file: &GgufFile) -> String {
    // llama.cpp's `llama_ftype` values (a format fact of GGUF files).
    let named = match file.get_u64("general.file_type") {
        Some(0) => Some("F32"),
        Some(1) => Some("F16"),
        Some(2) => Some("Q4_0"),
        Some(3) => Some("Q4_1"),
        Some(7) => Some("Q8_0"),
        Some(8) => Some("Q5_0"),
        Some(9) => Some("Q5_1"),
        Some(10) => Some("Q2_K"),
        Some(11) => Some("Q3_K_S"),
        Some(12) => Some("Q3_K_M"),
        Some(13) => Some("Q3_K_L"),
        Some(14) => Some("Q4_K_S"),
        Some(15) => Some("Q4_K_M"),
        Some(16) => Some("Q5_K_S"),
        Some(17) => Some("Q5_K_M"),
        Some(18) => Some("Q6_K"),
        Some(32) => Some("BF16"),
        _ => None,
    };
    if let Some(n) = named {
        return n.to_string();
    }
    let mut by_type: Vec<(&str, u64)> = Vec::new();
    for t in file.tensors() {
        match by_type.iter_mut().find(|(n, _)| *n == t.dtype.name()) {
            Some(e) => e.1 += t.n_bytes,
            None => by_type.push((t.dtype.name(), t.n_bytes)),
        }
    }
    by_type
        .iter()
        .max_by_key(|(_, b)| *b)
        .map_or_else(|| "?".to_string(), |(n, _)| (*n).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_model::synthetic::SyntheticSpec;
    use smelt_tensor::DType;

    fn file_of(spec: &SyntheticSpec) -> GgufFile {
        let bytes = spec.writer().to_bytes().unwrap();
        GgufFile::from_bytes(bytes).unwrap()
    }

    /// Bytes of a `[n_in, n_out]` tensor of `dtype`, from the block format.
    fn matrix(dtype: DType, n_in: usize, n_out: usize) -> u64 {
        dtype.row_bytes(n_in as u64).unwrap() * n_out as u64
    }

    #[test]
    fn tied_llama_reads_every_layer_matrix_the_whole_table_and_one_row() {
        let spec = SyntheticSpec {
            n_layers: 3,
            d_model: 64,
            d_ff: 96,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 80,
            weight_type: DType::Q4_1,
            embd_type: DType::Q8_0,
            ..SyntheticSpec::default()
        };
        let file = file_of(&spec);
        let config = ModelConfig::from_gguf(&file).unwrap();
        let b = bytes_per_token(&file, &config).unwrap();
        // head_dim 16: q is 64 wide, k and v 32.
        let per_layer = matrix(DType::Q4_1, 64, 64) * 2
            + matrix(DType::Q4_1, 64, 32) * 2
            + matrix(DType::Q4_1, 64, 96) * 2
            + matrix(DType::Q4_1, 96, 64);
        assert_eq!(b.layer_matrices, 3 * per_layer);
        assert_eq!(b.output_matrix, matrix(DType::Q8_0, 64, 80));
        assert_eq!(b.embedding_row, matrix(DType::Q8_0, 64, 1));
        // attn_norm, ffn_norm per layer and output_norm, f32.
        assert_eq!(b.norms_and_biases, (3 * 2 + 1) * 64 * 4);
        // Tied: every tensor of the file is read once, plus the looked-up row.
        let all: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
        assert_eq!(b.total(), all + b.embedding_row);
    }

    #[test]
    fn untied_qwen2_counts_biases_and_the_output_not_the_table() {
        let spec = SyntheticSpec {
            arch: "qwen2".into(),
            n_layers: 2,
            tied_output: false,
            weight_type: DType::Q4K,
            embd_type: DType::Q6K,
            d_model: 256,
            d_ff: 512,
            n_heads: 4,
            n_kv_heads: 1,
            vocab_size: 40,
            ..SyntheticSpec::default()
        };
        let file = file_of(&spec);
        let config = ModelConfig::from_gguf(&file).unwrap();
        let b = bytes_per_token(&file, &config).unwrap();
        // q bias 256 + k, v bias 64 each, 2 norms of 256, per layer; output_norm.
        assert_eq!(
            b.norms_and_biases,
            (2 * (256 + 64 + 64 + 2 * 256) + 256) * 4
        );
        assert_eq!(b.output_matrix, matrix(DType::Q6K, 256, 40));
        let table = file.tensor("token_embd.weight").unwrap().n_bytes;
        let all: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
        assert_eq!(b.total(), all - table + matrix(DType::Q6K, 256, 1));
    }

    #[test]
    fn kv_bytes_round_up_to_whole_blocks() {
        let file = file_of(&SyntheticSpec::default());
        let c = ModelConfig::from_gguf(&file).unwrap();
        // 2 layers, 2 kv heads of 16, K and V; 17 positions take 2 blocks.
        assert_eq!(kv_cache_bytes(&c, 17, KvType::F32), 2 * 32 * 2 * 32 * 4);
        assert_eq!(kv_cache_bytes(&c, 16, KvType::F32), 2 * 16 * 2 * 32 * 4);
        assert_eq!(kv_cache_bytes(&c, 16, KvType::F16), 2 * 16 * 2 * 32 * 2);
    }

    #[test]
    fn quant_label_falls_back_to_the_heaviest_type() {
        let file = file_of(&SyntheticSpec {
            weight_type: DType::Q5_0,
            embd_type: DType::Q8_0,
            ..SyntheticSpec::default()
        });
        // No general.file_type: the Q5_0 matrices of two layers (42 kB)
        // outweigh the 80-row Q8_0 table (5 kB).
        assert_eq!(quant_label(&file), "Q5_0");
    }
}
