//! Where an assistant message lies in a rendering: the diff between the rendering and the same
//! conversation with that message blanked, and the other cuts of the same change (its shifts).

use std::ops::Range;

/// A rendering of the conversation with one message blanked, held as the full rendering with one
/// range replaced, so that finding each of `k` messages costs time near that message, not `k`
/// copies of the conversation.
#[derive(Debug, Clone, Copy)]
pub struct Blanked<'a> {
    full: &'a str,
    /// The range of `full` that is replaced (on char boundaries).
    at: (usize, usize),
    with: &'a str,
}

impl<'a> Blanked<'a> {
    /// `full` with `full[at]` replaced by `with`; `None` when `at` is not a range of char boundaries.
    pub fn spliced(full: &'a str, at: Range<usize>, with: &'a str) -> Option<Self> {
        full.get(at.clone())?;
        Some(Blanked {
            full,
            at: (at.start, at.end),
            with,
        })
    }

    /// Any text, as `full` with all of it replaced.
    pub fn whole(full: &'a str, blank: &'a str) -> Self {
        Blanked {
            full,
            at: (0, full.len()),
            with: blank,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.full.len() - (self.at.1 - self.at.0) + self.with.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is the full rendering itself.
    pub fn is_full(&self) -> bool {
        self.full[self.at.0..self.at.1] == *self.with
    }

    fn byte(&self, i: usize) -> u8 {
        let (s, e) = self.at;
        if i < s {
            self.full.as_bytes()[i]
        } else if i < s + self.with.len() {
            self.with.as_bytes()[i - s]
        } else {
            self.full.as_bytes()[i - s - self.with.len() + e]
        }
    }

    fn is_char_boundary(&self, i: usize) -> bool {
        // the pieces are cut on char boundaries, so this is the text's own boundary test
        i == self.len() || (self.byte(i) as i8) >= -0x40
    }

    /// Whether `full[a..a + n]` equals this text's bytes `b..b + n`.
    fn same(&self, full: &str, a: usize, b: usize, n: usize) -> bool {
        (0..n).all(|i| full.as_bytes()[a + i] == self.byte(b + i))
    }

    /// Owned text, for tests and error messages.
    pub fn to_text(&self) -> String {
        let (s, e) = self.at;
        [&self.full[..s], self.with, &self.full[e..]].concat()
    }
}

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

/// The region of `full` that differs from `blank` (a `Diff`).
pub fn diff(full: &str, blank: &str) -> Diff {
    diff_blanked(full, &Blanked::whole(full, blank))
}

/// [`diff`] against a blanked rendering of `full`: the text outside the replaced range is known to
/// be common, so only the bytes next to it are compared.
pub fn diff_blanked(full: &str, blank: &Blanked<'_>) -> Diff {
    debug_assert!(std::ptr::eq(full, blank.full));
    let a = full.as_bytes();
    let (s, e) = blank.at;
    let w = blank.with.as_bytes();
    let (la, lb) = (a.len(), blank.len());
    // From the front the blank reads a[..s] (shared), `with`, then a[e..].
    let mut start = s + common_prefix(&a[s..], w);
    if start == s + w.len() {
        start += common_prefix(&a[start..], &a[e..]);
    }
    while !full.is_char_boundary(start) {
        start -= 1;
    }
    // From the back it reads a[e..] (shared), `with`, then a[..s]; the suffix may not overlap the
    // prefix in either text.
    let max_suffix = la.min(lb) - start;
    let mut suffix = (la - e).min(max_suffix);
    if suffix == la - e {
        let k = common_suffix(&a[..e], w).min(max_suffix - suffix);
        suffix += k;
        if k == w.len() {
            suffix += common_suffix(&a[..e - w.len()], &a[..s]).min(max_suffix - suffix);
        }
    }
    while !full.is_char_boundary(la - suffix) || !blank.is_char_boundary(lb - suffix) {
        suffix -= 1;
    }
    Diff {
        start,
        end: la - suffix,
        blank_end: lb - suffix,
    }
}

/// Length of the common prefix of `x` and `y`, a block at a time (memcmp) before the last bytes.
fn common_prefix(x: &[u8], y: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + BLOCK <= n && x[i..i + BLOCK] == y[i..i + BLOCK] {
        i += BLOCK;
    }
    while i < n && x[i] == y[i] {
        i += 1;
    }
    i
}

/// Length of the common suffix of `x` and `y`.
fn common_suffix(x: &[u8], y: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let n = x.len().min(y.len());
    let (x, y) = (&x[x.len() - n..], &y[y.len() - n..]);
    let mut i = 0;
    while i + BLOCK <= n && x[n - i - BLOCK..n - i] == y[n - i - BLOCK..n - i] {
        i += BLOCK;
    }
    while i < n && x[n - 1 - i] == y[n - 1 - i] {
        i += 1;
    }
    i
}

impl Diff {
    /// The same diff moved `k` bytes to the left, if the two texts stay consistent with it: the
    /// common suffix then gains the `k` bytes before each end, so those must be equal. (The
    /// definition of a shift; [`Diff::shifts`] finds them all faster and is tested against it.)
    pub fn shifted_left(&self, full: &str, blank: &Blanked<'_>, k: usize) -> Option<Diff> {
        if k > self.start || k > self.blank_end {
            return None;
        }
        let (end, blank_end) = (self.end - k, self.blank_end - k);
        let same = blank.same(full, end, blank_end, k);
        let on_chars = full.is_char_boundary(end) && full.is_char_boundary(self.start - k);
        (same && on_chars).then_some(Diff {
            start: self.start - k,
            end,
            blank_end,
        })
    }

    /// All valid left shifts, smallest first (validity only shrinks as `k` grows).
    pub fn shifts<'a>(
        &self,
        full: &'a str,
        blank: &'a Blanked<'a>,
    ) -> impl Iterator<Item = Diff> + 'a {
        let base = *self;
        let mut k = 0usize;
        std::iter::from_fn(move || loop {
            if k > base.start || k > base.blank_end {
                return None;
            }
            // the k bytes before both ends must agree; the byte just added decides
            if k > 0 && full.as_bytes()[base.end - k] != blank.byte(base.blank_end - k) {
                k = usize::MAX;
                return None;
            }
            // the bytes are checked one per step above: only the char boundaries are left
            let (start, end) = (base.start - k, base.end - k);
            let blank_end = base.blank_end - k;
            k += 1;
            if full.is_char_boundary(end) && full.is_char_boundary(start) {
                return Some(Diff {
                    start,
                    end,
                    blank_end,
                });
            }
        })
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
        let blank = Blanked::whole(full, blank);
        let shifts: Vec<Diff> = d.shifts(full, &blank).collect();
        assert_eq!(
            &full[shifts[1].start..shifts[1].end],
            "<tool_call>x</tool_call>"
        );
        assert_eq!(shifts.len(), 2);
    }

    /// The definition, a byte at a time.
    fn naive_diff(full: &str, blank: &str) -> Diff {
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
        while !full.is_char_boundary(a.len() - suffix) || !blank.is_char_boundary(b.len() - suffix)
        {
            suffix -= 1;
        }
        Diff {
            start,
            end: a.len() - suffix,
            blank_end: b.len() - suffix,
        }
    }

    #[test]
    fn long_texts_diff_like_the_definition() {
        // long enough for the block comparisons, with the change near block edges
        let base: String = (0..300).map(|i| ["ab", "é", "<x>", "\n"][i % 4]).collect();
        for cut in [0, 1, 31, 32, 33, 63, 64, 200, base.len()] {
            if !base.is_char_boundary(cut) {
                continue;
            }
            for insert in ["", "Z", "abab", "é<x>\n"] {
                let blank = format!("{}{insert}{}", &base[..cut], &base[cut..]);
                assert_eq!(
                    diff(&base, &blank),
                    naive_diff(&base, &blank),
                    "{cut} {insert:?}"
                );
                let shorter = format!("{}{}", &base[..cut / 2], &base[cut..]);
                assert_eq!(diff(&base, &shorter), naive_diff(&base, &shorter), "{cut}");
                // the same kind of texts as splices of `base`, around ranges of several lengths
                for len in [0, 1, 40, 100] {
                    let s = cut.saturating_sub(len);
                    if let Some(b) = Blanked::spliced(&base, s..cut, insert) {
                        let text = b.to_text();
                        let d = diff_blanked(&base, &b);
                        assert_eq!(d, naive_diff(&base, &text), "{s}..{cut} {insert:?}");
                        let found: Vec<Diff> = d.shifts(&base, &b).collect();
                        let want: Vec<Diff> = (0..=d.start.min(d.blank_end))
                            .filter_map(|k| d.shifted_left(&base, &b, k))
                            .collect();
                        assert_eq!(found, want);
                    }
                }
            }
        }
    }

    #[test]
    fn spliced_blank_diffs_like_the_materialized_text() {
        // every splice of a few short texts with repeats, multi-byte chars and empty pieces
        let fulls = [
            "<a>xyx</a><a>xy</a>",
            "ééaé<é>é",
            "aaaa",
            "",
            "<t>\n\n</t>\n",
        ];
        let withs = ["", "x", "é", "</a>", "\n\n", "aa"];
        let mut checked = 0;
        for full in fulls {
            let cuts: Vec<usize> = (0..=full.len())
                .filter(|&i| full.is_char_boundary(i))
                .collect();
            for (i, &s) in cuts.iter().enumerate() {
                for &e in &cuts[i..] {
                    for with in withs {
                        let blank = Blanked::spliced(full, s..e, with).unwrap();
                        let text = blank.to_text();
                        assert_eq!(blank.len(), text.len());
                        assert_eq!(blank.is_full(), text == full);
                        let d = diff_blanked(full, &blank);
                        assert_eq!(d, diff(full, &text), "{full:?} {s}..{e} {with:?}");
                        assert_eq!(d, naive_diff(full, &text), "{full:?} {s}..{e} {with:?}");
                        let whole = Blanked::whole(full, &text);
                        let a: Vec<Diff> = d.shifts(full, &blank).collect();
                        let b: Vec<Diff> = d.shifts(full, &whole).collect();
                        assert_eq!(a, b);
                        let want: Vec<Diff> = (0..=d.start.min(d.blank_end))
                            .filter_map(|k| d.shifted_left(full, &blank, k))
                            .collect();
                        assert_eq!(a, want);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500);
        assert!(Blanked::spliced("é", 0..1, "").is_none());
    }
}
