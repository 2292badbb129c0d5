//! A pre-tokenizer `Split` regex, written for Oniguruma (what `tokenizers` runs), executed with
//! the `regex` crate's automata, which have no look-around.
//!
//! Byte-level BPE patterns (GPT-2, cl100k, Llama 3/4, Qwen, DeepSeek) use one look-ahead, always as
//! the branch pair `\s+(?!\S)|\s+` (or `|\s`) at the end of the alternation: a run of whitespace
//! followed by a non-space gives up its last character, which then joins the next word. With
//! `P` for the branches before it, Oniguruma's leftmost-first backtracking gives at each start:
//! `P`'s match if `P` matches there; else, on whitespace, the whole run when it ends the text or is
//! followed by more whitespace, the run less its last character when that leaves at least one,
//! and the single whitespace character otherwise. `P|\s+` (one search) gives the same result except
//! for a whitespace-only match of two or more characters followed by a non-space. There, an
//! anchored search of `P` alone tells whether `P` produced it (keep it) or `\s+` did (drop the last
//! character).
//!
//! Anything whose meaning could differ between the two engines is refused, and the caller keeps
//! `tokenizers`: other look-around, atomic groups and possessive quantifiers (except in the known
//! cl100k pattern, whose rewrite is checked by the tests), POSIX classes, and the Perl classes
//! `\w \d \b \h` and their negations. Line anchors `^`/`$` (Ruby syntax) become `(?m:^)`/`(?m:$)`.

use regex_automata::meta::{Cache, Regex};
use regex_automata::{Anchored, Input};

use crate::tokenizer::regex_dialect::{class_end, escape_end};

/// cl100k's pattern as `tiktoken::load` rewrites it for Oniguruma, and the same without its
/// possessive quantifiers and atomic group. Every quantified item there is followed by something
/// it cannot match itself (or by the end), so backtracking into it can never succeed and the
/// possessive forms change nothing; tests compare both against `tokenizers` on cl100k's ranks.
const KNOWN_REWRITES: &[(&str, &str)] = &[(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|(?>\p{N}{1,3})| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++\z|\s*[\r\n]|\s+(?!\S)|\s",
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+\z|\s*[\r\n]|\s+(?!\S)|\s",
)];

const LOOKAHEAD_BRANCH: &str = r"\s+(?!\S)";

/// One `Split(Regex, Isolated)` stage.
#[derive(Debug)]
pub struct SplitRegex {
    /// The pattern with `\s+(?!\S)|\s+` searched as `\s+`.
    combined: Regex,
    /// Whether the pattern has the `\s+(?!\S)` branch.
    lookahead: bool,
    /// The branches before the look-ahead, when there are any.
    before_lookahead: Option<Regex>,
}

impl SplitRegex {
    /// Compiles an Oniguruma pattern, or says why it cannot be run exactly here.
    pub fn new(onig: &str) -> Result<Self, String> {
        let pattern = KNOWN_REWRITES
            .iter()
            .find(|(from, _)| *from == onig)
            .map_or(onig, |(_, to)| to);
        let pattern = translate(pattern)?;
        let branches = top_level_branches(&pattern);
        let compile = |p: &str| Regex::new(p).map_err(|e| format!("pattern {onig:?}: {e}"));
        let lookahead_at = branches.iter().position(|b| *b == LOOKAHEAD_BRANCH);
        let (combined, before_lookahead) = match lookahead_at {
            None => {
                if has_lookaround(&pattern) {
                    return Err(format!("pattern {onig:?} uses look-around"));
                }
                (compile(&pattern)?, None)
            }
            Some(at) => {
                let rest = &branches[at + 1..];
                if !(rest.len() == 1 && (rest[0] == r"\s+" || rest[0] == r"\s")) {
                    return Err(format!(
                        "pattern {onig:?}: `\\s+(?!\\S)` is not followed by a final `\\s+` or `\\s`"
                    ));
                }
                let before = branches[..at].join("|");
                if has_lookaround(&before) {
                    return Err(format!("pattern {onig:?} uses look-around"));
                }
                let combined = if before.is_empty() {
                    r"\s+".to_string()
                } else {
                    format!(r"{before}|\s+")
                };
                let before = (!before.is_empty()).then(|| compile(&before)).transpose()?;
                (compile(&combined)?, before)
            }
        };
        Ok(SplitRegex {
            combined,
            lookahead: lookahead_at.is_some(),
            before_lookahead,
        })
    }

    /// Search caches for this regex (one per thread: see [`SplitCaches`]).
    pub fn create_caches(&self) -> SplitCaches {
        SplitCaches {
            combined: self.combined.create_cache(),
            before_lookahead: self.before_lookahead.as_ref().map(Regex::create_cache),
        }
    }

    /// Appends the pieces of `hay[start..end]` to `out` as (start, end) positions in `hay`, in
    /// order: the matches and the text between them (`Isolated`), so they cover the range exactly.
    /// `caches` must come from this regex's `create_caches`.
    pub fn split(
        &self,
        hay: &str,
        start: usize,
        end: usize,
        caches: &mut SplitCaches,
        out: &mut Vec<(usize, usize)>,
    ) {
        // The piece is its own haystack: `tokenizers` runs the regex on each piece separately, so
        // `\z`, `$` and the look-ahead see the piece's end.
        let piece = &hay[start..end];
        let mut last = 0;
        let mut at = 0;
        while at < piece.len() {
            // Most pieces start where the previous one ended: try there anchored first, which
            // needs only a forward scan.
            let anchored = Input::new(piece)
                .span(at..piece.len())
                .anchored(Anchored::Yes);
            let found = match self.combined.search_with(&mut caches.combined, &anchored) {
                Some(m) => Some(m),
                None => self.combined.search_with(
                    &mut caches.combined,
                    &Input::new(piece).span(at..piece.len()),
                ),
            };
            let Some(m) = found else { break };
            let (m_start, mut m_end) = (m.start(), m.end());
            if m_end == m_start {
                // No pattern here matches empty text; never loop on one that would.
                at = m_start + piece[m_start..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            if self.lookahead && m_end < piece.len() {
                m_end = self.apply_lookahead(piece, m_start, m_end, caches);
            }
            if m_start > last {
                out.push((start + last, start + m_start));
            }
            out.push((start + m_start, start + m_end));
            last = m_end;
            at = m_end;
        }
        if last < piece.len() {
            out.push((start + last, end));
        }
    }

    /// `hay[start..end]` matched `P|\s+` and text follows: the end Oniguruma's pattern gives.
    fn apply_lookahead(
        &self,
        hay: &str,
        start: usize,
        end: usize,
        caches: &mut SplitCaches,
    ) -> usize {
        let matched = &hay[start..end];
        let next = hay[end..].chars().next();
        let mut chars = matched.chars();
        let last = chars.next_back();
        let two_or_more = chars.next().is_some();
        if !two_or_more
            || !matched.chars().all(char::is_whitespace)
            || next.is_none_or(char::is_whitespace)
        {
            return end;
        }
        if let (Some(before), Some(cache)) =
            (&self.before_lookahead, caches.before_lookahead.as_mut())
        {
            let anchored = Input::new(hay)
                .span(start..hay.len())
                .anchored(Anchored::Yes);
            if before.search_with(cache, &anchored).is_some() {
                return end; // `P` matched here, and it comes first.
            }
        }
        end - last.map_or(0, char::len_utf8)
    }
}

/// A thread's search state for one [`SplitRegex`]. Kept per thread by the caller rather than in the
/// regex's shared pool: a pool hands a second thread a fresh cache when two threads collide on it,
/// and a fresh lazy DFA has to rebuild its states.
#[derive(Debug, Clone)]
pub struct SplitCaches {
    combined: Cache,
    before_lookahead: Option<Cache>,
}

/// Rewrites Ruby-syntax line anchors and refuses constructs whose meaning differs between
/// Oniguruma and the `regex` crate (or that the latter lacks).
fn translate(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let refuse = |what: &str| Err(format!("pattern {pattern:?} uses {what}"));
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let end = escape_end(&chars, i);
                if let Some(&kind) = chars.get(i + 1) {
                    if "wWdDbBhHRXKGZ".contains(kind) {
                        return refuse(&format!("`\\{kind}`"));
                    }
                }
                out.extend(&chars[i..end]);
                i = end;
                continue;
            }
            '[' => {
                let end = class_end(&chars, i);
                let class: String = chars[i..end].iter().collect();
                if class.contains("[:") {
                    return refuse("a POSIX class");
                }
                // Perl classes inside a class, e.g. `[\w-]`.
                let inner: Vec<char> = class.chars().collect();
                let mut j = 0;
                while j < inner.len() {
                    if inner[j] == '\\' {
                        if let Some(&kind) = inner.get(j + 1) {
                            if "wWdDhH".contains(kind) {
                                return refuse(&format!("`\\{kind}`"));
                            }
                        }
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                out.push_str(&class);
                i = end;
                continue;
            }
            '^' => out.push_str("(?m:^)"),
            '$' => out.push_str("(?m:$)"),
            '(' if chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'>') => {
                return refuse("an atomic group");
            }
            '?' | '*' | '+' | '}' if chars.get(i + 1) == Some(&'+') => {
                return refuse("a possessive quantifier");
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Whether a (translated) pattern contains a look-ahead or look-behind group.
fn has_lookaround(pattern: &str) -> bool {
    ["(?=", "(?!", "(?<=", "(?<!"]
        .iter()
        .any(|g| pattern.contains(g))
}

/// The alternatives of the pattern's top-level `|`, outside groups, classes and escapes.
fn top_level_branches(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut branches = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let end = match chars[i] {
            '\\' => escape_end(&chars, i),
            '[' => class_end(&chars, i),
            _ => i + 1,
        };
        match chars[i] {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => {
                branches.push(std::mem::take(&mut current));
                i = end;
                continue;
            }
            _ => {}
        }
        current.extend(&chars[i..end]);
        i = end;
    }
    branches.push(current);
    branches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(re: &SplitRegex, hay: &str) -> Vec<String> {
        let mut out = Vec::new();
        re.split(hay, 0, hay.len(), &mut re.create_caches(), &mut out);
        out.iter().map(|&(a, b)| hay[a..b].to_string()).collect()
    }

    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    #[test]
    fn whitespace_before_a_word_gives_up_its_last_space() {
        let re = SplitRegex::new(LLAMA3).unwrap();
        assert_eq!(pieces(&re, "a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces(&re, "a   "), ["a", "   "]);
        assert_eq!(pieces(&re, "x \t1"), ["x", " ", "\t", "1"]);
        // `\s*[\r\n]+` comes first and keeps its whole match.
        assert_eq!(pieces(&re, "a\n\nb"), ["a", "\n\n", "b"]);
        assert_eq!(pieces(&re, "a \n  b"), ["a", " \n", " ", " b"]);
        assert_eq!(pieces(&re, "12345 it's"), ["123", "45", " it", "'s"]);
    }

    #[test]
    fn gaps_between_matches_are_pieces() {
        let re = SplitRegex::new(r"\p{N}{1,3}").unwrap();
        assert_eq!(pieces(&re, "ab1234cd"), ["ab", "123", "4", "cd"]);
        assert_eq!(pieces(&re, "abc"), ["abc"]);
    }

    #[test]
    fn engine_dependent_constructs_are_refused() {
        for p in [
            r"\w+",
            r"[[:alpha:]]+",
            r"a++",
            r"(?>ab)",
            r"(?=a)b",
            r"\s+(?!\S)|x",
            r"[\d]",
        ] {
            assert!(SplitRegex::new(p).is_err(), "{p}");
        }
        assert!(SplitRegex::new(KNOWN_REWRITES[0].0).is_ok());
    }

    #[test]
    fn branches_split_only_at_top_level() {
        assert_eq!(
            top_level_branches(r"(?i:a|b)|[|]|\||c"),
            [r"(?i:a|b)", "[|]", r"\|", "c"]
        );
    }
}
