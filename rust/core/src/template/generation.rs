//! `{% generation %}` blocks: minijinja's parser does not know the tag, and deleting it would also
//! delete its `-` whitespace markers. So the tag is rewritten into a filter block (same markers, same
//! whitespace handling) whose filter wraps the body in two noncharacters; after rendering, the
//! markers are removed and their positions recorded.

use regex::Regex;
use std::ops::Range;
use std::sync::OnceLock;

pub const FILTER_NAME: &str = "__turnpack_generation";
pub const OPEN: char = '\u{FDD0}';
pub const CLOSE: char = '\u{FDD1}';

fn tag_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}").expect("valid regex")
    })
}

/// Rewrites generation tags; returns `None` when the template has none.
pub fn rewrite_tags(source: &str) -> Option<String> {
    let re = tag_regex();
    if !re.is_match(source) {
        return None;
    }
    Some(
        re.replace_all(source, |caps: &regex::Captures<'_>| {
            let (open, close) = (&caps[1], &caps[3]);
            if caps.get(2).is_some() {
                format!("{{%{open} endfilter {close}%}}")
            } else {
                format!("{{%{open} filter {FILTER_NAME} {close}%}}")
            }
        })
        .into_owned(),
    )
}

/// The filter the rewritten tags call.
pub fn mark(body: String) -> String {
    let mut out = String::with_capacity(body.len() + 6);
    out.push(OPEN);
    out.push_str(&body);
    out.push(CLOSE);
    out
}

/// Removes the markers from `text`, returning the generation spans as byte ranges of the cleaned
/// text. Fails if the markers do not pair up (a template or input that contains them itself).
pub fn extract(text: &mut String) -> Result<Vec<Range<usize>>, String> {
    if !text.contains([OPEN, CLOSE]) {
        return Ok(Vec::new());
    }
    let mut spans = Vec::new();
    let mut clean = String::with_capacity(text.len());
    let mut open_at: Option<usize> = None;
    for c in text.chars() {
        match c {
            OPEN if open_at.is_none() => open_at = Some(clean.len()),
            CLOSE if open_at.is_some() => spans.push(open_at.take().unwrap()..clean.len()),
            OPEN | CLOSE => return Err("nested or unbalanced {% generation %} blocks".into()),
            c => clean.push(c),
        }
    }
    if open_at.is_some() {
        return Err("unclosed {% generation %} block".into());
    }
    *text = clean;
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_whitespace_markers() {
        let src = "a{%- generation %}b{% endgeneration -%}c{%generation%}d{%endgeneration%}";
        assert_eq!(
            rewrite_tags(src).unwrap(),
            format!("a{{%- filter {FILTER_NAME} %}}b{{% endfilter -%}}c{{% filter {FILTER_NAME} %}}d{{% endfilter %}}")
        );
        assert!(rewrite_tags("no tags").is_none());
    }

    #[test]
    fn extract_spans() {
        let mut text = format!("ab{}cd{}e{}é{}", OPEN, CLOSE, OPEN, CLOSE);
        let spans = extract(&mut text).unwrap();
        assert_eq!(text, "abcdeé");
        assert_eq!(spans, vec![2..4, 5..7]);
    }
}
