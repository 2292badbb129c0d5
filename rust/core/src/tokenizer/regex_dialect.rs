//! Pre-tokenizer patterns between regex dialects: tiktoken's (`fancy-regex`), Hugging Face's
//! (Oniguruma, Ruby syntax) and the `regex` crate's automata (turnpack's BPE, [`super::bpe`]).
//! The scanners below walk a pattern's escapes, classes and intervals; the rewrites use them.

use std::borrow::Cow;

/// Rewrite a fancy-regex pattern (tiktoken's engine) for Oniguruma's Ruby syntax (Hugging Face's
/// engine) where the two read the same text differently:
/// - `X{n,m}+` is possessive in fancy-regex but "`X{n,m}` one or more times" in Ruby syntax
///   (cl100k's `\p{N}{1,3}+`), so it becomes the atomic group `(?>X{n,m})`;
/// - outside character classes, `^` and `$` are text anchors in fancy-regex (unless the
///   multi-line flag is on) but line anchors in Ruby syntax, so they become `\A` and `\z`.
///
/// `?+`, `*+` and `++` are possessive in both and stay.
pub(crate) fn onig_pattern(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains(['^', '$', '{']) {
        return Cow::Borrowed(pattern);
    }
    let anchors = !has_multiline_flag(pattern);
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    // Where in `out` the last complete atom (the operand of a following quantifier) starts.
    let mut atom: Option<usize> = None;
    let mut groups: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let start = out.len();
                let end = escape_end(&chars, i);
                out.extend(&chars[i..end]);
                atom = Some(start);
                i = end;
                continue;
            }
            '[' => {
                let start = out.len();
                let end = class_end(&chars, i);
                out.extend(&chars[i..end]);
                atom = Some(start);
                i = end;
                continue;
            }
            '(' => {
                groups.push(out.len());
                out.push(c);
                atom = None;
            }
            ')' => {
                out.push(c);
                atom = groups.pop();
            }
            '{' => match interval_end(&chars, i) {
                Some(end) => {
                    let possessive = chars.get(end) == Some(&'+');
                    match atom {
                        Some(start) if possessive => {
                            out.insert_str(start, "(?>");
                            out.extend(&chars[i..end]);
                            out.push(')');
                            i = end + 1;
                        }
                        _ => {
                            out.extend(&chars[i..end]);
                            i = end;
                        }
                    }
                    atom = None;
                    continue;
                }
                None => {
                    atom = Some(out.len());
                    out.push(c);
                }
            },
            '*' | '+' | '?' | '|' => {
                out.push(c);
                atom = None;
            }
            '^' if anchors => {
                out.push_str(r"\A");
                atom = None;
            }
            '$' if anchors => {
                out.push_str(r"\z");
                atom = None;
            }
            _ => {
                atom = Some(out.len());
                out.push(c);
            }
        }
        i += 1;
    }
    if out == pattern {
        Cow::Borrowed(pattern)
    } else {
        Cow::Owned(out)
    }
}

/// End (exclusive) of the escape starting at `chars[i] == '\\'`: `\p{..}`, `\x{..}` and the like
/// run to their closing brace, `\pL` takes one letter more, others are two characters.
pub(crate) fn escape_end(chars: &[char], i: usize) -> usize {
    let Some(&kind) = chars.get(i + 1) else {
        return chars.len();
    };
    match (kind, chars.get(i + 2)) {
        ('p' | 'P' | 'x' | 'u' | 'o', Some('{')) => chars[i + 2..]
            .iter()
            .position(|&c| c == '}')
            .map_or(chars.len(), |p| i + 3 + p),
        ('p' | 'P', Some(_)) => i + 3,
        _ => i + 2,
    }
}

/// End (exclusive) of the character class starting at `chars[i] == '['`, nested classes included.
pub(crate) fn class_end(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if chars.get(j) == Some(&'^') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1; // a `]` first in the class is a member
    }
    let mut depth = 1;
    while j < chars.len() {
        match chars[j] {
            '\\' => {
                j = escape_end(chars, j);
                continue;
            }
            '[' => {
                // A nested class (`[a[bc]]`, `[[:alpha:]]`) has the same leading-member rules.
                depth += 1;
                j += 1;
                if chars.get(j) == Some(&'^') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                continue;
            }
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    chars.len()
}

/// End (exclusive) of the interval quantifier `{n}`, `{n,}`, `{n,m}` or `{,m}` starting at
/// `chars[i] == '{'`, or None when the brace is a literal.
fn interval_end(chars: &[char], i: usize) -> Option<usize> {
    let close = i + 1 + chars[i + 1..].iter().position(|&c| c == '}')?;
    let body: String = chars[i + 1..close].iter().collect();
    let (low, high) = body.split_once(',').unwrap_or((&body, "0"));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    (!body.is_empty() && body != "," && digits(low) && digits(high)).then_some(close + 1)
}

/// Whether an inline flag group such as `(?m)` or `(?im:` turns the multi-line flag on.
fn has_multiline_flag(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        let escaped = pattern[..at]
            .bytes()
            .rev()
            .take_while(|&b| b == b'\\')
            .count()
            % 2
            == 1;
        !escaped
            && pattern[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .any(|c| c == 'm')
    })
}
