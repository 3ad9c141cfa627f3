//! `smelt chat MODEL`: a multi-turn REPL through the model's chat template.
//! Each turn re-renders the whole conversation; the session reuses the KV
//! cache of the prefix it already holds, so only the new turn is computed.

use std::io::{BufRead, Write};

use smelt_backend::Backend;
use smelt_engine::{GenerateRequest, Session};
use smelt_text::chat_template::{ChatMessage, ChatTemplate};

use crate::args::{ModelArgs, SamplingArgs};
use crate::load::{Loaded, load, with_model};
use crate::run::print_stats;

pub fn chat(
    model: &str,
    system: Option<&str>,
    margs: &ModelArgs,
    sargs: &SamplingArgs,
    verbose: bool,
) -> Result<(), String> {
    let request = sargs.request();
    request.sampling.validate().map_err(|e| e.to_string())?;
    let loaded = load(model, margs)?;
    let template = loaded.template.as_ref().map_err(String::clone)?;
    crate::load::note_fallback(template);
    with_model!(&loaded.model, |m| {
        let session =
            Session::with_kv_type(m, loaded.ctx, margs.kv_type()).map_err(|e| e.to_string())?;
        repl(session, &loaded, template, system, &request, verbose)
    })
}

/// The read-generate loop on one session.
fn repl<B: Backend>(
    mut session: Session<'_, B>,
    loaded: &Loaded,
    template: &ChatTemplate,
    system: Option<&str>,
    request: &GenerateRequest,
    verbose: bool,
) -> Result<(), String> {
    let mut messages: Vec<ChatMessage> = system
        .map(|s| ChatMessage::new("system", s))
        .into_iter()
        .collect();
    eprintln!("smelt chat: type a message; /reset clears the conversation, /exit or Ctrl-D quits.");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.retain(|m| m.role == "system");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        let prompt = template
            .render(&messages, true)
            .map_err(|e| e.to_string())?;
        let tokens = loaded.tokenizer.encode(&prompt, false, true);
        let mut out = std::io::stdout().lock();
        let result = session.generate(&tokens, request, &loaded.tokenizer, &mut |piece| {
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .is_ok()
        });
        let _ = writeln!(out);
        match result {
            Ok(done) => {
                if verbose {
                    print_stats(&done);
                }
                messages.push(ChatMessage::new("assistant", done.text.trim()));
            }
            Err(e) => {
                // The turn failed (e.g. the conversation outgrew the context):
                // drop it and let the user go on.
                eprintln!("smelt: {e}");
                messages.pop();
            }
        }
    }
    Ok(())
}
