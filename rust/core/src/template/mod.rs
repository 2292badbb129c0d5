//! Chat-template rendering with minijinja, configured as transformers configures Jinja2
//! (`trim_blocks`, `lstrip_blocks`, loop controls, Python methods, its own `tojson`,
//! `raise_exception`, `strftime_now`), so the output is byte-identical to
//! `apply_chat_template(tokenize=False)`.

mod conversation;
mod filters;
mod generation;
mod globals;
mod json;
mod pyrepr;
mod value;

pub use conversation::{Conversation, Message, KNOWN_ROLES};
pub use value::from_json;

use crate::{Error, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::Environment;
use std::ops::Range;

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    has_generation_tags: bool,
    /// The source as given (kept so that a tokenizer can be pickled and rebuilt).
    source: String,
}

/// One rendering: the text and the byte ranges of its `{% generation %}` blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The rendered text.
    pub text: String,
    /// Byte ranges of `text` that `{% generation %}` blocks produced, in order.
    pub generation: Vec<Range<usize>>,
}

/// Template variables (`bos_token`, per-call keywords, ...), later entries winning.
pub type Vars = Vec<(String, Value)>;

/// String-valued template variables (the special tokens of a tokenizer config) as [`Vars`].
pub fn string_vars(pairs: &[(String, String)]) -> Vars {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect()
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("has_generation_tags", &self.has_generation_tags)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error becomes [`Error::Template`].
    pub fn new(source: &str) -> Result<Self> {
        let rewritten = generation::rewrite_tags(source);
        let has_generation_tags = rewritten.is_some();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_formatter(|out, _state, value| {
            let mut text = String::new();
            pyrepr::py_str(value, &mut text);
            out.write_str(&text).map_err(minijinja::Error::from)
        });
        env.set_unknown_method_callback(globals::unknown_method);
        filters::register(&mut env);
        env.add_filter("tojson", json::tojson);
        env.add_filter("string", |v: Value| {
            let mut text = String::new();
            pyrepr::py_str(&v, &mut text);
            text
        });
        env.add_filter(generation::FILTER_NAME, generation::mark);
        // Jinja2's tests where minijinja differs: `none` is not iterable; strings, dicts and
        // ranges are sequences.
        env.add_test("none", |v: Value| value::is_none(&v));
        env.add_test("iterable", |v: Value| {
            !value::is_none(&v) && v.try_iter().is_ok()
        });
        env.add_test("sequence", |v: Value| {
            use minijinja::value::ValueKind::*;
            v.is_undefined() || matches!(v.kind(), Seq | String | Map | Iterable)
        });
        env.add_function("raise_exception", globals::raise_exception);
        env.add_function("strftime_now", globals::strftime_now);
        env.add_template_owned(
            TEMPLATE_NAME,
            rewritten.unwrap_or_else(|| source.to_string()),
        )
        .map_err(template_error)?;
        Ok(ChatTemplate {
            env,
            has_generation_tags,
            source: source.to_string(),
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template marks assistant output with `{% generation %}` blocks.
    pub fn has_generation_tags(&self) -> bool {
        self.has_generation_tags
    }

    /// Renders with `context` (a map of template variables: `messages`, `tools`, ...).
    pub fn render(&self, context: &Value) -> Result<Rendered> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let mut text = template.render(context).map_err(template_error)?;
        let generation = if self.has_generation_tags {
            generation::extract(&mut text).map_err(Error::Template)?
        } else {
            Vec::new()
        };
        Ok(Rendered { text, generation })
    }
}

/// The variables transformers passes to a chat template: `messages`, `tools`, `documents`,
/// `add_generation_prompt`, then the special tokens and keywords in `vars` (later ones win).
pub fn context<'a>(
    messages: Value,
    tools: Value,
    add_generation_prompt: bool,
    vars: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Value {
    let mut map: std::collections::BTreeMap<&str, Value> = std::collections::BTreeMap::new();
    map.insert("tools", value::variable(tools));
    map.insert("documents", value::variable(Value::from(())));
    for (key, v) in vars {
        map.insert(key, value::variable(v.clone()));
    }
    map.insert("messages", messages);
    map.insert("add_generation_prompt", Value::from(add_generation_prompt));
    Value::from_pairs(map)
}

fn template_error(err: minijinja::Error) -> Error {
    if let Some(detail) = err.detail() {
        if let Some(message) = detail.strip_prefix(globals::RAISED_PREFIX) {
            return Error::Template(message.to_string());
        }
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    Error::Template(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: serde_json::Value) -> Result<String> {
        let t = ChatTemplate::new(source)?;
        let ctx = context(from_json(&messages), Value::from(()), false, []);
        Ok(t.render(&ctx)?.text)
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\nU:{{ m.content }}\n  {% endif %}\n{% endfor %}\n";
        assert_eq!(
            render(src, json!([{"role": "user", "content": "hi"}])).unwrap(),
            "U:hi\n"
        );
    }

    #[test]
    fn python_methods_and_reprs() {
        let src = "{{ messages[0].content.strip().split(',') }}|{{ none }}|{{ true }}|{{ {'a': 1.0} }}|{{ messages[0].get('x', 'd') }}";
        assert_eq!(
            render(src, json!([{"role": "user", "content": " a,b "}])).unwrap(),
            "['a', 'b']|None|True|{'a': 1.0}|d"
        );
    }

    #[test]
    fn raise_exception_keeps_message() {
        let err = render("{{ raise_exception('Roles must alternate') }}", json!([])).unwrap_err();
        assert_eq!(err, Error::Template("Roles must alternate".into()));
    }

    #[test]
    fn list_append_is_refused() {
        let err = render("{% set x = [] %}{{ x.append(1) }}", json!([])).unwrap_err();
        assert!(err.to_string().contains("unsafe"), "{err}");
    }

    #[test]
    fn generation_spans_are_recorded() {
        let src = "{% for m in messages %}{% if m.role == 'assistant' %}A: {%- generation %} {{ m.content }}{% endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let msgs = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": "é"}]);
        let r = t
            .render(&context(from_json(&msgs), Value::from(()), false, []))
            .unwrap();
        assert_eq!(r.text, "U: q\nA: é"); // trim_blocks eats the newline after the end tag
        assert_eq!(&r.text[r.generation[0].clone()], " é");
    }

    #[test]
    fn syntax_error_is_template_error() {
        assert!(matches!(
            ChatTemplate::new("{% if %}"),
            Err(Error::Template(_))
        ));
    }
}
