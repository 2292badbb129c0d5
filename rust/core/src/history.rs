//! Faithful history: which supervised assistant turns the full rendering shows differently from
//! how the model writes them, and what is trained of them (`EncodeOptions::history`).
//!
//! For assistant message `i`, the inference context is `render(messages[:i])` with the generation
//! prompt and the target is what the model writes after it: the message as rendered when it is the
//! last one, through its end-of-turn token. Rendering `messages[:i + 1]` and finding its last span
//! with the same rules as the full rendering gives both: the context is the text before that span,
//! the target the span. The turn is *faithful* when the full rendering begins with context +
//! target; Qwen3, DeepSeek-R1 and most reasoning templates drop the reasoning of every turn before
//! the last user message, so those turns are *rewritten*.
//!
//! Most turns are faithful, and a cheap check proves it: when `render(messages[:i + 1])` is a
//! prefix of the full rendering through the turn's span, nothing was rewritten. That rendering is
//! made with marked contents (see [`crate::spans::marked`]) when the template prints contents
//! verbatim, so the check costs little more than the template's own structure. Only turns that fail
//! it are rendered for real and their spans found.
//!
//! In `History::Expand` a rewritten turn becomes a *branch* of a prefix tree: its target's tokens
//! (tokenized on their own, as `boundary="split"` defines what a model emits after a prompt) after
//! the trunk's tokens up to its context. The trunk's tokens must break where the context ends;
//! otherwise the turn becomes a sample of its own: the context's tokens, then the target's.

use crate::options::{EncodeOptions, History, Method, Supervise};
use crate::spans::marked::Compressed;
use crate::spans::{Found, Renderer, SpanFinder};
use crate::template::Conversation;
use crate::tokenizer::{TextTokenizer, Tokens};
use crate::{Error, Result};
use minijinja::value::Value;
use std::ops::Range;

/// How a rewritten turn is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteTraining {
    /// As the full rendering shows it (`History::Rendered`).
    AsRendered,
    /// Not at all: it is context only (`History::Faithful`).
    ContextOnly,
    /// As a branch of the trunk (`History::Expand`).
    Branch,
    /// As a sample of its own (`History::Expand` where the trunk's tokens do not break at the
    /// turn's context end).
    OwnSample,
    /// Not at all: its target renders no text.
    Empty,
}

impl RewriteTraining {
    /// The name the Python API reports.
    pub fn name(self) -> &'static str {
        match self {
            RewriteTraining::AsRendered => "rendered",
            RewriteTraining::ContextOnly => "context",
            RewriteTraining::Branch => "branch",
            RewriteTraining::OwnSample => "sample",
            RewriteTraining::Empty => "empty",
        }
    }
}

/// A supervised assistant turn that the full rendering rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The message's index.
    pub message: usize,
    /// Its span in the full rendering (byte range of `Encoded::text`).
    pub rendered: Range<usize>,
    /// Its inference context: the text before the target when the message is the last one.
    pub context: String,
    /// What the model writes after its context, end-of-turn token included.
    pub target: String,
    /// How it is trained.
    pub training: RewriteTraining,
}

/// A rewritten turn trained in its inference context: tokens that attend to the trunk's first
/// `prefix_len` tokens and to themselves, with positions continuing from `prefix_len`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Branch {
    /// The message's index.
    pub message: usize,
    /// Trunk tokens this branch sees before its own (0 for a sample of its own).
    pub prefix_len: usize,
    /// Its tokens. A branch of the trunk begins with the trunk's token at `prefix_len` (the last
    /// token of the context, which predicts the target's first token); a sample of its own begins
    /// with its context's tokens.
    pub input_ids: Vec<u32>,
    /// Per token: whether it is trained (the target's tokens).
    pub mask: Vec<bool>,
    /// Per token loss weights (the message's `weight` on trained tokens), empty when it is 1.
    pub loss_weights: Vec<f32>,
}

impl Branch {
    /// Number of trained tokens.
    pub fn num_trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }
}

/// A rewritten turn found: its message, its span's index in the full rendering's spans, and its
/// context and target texts.
pub(crate) struct Rewritten {
    pub span: usize,
    pub rewrite: Rewrite,
}

/// One conversation's history check.
pub(crate) struct HistoryCheck<'a> {
    pub renderer: &'a Renderer<'a>,
    pub tokenizer: &'a TextTokenizer,
    pub conversation: &'a Conversation,
    pub messages: &'a [Value],
    /// The full rendering.
    pub text: &'a str,
    /// Token byte offsets of the full rendering.
    pub offsets: &'a [(usize, usize)],
}

impl HistoryCheck<'_> {
    /// The turns among `found`'s spans that the full rendering rewrites. A turn whose own
    /// rendering fails is an error in the modes that change training, and is not reported in
    /// `History::Rendered` (whose training does not depend on it).
    pub(crate) fn rewritten(&self, found: &Found, opts: &EncodeOptions) -> Result<Vec<Rewritten>> {
        let mut out = Vec::new();
        let mut compressed: Option<Option<Compressed>> = None;
        for (j, (span, message)) in found.spans.iter().zip(&found.span_messages).enumerate() {
            let Some(i) = *message else { continue };
            if !self.conversation.messages[i].is_assistant() {
                continue; // only assistant turns have an inference context of their own
            }
            if i + 1 >= self.messages.len() {
                continue; // the last message: its own rendering is the full one
            }
            if opts.method == Method::Auto {
                let c = compressed.get_or_insert_with(|| {
                    Compressed::checked(self.renderer, self.messages, self.text)
                });
                if let Some(c) = c {
                    if let Ok(marked) = self.renderer.render(&c.messages[..=i], false) {
                        if c.expanded_prefix_of(&marked.text, self.text)
                            .is_some_and(|n| n >= span.end)
                        {
                            continue;
                        }
                    }
                }
            }
            match self.turn(i, span, opts) {
                Ok(Some(rewrite)) => out.push(Rewritten { span: j, rewrite }),
                Ok(None) => {}
                Err(_) if opts.history == History::Rendered => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Message `i` (whose span in the full rendering is `span`) rendered as the last one: `None`
    /// when the full rendering shows it so.
    fn turn(&self, i: usize, span: &Range<usize>, opts: &EncodeOptions) -> Result<Option<Rewrite>> {
        let failed = |what: &str, e: Error| {
            Error::Template(format!(
                "message {i}: rendering the conversation up to it ({what}) failed: {e}"
            ))
        };
        let last = self
            .renderer
            .render(&self.messages[..=i], false)
            .map_err(|e| failed("to check its history", e))?;
        if last.text.len() >= span.end && self.text.starts_with(last.text.as_str()) {
            return Ok(None);
        }
        let tokens = self.tokens_of(&last.text)?;
        let conversation = Conversation {
            messages: self.conversation.messages[..=i].to_vec(),
        };
        let last_opts = EncodeOptions {
            supervise: Supervise::LastAssistant,
            ..opts.clone()
        };
        let found = SpanFinder {
            renderer: self.renderer,
            tokenizer: self.tokenizer,
            conversation: &conversation,
            messages: &self.messages[..=i],
            full: &last,
            offsets: &tokens.offsets,
        }
        .find(&last_opts)
        .map_err(|e| failed("to find its target", e))?;
        let end = last.text.len();
        let target = match found.spans.last() {
            Some(s) if found.span_messages.last() == Some(&Some(i)) => s.clone(),
            _ => end..end, // it renders nothing of its own when last
        };
        if self.text.starts_with(&last.text[..target.end]) {
            return Ok(None);
        }
        Ok(Some(Rewrite {
            message: i,
            rendered: span.clone(),
            context: last.text[..target.start.min(last.text.len())].to_string(),
            target: last
                .text
                .get(target.clone())
                .unwrap_or_default()
                .to_string(),
            training: RewriteTraining::AsRendered,
        }))
    }

    /// Tokens of `other`, a rendering that shares a prefix with the full one: the full rendering's
    /// tokens before the first one that reaches past what they share, then `other`'s rest
    /// tokenized on its own. Only token boundaries near the message are read from them.
    fn tokens_of(&self, other: &str) -> Result<Tokens> {
        let shared = self
            .text
            .bytes()
            .zip(other.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let keep = self.offsets.partition_point(|&(_, e)| e <= shared);
        let cut = if keep == 0 {
            0
        } else {
            self.offsets[keep - 1].1
        };
        let rest = self.tokenizer.encode(&other[cut..])?;
        let mut offsets = self.offsets[..keep].to_vec();
        offsets.extend(rest.offsets.iter().map(|&(a, b)| (a + cut, b + cut)));
        Ok(Tokens {
            ids: Vec::new(),
            offsets,
        })
    }
}

/// The branch of rewritten turn `r` on the trunk whose text is `text` and tokens `trunk`: a
/// branch at the token where its context ends, or a sample of its own where no token starts there
/// (or the context is not the trunk's beginning).
pub(crate) fn branch(
    tokenizer: &TextTokenizer,
    r: &Rewrite,
    weight: f64,
    text: &str,
    trunk: &Tokens,
) -> Result<(Branch, RewriteTraining)> {
    let target = tokenizer.encode(&r.target)?;
    let at = r.context.len();
    let token = trunk.offsets.partition_point(|&(s, _)| s < at);
    let on_trunk = text.starts_with(r.context.as_str())
        && token >= 1
        && token < trunk.offsets.len()
        && trunk.offsets[token].0 == at
        && trunk.offsets[token - 1].1 == at;
    let (prefix_len, mut input_ids, kind) = if on_trunk {
        (
            token - 1,
            vec![trunk.ids[token - 1]],
            RewriteTraining::Branch,
        )
    } else {
        let context = tokenizer.encode(&r.context)?;
        (0, context.ids, RewriteTraining::OwnSample)
    };
    let mut mask = vec![false; input_ids.len()];
    input_ids.extend(&target.ids);
    mask.resize(input_ids.len(), true);
    let loss_weights = if weight == 1.0 {
        Vec::new()
    } else {
        mask.iter()
            .map(|&m| if m { weight as f32 } else { 0.0 })
            .collect()
    };
    Ok((
        Branch {
            message: r.message,
            prefix_len,
            input_ids,
            mask,
            loss_weights,
        },
        kind,
    ))
}
