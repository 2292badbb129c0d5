//! The renderings span finding makes: every one of a conversation's renderings shares its
//! template, variables and tools, and they are counted (`Encoding.renders`).

use crate::template::{self, ChatTemplate, Rendered, Vars};
use crate::Result;
use minijinja::value::Value;
use std::cell::Cell;

/// What every rendering of one conversation shares (the template, its variables, the tools), and
/// how many renderings were made.
pub(crate) struct Renderer<'a> {
    template: &'a ChatTemplate,
    /// The tokenizer's variables, then the call's (later ones win).
    vars: [&'a Vars; 2],
    tools: &'a Value,
    count: Cell<usize>,
}

impl<'a> Renderer<'a> {
    pub(crate) fn new(
        template: &'a ChatTemplate,
        stored: &'a Vars,
        call: &'a Vars,
        tools: &'a Value,
    ) -> Self {
        Renderer {
            template,
            vars: [stored, call],
            tools,
            count: Cell::new(0),
        }
    }

    /// Renders `messages` (prepared template values).
    pub(crate) fn render(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        let vars = self
            .vars
            .iter()
            .flat_map(|v| v.iter())
            .map(|(k, v)| (k.as_str(), v));
        let ctx = template::context(
            Value::from(messages.to_vec()),
            self.tools.clone(),
            add_generation_prompt,
            vars,
        );
        self.count.set(self.count.get() + 1);
        self.template.render(&ctx)
    }

    /// The text of a rendering, or `None` when the template raises (a fast path then gives up).
    pub(crate) fn text(&self, messages: &[Value], add_generation_prompt: bool) -> Option<String> {
        self.render(messages, add_generation_prompt)
            .ok()
            .map(|r| r.text)
    }

    /// Whether the template has `{% generation %}` blocks.
    pub(crate) fn has_generation_tags(&self) -> bool {
        self.template.has_generation_tags()
    }

    /// Renderings made so far.
    pub(crate) fn count(&self) -> usize {
        self.count.get()
    }
}

/// What a message is replaced with to find its text: an assistant turn with only `content`.
pub fn blank_message(content: Value) -> Value {
    Value::from_pairs([("role", Value::from("assistant")), ("content", content)])
}

/// What `message` is replaced with to find its text: for an assistant message (or one without a
/// role), an assistant turn with only `content` ([`blank_message`]); for other roles the message
/// with its `content` replaced and its other fields kept (a tool result's `tool_call_id`, `name`),
/// which templates may require.
pub fn blank_like(message: &Value, content: Value) -> Value {
    let role = message.get_attr("role").ok();
    match role.as_ref().and_then(|r| r.as_str()) {
        Some(r) if r != "assistant" => super::marked::with_content(message, content.clone())
            .unwrap_or_else(|| Value::from_pairs([("role", Value::from(r)), ("content", content)])),
        _ => blank_message(content),
    }
}
