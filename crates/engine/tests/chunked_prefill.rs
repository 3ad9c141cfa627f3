//! A prompt longer than one prefill chunk (the session's earlier chunks ask
//! no logits, the final one its last row's): the logits the session returns
//! equal those of the whole prompt fed as one batch, bit for bit (the CPU
//! backend is batch-invariant), so chunking with empty `logits_rows` loses
//! nothing.

mod common;

use smelt_cpu::CpuBackend;
use smelt_engine::Session;
use smelt_model::{Batch, KvType, Model};

fn open(name: &str) -> Model<CpuBackend> {
    let (file, _) = common::open_file(name);
    Model::load(file, CpuBackend::new(0).expect("pool")).expect("model")
}

#[test]
fn a_prompt_of_several_chunks_gives_the_one_batch_logits() {
    let model = open("stories260K.gguf");
    // Two chunks of the session's rows.
    let n: usize = smelt_engine::session::prefill_chunk() + 44;
    let vocab = model.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..n as u32).map(|i| (i * 97 + 13) % vocab).collect();

    let mut session = Session::with_kv_type(&model, n + 12, KvType::F32).expect("session");
    let chunked = session.feed(&prompt).expect("feed");
    assert_eq!(session.tokens(), &prompt[..]);

    let bs = model.kv_block_size();
    let table: Vec<u32> = (0..n.div_ceil(bs) as u32).collect();
    let positions: Vec<u32> = (0..n as u32).collect();
    let tables = vec![&table[..]; n];
    let mut kv = model.new_kv(table.len(), KvType::F32).expect("kv");
    let whole = model
        .forward(
            &mut kv,
            &Batch {
                tokens: &prompt,
                positions: &positions,
                block_tables: &tables,
                logits_rows: &[n - 1],
            },
        )
        .expect("forward");
    assert_eq!(chunked.len(), model.config.vocab_size);
    assert_eq!(chunked, whole.data);
}
