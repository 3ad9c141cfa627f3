//! ChatTemplate's errors, extra variables and clock, beyond the golden renders.

use smelt_text::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError, strftime_utc};
use std::collections::BTreeMap;

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

#[test]
fn syntax_error_names_the_line() {
    let source = "{% for m in messages %}\n{{ m.content }}\n{% if %}\n{% endfor %}";
    match ChatTemplate::new(source, "<s>", "</s>") {
        Err(ChatTemplateError::Syntax { line, message }) => {
            assert_eq!(line, 3, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn raise_exception_message_is_kept_verbatim() {
    let t = ChatTemplate::new(
        "{% if messages[0].role != 'system' %}{{ raise_exception('Need a system prompt, got ' ~ messages[0].role) }}{% endif %}ok",
        "",
        "",
    )
    .expect("compiles");
    match t.render(&user("hi"), true) {
        Err(ChatTemplateError::Raised { message }) => {
            assert_eq!(message, "Need a system prompt, got user")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    let ok = t
        .render(&[ChatMessage::new("system", "s")], false)
        .expect("renders");
    assert_eq!(ok, "ok");
}

#[test]
fn other_runtime_errors_are_render_errors() {
    let t = ChatTemplate::new("a\n{{ messages | no_such_filter }}", "", "").expect("compiles");
    match t.render(&user("x"), false) {
        Err(ChatTemplateError::Render { line, message }) => {
            assert_eq!(line, 2);
            assert!(message.contains("no_such_filter"), "{message}");
        }
        other => panic!("expected a render error, got {other:?}"),
    }
}

#[test]
fn extras_add_and_override_variables() {
    let t = ChatTemplate::new(
        "{{ bos_token }}|{{ eos_token }}|{{ tools }}|{{ greeting }}|{{ messages[0].content }}",
        "<s>",
        "</s>",
    )
    .expect("compiles");
    assert_eq!(
        t.render(&user("x"), false).expect("renders"),
        "<s>|</s>|None||x"
    );
    let mut extra = BTreeMap::new();
    extra.insert("greeting", "hello");
    extra.insert("bos_token", "<BOS>");
    assert_eq!(
        t.render_with(&user("x"), false, &extra).expect("renders"),
        "<BOS>|</s>|None|hello|x"
    );
}

#[test]
fn reserved_and_malformed_extras_are_rejected() {
    let t = ChatTemplate::new("{{ messages | length }}", "", "").expect("compiles");
    let mut extra = BTreeMap::new();
    extra.insert("messages", 3);
    assert!(matches!(
        t.render_with(&user("x"), false, &extra),
        Err(ChatTemplateError::ReservedExtra { name }) if name == "messages"
    ));
    assert!(matches!(
        t.render_with(&user("x"), false, vec![1, 2]),
        Err(ChatTemplateError::BadExtra { .. })
    ));
}

#[test]
fn strftime_now_uses_the_utc_clock() {
    let t = ChatTemplate::new("{{ strftime_now('%Y-%m-%d %H') }}", "", "").expect("compiles");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    let before = strftime_utc("%Y-%m-%d %H", now());
    let rendered = t.render(&user("x"), false).expect("renders");
    let after = strftime_utc("%Y-%m-%d %H", now());
    assert!(
        rendered == before || rendered == after,
        "{rendered} vs {before}/{after}"
    );
    assert!(rendered.starts_with("20"), "{rendered}");
}

#[test]
fn fallback_format() {
    let t = ChatTemplate::fallback();
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    assert_eq!(
        t.render(&msgs, true).expect("renders"),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(
        !ChatTemplate::new("x", "", "")
            .expect("compiles")
            .is_fallback()
    );
}
