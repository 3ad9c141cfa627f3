//! `smelt quantize` / `smelt convert` as a user runs them: exit codes,
//! messages, and no output left behind on failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::stories;

fn smelt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .output()
        .expect("run smelt")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smelt-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unknown_type_is_refused_with_the_list_of_types() {
    let dir = scratch("unknown-type");
    let out = dir.join("out.gguf");
    let input = stories();
    let run = smelt(&[
        "quantize",
        input.to_str().expect("utf-8 path"),
        out.to_str().expect("utf-8 path"),
        "--type",
        "q3_k",
    ]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("unknown type 'q3_k'") && err.contains("q4_k_m") && err.contains("bf16"),
        "{err}"
    );
    assert!(listing(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_input_fails_cleanly() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(stories()).expect("read stories");
    let input = dir.join("truncated.gguf");
    std::fs::write(&input, &bytes[..bytes.len() / 3]).expect("write");
    let out = dir.join("out.gguf");
    let run = smelt(&[
        "quantize",
        input.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
        "--type",
        "q8_0",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains("smelt: error: cannot read") && err.contains("truncated.gguf"),
        "{err}"
    );
    assert_eq!(listing(&dir), ["truncated.gguf"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn convert_alias_writes_a_loadable_file() {
    let dir = scratch("alias");
    let out = dir.join("stories-q8_0.gguf");
    let run = smelt(&[
        "convert",
        stories().to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
        "--type",
        "Q8_0",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("wrote"), "{}", stderr(&run));
    let file = smelt_gguf::GgufFile::open(&out).expect("output opens");
    assert_eq!(file.get_u64("general.file_type"), Some(7));
    assert_eq!(listing(&dir), ["stories-q8_0.gguf"]);
    let _ = std::fs::remove_dir_all(&dir);
}
