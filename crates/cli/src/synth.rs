//! `smelt synth PRESET OUT.gguf`: writes a random-weight model of a known
//! shape (Llama-3.2-1B / Llama-3.1-8B with llama.cpp's Q4_K_M type mix, the
//! 8B in BF16, SmolLM2-135M in Q4_1) for speed measurements of shapes we
//! have no real file for: speed does not depend on the values. The file has
//! no vocabulary; `smelt bench` then skips the TTFT test.

use std::path::Path;

use smelt_model::synthetic::{PRESETS, SyntheticSpec};

/// Writes preset `name` to `out`.
pub fn synth(name: &str, out: &Path) -> Result<(), String> {
    let spec = SyntheticSpec::preset(name).ok_or_else(|| {
        format!(
            "unknown preset {name:?}: the presets are {}",
            PRESETS.join(", ")
        )
    })?;
    let t0 = std::time::Instant::now();
    spec.writer()
        .write(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "smelt synth: {name} → {} ({:.2} GB) in {:.1} s",
        out.display(),
        bytes as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
