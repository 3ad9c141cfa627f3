//! llama.cpp's tokenizer test vectors: for each vocab-only GGUF
//! `ggml-vocab-NAME.gguf`, `NAME.gguf.inp` holds the inputs (each followed by
//! a line `__ggml_vocab_test__`) and `NAME.gguf.out` the expected ids, one
//! line per input. The ids are HF `encode(text, add_special_tokens=False)`:
//! no BOS/EOS, and the inputs hold no special-token strings, so they are
//! encoded here with `add_special = false, parse_special = false`.
//!
//! Fetch the vectors with `scripts/fetch-vocab-vectors.sh`.

use std::path::PathBuf;

use smelt_gguf::GgufFile;
use smelt_text::tokenizer::Tokenizer;

/// Vocabularies that must pass every case.
const MUST_PASS: &[&str] = &["gpt-2", "llama-bpe", "qwen2", "llama-spm", "phi-3"];

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

fn vocab_dir() -> PathBuf {
    let assets = std::env::var_os("SMELT_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/smelt/assets")))
        .expect("neither SMELT_ASSETS nor HOME is set");
    let dir = assets.join("vocab");
    assert!(
        dir.join("ggml-vocab-gpt-2.gguf.inp").is_file(),
        "llama.cpp tokenizer vectors not found in {}: run scripts/fetch-vocab-vectors.sh",
        dir.display()
    );
    dir
}

/// (input, expected ids) pairs of one vocabulary.
fn cases(dir: &std::path::Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp")))
        .expect("read .inp");
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out")))
        .expect("read .out");
    // Each input is followed by the separator (the last one's newline may be missing).
    let inp = inp
        .strip_suffix(SEPARATOR)
        .or_else(|| inp.strip_suffix(SEPARATOR.trim_end_matches('\n')))
        .unwrap_or(&inp);
    let inputs: Vec<&str> = inp.split(SEPARATOR).collect();
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the case count"
    );
    inputs
        .into_iter()
        .map(str::to_string)
        .zip(outputs)
        .collect()
}

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = vocab_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list vocab dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("ggml-vocab-")?
                    .strip_suffix(".gguf.inp")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    for must in MUST_PASS {
        assert!(
            names.iter().any(|n| n == must),
            "vectors for {must} missing from {}",
            dir.display()
        );
    }

    let mut failures = Vec::new();
    println!(
        "\n{:<16} {:>6} {:>6}  {:>7}  note",
        "vocab", "pass", "cases", "rate"
    );
    for name in &names {
        let cases = cases(&dir, name);
        let file =
            GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).expect("open vocab gguf");
        let tok = match Tokenizer::from_gguf(&file) {
            Ok(t) => t,
            Err(e) => {
                println!(
                    "{name:<16} {:>6} {:>6}  {:>7}  unsupported: {e}",
                    "-",
                    cases.len(),
                    "-"
                );
                if MUST_PASS.contains(&name.as_str()) {
                    failures.push(format!("{name}: {e}"));
                }
                continue;
            }
        };
        let mut pass = 0;
        let mut first_fail = None;
        for (text, want) in &cases {
            let got = tok.encode(text, false, false);
            if &got == want {
                pass += 1;
            } else if first_fail.is_none() {
                first_fail = Some(format!("{text:?}: want {want:?}, got {got:?}"));
            }
        }
        let rate = 100.0 * pass as f64 / cases.len() as f64;
        let note = first_fail.clone().unwrap_or_default();
        let note: String = note.chars().take(160).collect();
        println!(
            "{name:<16} {pass:>6} {:>6}  {rate:>6.1}%  {note}",
            cases.len()
        );
        if MUST_PASS.contains(&name.as_str()) && pass != cases.len() {
            failures.push(format!(
                "{name}: {pass}/{} ({})",
                cases.len(),
                first_fail.unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "vocabularies that must pass fail:\n{}",
        failures.join("\n")
    );
}
