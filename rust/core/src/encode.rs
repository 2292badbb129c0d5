//! `ChatTokenizer`: a chat template plus a tokenizer; renders conversations and encodes them into
//! token ids with a mask of the tokens the model learns to write.

use crate::compressed::{self, Compressed};
use crate::conversation::Conversation;
use crate::layout;
use crate::prompt_start;
use crate::spans::{self, Blanked, Diff};
use crate::template::{self, ChatTemplate, Rendered};
use crate::tokenizer::{TextTokenizer, Tokens};
use crate::{Error, Result};
use minijinja::value::Value;
use std::ops::Range;

/// Which assistant messages are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Supervise {
    /// Every assistant message (minus those with `weight: 0`).
    #[default]
    Assistant,
    /// Only the last assistant message.
    LastAssistant,
    /// Every token of the rendering.
    All,
}

/// Where a message's span starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// After the generation prompt, when the prompt rendering is a prefix of the full one.
    #[default]
    Prompt,
    /// Where the message's own text starts (the diff).
    Content,
}

/// How spans are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanSource {
    /// Diff against a rendering with the message blanked.
    #[default]
    Diff,
    /// The template's `{% generation %}` blocks.
    Generation,
}

/// What counts as the end-of-turn token trained after each span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Eot {
    /// The first special token after the span, when only whitespace lies between.
    #[default]
    Auto,
    /// The first of these strings after the span, when only whitespace lies between.
    Tokens(Vec<String>),
    /// Nothing after the span.
    Off,
}

/// How the rendering is tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Boundary {
    /// The whole rendering at once.
    #[default]
    Merge,
    /// Text before each span and each span separately, so trained tokens are those a model emits.
    Split,
}

/// How the blanked renderings of the diff are obtained (the spans are the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// From a constant number of renderings when the template is local (see [`crate::layout`]),
    /// else per message.
    #[default]
    Auto,
    /// One rendering per supervised message: the reference method.
    PerMessage,
}

/// Below this many supervised messages rendering per message is as cheap as the layout (four
/// renderings and one per further bit of the index).
const LAYOUT_MIN_TARGETS: usize = 7;

/// From this many supervised messages on, the generation prompt is looked for in the text (checked
/// on the first and last, so from three on it saves renderings).
const HEADER_MIN_TARGETS: usize = 3;

/// From this many supervised messages on, generation prompts are rendered with marked contents
/// (one extra, mostly content-free rendering checks that this is sound).
const COMPRESSED_MIN_TARGETS: usize = 2;

/// Every target's blanked rendering, known from the layout renderings (see [`crate::layout`]).
struct Layout {
    /// The rendering with every target blanked.
    blanked: String,
    /// Per target: its own text's range in the full rendering, and the range of `blanked` that
    /// takes its place when it alone is blanked.
    regions: Vec<(Range<usize>, Range<usize>)>,
}

impl Layout {
    /// The full rendering with the targets `blank(j)` says blanked.
    fn with_blanked(&self, full: &str, blank: impl Fn(usize) -> bool) -> String {
        let mut out = String::with_capacity(full.len());
        let mut pos = 0;
        for (j, (own, blank_range)) in self.regions.iter().enumerate() {
            if blank(j) {
                out.push_str(&full[pos..own.start]);
                out.push_str(&self.blanked[blank_range.clone()]);
                pos = own.end;
            }
        }
        out.push_str(&full[pos..]);
        out
    }

    /// The full rendering with target `j` alone blanked (`None` would mean a region off char
    /// boundaries, which `layout::place` does not produce; the caller then renders it).
    fn blanked<'a>(&'a self, full: &'a str, j: usize) -> Option<Blanked<'a>> {
        let (own, blank) = self.regions.get(j)?;
        Blanked::spliced(full, own.clone(), self.blanked.get(blank.clone())?)
    }
}

/// Where a target's own text lies: its diff against the rendering with it blanked, and the first
/// shifts of that diff that end (and start) on token boundaries.
struct MessageDiff {
    raw: Diff,
    end_on_token: Diff,
    on_tokens: Diff,
}

/// A target that renders text of its own: its message index, its diff, and where the previous
/// such target's text ends (its header lies after that).
struct Located {
    index: usize,
    diff: MessageDiff,
    after: usize,
}

/// How span starts are found.
enum PromptEnds {
    /// Where the message's own text starts.
    Content,
    /// After the generation prompt found in the text (see [`crate::prompt_start`]).
    Header(String),
    /// After each message's own prompt rendering (with marked contents when given).
    Exact(Option<Compressed>),
}

#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    pub supervise: Supervise,
    pub start: Start,
    pub spans: SpanSource,
    pub eot: Eot,
    pub boundary: Boundary,
    pub method: Method,
}

/// One encoded conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub text: String,
    pub ids: Vec<u32>,
    /// Byte range of `text` per token.
    pub offsets: Vec<(usize, usize)>,
    pub mask: Vec<bool>,
    /// Trained byte ranges of `text` (end-of-turn included), in order.
    pub spans: Vec<Range<usize>>,
    /// The message index of each span (`None` for generation blocks and `Supervise::All`).
    pub span_messages: Vec<Option<usize>>,
    /// Assistant messages chosen for training that render no text of their own.
    pub skipped: Vec<usize>,
    /// How many times the template was rendered to encode this conversation.
    pub renders: usize,
}

thread_local! {
    /// Renderings done on this thread; an encode runs on one thread from start to end, so the
    /// difference across it is that encode's count, without threading a counter through every call.
    static RENDERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Template variables: special tokens from the tokenizer config, then per-call keywords.
pub type Vars = Vec<(String, Value)>;

#[derive(Clone)]
pub struct ChatTokenizer {
    pub tokenizer: TextTokenizer,
    pub template: Option<ChatTemplate>,
    /// Variables every rendering sees (`bos_token`, `eos_token`, ...).
    pub vars: Vars,
}

impl ChatTokenizer {
    pub fn new(tokenizer: TextTokenizer, template: Option<ChatTemplate>, vars: Vars) -> Self {
        ChatTokenizer {
            tokenizer,
            template,
            vars,
        }
    }

    fn template(&self) -> Result<&ChatTemplate> {
        self.template
            .as_ref()
            .ok_or_else(|| Error::Template("this tokenizer has no chat template".into()))
    }

    /// Renders `messages` (already prepared template values) with the stored and per-call variables.
    pub fn render_values(
        &self,
        messages: &[Value],
        tools: &Value,
        add_generation_prompt: bool,
        vars: &Vars,
    ) -> Result<Rendered> {
        let all = self
            .vars
            .iter()
            .chain(vars.iter())
            .map(|(k, v)| (k.as_str(), v));
        let ctx = template::context(
            Value::from(messages.to_vec()),
            tools.clone(),
            add_generation_prompt,
            all,
        );
        RENDERS.with(|r| r.set(r.get() + 1));
        self.template()?.render(&ctx)
    }

    pub fn render(
        &self,
        conv: &Conversation,
        tools: &Value,
        add_generation_prompt: bool,
        vars: &Vars,
    ) -> Result<String> {
        Ok(self
            .render_values(&conv.values(), tools, add_generation_prompt, vars)?
            .text)
    }

    /// Renders and encodes `conv`, marking what the model must learn to write.
    pub fn encode(
        &self,
        conv: &Conversation,
        tools: &Value,
        vars: &Vars,
        opts: &EncodeOptions,
    ) -> Result<Encoded> {
        let renders_before = RENDERS.with(|r| r.get());
        let messages = conv.values();
        let full = self.render_values(&messages, tools, false, vars)?;
        let text = full.text.as_str();
        let tokens = self.tokenizer.encode(text)?;
        let mut out = Encoded {
            text: String::new(),
            ..Default::default()
        };
        if opts.supervise == Supervise::All {
            out.spans.push(0..text.len());
            out.span_messages.push(None);
        } else if opts.spans == SpanSource::Generation {
            if !self.template()?.has_generation_tags() {
                return Err(Error::Template(
                    "spans=\"generation\" needs a template with {% generation %} blocks".into(),
                ));
            }
            let mut generation = full.generation.clone();
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
                let end = self.extend_eot(text, span.end, eot);
                push_span(&mut out, span.start..end, None)?;
            }
        } else {
            let boundaries = token_boundaries(&tokens, text.len());
            let targets = self.targets(conv, opts.supervise);
            let layout = match opts.method {
                Method::Auto if targets.len() >= LAYOUT_MIN_TARGETS => {
                    self.layout(&messages, &targets, text, tools, vars)
                }
                _ => None,
            };
            // Each target's diff first: which generation-prompt rule applies is checked on them.
            let mut located = Vec::with_capacity(targets.len());
            let mut after = 0;
            for (j, &index) in targets.iter().enumerate() {
                let blank = layout.as_ref().and_then(|l| l.blanked(text, j));
                match self.message_diff(&messages, text, index, blank, &boundaries, tools, vars)? {
                    Some(diff) => {
                        let end = diff.raw.end;
                        located.push(Located { index, diff, after });
                        after = end;
                    }
                    None => out.skipped.push(index),
                }
            }
            let prompts = match opts.start {
                Start::Content => PromptEnds::Content,
                Start::Prompt => {
                    let n = targets.len();
                    self.prompt_ends(&messages, n, &located, text, tools, vars, opts.method)
                }
            };
            for t in &located {
                let prompt_end = match &prompts {
                    PromptEnds::Content => None,
                    PromptEnds::Header(g) => {
                        prompt_start::after_generation_prompt(text, g, t.after, &t.diff.raw)
                    }
                    PromptEnds::Exact(compressed) => {
                        self.prompt_end(&messages, compressed.as_ref(), text, t.index, tools, vars)
                    }
                };
                let chosen = match prompt_end {
                    Some(_) => t.diff.end_on_token,
                    None => t.diff.on_tokens,
                };
                let start = match prompt_end {
                    Some(p) if p <= chosen.end => p,
                    _ => chosen.start,
                };
                let end = self.extend_eot(text, chosen.end, &opts.eot);
                push_span(&mut out, start..end, Some(t.index))?;
            }
        }
        let tokens = match opts.boundary {
            Boundary::Merge => tokens,
            Boundary::Split => self.encode_split(text, &out.spans)?,
        };
        out.mask = spans::tokens_overlapping(&tokens.offsets, &out.spans);
        out.ids = tokens.ids;
        out.offsets = tokens.offsets;
        out.text = full.text;
        out.renders = RENDERS.with(|r| r.get()) - renders_before;
        Ok(out)
    }

    fn targets(&self, conv: &Conversation, supervise: Supervise) -> Vec<usize> {
        let trained = |(i, m): (usize, &crate::conversation::Message)| {
            (m.is_assistant() && m.weight != Some(false)).then_some(i)
        };
        let all: Vec<usize> = conv
            .messages
            .iter()
            .enumerate()
            .filter_map(trained)
            .collect();
        match supervise {
            Supervise::LastAssistant => all.last().copied().into_iter().collect(),
            _ => all,
        }
    }

    /// Byte range of each target's own text in `text`, from the layout renderings, or `None` when
    /// the template is not local (see [`crate::layout`]).
    fn layout(
        &self,
        messages: &[Value],
        targets: &[usize],
        text: &str,
        tools: &Value,
        vars: &Vars,
    ) -> Option<Layout> {
        if !layout::marker_free(text) {
            return None;
        }
        let render_with = |content: &dyn Fn(usize) -> Option<String>| -> Option<String> {
            let mut replaced = messages.to_vec();
            for (j, &i) in targets.iter().enumerate() {
                if let Some(c) = content(j) {
                    replaced[i] = blank_message(Value::from(c));
                }
            }
            self.render_values(&replaced, tools, false, vars)
                .ok()
                .map(|r| r.text)
        };
        let k = targets.len();
        let marked = render_with(&|j| Some(layout::marker(j)))?;
        let t = layout::split_all_marked(&marked, k)?;
        let blanked = render_with(&|_| Some(String::new()))?;
        if !layout::is_concatenation(&blanked, &t) {
            return None;
        }
        let even = render_with(&|j| (j % 2 == 0).then(|| layout::marker(j)))?;
        let odd = if k > 1 {
            render_with(&|j| (j % 2 == 1).then(|| layout::marker(j)))?
        } else {
            text.to_string()
        };
        let mut windows = vec![None; k];
        layout::windows(&even, k, 0, &mut windows)?;
        layout::windows(&odd, k, 1, &mut windows)?;
        let regions = layout::regions(&t, &windows)?;
        let placed = layout::place(text, &blanked, &regions)?;
        let regions = placed
            .into_iter()
            .zip(&regions)
            .map(|(at, r)| (at, r.blank.clone()))
            .collect();
        let layout = Layout { blanked, regions };
        // The parity renderings check every pair of messages at an odd distance (one blank, the
        // other intact). Pairs at even distances are checked by blanking along the other bits of
        // the index: each pair differs in some bit, so some rendering blanks one and keeps the
        // other, and must equal what the layout predicts.
        let mut bit = 1;
        while (1usize << bit) < k {
            let blank = |j: usize| (j >> bit) & 1 == 0;
            let rendered = render_with(&|j| blank(j).then(String::new))?;
            if rendered != layout.with_blanked(text, blank) {
                return None;
            }
            bit += 1;
        }
        Some(layout)
    }

    /// Where message `index`'s own text lies in `text` (the full rendering), or `None` when it
    /// renders no text of its own. `blank` is the rendering with the message blanked when the
    /// layout gave it; otherwise it is rendered here.
    #[allow(clippy::too_many_arguments)]
    fn message_diff(
        &self,
        messages: &[Value],
        text: &str,
        index: usize,
        blank: Option<Blanked<'_>>,
        boundaries: &[bool],
        tools: &Value,
        vars: &Vars,
    ) -> Result<Option<MessageDiff>> {
        let rendered;
        let blank = match blank {
            Some(blank) => blank,
            None => {
                let mut blanked = messages.to_vec();
                blanked[index] = blank_message(Value::from(""));
                rendered = self
                    .render_values(&blanked, tools, false, vars)
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
        let raw = spans::diff_blanked(text, &blank);
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
    /// the text (see [`crate::prompt_start`]) when that agrees with the exact rule on the first and
    /// last messages, else by rendering each message's prompt.
    #[allow(clippy::too_many_arguments)]
    fn prompt_ends(
        &self,
        messages: &[Value],
        targets: usize,
        located: &[Located],
        text: &str,
        tools: &Value,
        vars: &Vars,
        method: Method,
    ) -> PromptEnds {
        if method == Method::Auto && located.len() >= HEADER_MIN_TARGETS {
            if let Some(g) = self.checked_generation_prompt(messages, located, text, tools, vars) {
                return PromptEnds::Header(g);
            }
        }
        let compressed = match method {
            Method::Auto if targets >= COMPRESSED_MIN_TARGETS => {
                self.compressed(messages, text, tools, vars)
            }
            _ => None,
        };
        PromptEnds::Exact(compressed)
    }

    /// The generation prompt (the rendering of the first target's predecessors with it, past what
    /// it shares with the one without), if finding it in the text gives the exact prompt end for
    /// the first and last targets.
    fn checked_generation_prompt(
        &self,
        messages: &[Value],
        located: &[Located],
        text: &str,
        tools: &Value,
        vars: &Vars,
    ) -> Option<String> {
        let (first, last) = (located.first()?, located.last()?);
        let render = |index: usize, prompt: bool| {
            self.render_values(&messages[..index], tools, prompt, vars)
                .ok()
                .map(|r| r.text)
        };
        let with = render(first.index, true)?;
        let without = render(first.index, false)?;
        // What the prompt adds, after the text both share (Phi-3 ends the one without it with the
        // end-of-sequence token, which the prompt replaces).
        let shared = spans::diff(&with, &without).start;
        let g = &with[shared..];
        let exact = |prompt: &str| text.starts_with(prompt).then_some(prompt.len());
        let agrees = |t: &Located, exact: Option<usize>| {
            prompt_start::after_generation_prompt(text, g, t.after, &t.diff.raw) == exact
        };
        if !agrees(first, exact(&with)) {
            return None;
        }
        let last_exact = self.prompt_end(messages, None, text, last.index, tools, vars);
        agrees(last, last_exact).then(|| g.to_string())
    }

    /// The messages with marked contents, if the template prints contents verbatim (checked on the
    /// whole conversation; see [`crate::compressed`]).
    fn compressed(
        &self,
        messages: &[Value],
        text: &str,
        tools: &Value,
        vars: &Vars,
    ) -> Option<Compressed> {
        let c = compressed::compress(messages)?;
        let marked = self.render_values(&c.messages, tools, false, vars).ok()?;
        (c.expanded_prefix_of(&marked.text, text) == Some(text.len())).then_some(c)
    }

    /// Where the generation prompt for message `index` ends, if that rendering is a prefix of the
    /// full one `text`; rendered with marked contents when `compressed` is given.
    fn prompt_end(
        &self,
        messages: &[Value],
        compressed: Option<&Compressed>,
        text: &str,
        index: usize,
        tools: &Value,
        vars: &Vars,
    ) -> Option<usize> {
        if let Some(c) = compressed {
            if let Ok(marked) = self.render_values(&c.messages[..index], tools, true, vars) {
                return c.expanded_prefix_of(&marked.text, text);
            }
            // a marked rendering that fails tells nothing: render the real prompt
        }
        let prompt = self
            .render_values(&messages[..index], tools, true, vars)
            .ok()?;
        text.starts_with(prompt.text.as_str())
            .then_some(prompt.text.len())
    }

    fn extend_eot(&self, text: &str, end: usize, eot: &Eot) -> usize {
        match eot {
            Eot::Off => end,
            Eot::Auto => spans::extend_over_eot(text, end, |p| self.tokenizer.special_at(text, p)),
            Eot::Tokens(list) => spans::extend_over_eot(text, end, |p| {
                list.iter()
                    .filter(|t| text[p..].starts_with(t.as_str()))
                    .map(|t| t.len())
                    .max()
            }),
        }
    }

    /// Tokenizes the text between spans and each span on its own.
    fn encode_split(&self, text: &str, spans: &[Range<usize>]) -> Result<Tokens> {
        let mut cuts = vec![0];
        for s in spans {
            cuts.push(s.start);
            cuts.push(s.end);
        }
        cuts.push(text.len());
        let mut out = Tokens::default();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a >= b {
                continue;
            }
            let piece = self.tokenizer.encode(&text[a..b])?;
            out.ids.extend(piece.ids);
            out.offsets
                .extend(piece.offsets.into_iter().map(|(x, y)| (x + a, y + a)));
        }
        Ok(out)
    }
}

/// What a message is replaced with to find its text: an assistant turn with only `content`.
fn blank_message(content: Value) -> Value {
    Value::from_pairs([("role", Value::from("assistant")), ("content", content)])
}

fn push_span(out: &mut Encoded, span: Range<usize>, message: Option<usize>) -> Result<()> {
    if let Some(prev) = out.spans.last() {
        if span.start < prev.end {
            let who = message
                .map(|i| format!("message {i}"))
                .unwrap_or_else(|| "a generation block".into());
            return Err(Error::Template(format!(
                "{who}: its span {}..{} overlaps or precedes the previous span {}..{} (the template reorders or \
                 merges messages)",
                span.start, span.end, prev.start, prev.end
            )));
        }
    }
    out.spans.push(span);
    out.span_messages.push(message);
    Ok(())
}

/// `b[i]` is true when byte position `i` starts or ends a token (so a cut there splits none).
fn token_boundaries(tokens: &Tokens, len: usize) -> Vec<bool> {
    let mut b = vec![false; len + 1];
    b[0] = true;
    b[len] = true;
    for &(s, e) in &tokens.offsets {
        b[s.min(len)] = true;
        b[e.min(len)] = true;
    }
    // A position strictly inside a token is never a boundary, even if offsets overlap there.
    for &(s, e) in &tokens.offsets {
        for x in b.iter_mut().take(e.min(len)).skip(s + 1) {
            *x = false;
        }
    }
    b
}
