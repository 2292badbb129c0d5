//! [`ChatTokenizer`]: a chat template plus a tokenizer. It renders conversations and encodes them
//! into token ids with a mask of the tokens the model learns to write.

use crate::history::{self, Branch, HistoryCheck, Rewrite, RewriteTraining};
use crate::options::{Boundary, EncodeOptions, History, SpanSource, Supervise};
use crate::spans::{mask, Renderer, SpanFinder};
use crate::template::{self, ChatTemplate, Conversation, Rendered, Vars};
use crate::tokenizer::{CharIndex, TextTokenizer, Tokens};
use crate::{model_dir, Error, Result, Sample, TreeBranch};
use minijinja::value::Value;
use std::ops::Range;
use std::path::Path;

/// One encoded conversation. Offsets and spans are byte positions in `text`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// The rendering.
    pub text: String,
    /// Token ids of `text`.
    pub ids: Vec<u32>,
    /// Byte range of `text` per token.
    pub offsets: Vec<(usize, usize)>,
    /// Per token: whether it is trained.
    pub mask: Vec<bool>,
    /// Per token loss weight (its message's `weight` on trained tokens, 0 elsewhere); empty when
    /// every trained message weighs 1.
    pub loss_weights: Vec<f32>,
    /// Trained byte ranges of `text` (end-of-turn included), in order.
    pub spans: Vec<Range<usize>>,
    /// The message index of each span (`None` for generation blocks and `Supervise::All`).
    pub span_messages: Vec<Option<usize>>,
    /// Assistant messages chosen for training that render no text of their own.
    pub skipped: Vec<usize>,
    /// How many times the template was rendered to encode this conversation.
    pub renders: usize,
    /// How many renderings checking the history took (see `history.rs`).
    pub history_renders: usize,
    /// Supervised turns the full rendering shows differently from how the model writes them,
    /// in message order, with how each is trained (see `EncodeOptions::history`).
    pub rewrites: Vec<Rewrite>,
    /// With `History::Expand`: the rewritten turns trained in their inference context.
    pub branches: Vec<Branch>,
}

impl Encoded {
    /// Number of trained tokens (branches included).
    pub fn num_trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
            + self.branches.iter().map(Branch::num_trained).sum::<usize>()
    }

    /// The packer's sample: the trunk's tokens and mask, and the branches.
    pub fn into_sample(self, id: u64) -> Sample {
        let branches = self
            .branches
            .into_iter()
            .map(|b| TreeBranch {
                prefix_len: b.prefix_len,
                input_ids: b.input_ids,
                mask: b.mask,
                loss_weights: b.loss_weights,
            })
            .collect();
        let mut sample = Sample::new(id, self.ids, self.mask).with_branches(branches);
        sample.loss_weights = self.loss_weights;
        sample
    }

    /// A character index of `text`, to express offsets and spans as Python's string positions.
    pub fn char_index(&self) -> CharIndex {
        CharIndex::new(&self.text)
    }
}

/// Options that cannot work together on `conv`: spans that belong to no message (`supervise="all"`,
/// `spans="generation"`) have no history to check, no role and no message weight.
fn check_combination(conv: &Conversation, opts: &EncodeOptions) -> Result<()> {
    let unowned = match (&opts.supervise, opts.spans) {
        (Supervise::All, _) => "supervise=\"all\"",
        (_, SpanSource::Generation) => "spans=\"generation\"",
        _ => return Ok(()),
    };
    let bad = |why: String| Err(Error::InvalidArgument(format!("{unowned}: {why}")));
    if opts.history != History::Rendered {
        return bad("its spans belong to no message, so history=\"faithful\" or \"expand\" cannot apply (use spans=\"diff\")".into());
    }
    if let Supervise::Roles(roles) = &opts.supervise {
        if roles.iter().any(|r| r != "assistant") {
            return bad(
                "generation blocks train assistant turns only, not a list of other roles".into(),
            );
        }
    }
    if let Some((i, m)) = conv
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.weight.is_some_and(|w| w != 0.0 && w != 1.0))
    {
        return bad(format!(
            "message {i} has weight {}, but only weights 0 and 1 apply where spans belong to no message",
            m.loss_weight()
        ));
    }
    Ok(())
}

/// A chat template and a tokenizer, with the template variables every rendering sees.
#[derive(Clone, Debug)]
pub struct ChatTokenizer {
    /// Turns text into token ids.
    pub tokenizer: TextTokenizer,
    /// The chat template, if the tokenizer has one.
    pub template: Option<ChatTemplate>,
    /// Variables every rendering sees (`bos_token`, `eos_token`, ...).
    pub vars: Vars,
}

impl ChatTokenizer {
    /// Combines the parts.
    pub fn new(tokenizer: TextTokenizer, template: Option<ChatTemplate>, vars: Vars) -> Self {
        ChatTokenizer {
            tokenizer,
            template,
            vars,
        }
    }

    /// Combines a tokenizer with a template's source (compiled here) and string template variables
    /// (`bos_token`, ... as in `tokenizer_config.json`).
    pub fn from_parts(
        tokenizer: TextTokenizer,
        template_source: Option<&str>,
        special_tokens: &[(String, String)],
    ) -> Result<Self> {
        let template = template_source.map(ChatTemplate::new).transpose()?;
        Ok(Self::new(
            tokenizer,
            template,
            template::string_vars(special_tokens),
        ))
    }

    /// Loads a Hugging Face model folder (`tokenizer.json`, `tokenizer_config.json`,
    /// `chat_template.jinja`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let dir = model_dir::load(dir)?;
        Self::from_parts(
            dir.tokenizer,
            dir.template_source.as_deref(),
            &dir.special_tokens,
        )
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
        Renderer::new(self.template()?, &self.vars, vars, tools)
            .render(messages, add_generation_prompt)
    }

    /// Renders a conversation to text, as `apply_chat_template(tokenize=False)` does.
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
        check_combination(conv, opts)?;
        let renderer = Renderer::new(self.template()?, &self.vars, vars, tools);
        // counted apart: `renders` is what finding the spans costs
        let history_renderer = Renderer::new(self.template()?, &self.vars, vars, tools);
        let messages = conv.values();
        let full = renderer.render(&messages, false)?;
        let text = full.text.as_str();
        let tokens = self.tokenizer.encode(text)?;
        let mut found = SpanFinder {
            renderer: &renderer,
            tokenizer: &self.tokenizer,
            conversation: conv,
            messages: &messages,
            full: &full,
            offsets: &tokens.offsets,
        }
        .find(opts)?;
        let rewritten = if opts.supervise == Supervise::All || opts.spans == SpanSource::Generation
        {
            Vec::new() // no span belongs to a message
        } else {
            HistoryCheck {
                renderer: &history_renderer,
                tokenizer: &self.tokenizer,
                conversation: conv,
                messages: &messages,
                text,
                offsets: &tokens.offsets,
            }
            .rewritten(&found, opts)?
        };
        // The tokens do not depend on the history mode: split at every span found.
        let tokens = match opts.boundary {
            Boundary::Merge => tokens,
            Boundary::Split => self.encode_split(text, &found.spans)?,
        };
        let mut rewrites = Vec::with_capacity(rewritten.len());
        let mut branches = Vec::new();
        for r in rewritten.iter().rev() {
            let mut rewrite = r.rewrite.clone();
            if opts.history != History::Rendered {
                found.spans.remove(r.span);
                found.span_messages.remove(r.span);
                rewrite.training = RewriteTraining::ContextOnly;
            }
            if opts.history == History::Expand {
                rewrite.training = if rewrite.target.is_empty() {
                    RewriteTraining::Empty
                } else {
                    let weight = conv.messages[rewrite.message].loss_weight();
                    let (branch, kind) =
                        history::branch(&self.tokenizer, &rewrite, weight, text, &tokens)?;
                    branches.push(branch);
                    kind
                };
            }
            rewrites.push(rewrite);
        }
        rewrites.reverse();
        branches.reverse();
        let span_weights: Vec<f64> = found
            .span_messages
            .iter()
            .map(|m| m.map_or(1.0, |i| conv.messages[i].loss_weight()))
            .collect();
        let loss_weights = if span_weights.iter().all(|&w| w == 1.0) {
            Vec::new()
        } else {
            mask::token_weights(&tokens.offsets, &found.spans, &span_weights)
        };
        Ok(Encoded {
            loss_weights,
            mask: mask::tokens_overlapping(&tokens.offsets, &found.spans),
            ids: tokens.ids,
            offsets: tokens.offsets,
            spans: found.spans,
            span_messages: found.span_messages,
            skipped: found.skipped,
            renders: renderer.count(),
            history_renders: history_renderer.count(),
            text: full.text,
            rewrites,
            branches,
        })
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
