//! Where a span starts with `start="prompt"`: after the generation prompt, found in the rendering
//! instead of rendered once per message.
//!
//! The exact rule renders `messages[:i]` with the generation prompt for every supervised message
//! `i` and, when that text is a prefix of the full rendering, starts the span at its end. Those
//! renderings sum to half the conversation per message: quadratic in turns. But a template's
//! generation prompt `G` (what `add_generation_prompt` appends, `<|im_start|>assistant\n` for
//! Qwen) is the header it prints before every assistant message, so the exact prompt ends where the
//! last `G` before the message's own text ends. The caller finds `G` once, checks this rule against
//! the exact one on the first and last supervised messages (templates treat those specially when
//! they treat any specially), and renders per message when either disagrees.

use super::diff::Diff;

/// Where the generation prompt `g` ends before a message whose text is `raw` (its diff against the
/// rendering with it blanked): the end of the last occurrence of `g` in `text` between `lower` (the
/// previous message's end) and the start of the message's text. The header is template text that
/// both renderings share, so it ends by then; a copy of `g` that the message's own text begins with
/// does not. `None` when there is none.
pub fn after_generation_prompt(text: &str, g: &str, lower: usize, raw: &Diff) -> Option<usize> {
    if g.is_empty() {
        return None;
    }
    let at = text.get(lower..raw.start)?.rfind(g)?;
    Some(lower + at + g.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(start: usize, end: usize) -> Diff {
        Diff {
            start,
            end,
            blank_end: start,
        }
    }

    #[test]
    fn the_last_header_before_the_message() {
        let g = "<a>\n";
        let text = "<u>hi</u><a>\nhello</a><u>x</u><a>\n<think></think>yes</a>";
        let first = text.find("hello").unwrap();
        let second = text.find("<think>").unwrap();
        let end2 = text.rfind("</a>").unwrap();
        assert_eq!(
            after_generation_prompt(text, g, 0, &raw(first, first + 5)),
            Some(first)
        );
        // the think block the template prints is trained: the header ends before it
        assert_eq!(
            after_generation_prompt(text, g, first + 5, &raw(second + 7, end2)),
            Some(second)
        );
        // not before the previous message's end
        assert_eq!(
            after_generation_prompt(text, g, second, &raw(second + 7, end2)),
            None
        );
    }

    #[test]
    fn a_header_inside_the_message_text_does_not_count() {
        let g = "<a>";
        let text = "<a>say <a> twice</a>";
        assert_eq!(after_generation_prompt(text, g, 0, &raw(3, 16)), Some(3));
        // a message that begins with the prompt's text: the diff against the blank rendering
        // (`<a></a>`) starts inside that copy, after the shared `<`; the header still counts
        let text = "<a><a>x</a>";
        assert_eq!(after_generation_prompt(text, g, 0, &raw(4, 8)), Some(3));
        assert_eq!(after_generation_prompt(text, "", 0, &raw(4, 8)), None);
        let multibyte = "é<a>éok";
        assert_eq!(
            after_generation_prompt(multibyte, "<a>é", 0, &raw(7, 9)),
            Some(7)
        );
        assert_eq!(
            after_generation_prompt(multibyte, "<a>é", 3, &raw(7, 9)),
            None
        );
    }
}
