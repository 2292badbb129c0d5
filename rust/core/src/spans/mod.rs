//! Span finding: which byte ranges of a rendering each trained assistant message must learn to
//! write, and the strategy that decides which renderings are made to find them.
//!
//! For each target (a trained assistant message) the span runs from where the model starts writing
//! (after the generation prompt with `start="prompt"`, else where the message's own text starts) to
//! where its text ends, plus the end-of-turn token after it. The pieces:
//! - [`diff`]: the message's text is what differs between the full rendering and one with the
//!   message blanked (`{"role": "assistant", "content": ""}`), cut on token boundaries;
//! - [`layout`]: every target's blanked rendering from a constant number of renderings, when the
//!   template is local (from [`LAYOUT_MIN_TARGETS`] targets on; else one rendering per target);
//! - [`prompt_start`]: the generation prompt found in the text instead of rendered per target
//!   (from [`HEADER_MIN_TARGETS`] targets on, checked on the first and last);
//! - [`marked`]: where the prompt must be rendered per target, renderings with marked contents;
//! - [`mask`]: the end-of-turn token, token boundaries and the mask of trained tokens.
//!
//! Every fast path is checked on the conversation at hand and falls back to the per-message method
//! (`Method::PerMessage`, the reference) when its check fails: a template that defeats one costs
//! renderings, never correctness.

pub(crate) mod diff;
pub(crate) mod layout;
pub(crate) mod marked;
pub(crate) mod mask;
pub(crate) mod prompt_start;
pub(crate) mod render;

pub(crate) use render::{blank_like, Renderer};

use crate::options::{EncodeOptions, Eot, Method, SpanSource, Start, Supervise};
use crate::template::{Conversation, Rendered};
use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};
use diff::{Blanked, Diff};
use layout::Layout;
use marked::Compressed;
use minijinja::value::Value;
use std::ops::Range;

/// Below this many targets rendering per message is as cheap as the layout (four renderings and one
/// per further bit of the index).
const LAYOUT_MIN_TARGETS: usize = 7;

/// From this many targets on, the generation prompt is looked for in the text (checked on the first
/// and last, so from three on it saves renderings).
const HEADER_MIN_TARGETS: usize = 3;

/// From this many targets on, generation prompts are rendered with marked contents (one extra,
/// mostly content-free rendering checks that this is sound).
const COMPRESSED_MIN_TARGETS: usize = 2;

/// The spans found in one rendering.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Trained byte ranges (end-of-turn included), in order.
    pub spans: Vec<Range<usize>>,
    /// The message index of each span (`None` for generation blocks and `Supervise::All`).
    pub span_messages: Vec<Option<usize>>,
    /// Targets that render no text of their own.
    pub skipped: Vec<usize>,
}

impl Found {
    fn push(&mut self, span: Range<usize>, message: Option<usize>) -> Result<()> {
        if let Some(prev) = self.spans.last() {
            if span.start < prev.end {
                let who = message
                    .map(|i| format!("message {i}"))
                    .unwrap_or_else(|| "a generation block".into());
                return Err(Error::Template(format!(
                    "{who}: its span {}..{} overlaps or precedes the previous span {}..{} (the template \
                     reorders or merges messages)",
                    span.start, span.end, prev.start, prev.end
                )));
            }
        }
        self.spans.push(span);
        self.span_messages.push(message);
        Ok(())
    }
}

/// Where a target's own text lies: its diff against the rendering with it blanked, and the first
/// shifts of that diff that end (and start) on token boundaries.
struct MessageDiff {
    raw: Diff,
    end_on_token: Diff,
    on_tokens: Diff,
}

/// A target that renders text of its own: its message index, its diff, and where the previous such
/// target's text ends (its header lies after that).
struct Located {
    index: usize,
    diff: MessageDiff,
    after: usize,
}

/// How span starts are found.
enum PromptEnds {
    /// Where the message's own text starts.
    Content,
    /// After the generation prompt found in the text (see [`prompt_start`]).
    Header(String),
    /// After each message's own prompt rendering (with marked contents when given).
    Exact(Option<Compressed>),
}

/// One conversation's span search: its renderer, its messages, the full rendering and the tokens.
pub(crate) struct SpanFinder<'a> {
    pub renderer: &'a Renderer<'a>,
    pub tokenizer: &'a TextTokenizer,
    pub conversation: &'a Conversation,
    /// The messages as template values.
    pub messages: &'a [Value],
    /// The full rendering.
    pub full: &'a Rendered,
    /// Token byte offsets of the full rendering.
    pub offsets: &'a [(usize, usize)],
}

impl SpanFinder<'_> {
    fn text(&self) -> &str {
        &self.full.text
    }

    /// The spans `opts` asks for.
    pub(crate) fn find(&self, opts: &EncodeOptions) -> Result<Found> {
        let mut found = Found::default();
        if opts.supervise == Supervise::All {
            found.push(0..self.text().len(), None)?;
        } else if opts.spans == SpanSource::Generation {
            self.generation_spans(opts, &mut found)?;
        } else {
            self.diff_spans(opts, &mut found)?;
        }
        Ok(found)
    }

    fn generation_spans(&self, opts: &EncodeOptions, found: &mut Found) -> Result<()> {
        if !self.renderer.has_generation_tags() {
            return Err(Error::Template(
                "spans=\"generation\" needs a template with {% generation %} blocks".into(),
            ));
        }
        let mut generation = self.full.generation.clone();
        if opts.supervise == Supervise::LastAssistant {
            generation = generation.split_off(generation.len().saturating_sub(1));
        }
        // The template's author marked what is trained, end of turn included or not: only an
        // explicit list of end-of-turn tokens extends generation spans.
        let eot = match opts.eot {
            Eot::Auto => &Eot::Off,
            ref explicit => explicit,
        };
        for span in generation {
            let end = self.extend_eot(span.end, eot);
            found.push(span.start..end, None)?;
        }
        Ok(())
    }

    fn diff_spans(&self, opts: &EncodeOptions, found: &mut Found) -> Result<()> {
        let text = self.text();
        let boundaries = mask::token_boundaries(self.offsets, text.len());
        let targets = self.targets(&opts.supervise);
        let layout = match opts.method {
            Method::Auto if targets.len() >= LAYOUT_MIN_TARGETS => {
                Layout::build(self.renderer, self.messages, &targets, text)
            }
            _ => None,
        };
        // Each target's diff first: which generation-prompt rule applies is checked on them.
        let mut located = Vec::with_capacity(targets.len());
        let mut after = 0;
        for (j, &index) in targets.iter().enumerate() {
            let blank = layout.as_ref().and_then(|l| l.blanked(text, j));
            match self.message_diff(index, blank, &boundaries)? {
                Some(diff) => {
                    let end = diff.raw.end;
                    located.push(Located { index, diff, after });
                    after = end;
                }
                None => found.skipped.push(index),
            }
        }
        let prompts = match opts.start {
            Start::Content => PromptEnds::Content,
            Start::Prompt => {
                // the generation prompt opens assistant turns only: its rules are checked on them
                let assistants: Vec<&Located> = located
                    .iter()
                    .filter(|t| self.conversation.messages[t.index].is_assistant())
                    .collect();
                self.prompt_ends(assistants.len(), &assistants, opts.method)
            }
        };
        for t in &located {
            // the generation prompt opens assistant turns only
            let assistant = self.conversation.messages[t.index].is_assistant();
            let prompt_end = match &prompts {
                _ if !assistant => None,
                PromptEnds::Content => None,
                PromptEnds::Header(g) => {
                    prompt_start::after_generation_prompt(text, g, t.after, &t.diff.raw)
                }
                PromptEnds::Exact(compressed) => self.prompt_end(compressed.as_ref(), t.index),
            };
            let chosen = match prompt_end {
                Some(_) => t.diff.end_on_token,
                None => t.diff.on_tokens,
            };
            let start = match prompt_end {
                Some(p) if p <= chosen.end => p,
                _ => chosen.start,
            };
            let end = self.extend_eot(chosen.end, &opts.eot);
            found.push(start..end, Some(t.index))?;
        }
        Ok(())
    }

    /// Indices of the trained messages.
    fn targets(&self, supervise: &Supervise) -> Vec<usize> {
        let all: Vec<usize> = self
            .conversation
            .messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                (supervise.trains_role(&m.role) && m.weight != Some(0.0)).then_some(i)
            })
            .collect();
        match supervise {
            Supervise::LastAssistant => all.last().copied().into_iter().collect(),
            _ => all,
        }
    }

    /// Where message `index`'s own text lies in the full rendering, or `None` when it renders no
    /// text of its own. `blank` is the rendering with the message blanked when the layout gave it;
    /// otherwise it is rendered here.
    fn message_diff(
        &self,
        index: usize,
        blank: Option<Blanked<'_>>,
        boundaries: &[bool],
    ) -> Result<Option<MessageDiff>> {
        let text = self.text();
        let rendered;
        let blank = match blank {
            Some(blank) => blank,
            None => {
                let mut blanked = self.messages.to_vec();
                blanked[index] = blank_like(&self.messages[index], Value::from(""));
                rendered = self
                    .renderer
                    .render(&blanked, false)
                    .map_err(|e| {
                        Error::Template(format!(
                            "message {index}: rendering with the message blanked failed: {e}"
                        ))
                    })?
                    .text;
                Blanked::whole(text, &rendered)
            }
        };
        if blank.is_full() {
            return Ok(None);
        }
        let raw = diff::diff_blanked(text, &blank);
        // The same change can often be cut at several places (`>` + `<` vs `<` + ...): take the
        // first cut on token boundaries, at the end only when the prompt gives the start.
        let mut shifts = raw.shifts(text, &blank);
        let end_on_token = shifts.find(|d| boundaries[d.end]).unwrap_or(raw);
        // the shifts before that one do not end on a boundary: go on from it
        let on_tokens = if boundaries[end_on_token.start] {
            end_on_token
        } else {
            shifts
                .find(|d| boundaries[d.end] && boundaries[d.start])
                .unwrap_or(raw)
        };
        Ok(Some(MessageDiff {
            raw,
            end_on_token,
            on_tokens,
        }))
    }

    /// How each span's start is found with `start="prompt"`: after the generation prompt found in
    /// the text when that agrees with the exact rule on the first and last messages, else by
    /// rendering each message's prompt.
    fn prompt_ends(&self, targets: usize, located: &[&Located], method: Method) -> PromptEnds {
        if method == Method::Auto && located.len() >= HEADER_MIN_TARGETS {
            if let Some(g) = self.checked_generation_prompt(located) {
                return PromptEnds::Header(g);
            }
        }
        let compressed = match method {
            Method::Auto if targets >= COMPRESSED_MIN_TARGETS => {
                Compressed::checked(self.renderer, self.messages, self.text())
            }
            _ => None,
        };
        PromptEnds::Exact(compressed)
    }

    /// The generation prompt (the rendering of the first target's predecessors with it, past what
    /// it shares with the one without), if finding it in the text gives the exact prompt end for
    /// the first and last targets.
    fn checked_generation_prompt(&self, located: &[&Located]) -> Option<String> {
        let text = self.text();
        let (first, last) = (located.first()?, located.last()?);
        let with = self.renderer.text(&self.messages[..first.index], true)?;
        let without = self.renderer.text(&self.messages[..first.index], false)?;
        // What the prompt adds, after the text both share (Phi-3 ends the one without it with the
        // end-of-sequence token, which the prompt replaces).
        let shared = diff::diff(&with, &without).start;
        let g = &with[shared..];
        let exact = text.starts_with(with.as_str()).then_some(with.len());
        let agrees = |t: &Located, exact: Option<usize>| {
            prompt_start::after_generation_prompt(text, g, t.after, &t.diff.raw) == exact
        };
        if !agrees(first, exact) {
            return None;
        }
        agrees(last, self.prompt_end(None, last.index)).then(|| g.to_string())
    }

    /// Where the generation prompt for message `index` ends, if that rendering is a prefix of the
    /// full one; rendered with marked contents when `compressed` is given.
    fn prompt_end(&self, compressed: Option<&Compressed>, index: usize) -> Option<usize> {
        let text = self.text();
        if let Some(c) = compressed {
            if let Ok(marked) = self.renderer.render(&c.messages[..index], true) {
                return c.expanded_prefix_of(&marked.text, text);
            }
            // a marked rendering that fails tells nothing: render the real prompt
        }
        let prompt = self.renderer.text(&self.messages[..index], true)?;
        text.starts_with(prompt.as_str()).then_some(prompt.len())
    }

    fn extend_eot(&self, end: usize, eot: &Eot) -> usize {
        let text = self.text();
        match eot {
            Eot::Off => end,
            Eot::Auto => mask::extend_over_eot(text, end, |p| self.tokenizer.special_at(text, p)),
            Eot::Tokens(list) => mask::extend_over_eot(text, end, |p| {
                list.iter()
                    .filter(|t| text[p..].starts_with(t.as_str()))
                    .map(|t| t.len())
                    .max()
            }),
        }
    }
}
