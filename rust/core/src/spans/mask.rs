//! From spans to trained tokens: the end-of-turn token after a span, token boundaries, and the
//! mask of the tokens that overlap the spans.

use std::ops::Range;

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

/// Calls `f(token, span)` for every token whose byte range overlaps one of `spans` (sorted,
/// disjoint), with the first span it overlaps.
fn for_each_overlap(
    offsets: &[(usize, usize)],
    spans: &[Range<usize>],
    mut f: impl FnMut(usize, usize),
) {
    let mut s = 0;
    for (i, &(a, b)) in offsets.iter().enumerate() {
        while s < spans.len() && spans[s].end <= a {
            s += 1;
        }
        if s == spans.len() {
            break;
        }
        if a < b && a < spans[s].end && b > spans[s].start {
            f(i, s);
        }
    }
}

/// Indices of the tokens whose byte range overlaps any of `spans` (sorted, disjoint).
pub fn tokens_overlapping(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    let mut mask = vec![false; offsets.len()];
    for_each_overlap(offsets, spans, |i, _| mask[i] = true);
    mask
}

/// Per token, the weight of the span it overlaps (the first, if several), 0 for tokens outside
/// every span; `weights` is parallel to `spans`.
pub fn token_weights(
    offsets: &[(usize, usize)],
    spans: &[Range<usize>],
    weights: &[f64],
) -> Vec<f32> {
    let mut out = vec![0.0; offsets.len()];
    for_each_overlap(offsets, spans, |i, s| out[i] = weights[s] as f32);
    out
}

/// `b[i]` is true when byte position `i` starts or ends a token (so a cut there splits none).
pub(crate) fn token_boundaries(offsets: &[(usize, usize)], len: usize) -> Vec<bool> {
    let mut b = vec![false; len + 1];
    b[0] = true;
    b[len] = true;
    for &(s, e) in offsets {
        b[s.min(len)] = true;
        b[e.min(len)] = true;
    }
    // A position strictly inside a token is never a boundary, even if offsets overlap there.
    for &(s, e) in offsets {
        for x in b.iter_mut().take(e.min(len)).skip(s + 1) {
            *x = false;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

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
