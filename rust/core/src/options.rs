//! What `encode` is asked to do: which messages are trained, where their spans start and end, and
//! how the rendering is tokenized. Each choice parses from the name the Python API uses.

use crate::{Error, Result};
use std::str::FromStr;

/// Which messages are trained.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Supervise {
    /// Every assistant message (minus those with `weight: 0`).
    #[default]
    Assistant,
    /// Only the last assistant message.
    LastAssistant,
    /// Every token of the rendering.
    All,
    /// Every message with one of these roles (axolotl's `roles_to_train`), minus those with
    /// `weight: 0`. Spans of other roles than `assistant` start where the message's text starts.
    Roles(Vec<String>),
}

impl Supervise {
    /// Whether a message with `role` is trained (before its weight is looked at).
    pub fn trains_role(&self, role: &str) -> bool {
        match self {
            Supervise::Roles(roles) => roles.iter().any(|r| r == role),
            Supervise::All => true,
            _ => role == "assistant",
        }
    }

    /// `Supervise::Roles` from role names, checked against the roles messages may have.
    pub fn roles(roles: Vec<String>) -> Result<Self> {
        if roles.is_empty() {
            return Err(Error::InvalidArgument(
                "supervise: a list of roles must name at least one role".into(),
            ));
        }
        if let Some(bad) = roles
            .iter()
            .find(|r| !crate::template::KNOWN_ROLES.contains(&r.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "supervise: unknown role {bad:?} (expected one of {})",
                crate::template::KNOWN_ROLES.join(", ")
            )));
        }
        Ok(Supervise::Roles(roles))
    }
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
    /// From a constant number of renderings when the template is local (see `spans/layout.rs`),
    /// else per message.
    #[default]
    Auto,
    /// One rendering per supervised message: the reference method.
    PerMessage,
}

/// What is trained when the template renders an earlier assistant turn differently from how the
/// model writes it (Qwen3 and most reasoning templates drop the reasoning of turns before the last
/// user message). Such turns are found in every mode and reported (`Encoded::rewrites`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// One sample, the conversation as the template renders it: rewritten turns are trained as
    /// rendered (and reported).
    #[default]
    Rendered,
    /// Only turns whose target appears as at inference are trained; rewritten turns are context.
    Faithful,
    /// Every supervised turn is trained in its inference context with its inference target:
    /// rewritten turns become branches of a prefix tree (`Encoded::branches`).
    Expand,
}

/// Everything `ChatTokenizer::encode` can be told; the default is what the Python API defaults to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Which assistant messages are trained.
    pub supervise: Supervise,
    /// Where a span starts.
    pub start: Start,
    /// How spans are found.
    pub spans: SpanSource,
    /// The end-of-turn token trained after each span.
    pub eot: Eot,
    /// How the rendering is tokenized.
    pub boundary: Boundary,
    /// How the blanked renderings are obtained.
    pub method: Method,
    /// What is trained of turns the template rewrites in history.
    pub history: History,
}

/// `FromStr` for an option enum: its names, and an error listing them.
macro_rules! parse_by_name {
    ($ty:ty, $what:literal, $($name:literal => $value:expr),+ $(,)?) => {
        impl FromStr for $ty {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($value),)+
                    other => Err(Error::InvalidArgument(format!(
                        concat!($what, " must be one of ", $("'", $name, "', ",)+ "got {:?}"),
                        other
                    ))),
                }
            }
        }
    };
}

parse_by_name!(Supervise, "supervise",
    "assistant" => Supervise::Assistant,
    "last_assistant" => Supervise::LastAssistant,
    "all" => Supervise::All,
);
parse_by_name!(Start, "start", "prompt" => Start::Prompt, "content" => Start::Content);
parse_by_name!(SpanSource, "spans", "diff" => SpanSource::Diff, "generation" => SpanSource::Generation);
parse_by_name!(Boundary, "boundary", "merge" => Boundary::Merge, "split" => Boundary::Split);
parse_by_name!(History, "history",
    "rendered" => History::Rendered,
    "faithful" => History::Faithful,
    "expand" => History::Expand,
);
parse_by_name!(Method, "method", "auto" => Method::Auto, "per_message" => Method::PerMessage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_by_name_and_list_the_choices() {
        assert_eq!("last_assistant".parse(), Ok(Supervise::LastAssistant));
        assert_eq!("per_message".parse(), Ok(Method::PerMessage));
        assert_eq!("split".parse(), Ok(Boundary::Split));
        let err = "middle".parse::<Start>().unwrap_err();
        assert_eq!(
            err,
            Error::InvalidArgument(
                "start must be one of 'prompt', 'content', got \"middle\"".into()
            )
        );
    }
}
