//! `smelt info MODEL`: what a model file holds.

use std::collections::BTreeMap;

use smelt_gguf::{GgufFile, Value};
use smelt_model::ModelConfig;

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

pub fn info(model: &str, tensors: bool, metadata: bool) -> Result<(), String> {
    let path = fetch::resolve(model)?;
    let file = GgufFile::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "file:          {} ({}, GGUF v{})",
        path.display(),
        human(file.bytes().len() as u64),
        file.version()
    );
    println!(
        "name:          {}",
        file.get_str("general.name").unwrap_or("(unnamed)")
    );
    match ModelConfig::from_gguf(&file) {
        Ok(c) => {
            println!("architecture:  {}", c.arch.name());
            println!("context:       {} tokens (trained)", c.context_length);
            println!("vocab:         {}", c.vocab_size);
            println!(
                "layers:        {}   width {}   ffn {}",
                c.n_layers, c.d_model, c.d_ff
            );
            println!(
                "attention:     {} heads, {} kv heads, head dim {}",
                c.n_heads, c.n_kv_heads, c.head_dim
            );
            println!(
                "rope:          {:?}, base {}, {} dims, scale {}",
                c.rope_style, c.rope_base, c.rope_dims, c.rope_freq_scale
            );
            println!("rms eps:       {:e}", c.rms_eps);
            println!(
                "output:        {}",
                if file.tensor("output.weight").is_some() {
                    "separate"
                } else {
                    "tied to token_embd"
                }
            );
        }
        Err(e) => println!(
            "architecture:  {} (cannot run: {e})",
            file.get_str("general.architecture").unwrap_or("?")
        ),
    }
    println!(
        "tokenizer:     {} (pre: {}), {} tokens",
        file.get_str("tokenizer.ggml.model").unwrap_or("none"),
        file.get_str("tokenizer.ggml.pre").unwrap_or("-"),
        file.get_array("tokenizer.ggml.tokens")
            .map_or(0, |a| a.len())
    );
    println!(
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
    println!(
        "tensors:       {} ({:.1} M parameters, {}, {:.2} bits/weight)",
        file.tensors().len(),
        total_params as f64 / 1e6,
        human(total_bytes),
        total_bytes as f64 * 8.0 / total_params.max(1) as f64
    );
    for (ty, (n, bytes, elems)) in &by_type {
        println!(
            "  {ty:<6} {n:>4} tensors {:>10} {:>8.1} M values",
            human(*bytes),
            *elems as f64 / 1e6
        );
    }
    if metadata {
        println!("metadata:");
        for (k, v) in file.metadata() {
            println!("  {k} = {}", short(v));
        }
    }
    if tensors {
        println!("tensor list:");
        for t in file.tensors() {
            println!(
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
