//! `smelt run MODEL PROMPT`: stream a continuation of a prompt.

use std::io::{Read, Write};

use smelt_engine::{Completion, Session};

use crate::args::{ModelArgs, SamplingArgs};
use crate::load::{load, with_model};

pub fn run(
    model: &str,
    prompt: Option<&str>,
    margs: &ModelArgs,
    sargs: &SamplingArgs,
) -> Result<(), String> {
    let prompt = match prompt {
        Some(p) => p.to_string(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("reading the prompt from stdin: {e}"))?;
            s
        }
    };
    let request = sargs.request();
    request.sampling.validate().map_err(|e| e.to_string())?;
    let loaded = load(model, margs)?;
    let tokens = loaded.tokenizer.encode(&prompt, true, true);
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let done = with_model!(&loaded.model, |m| {
        let mut session =
            Session::with_kv_type(m, loaded.ctx, margs.kv_type()).map_err(|e| e.to_string())?;
        session
            .generate(&tokens, &request, &loaded.tokenizer, &mut |piece| {
                // A closed pipe (e.g. `| head`) ends generation quietly.
                out.write_all(piece.as_bytes())
                    .and_then(|_| out.flush())
                    .is_ok()
            })
            .map_err(|e| e.to_string())?
    });
    let _ = writeln!(out);
    print_stats(&done);
    Ok(())
}

/// One line of timings on stderr, as llama.cpp prints them.
pub fn print_stats(c: &Completion) {
    let fed = c.prompt_tokens - c.cached_tokens;
    let pf = c.prefill_time.as_secs_f64();
    let dec = c.decode_time.as_secs_f64();
    let n = c.tokens.len().saturating_sub(1);
    eprintln!(
        "[prompt {} tokens ({} new) in {:.0} ms, {:.1} tok/s | generated {} tokens, {:.1} tok/s | stop: {:?}]",
        c.prompt_tokens,
        fed,
        pf * 1e3,
        if pf > 0.0 { fed as f64 / pf } else { 0.0 },
        c.tokens.len(),
        if dec > 0.0 { n as f64 / dec } else { 0.0 },
        c.finish,
    );
}
