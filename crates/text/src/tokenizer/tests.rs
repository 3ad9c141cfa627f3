//! Behaviour of the tokenizer on small hand-built vocabularies. The real
//! vocabularies are tested against llama.cpp's vectors and HF references in
//! `crates/text/tests/tokenizer_*.rs`.

use super::*;

/// A byte-level BPE vocabulary: the 256 byte characters (ids 0..=255, in byte
/// order), merged tokens, then special tokens.
fn bpe_spec() -> VocabSpec {
    let bl = ByteLevel::new();
    let mut tokens: Vec<String> = (0..=255u8).map(|b| bl.char_of(b).to_string()).collect();
    let mut types = vec![TokenType::Normal; 256];
    let merged = [
        "he", "ll", "hell", "hello", "Ġw", "Ġwo", "Ġwor", "Ġworl", "Ġworld",
    ];
    for m in merged {
        tokens.push(m.to_string());
        types.push(TokenType::Normal);
    }
    let specials = [
        ("<|im_start|>", TokenType::Control), // 265
        ("<|im_end|>", TokenType::Control),   // 266
        ("<|endoftext|>", TokenType::Normal), // 267: forced to control
        ("<tool>", TokenType::UserDefined),   // 268
        ("<|reserved|>", TokenType::Unused),  // 269
    ];
    for (t, ty) in specials {
        tokens.push(t.to_string());
        types.push(ty);
    }
    VocabSpec {
        kind: VocabKind::Bpe {
            pre: Some("gpt-2".to_string()),
        },
        tokens,
        token_types: types,
        scores: Vec::new(),
        merges: [
            "h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l", "Ġworl d",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        bos_id: Some(265),
        eos_id: Some(266),
        eot_id: None,
        eom_id: None,
        unknown_id: None,
        padding_id: None,
        fim_ids: Vec::new(),
        add_bos: None,
        add_eos: None,
        add_space_prefix: None,
    }
}

fn bpe() -> Tokenizer {
    Tokenizer::from_spec(bpe_spec()).expect("toy BPE vocabulary")
}

#[test]
fn bpe_merges_words() {
    let t = bpe();
    assert_eq!(t.encode("hello world", false, false), [259, 264]);
    // "hellx": "hell" then the byte x.
    assert_eq!(t.encode("hellx", false, false), [258, u32::from(b'x')]);
    assert_eq!(t.decode(&[259, 264]), "hello world");
    assert_eq!(t.token_bytes(264), b" world");
    assert_eq!(t.pre_tokenizer(), Some("gpt-2"));
}

#[test]
fn special_tokens_parsed_only_when_asked() {
    let t = bpe();
    let text = "<|im_start|>hello<|im_end|>";
    assert_eq!(t.encode(text, false, true), [265, 259, 266]);
    let plain = t.encode(text, false, false);
    assert!(!plain.contains(&265) && !plain.contains(&266), "{plain:?}");
    assert_eq!(t.decode(&plain), text);
    // User-defined tokens are matched either way.
    assert_eq!(t.encode("hello<tool>", false, false), [259, 268]);
}

#[test]
fn bos_and_eos_follow_the_flags() {
    let t = bpe();
    // gpt-2 does not add BOS by default.
    assert!(!t.add_bos());
    assert_eq!(t.encode("hello", true, false), [259]);
    let mut spec = bpe_spec();
    spec.add_bos = Some(true);
    spec.add_eos = Some(true);
    let t = Tokenizer::from_spec(spec).expect("vocab");
    assert_eq!(t.encode("hello", true, false), [265, 259, 266]);
    assert_eq!(t.encode("hello", false, false), [259]);
    assert_eq!(t.encode("", true, false), [265, 266]);
    assert_eq!(t.encode("", false, false), Vec::<u32>::new());
}

#[test]
fn llama_bpe_adds_bos_by_default() {
    let mut spec = bpe_spec();
    spec.kind = VocabKind::Bpe {
        pre: Some("llama-bpe".to_string()),
    };
    let t = Tokenizer::from_spec(spec).expect("vocab");
    assert!(t.add_bos());
    assert_eq!(t.encode("hello", true, false), [265, 259]);
}

#[test]
fn end_of_generation_ids() {
    let t = bpe();
    // eos, plus <|im_end|> (= eos) and <|endoftext|> by text.
    assert_eq!(t.end_of_generation_ids(), [266, 267]);
    assert!(t.is_end_of_generation(267));
    assert!(!t.is_end_of_generation(265));
    // The eot falls back to a well-known end-of-turn text.
    assert_eq!(t.eot_id(), Some(266));
}

#[test]
fn control_tokens_print_as_nothing_unless_asked() {
    let t = bpe();
    assert_eq!(t.token_type(267), Some(TokenType::Control));
    assert_eq!(t.token_bytes(267), b"");
    assert_eq!(t.token_bytes_special(267), b"<|endoftext|>");
    assert_eq!(t.token_bytes(269), b"");
    assert_eq!(t.token_bytes(268), b"<tool>");
    assert_eq!(t.token_bytes(100_000), b"");
    assert_eq!(t.decode(&[265, 259, 267]), "hello");
    assert_eq!(t.token_id("<|im_end|>"), Some(266));
    assert_eq!(t.token_text(264), Some("Ġworld"));
    assert_eq!(t.token_text(9999), None);
    assert_eq!(t.vocab_size(), 270);
}

#[test]
fn byte_tokens_split_utf8_characters() {
    let t = bpe();
    let ids = t.encode("é", false, false);
    assert_eq!(ids, [0xC3, 0xA9]);
    assert_eq!(t.token_bytes(0xC3), [0xC3]);
    assert_eq!(t.decode(&ids), "é");
    assert_eq!(t.decode(&ids[..1]), "\u{FFFD}");
}

#[test]
fn construction_errors_name_the_problem() {
    let mut spec = bpe_spec();
    spec.kind = VocabKind::Bpe {
        pre: Some("mystery".into()),
    };
    let msg = error(spec);
    assert!(msg.contains("mystery") && msg.contains("gpt-2"), "{msg}");

    let mut spec = bpe_spec();
    spec.scores = vec![0.0; 3];
    let msg = error(spec);
    assert!(
        msg.contains("tokenizer.ggml.scores") && msg.contains('3'),
        "{msg}"
    );

    let mut spec = bpe_spec();
    spec.merges.push("nospace".into());
    let msg = error(spec);
    assert!(
        msg.contains("merges[9]") && msg.contains("nospace"),
        "{msg}"
    );

    let mut spec = bpe_spec();
    spec.eos_id = Some(5000);
    let msg = error(spec);
    assert!(
        msg.contains("eos_token_id") && msg.contains("5000"),
        "{msg}"
    );

    let mut spec = bpe_spec();
    spec.tokens.clear();
    spec.token_types.clear();
    assert!(error(spec).contains("empty"));
}

fn error(spec: VocabSpec) -> String {
    match Tokenizer::from_spec(spec) {
        Ok(_) => panic!("accepted a bad vocabulary"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_pre_is_default() {
    let mut spec = bpe_spec();
    spec.kind = VocabKind::Bpe { pre: None };
    let t = Tokenizer::from_spec(spec).expect("vocab");
    assert_eq!(t.pre_tokenizer(), Some("default"));
    assert_eq!(t.encode("hello world", false, false), [259, 264]);
}

/// A SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte tokens
/// (ids 3..=258), then pieces with scores.
fn spm_spec() -> VocabSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -1.0),   // 259
        ("h", -2.0),   // 260
        ("i", -2.0),   // 261
        ("▁h", -3.0),  // 262
        ("hi", -4.0),  // 263
        ("▁hi", -5.0), // 264
        ("!", -2.0),   // 265
    ];
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(TokenType::Normal);
        scores.push(s);
    }
    VocabSpec {
        kind: VocabKind::Spm,
        tokens,
        token_types: types,
        scores,
        merges: Vec::new(),
        bos_id: None,
        eos_id: None,
        eot_id: None,
        eom_id: None,
        unknown_id: None,
        padding_id: None,
        fim_ids: Vec::new(),
        add_bos: None,
        add_eos: None,
        add_space_prefix: None,
    }
}

#[test]
fn spm_defaults_and_space_prefix() {
    let t = Tokenizer::from_spec(spm_spec()).expect("vocab");
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.unknown_id()),
        (Some(1), Some(2), Some(0))
    );
    assert!(t.add_bos() && !t.add_eos() && t.add_space_prefix());
    // "▁hi": ▁h (-3) merges before hi (-4), then ▁hi.
    assert_eq!(t.encode("hi", true, false), [1, 264]);
    assert_eq!(t.encode("hi hi!", false, false), [264, 264, 265]);
    assert_eq!(t.decode(&[1, 264, 264, 265]), "hi hi!");
    assert_eq!(t.token_bytes(264), b" hi");
    assert_eq!(t.token_bytes(3 + 0x41), b"A");
}

#[test]
fn spm_byte_fallback_and_special_prefix() {
    let t = Tokenizer::from_spec(spm_spec()).expect("vocab");
    // "é" is not a piece: its two UTF-8 bytes.
    assert_eq!(t.encode("é", false, false), [259, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.decode(&[259, 3 + 0xC3, 3 + 0xA9]), "é");
    // A space prefix follows each special token.
    assert_eq!(t.encode("hi</s>hi", false, true), [264, 2, 264]);
    let mut spec = spm_spec();
    spec.add_space_prefix = Some(false);
    let t = Tokenizer::from_spec(spec).expect("vocab");
    assert_eq!(t.encode("hi", false, false), [263]);
    assert_eq!(t.decode(&[259, 263]), " hi");
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}
