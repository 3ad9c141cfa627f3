//! `smelt info MODEL`: what a model file (or Hugging Face directory) holds.

use std::collections::BTreeMap;
use std::path::Path;

use smelt_gguf::{GgufFile, Value};
use smelt_model::{HfSource, ModelConfig};
use smelt_text::hf::{HfTextConfig, TOKENIZER_JSON};

use crate::fetch;

fn short(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() > 60 => {
            format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(60)], s.len())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) if a.len() > 8 => format!(
            "[{} values of {}]",
            a.len(),
            a.first().map_or("?", |x| x.type_name())
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(short).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    }
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// The config lines both formats print.
fn print_config(c: &ModelConfig, tied: bool) {
    outln!("architecture:  {}", c.arch.name());
    outln!("context:       {} tokens (trained)", c.context_length);
    outln!("vocab:         {}", c.vocab_size);
    outln!(
        "layers:        {}   width {}   ffn {}",
        c.n_layers,
        c.d_model,
        c.d_ff
    );
    outln!(
        "attention:     {} heads, {} kv heads, head dim {}",
        c.n_heads,
        c.n_kv_heads,
        c.head_dim
    );
    outln!(
        "rope:          {:?}, base {}, {} dims, scale {}{}",
        c.rope_style,
        c.rope_base,
        c.rope_dims,
        c.rope_freq_scale,
        if c.rope_llama3.is_some() {
            ", llama3 scaling"
        } else {
            ""
        }
    );
    let windows: Vec<String> = c
        .layer_windows
        .iter()
        .map(|w| w.map_or("global".to_string(), |w| w.to_string()))
        .collect();
    if c.layer_windows.iter().any(Option::is_some) {
        outln!("windows:       {}", windows.join(" "));
    }
    outln!("rms eps:       {:e}", c.rms_eps);
    outln!(
        "output:        {}",
        if tied {
            "tied to token_embd"
        } else {
            "separate"
        }
    );
}

/// `smelt info DIR`: config.json as Smelt reads it, the tokenizer, and the
/// safetensors tensors.
fn info_hf(dir: &Path, tensors: bool, metadata: bool) -> Result<(), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", dir.display());
    let (config, source) = HfSource::open_dir(dir).map_err(|e| at(&e))?;
    let list = source.hf_tensors();
    outln!("directory:     {} (Hugging Face)", dir.display());
    let tied = !list.iter().any(|(n, _, _)| n == "lm_head.weight");
    print_config(&config, tied);
    if dir.join(TOKENIZER_JSON).is_file() {
        let text = HfTextConfig::from_dir(dir).map_err(|e| e.to_string())?;
        outln!(
            "tokenizer:     {} tokens, end of generation {:?}",
            text.tokenizer.vocab_size(),
            text.tokenizer.end_of_generation_ids()
        );
        outln!(
            "chat template: {}",
            if text.chat_template.is_some() {
                "yes"
            } else {
                "no"
            }
        );
    } else {
        outln!("tokenizer:     none ({TOKENIZER_JSON} is missing: cannot run)");
    }
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let n_elems = |shape: &[usize]| shape.iter().product::<usize>() as u64;
    for (_, dtype, shape) in &list {
        let e = by_type.entry(dtype.name()).or_default();
        e.0 += 1;
        e.1 += n_elems(shape);
    }
    let total: u64 = list.iter().map(|(_, _, s)| n_elems(s)).sum();
    outln!(
        "tensors:       {} ({:.1} M parameters)",
        list.len(),
        total as f64 / 1e6
    );
    for (ty, (n, elems)) in &by_type {
        outln!(
            "  {ty:<6} {n:>4} tensors {:>8.1} M values",
            *elems as f64 / 1e6
        );
    }
    if metadata {
        let text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| at(&e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| at(&e))?;
        outln!("config.json:");
        for (k, v) in json.as_object().into_iter().flatten() {
            outln!("  {k} = {v}");
        }
    }
    if tensors {
        outln!("tensor list:");
        for (name, dtype, shape) in &list {
            outln!("  {name:<48} {:<6} {shape:?}", dtype.name());
        }
    }
    Ok(())
}

pub fn info(model: &str, tensors: bool, metadata: bool) -> Result<(), String> {
    let path = fetch::resolve(model)?;
    if path.is_dir() {
        return info_hf(&path, tensors, metadata);
    }
    let file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    outln!(
        "file:          {} ({}, GGUF v{})",
        path.display(),
        human(file.bytes().len() as u64),
        file.version()
    );
    outln!(
        "name:          {}",
        file.get_str("general.name").unwrap_or("(unnamed)")
    );
    match ModelConfig::from_gguf(&file) {
        Ok(c) => print_config(&c, file.tensor("output.weight").is_none()),
        Err(e) => outln!(
            "architecture:  {} (cannot run: {e})",
            file.get_str("general.architecture").unwrap_or("?")
        ),
    }
    outln!(
        "tokenizer:     {} (pre: {}), {} tokens",
        file.get_str("tokenizer.ggml.model").unwrap_or("none"),
        file.get_str("tokenizer.ggml.pre").unwrap_or("-"),
        file.get_array("tokenizer.ggml.tokens")
            .map_or(0, |a| a.len())
    );
    outln!(
        "chat template: {}",
        if file.get("tokenizer.chat_template").is_some() {
            "yes"
        } else {
            "no"
        }
    );
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let e = by_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        e.2 += t.n_elements();
    }
    let total_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let total_bytes: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    outln!(
        "tensors:       {} ({:.1} M parameters, {}, {:.2} bits/weight)",
        file.tensors().len(),
        total_params as f64 / 1e6,
        human(total_bytes),
        total_bytes as f64 * 8.0 / total_params.max(1) as f64
    );
    for (ty, (n, bytes, elems)) in &by_type {
        outln!(
            "  {ty:<6} {n:>4} tensors {:>10} {:>8.1} M values",
            human(*bytes),
            *elems as f64 / 1e6
        );
    }
    if metadata {
        outln!("metadata:");
        for (k, v) in file.metadata() {
            outln!("  {k} = {}", short(v));
        }
    }
    if tensors {
        outln!("tensor list:");
        for t in file.tensors() {
            outln!(
                "  {:<32} {:<6} {:?} {}",
                t.name,
                t.dtype.name(),
                t.dims,
                human(t.n_bytes)
            );
        }
    }
    Ok(())
}
