//! Command output into a pipe that closes early (`smelt info MODEL | head`):
//! the command ends normally, with no panic message.

use std::process::{Command, Stdio};

mod common;
use common::stories;

#[test]
fn info_into_a_closed_pipe_exits_cleanly() {
    let model = stories();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(["info", &model.to_string_lossy(), "--tensors", "--metadata"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smelt");
    // Close the reading end before smelt writes: every write then fails
    // with a broken pipe, as when `head` has read its lines and exited.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for smelt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "smelt panicked: {stderr}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}
