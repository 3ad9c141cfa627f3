//! `smelt run|chat|info|convert` on a Hugging Face model directory, as a
//! user runs them: the tiny fixture models of crates/model (made by
//! scripts/make_arch_fixtures.py, with a 256-token byte-level BPE tokenizer
//! and a chat template), and broken copies of one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn smelt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .output()
        .expect("run smelt")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures")
        .join(family)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-hfcli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `smelt run MODEL "the cat" --temp 0 -n 8` on the CPU; its stdout.
fn run_greedy(model: &Path) -> String {
    let out = smelt(&[
        "run",
        s(model),
        "the cat",
        "--temp",
        "0",
        "-n",
        "8",
        "--device",
        "cpu",
        "--kv-type",
        "f32",
    ]);
    assert!(
        out.status.success(),
        "smelt run {} failed: {}",
        model.display(),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("generated"),
        "{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn run_on_a_directory_streams_and_matches_its_converted_gguf() {
    let tmp = scratch("run");
    for family in ["qwen2", "llama", "gemma3"] {
        let dir = fixture(family);
        let from_dir = run_greedy(&dir);
        assert!(from_dir.starts_with("the cat"), "{from_dir:?}");
        assert!(
            from_dir.trim_end().len() > "the cat".len(),
            "{family}: nothing generated: {from_dir:?}"
        );
        // The same model converted to GGUF generates the same text.
        let gguf = tmp.join(format!("{family}.gguf"));
        let conv = smelt(&["convert", s(&dir), s(&gguf), "--type", "f32"]);
        assert!(conv.status.success(), "{}", text(&conv.stderr));
        assert_eq!(run_greedy(&gguf), from_dir, "{family}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn chat_on_a_directory_uses_its_template() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args([
            "chat",
            s(&fixture("qwen2")),
            "--temp",
            "0",
            "-n",
            "6",
            "--device",
            "cpu",
            "-v",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smelt chat");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello\n/exit\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("no chat template"), "{err}");
    assert!(err.contains("generated"), "{err}");
}

#[test]
fn info_on_a_directory_prints_the_config() {
    let out = smelt(&["info", s(&fixture("gemma3")), "--tensors"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for want in [
        "architecture:  gemma3",
        "windows:       6 global 6",
        "tied to token_embd",
        "256 tokens",
        "chat template: yes",
        "model.layers.0.self_attn.q_norm.weight",
    ] {
        assert!(stdout.contains(want), "no {want:?} in\n{stdout}");
    }
}

#[test]
fn broken_directories_fail_with_the_file_or_field_named() {
    let tmp = scratch("broken");
    let src = fixture("qwen2");
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let fails = |what: &str, want: &[&str]| {
        for cmd in ["run", "info", "convert"] {
            let out_path = tmp.join("out.gguf");
            let mut args = vec![cmd, s(&dir)];
            match cmd {
                "run" => args.extend(["hi", "-n", "2", "--device", "cpu"]),
                "convert" => args.extend([s(&out_path), "--type", "f16"]),
                _ => {}
            }
            let out = smelt(&args);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted {what}");
            for w in want {
                assert!(err.contains(w), "{cmd} with {what}: {w:?} not in {err}");
            }
            assert!(!err.contains("panicked"), "{err}");
            assert!(!out_path.exists(), "convert left {}", out_path.display());
        }
    };
    fails("no config.json", &["config.json"]);
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"qwen2\"", "\"gpt_neox\""),
    )
    .expect("write");
    fails(
        "an unknown architecture",
        &["gpt_neox", "unsupported architecture"],
    );
    std::fs::write(
        dir.join("config.json"),
        config.replace(
            "\"num_attention_heads\": 4",
            "\"num_attention_heads\": \"4\"",
        ),
    )
    .expect("write");
    fails("a bad field", &["num_attention_heads"]);
    std::fs::write(dir.join("config.json"), &config).expect("write");
    let bytes = std::fs::read(src.join("model.safetensors")).expect("read");
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).expect("write");
    fails(
        "a truncated safetensors file",
        &["model.safetensors", "data_offsets"],
    );
    let mut garbled = bytes.clone();
    garbled[8..16].copy_from_slice(b"garbage!");
    std::fs::write(dir.join("model.safetensors"), &garbled).expect("write");
    fails(
        "a corrupt safetensors header",
        &["model.safetensors", "header"],
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn converting_a_directory_without_a_tokenizer_needs_no_tokenizer() {
    let tmp = scratch("no-tokenizer");
    let src = fixture("qwen2");
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let out_path = tmp.join("out.gguf");
    let out = smelt(&["convert", s(&dir), s(&out_path), "--type", "f16"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "converted a directory without tokenizer.json"
    );
    for want in ["tokenizer.json", "--no-tokenizer"] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out_path.exists(), "convert left {}", out_path.display());

    let out = smelt(&[
        "convert",
        s(&dir),
        s(&out_path),
        "--type",
        "f16",
        "--no-tokenizer",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "--no-tokenizer: {err}");
    assert!(err.contains("no tokenizer.json"), "no note in {err}");
    assert!(out_path.is_file());
    let _ = std::fs::remove_dir_all(&tmp);
}
