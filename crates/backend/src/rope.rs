//! Rotary position embedding parameters.

/// Which pairs of a head's values rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: GGUF's layout for Llama-family Q/K weights
    /// (the converter permutes HF's rotate-half rows into this order).
    Interleaved,
    /// Pairs `(i, i + n_rot/2)`: GPT-NeoX / HF rotate-half, used as stored by
    /// Qwen2, Gemma, Phi-3 and others.
    Neox,
}

/// Everything RoPE needs, with the per-pair inverse frequencies precomputed.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    pub style: RopeStyle,
    /// Width of one head.
    pub head_dim: usize,
    /// Leading values of each head that rotate (the rest pass through).
    pub n_rot: usize,
    /// `n_rot / 2` inverse frequencies, including scaling.
    pub inv_freq: Vec<f32>,
}

impl RopeParams {
    /// Frequencies `1 / base^(2i/n_rot)`, multiplied by `freq_scale` (linear
    /// scaling: 1/factor) and divided by per-pair `freq_factors` if given
    /// (Llama-3-style scaling as GGUF stores it).
    ///
    /// They are rounded to f32 the way HF transformers builds its table, so
    /// angles `pos * inv_freq` agree with the reference in f32.
    pub fn new(
        style: RopeStyle,
        head_dim: usize,
        n_rot: usize,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
    ) -> Self {
        let half = n_rot / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = (1.0 / (base as f64).powf((2 * i) as f64 / n_rot as f64)) as f32;
                let f = f * freq_scale;
                match freq_factors.and_then(|ff| ff.get(i)) {
                    Some(&div) => f / div,
                    None => f,
                }
            })
            .collect();
        RopeParams {
            style,
            head_dim,
            n_rot,
            inv_freq,
        }
    }

    /// Parameters from precomputed per-pair inverse frequencies (scalings
    /// such as Llama 3's, computed by the model loader). `inv_freq` holds
    /// `n_rot / 2` values.
    pub fn from_inv_freq(
        style: RopeStyle,
        head_dim: usize,
        n_rot: usize,
        inv_freq: Vec<f32>,
    ) -> Self {
        RopeParams {
            style,
            head_dim,
            n_rot,
            inv_freq,
        }
    }

    /// The two indices within a head that pair `i` rotates.
    pub fn pair(&self, i: usize) -> (usize, usize) {
        match self.style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + self.n_rot / 2),
        }
    }

    /// `(cos, sin)` of pair `i` at position `pos`. The angle is formed in f32
    /// as the reference does; its cosine and sine are then taken accurately.
    pub fn cos_sin(&self, pos: u32, i: usize) -> (f32, f32) {
        let theta = (pos as f32 * self.inv_freq[i]) as f64;
        (theta.cos() as f32, theta.sin() as f32)
    }
}
