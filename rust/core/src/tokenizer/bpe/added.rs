//! Splitting out added tokens before pre-tokenization, as `tokenizers`' `AddedVocabulary` does:
//! first the tokens matched on the raw text (`normalized: false`), leftmost-longest, then, in the
//! text between them, the tokens matched on normalized text (`normalized: true`).
//!
//! The native encoder only runs where normalization is the identity, so both passes match on
//! the raw text.

use aho_corasick::{AhoCorasick, MatchKind};

/// A piece of the input: an added token, or text to pre-tokenize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Added { id: u32, start: usize, end: usize },
    Text { start: usize, end: usize },
}

#[derive(Debug, Default)]
pub struct AddedTokens {
    raw: Option<Matcher>,
    normalized: Option<Matcher>,
}

#[derive(Debug)]
struct Matcher {
    automaton: AhoCorasick,
    ids: Vec<u32>,
}

/// One added token as `tokenizer.json` describes it.
#[derive(Debug, Clone)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    pub normalized: bool,
}

impl AddedTokens {
    pub fn new(tokens: &[AddedToken]) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for t in tokens {
            if t.content.is_empty() {
                return Err(format!("added token {} is empty", t.id));
            }
            if !seen.insert(t.content.as_str()) {
                return Err(format!("added token {:?} appears twice", t.content));
            }
        }
        let build = |normalized: bool| -> Result<Option<Matcher>, String> {
            let (contents, ids): (Vec<&str>, Vec<u32>) = tokens
                .iter()
                .filter(|t| t.normalized == normalized)
                .map(|t| (t.content.as_str(), t.id))
                .unzip();
            if contents.is_empty() {
                return Ok(None);
            }
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&contents)
                .map_err(|e| format!("added tokens: {e}"))?;
            Ok(Some(Matcher { automaton, ids }))
        };
        Ok(AddedTokens {
            raw: build(false)?,
            normalized: build(true)?,
        })
    }

    /// Calls `segment` for each piece of `text`, in order; the pieces cover `text`.
    pub fn split(&self, text: &str, mut segment: impl FnMut(Segment)) {
        match &self.raw {
            None => self.split_normalized(text, 0, text.len(), &mut segment),
            Some(raw) => {
                let mut last = 0;
                for m in raw.automaton.find_iter(text) {
                    self.split_normalized(text, last, m.start(), &mut segment);
                    segment(Segment::Added {
                        id: raw.ids[m.pattern().as_usize()],
                        start: m.start(),
                        end: m.end(),
                    });
                    last = m.end();
                }
                self.split_normalized(text, last, text.len(), &mut segment);
            }
        }
    }

    fn split_normalized(
        &self,
        text: &str,
        start: usize,
        end: usize,
        segment: &mut impl FnMut(Segment),
    ) {
        if start == end {
            return;
        }
        let Some(normalized) = &self.normalized else {
            segment(Segment::Text { start, end });
            return;
        };
        let mut last = start;
        for m in normalized.automaton.find_iter(&text[start..end]) {
            let (a, b) = (start + m.start(), start + m.end());
            if a > last {
                segment(Segment::Text {
                    start: last,
                    end: a,
                });
            }
            segment(Segment::Added {
                id: normalized.ids[m.pattern().as_usize()],
                start: a,
                end: b,
            });
            last = b;
        }
        if last < end {
            segment(Segment::Text { start: last, end });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u32, content: &str, normalized: bool) -> AddedToken {
        AddedToken {
            id,
            content: content.into(),
            normalized,
        }
    }

    fn segments(added: &AddedTokens, text: &str) -> Vec<Segment> {
        let mut out = Vec::new();
        added.split(text, |s| out.push(s));
        out
    }

    #[test]
    fn longest_raw_match_first_then_normalized_between() {
        let added = AddedTokens::new(&[
            token(1, "<a>", false),
            token(2, "<a><b>", false),
            token(3, "think", true),
        ])
        .unwrap();
        use Segment::*;
        assert_eq!(
            segments(&added, "x<a><b>y think<a>"),
            [
                Text { start: 0, end: 1 },
                Added {
                    id: 2,
                    start: 1,
                    end: 7
                },
                Text { start: 7, end: 9 },
                Added {
                    id: 3,
                    start: 9,
                    end: 14
                },
                Added {
                    id: 1,
                    start: 14,
                    end: 17
                },
            ]
        );
    }

    #[test]
    fn duplicates_and_empty_tokens_are_refused() {
        assert!(AddedTokens::new(&[token(1, "a", false), token(2, "a", true)]).is_err());
        assert!(AddedTokens::new(&[token(1, "", false)]).is_err());
    }
}
