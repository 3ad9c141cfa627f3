//! Text in, text out: the tokenizer read from the model file, the model's chat
//! template, a streaming detokenizer that never splits a UTF-8 character, and
//! stop-string matching across token boundaries.

pub mod chat_template;
pub mod hf;
pub mod stop;
pub mod stream;
pub mod tokenizer;
