//! The engine thread: it owns the model and the scheduler, takes requests
//! from the HTTP handlers between steps, and streams each sequence's events
//! back over its own channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

use smelt_backend::Backend;
use smelt_engine::{Scheduler, SchedulerConfig, SeqEvent, SeqRequest, SeqSink};
use smelt_model::Model;
use smelt_text::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// What the handlers ask of the engine thread.
pub enum Command {
    Submit(SeqRequest),
    /// End every sequence now (the shutdown grace period ran out).
    CancelAll,
    /// Leave the loop (after the HTTP server stopped).
    Stop,
}

/// A sequence's events go to its handler through a tokio channel; a dropped
/// receiver (the client went away) cancels the sequence.
pub struct ChannelSink(pub UnboundedSender<SeqEvent>);

impl SeqSink for ChannelSink {
    fn send(&mut self, event: SeqEvent) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The handlers' side of the engine thread.
pub struct EngineHandle {
    tx: Sender<Command>,
    /// Submitted but not yet taken by the engine thread.
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// A handle sending to `tx`; the engine loop must receive from its other end.
    pub fn new(tx: Sender<Command>, metrics: Arc<Metrics>) -> Self {
        EngineHandle {
            tx,
            in_flight: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Requests not yet running: in the channel or in the scheduler's queue.
    pub fn queued(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst) + self.metrics.snapshot().0.waiting
    }

    /// Hands a request to the engine; false if the engine thread is gone.
    pub fn submit(&self, req: SeqRequest) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let ok = self.tx.send(Command::Submit(req)).is_ok();
        if !ok {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        ok
    }

    /// Sends a control command.
    pub fn command(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }
}

/// Runs the scheduler on `model` until [`Command::Stop`] or until every
/// handle is dropped. `ready` is called once the KV pool is allocated (or
/// with the reason it could not be).
pub fn run_engine<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    config: SchedulerConfig,
    rx: Receiver<Command>,
    handle: Arc<EngineHandle>,
    ready: impl FnOnce(Result<SchedulerConfig, String>),
) {
    let mut sched = match Scheduler::new(model, tokenizer, config) {
        Ok(s) => s,
        Err(e) => {
            ready(Err(format!("KV cache: {e}")));
            return;
        }
    };
    ready(Ok(sched.config().clone()));
    let metrics = handle.metrics.clone();
    let publish = |sched: &Scheduler<'_, B>| {
        let queued = handle.in_flight.load(Ordering::SeqCst) + sched.n_waiting();
        metrics.engine_state(sched.stats(), queued);
    };
    publish(&sched);
    loop {
        // Idle: sleep until a request comes. Busy: take what arrived and step.
        let mut next = if sched.is_idle() {
            match rx.recv() {
                Ok(cmd) => Some(cmd),
                Err(_) => return,
            }
        } else {
            None
        };
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => match rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                },
            };
            match cmd {
                Command::Submit(req) => {
                    handle.in_flight.fetch_sub(1, Ordering::SeqCst);
                    // The handler checked the limits already; a refused
                    // request's sink is dropped, which its handler sees.
                    let _ = sched.submit(req);
                }
                Command::CancelAll => {
                    sched.cancel_all();
                }
                Command::Stop => {
                    sched.cancel_all();
                    publish(&sched);
                    return;
                }
            }
        }
        let t0 = Instant::now();
        match sched.step() {
            Ok(report) => metrics.step(&report, t0.elapsed()),
            // The sequences of the failed step got the error; go on.
            Err(e) => eprintln!("smelt serve: step failed: {e}"),
        }
        publish(&sched);
    }
}
