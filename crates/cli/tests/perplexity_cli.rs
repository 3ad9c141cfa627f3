//! `smelt perplexity` as a user runs it, against perplexities computed
//! independently with HF transformers (scripts/make_perplexity_goldens.py)
//! on stories260K over a committed text, and its KL divergence mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use smelt_convert::{Mix, Options, quantize_file};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perplexity");

fn smelt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .output()
        .expect("run smelt")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn asset(name: &str) -> PathBuf {
    let dir = std::env::var_os("SMELT_ASSETS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/smelt/assets"),
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.exists(),
        "missing {}: run scripts/fetch-assets.sh (or set SMELT_ASSETS)",
        path.display()
    );
    path
}

fn stories() -> String {
    asset("stories260K.gguf")
        .to_str()
        .expect("utf-8")
        .to_string()
}

fn story_text() -> String {
    format!("{FIXTURES}/story.txt")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-ppl-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/stories260K.ppl.json"))
        .expect("read the golden");
    serde_json::from_str(&text).expect("parse the golden")
}

/// Runs `smelt perplexity` and checks it succeeded.
fn perplexity(args: &[&str]) -> Output {
    let mut all = vec!["perplexity"];
    all.extend_from_slice(args);
    let out = smelt(&all);
    assert!(
        out.status.success(),
        "smelt {all:?} failed:\n{}",
        stderr(&out)
    );
    out
}

/// The number after `label` on the line that has it (e.g. "PPL = ").
fn number_after(text: &str, label: &str) -> f64 {
    let rest = text
        .split_once(label)
        .unwrap_or_else(|| panic!("no '{label}' in:\n{text}"))
        .1
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("'{}' after '{label}': {e}", &rest[..end]))
}

/// The running values `[1]x,[2]y,...` of llama.cpp's output.
fn running(text: &str) -> Vec<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("[1]"))
        .unwrap_or_else(|| panic!("no running line in:\n{text}"));
    line.split(',')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            let (tag, value) = s.split_once(']').expect("[n]value");
            assert_eq!(tag, format!("[{}", i + 1));
            value.parse().expect("a number")
        })
        .collect()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    ((got - want) / want).abs() <= rel
}

#[test]
fn perplexity_matches_transformers_golden() {
    let golden = golden();
    let cases = golden["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let model = stories();
    let text = story_text();
    for case in cases {
        let ctx = case["ctx"].as_u64().expect("ctx").to_string();
        let chunks = case["chunks"].as_u64().expect("chunks").to_string();
        let out = perplexity(&[
            &model,
            &text,
            "--ctx",
            &ctx,
            "--chunks",
            &chunks,
            "--kv-type",
            "f32",
        ]);
        let (so, se) = (stdout(&out), stderr(&out));
        let n_tokens = golden["n_tokens"].as_u64().expect("n_tokens");
        assert!(se.contains(&format!("{n_tokens} tokens;")), "{se}");
        let want = case["ppl"].as_f64().expect("ppl");
        let want_err = case["ppl_stderr"].as_f64().expect("ppl_stderr");
        let got = number_after(&so, "Final estimate: PPL = ");
        let got_err = number_after(&so, "+/- ");
        assert!(close(got, want, 1e-3), "ctx {ctx}: PPL {got}, want {want}");
        assert!(
            close(got_err, want_err, 1e-2),
            "ctx {ctx}: +/- {got_err}, want {want_err}"
        );
        let want_running: Vec<f64> = case["running"]
            .as_array()
            .expect("running")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        let got_running = running(&so);
        assert_eq!(got_running.len(), want_running.len(), "{so}");
        for (g, w) in got_running.iter().zip(&want_running) {
            assert!(close(*g, *w, 1e-3), "ctx {ctx}: running {got_running:?}");
        }
    }
}

#[test]
fn default_f16_cache_stays_within_tolerance_and_batching_changes_nothing() {
    let golden = golden();
    let case = &golden["cases"][0];
    let want = case["ppl"].as_f64().expect("ppl");
    let ctx = case["ctx"].as_u64().expect("ctx").to_string();
    let (model, text) = (stories(), story_text());
    let outputs: Vec<String> = ["7", "128", "512"]
        .iter()
        .map(|batch| {
            stdout(&perplexity(&[
                &model, &text, "--ctx", &ctx, "--batch", batch,
            ]))
        })
        .collect();
    // Several passes per chunk, one chunk per pass, four chunks per pass.
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[1], outputs[2]);
    let got = number_after(&outputs[0], "PPL = ");
    assert!(close(got, want, 1e-3), "f16 KV: PPL {got}, want {want}");
}

#[test]
fn kl_of_a_model_against_itself_is_zero() {
    let golden = golden();
    let want = golden["cases"][0]["ppl"].as_f64().expect("ppl");
    let (model, text) = (stories(), story_text());
    let out = perplexity(&[
        &model,
        &text,
        "--ctx",
        "128",
        "--kv-type",
        "f32",
        "--kl-base",
        &model,
    ]);
    let so = stdout(&out);
    assert_eq!(number_after(&so, "Mean KLD       :"), 0.0, "{so}");
    assert_eq!(number_after(&so, "Same top p     :"), 100.0, "{so}");
    let q = number_after(&so, "Mean PPL(Q)    :");
    let base = number_after(&so, "Mean PPL(base) :");
    assert_eq!(q, base, "{so}");
    assert!(close(q, want, 1e-3), "PPL {q}, want {want}");
    assert_eq!(number_after(&so, "Predictions    :"), 21.0 * 63.0);
}

fn quantized(dir: &Path, mix: &str) -> String {
    let out = dir.join(format!("stories-{mix}.gguf"));
    let mix = Mix::from_name(mix).expect("a mix");
    quantize_file(&asset("stories260K.gguf"), &out, &mut Options::new(mix)).expect("quantize");
    out.to_str().expect("utf-8").to_string()
}

/// (PPL(Q), PPL(base), mean KLD, same top %) of `quant` against stories260K.
fn kl_against_stories(quant: &str) -> (f64, f64, f64, f64) {
    let (model, text) = (stories(), story_text());
    let out = perplexity(&[quant, &text, "--ctx", "128", "--kl-base", &model]);
    let so = stdout(&out);
    (
        number_after(&so, "Mean PPL(Q)    :"),
        number_after(&so, "Mean PPL(base) :"),
        number_after(&so, "Mean KLD       :"),
        number_after(&so, "Same top p     :"),
    )
}

#[test]
fn kl_of_q8_0_is_small_and_positive_and_q4_0_is_larger() {
    let dir = scratch("kl");
    let (q8_ppl, base_ppl, q8_kld, q8_top) = kl_against_stories(&quantized(&dir, "q8_0"));
    assert!(q8_kld > 0.0 && q8_kld < 0.005, "Q8_0 KLD {q8_kld}");
    assert!(q8_top > 97.0 && q8_top < 100.0, "Q8_0 same top {q8_top}%");
    assert!(close(q8_ppl, base_ppl, 0.01), "{q8_ppl} vs {base_ppl}");
    let (q4_ppl, base_ppl4, q4_kld, q4_top) = kl_against_stories(&quantized(&dir, "q4_0"));
    assert_eq!(base_ppl, base_ppl4);
    assert!(q4_kld > 10.0 * q8_kld, "Q4_0 KLD {q4_kld}, Q8_0 {q8_kld}");
    assert!(q4_top < q8_top, "same top Q4_0 {q4_top}%, Q8_0 {q8_top}%");
    assert!(q4_ppl > q8_ppl, "PPL Q4_0 {q4_ppl}, Q8_0 {q8_ppl}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let mut all = vec!["perplexity"];
    all.extend_from_slice(args);
    let out = smelt(&all);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for n in needles {
        assert!(err.contains(n), "no '{n}' in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn text_shorter_than_two_chunks_names_the_lengths() {
    // The golden's text is 2811 tokens: 1406 is the smallest ctx it cannot hold twice.
    fails_with(
        &[&stories(), &story_text(), "--ctx", "1406"],
        &["story.txt", "2811 tokens", "--ctx 1406", "2812"],
    );
}

#[test]
fn ctx_past_the_model_context_is_refused() {
    fails_with(
        &[&stories(), &story_text(), "--ctx", "4096"],
        &["--ctx 4096", "context of 2048 tokens"],
    );
}

#[test]
fn kl_base_with_another_vocabulary_is_refused() {
    let smollm = asset("SmolLM2-135M-Instruct.Q4_1.gguf");
    fails_with(
        &[
            &stories(),
            &story_text(),
            "--ctx",
            "128",
            "--kl-base",
            smollm.to_str().expect("utf-8"),
        ],
        &["different vocabulary", "49152", "512", "same tokenizer"],
    );
}

#[test]
fn unreadable_and_non_utf8_text_are_clear_errors() {
    let dir = scratch("bad-text");
    let bad = dir.join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9 au lait").expect("write");
    fails_with(
        &[&stories(), bad.to_str().expect("utf-8")],
        &["latin1.txt", "not UTF-8", "byte 3"],
    );
    let missing = dir.join("missing.txt");
    fails_with(
        &[&stories(), missing.to_str().expect("utf-8")],
        &["cannot read", "missing.txt"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
