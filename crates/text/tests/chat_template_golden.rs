//! Chat templates render byte for byte as HF transformers' `apply_chat_template` does.
//! Goldens: tests/golden/chat/ made by scripts/make_chat_goldens.py (templates read out of the real
//! GGUF files, renders by transformers); this test needs no model files.

use serde_json::Value as Json;
use smelt_text::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError, strftime_utc};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat")
}

fn read_json(name: &str) -> Json {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_chat_goldens.py)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_field<'a>(v: &'a Json, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("golden field {key} missing in {v}"))
}

fn messages(conv: &Json) -> Vec<ChatMessage> {
    conv.as_array()
        .expect("conversation is a list")
        .iter()
        .map(|m| ChatMessage::new(str_field(m, "role"), str_field(m, "content")))
        .collect()
}

fn template_source(name: &str) -> String {
    let path = golden_dir().join("templates").join(format!("{name}.jinja"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// First differing byte, with some context, for a readable failure.
fn describe_difference(got: &str, want: &str) -> String {
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let ctx = |s: &str| {
        let start = s.floor_char_boundary(at.saturating_sub(40));
        let end = s.ceil_char_boundary((at + 40).min(s.len()));
        format!("{:?}", &s[start..end])
    };
    format!(
        "first difference at byte {at} (len got {} want {})\n   got: {}\n  want: {}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want)
    )
}

#[test]
fn renders_match_transformers() {
    let golden = read_json("renders.json");
    let conversations = &golden["conversations"];
    let mut templates: BTreeMap<String, Result<ChatTemplate, ChatTemplateError>> = BTreeMap::new();
    let mut failures = Vec::new();
    let renders = golden["renders"].as_array().expect("renders list");
    assert!(
        renders.len() > 100,
        "too few golden renders: {}",
        renders.len()
    );
    let mut checked_ok = 0;
    let mut checked_raised = 0;
    for case in renders {
        let name = str_field(case, "template");
        let template = templates.entry(name.to_owned()).or_insert_with(|| {
            let spec = &golden["templates"][name];
            ChatTemplate::new(
                &template_source(name),
                str_field(spec, "bos_token"),
                str_field(spec, "eos_token"),
            )
        });
        let conv_name = str_field(case, "conversation");
        let msgs = messages(&conversations[conv_name]);
        let agp = case["add_generation_prompt"].as_bool().expect("bool");
        let label = format!(
            "{name} / {conv_name} / add_generation_prompt={agp} / extra={}",
            case["extra"]
        );
        let result = template.as_ref().map_err(|e| format!("{e}")).and_then(|t| {
            t.render_with(&msgs, agp, &case["extra"])
                .map_err(|e| format!("{e:?}"))
        });
        match (case.get("expected").and_then(Json::as_str), result) {
            (Some(want), Ok(got)) => {
                if got == want {
                    checked_ok += 1;
                } else {
                    failures.push(format!("{label}: {}", describe_difference(&got, want)));
                }
            }
            (Some(_), Err(e)) => {
                failures.push(format!("{label}: expected a render, got error {e}"))
            }
            (None, Ok(got)) => failures.push(format!(
                "{label}: expected error {}, rendered {got:?}",
                case["error"]
            )),
            (None, Err(_)) => {
                // The error must be the same kind; a template's own message must match exactly.
                let error_type = str_field(case, "error_type");
                let want_message = str_field(case, "error");
                let t = template.as_ref();
                match (error_type, t) {
                    ("TemplateSyntaxError", Err(ChatTemplateError::Syntax { .. })) => {}
                    ("TemplateError", Ok(t)) => match t.render_with(&msgs, agp, &case["extra"]) {
                        Err(ChatTemplateError::Raised { message }) if message == want_message => {
                            checked_raised += 1
                        }
                        other => failures.push(format!(
                            "{label}: expected raise_exception({want_message:?}), got {other:?}"
                        )),
                    },
                    ("TypeError" | "ValueError", Ok(t)) => {
                        match t.render_with(&msgs, agp, &case["extra"]) {
                            Err(ChatTemplateError::Render { .. }) => {}
                            other => failures
                                .push(format!("{label}: expected a render error, got {other:?}")),
                        }
                    }
                    (kind, other) => failures.push(format!(
                        "{label}: expected {kind}({want_message:?}), got {:?}",
                        other.err()
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renders differ:\n{}",
        failures.len(),
        renders.len(),
        failures.join("\n")
    );
    assert!(
        checked_ok > 100 && checked_raised >= 5,
        "ok {checked_ok}, raised {checked_raised}"
    );
}

#[test]
fn fallback_is_transformers_default_chatml() {
    let golden = read_json("renders.json");
    let fallback = ChatTemplate::fallback();
    assert!(fallback.is_fallback());
    let mut n = 0;
    for case in golden["renders"].as_array().expect("renders list") {
        if str_field(case, "template") != "chatml_default" {
            continue;
        }
        let msgs = messages(&golden["conversations"][str_field(case, "conversation")]);
        let agp = case["add_generation_prompt"].as_bool().expect("bool");
        let got = fallback.render(&msgs, agp).expect("fallback never fails");
        assert_eq!(got, str_field(case, "expected"), "{case}");
        n += 1;
    }
    assert!(n >= 10, "only {n} chatml_default cases");
}

#[test]
fn strftime_matches_python() {
    let golden = read_json("strftime.json");
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() > 100);
    for case in cases {
        let secs = case["unix_secs"].as_i64().expect("unix_secs");
        let format = str_field(case, "format");
        assert_eq!(
            strftime_utc(format, secs),
            str_field(case, "expected"),
            "strftime({format:?}, {secs})"
        );
    }
}
