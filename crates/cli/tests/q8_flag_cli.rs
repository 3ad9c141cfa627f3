//! `--q8-activations[=layers|all]`: the bare flag still lets the model path
//! follow it, both values are taken, and a wrong value is named.

use std::process::Command;

mod common;
use common::stories;

/// `smelt run` greedily with `flag` before the model path: (success, stdout, stderr).
fn run_with(flag: &str) -> (bool, String, String) {
    let model = stories();
    let out = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(["run", "--device", "cpu", "--temp", "0", "-n", "6", flag])
        .arg(&model)
        .arg("Once upon a time")
        .output()
        .expect("run smelt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn q8_activations_takes_an_optional_value() {
    let (ok, base, err) = run_with("--threads=1");
    assert!(ok, "{err}");
    assert!(base.starts_with("Once upon a time") && base.len() > "Once upon a time".len());
    // stories260K's weights are f32 (no integer path): every mode gives the
    // same text, so these check the parsing, not the arithmetic.
    for flag in [
        "--q8-activations",
        "--q8-activations=layers",
        "--q8-activations=all",
    ] {
        let (ok, out, err) = run_with(flag);
        assert!(ok, "{flag}: {err}");
        assert_eq!(out, base, "{flag}");
    }
    let (ok, _, err) = run_with("--q8-activations=bogus");
    assert!(!ok, "a wrong value must be refused");
    assert!(
        err.contains("bogus") && err.contains("layers") && err.contains("all"),
        "the error names the value and the choices: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
