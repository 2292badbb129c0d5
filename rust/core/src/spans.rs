//! Where an assistant message lies in a rendering, from the diff between the rendering and the
//! same conversation with that message blanked; and the end-of-turn token that follows it.

use std::ops::Range;

/// The region of `full` that differs from `blank`: `full = A + D + B`, `blank = A + D' + B` with
/// `A` the longest common prefix and `B` the longest common suffix that does not overlap it.
/// Positions are byte offsets on char boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diff {
    /// Start of `D` (= len of `A`), the same in both texts.
    pub start: usize,
    /// End of `D` in `full`.
    pub end: usize,
    /// End of `D'` in `blank`.
    pub blank_end: usize,
}

pub fn diff(full: &str, blank: &str) -> Diff {
    let (a, b) = (full.as_bytes(), blank.as_bytes());
    let mut start = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    while !full.is_char_boundary(start) {
        start -= 1;
    }
    let max_suffix = a.len().min(b.len()) - start;
    let mut suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    while !full.is_char_boundary(a.len() - suffix) || !blank.is_char_boundary(b.len() - suffix) {
        suffix -= 1;
    }
    Diff {
        start,
        end: a.len() - suffix,
        blank_end: b.len() - suffix,
    }
}

impl Diff {
    /// The same diff moved `k` bytes to the left, if the two texts stay consistent with it: the
    /// common suffix then gains the `k` bytes before each end, so those must be equal.
    pub fn shifted_left(&self, full: &str, blank: &str, k: usize) -> Option<Diff> {
        if k > self.start || k > self.blank_end {
            return None;
        }
        let (end, blank_end) = (self.end - k, self.blank_end - k);
        let same = full.as_bytes()[end..self.end] == blank.as_bytes()[blank_end..self.blank_end];
        let on_chars = full.is_char_boundary(end) && full.is_char_boundary(self.start - k);
        (same && on_chars).then_some(Diff {
            start: self.start - k,
            end,
            blank_end,
        })
    }

    /// All valid left shifts, smallest first (validity only shrinks as `k` grows).
    pub fn shifts<'a>(&self, full: &'a str, blank: &'a str) -> impl Iterator<Item = Diff> + 'a {
        let base = *self;
        let mut k = 0usize;
        let mut done = false;
        std::iter::from_fn(move || loop {
            if done {
                return None;
            }
            if k > base.start || k > base.blank_end {
                done = true;
                return None;
            }
            let (end, blank_end) = (base.end - k, base.blank_end - k);
            if full.as_bytes()[end..base.end] != blank.as_bytes()[blank_end..base.blank_end] {
                done = true;
                return None;
            }
            let current = k;
            k += 1;
            if let Some(d) = base.shifted_left(full, blank, current) {
                return Some(d);
            }
        })
    }
}

/// Extends a span ending at `end` over whitespace and then one end-of-turn token, if the text
/// there is exactly that; `eot_at` tells the length of an end-of-turn token starting at a position.
pub fn extend_over_eot(text: &str, end: usize, eot_at: impl Fn(usize) -> Option<usize>) -> usize {
    let rest = &text[end..];
    let ws = rest.len() - rest.trim_start().len();
    match eot_at(end + ws) {
        Some(len) => end + ws + len,
        None => end,
    }
}

/// Indices of the tokens whose byte range overlaps any of `spans` (sorted, disjoint).
pub fn tokens_overlapping(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut mask = vec![false; offsets.len()];
    let mut s = 0;
    for (i, &(a, b)) in offsets.iter().enumerate() {
        while s < spans.len() && spans[s].end <= a {
            s += 1;
        }
        if s == spans.len() {
            break;
        }
        if a < b && a < spans[s].end && b > spans[s].start {
            mask[i] = true;
        }
    }
    mask
}

/// Byte offsets to character offsets (Python indexes strings by character).
pub struct CharIndex {
    /// Chars started before each byte position.
    counts: Vec<u32>,
}

impl CharIndex {
    pub fn new(text: &str) -> Self {
        let mut counts = Vec::with_capacity(text.len() + 1);
        let mut n = 0u32;
        for b in text.bytes() {
            counts.push(n);
            // Count each char at its first byte, so an offset inside a char rounds up.
            if (b & 0xC0) != 0x80 {
                n += 1;
            }
        }
        counts.push(n);
        CharIndex { counts }
    }

    pub fn char_of(&self, byte: usize) -> usize {
        self.counts[byte.min(self.counts.len() - 1)] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_the_message() {
        let full = "<u>hi</u><a>hello</a>";
        let blank = "<u>hi</u><a></a>";
        let d = diff(full, blank);
        assert_eq!(&full[d.start..d.end], "hello");
        assert_eq!(d.start, d.blank_end);
    }

    #[test]
    fn ambiguous_diff_shifts_left() {
        // A tool call ends with `>` and the end-of-turn token starts with `<`: the greedy prefix
        // takes the `<`, so the raw diff cuts both; one shift left fixes it.
        let full = "A\n<tool_call>x</tool_call><|im_end|>\n";
        let blank = "A\n<|im_end|>\n";
        let d = diff(full, blank);
        assert_eq!(&full[d.start..d.end], "tool_call>x</tool_call><");
        let shifts: Vec<Diff> = d.shifts(full, blank).collect();
        assert_eq!(
            &full[shifts[1].start..shifts[1].end],
            "<tool_call>x</tool_call>"
        );
        assert_eq!(shifts.len(), 2);
    }

    #[test]
    fn eot_after_whitespace() {
        let text = "answer \n<|end|>x";
        let end = extend_over_eot(text, 6, |p| text[p..].starts_with("<|end|>").then_some(7));
        assert_eq!(&text[..end], "answer \n<|end|>");
        assert_eq!(extend_over_eot(text, 2, |_| None), 2);
    }

    #[test]
    fn overlap_mask() {
        let offsets = [(0, 2), (2, 4), (4, 6), (6, 8)];
        assert_eq!(
            tokens_overlapping(&offsets, &[3..5, 7..8]),
            [false, true, true, true]
        );
    }
}
