//! Batch encoding: many conversations encoded on worker threads, results in input order.
//!
//! The caller reads its inputs one at a time (the Python binding converts them while holding the
//! GIL) and [`BatchEncoder::push`]es each; workers start encoding as soon as there is a second
//! sample, so reading overlaps encoding. [`BatchEncoder::finish`] then encodes what is left on the
//! calling thread alongside the workers, waits until every worker is idle again (see
//! [`workers::run`]) and returns the results in input order. `threads` means threads in all, the
//! calling thread included; with one, everything runs on the calling thread.
//!
//! Each sample's `finish` conversion (the binding's: character offsets, `i32` ids) runs on the
//! thread that encoded it, so that it too is parallel. [`BatchEncoder::finish_into`] instead pushes
//! each encoded sample straight into a [`Packer`], in input order.

mod workers;

pub use workers::default_threads;

use crate::chat_tokenizer::{ChatTokenizer, Encoded};
use crate::options::EncodeOptions;
use crate::pack::Packer;
use crate::template::{from_json, Conversation, Vars};
use crate::{error::guarded, Error, Result};
use minijinja::value::Value;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::sync::{mpsc, Arc, Mutex};

/// One input of a batch: a conversation's messages and, optionally, tools of its own (which then
/// replace the batch's) and template variables of its own (applied after the batch's, so that a
/// name both give takes the sample's value).
#[derive(Debug, Clone, Default)]
pub struct BatchSample {
    /// The messages, as JSON (checked by the worker that encodes them).
    pub messages: Json,
    /// This sample's tools, if it has its own.
    pub tools: Option<Json>,
    /// This sample's own template variables (empty: only the batch's).
    pub vars: Vars,
}

type Job = (usize, BatchSample);
type Done<T> = (usize, Result<T>);

/// One batch's work, shared by the threads that encode its samples.
struct Work<T> {
    tok: Arc<ChatTokenizer>,
    tools: Value,
    vars: Vars,
    opts: EncodeOptions,
    finish: Box<dyn Fn(Encoded) -> T + Send + Sync>,
    /// Samples read so far; closed when all are read.
    jobs: Mutex<mpsc::Receiver<Job>>,
}

impl<T> Work<T> {
    /// The variables `sample` is rendered with: the batch's, then the sample's own (later ones
    /// win, as the call's win over the tokenizer's in [`ChatTokenizer::encode`]).
    fn vars_for<'a>(&'a self, sample: &BatchSample) -> Cow<'a, Vars> {
        if sample.vars.is_empty() {
            Cow::Borrowed(&self.vars)
        } else {
            Cow::Owned(self.vars.iter().chain(&sample.vars).cloned().collect())
        }
    }

    /// Encodes queued samples until the queue is closed and empty.
    fn drain(&self, done: &mpsc::Sender<Done<T>>) {
        loop {
            let job = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok((i, sample)) = job else {
                return;
            };
            let encoded = guarded(|| {
                let conv = Conversation::from_json(&sample.messages)?;
                let own_tools = sample.tools.as_ref().map(from_json);
                let tools = own_tools.as_ref().unwrap_or(&self.tools);
                let vars = self.vars_for(&sample);
                self.tok
                    .encode(&conv, tools, &vars, &self.opts)
                    .map(&self.finish)
            });
            // the batch waits for every result (if it is gone, so is the need)
            let _ = done.send((i, encoded));
        }
    }
}

/// A batch being read: push its inputs, then [`finish`](Self::finish) it.
pub struct BatchEncoder<T> {
    work: Arc<Work<T>>,
    jobs: mpsc::Sender<Job>,
    done_tx: mpsc::Sender<Done<T>>,
    done_rx: mpsc::Receiver<Done<T>>,
    /// Worker threads this batch may start (threads in all, less the calling one).
    helpers: usize,
    /// Per started worker: hears once that worker is idle again.
    idle_again: Vec<mpsc::Receiver<()>>,
    /// Inputs so far, pushed or skipped.
    inputs: usize,
    queued: usize,
}

impl<T> std::fmt::Debug for BatchEncoder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("inputs", &self.inputs)
            .field("queued", &self.queued)
            .field("workers", &self.idle_again.len())
            .finish()
    }
}

impl<T: Send + 'static> BatchEncoder<T> {
    /// A batch encoded with `tok`, the batch's `tools`, template variables and options, on
    /// `threads` threads in all (`None`: [`default_threads`]); `finish` converts each result on
    /// the thread that encoded it.
    pub fn new(
        tok: Arc<ChatTokenizer>,
        tools: Value,
        vars: Vars,
        opts: EncodeOptions,
        threads: Option<usize>,
        finish: impl Fn(Encoded) -> T + Send + Sync + 'static,
    ) -> Self {
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let threads = threads.unwrap_or_else(default_threads).max(1);
        BatchEncoder {
            work: Arc::new(Work {
                tok,
                tools,
                vars,
                opts,
                finish: Box::new(finish),
                jobs: Mutex::new(job_rx),
            }),
            jobs,
            done_tx,
            done_rx,
            helpers: threads - 1,
            idle_again: Vec::new(),
            inputs: 0,
            queued: 0,
        }
    }

    /// Queues the next input; it is encoded as soon as a thread is free.
    pub fn push(&mut self, sample: BatchSample) {
        let index = self.inputs;
        self.inputs += 1;
        // the receiver lives in `work` until every worker is done: sending cannot fail
        let _ = self.jobs.send((index, sample));
        self.queued += 1;
        // one worker per sample beyond the first: a batch of one needs none
        if self.idle_again.len() < self.helpers.min(self.queued - 1) {
            let (work, done) = (self.work.clone(), self.done_tx.clone());
            // a worker that cannot start leaves its share to the others
            if let Ok(idle) = workers::run(Box::new(move || work.drain(&done))) {
                self.idle_again.push(idle);
            }
        }
    }

    /// Counts an input that the caller could not read: its result stays `None`.
    pub fn skip(&mut self) {
        self.inputs += 1;
    }

    /// Encodes what is left (on this thread too) and returns one result per input, in input
    /// order: `None` for skipped inputs. Returns only once this batch's workers are idle again.
    pub fn finish(self) -> Vec<Option<Result<T>>> {
        let BatchEncoder {
            work,
            jobs,
            done_tx,
            done_rx,
            idle_again,
            inputs,
            queued,
            ..
        } = self;
        drop(jobs);
        work.drain(&done_tx);
        drop(done_tx);
        let mut out: Vec<Option<Result<T>>> = (0..inputs).map(|_| None).collect();
        // a worker that somehow stopped without sending drops its sender: no hang
        for (i, result) in done_rx.iter().take(queued) {
            out[i] = Some(result);
        }
        // back only once the workers are idle again (see `workers::run`)
        for idle in idle_again {
            let _ = idle.recv();
        }
        out
    }
}

impl BatchEncoder<Encoded> {
    /// [`finish`](Self::finish), pushing each encoded input into `packer` under its id in
    /// `sample_ids` (one per input), in input order. Returns per input the error that kept it
    /// out, if any (the packer's own stats count what it drops).
    pub fn finish_into(
        self,
        packer: &mut Packer,
        sample_ids: &[u64],
    ) -> Result<Vec<Option<Error>>> {
        if sample_ids.len() != self.inputs {
            return Err(Error::InvalidArgument(format!(
                "sample_ids has {} entries for {} samples",
                sample_ids.len(),
                self.inputs
            )));
        }
        let mut errors = Vec::with_capacity(self.inputs);
        for (result, &id) in self.finish().into_iter().zip(sample_ids) {
            errors.push(match result {
                Some(Ok(enc)) => {
                    packer.push(enc.into_sample(id))?;
                    None
                }
                Some(Err(e)) => Some(e),
                None => None,
            });
        }
        Ok(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{tiktoken, TextTokenizer};
    use crate::ChatTemplate;
    use serde_json::json;

    /// Byte-level tokens, and a template that shows three variables: `a` (stored by the tokenizer),
    /// `b` and `c`.
    fn tokenizer() -> ChatTokenizer {
        let ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        let specials = [("</s>".to_string(), 256)];
        let text = TextTokenizer::new(
            tiktoken::tokenizer_from_ranks(&ranks, r"\S+|\s+", &specials).unwrap(),
        );
        let template = ChatTemplate::new(
            "[{{ a }} {{ b }} {{ c | default('none') }}]\
             {% for m in messages %}{{ m.role }}: {{ m.content }}</s>{% endfor %}\
             {% if add_generation_prompt %}assistant: {% endif %}",
        )
        .unwrap();
        let stored = vec![("a".to_string(), Value::from("stored"))];
        ChatTokenizer::new(text, Some(template), stored)
    }

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect()
    }

    #[test]
    fn a_samples_own_variables_win_for_that_sample_only() {
        let tok = Arc::new(tokenizer());
        let messages = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]);
        let call = vars(&[("b", "call"), ("c", "call")]);
        let own = vars(&[("a", "own"), ("c", "own")]);
        let opts = EncodeOptions::default();
        for threads in [1, 3] {
            let mut batch = BatchEncoder::new(
                tok.clone(),
                ().into(),
                call.clone(),
                opts.clone(),
                Some(threads),
                |e| e,
            );
            for i in 0..4 {
                batch.push(BatchSample {
                    messages: messages.clone(),
                    vars: if i == 1 { own.clone() } else { Vars::new() },
                    ..BatchSample::default()
                });
            }
            let out: Vec<Encoded> = batch
                .finish()
                .into_iter()
                .map(|r| r.unwrap().unwrap())
                .collect();
            let conv = Conversation::from_json(&messages).unwrap();
            // the sample's after the call's: as one call with both, the sample's last
            let merged: Vars = call.iter().chain(&own).cloned().collect();
            let expected_own = tok.encode(&conv, &().into(), &merged, &opts).unwrap();
            let expected_call = tok.encode(&conv, &().into(), &call, &opts).unwrap();
            assert!(out[1].text.starts_with("[own call own]"), "{}", out[1].text);
            assert_eq!(out[1], expected_own);
            for i in [0, 2, 3] {
                assert!(
                    out[i].text.starts_with("[stored call call]"),
                    "{}",
                    out[i].text
                );
                assert_eq!(out[i], expected_call);
            }
            // the sample's own variables also reach the renderings that find the spans
            let trained: String = out[1]
                .offsets
                .iter()
                .zip(&out[1].mask)
                .filter(|(_, &m)| m)
                .map(|(&(a, b), _)| &out[1].text[a..b])
                .collect();
            assert_eq!(trained, "hello</s>");
        }
    }
}
