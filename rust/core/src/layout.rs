//! Where every supervised message lies in a rendering, from a constant number of renderings instead
//! of one per message.
//!
//! The per-message method renders the conversation again with message `i` blanked
//! (`{"role": "assistant", "content": ""}`) and diffs. For a conversation with `k` supervised
//! messages that is `k` renderings of the whole text: quadratic in turns. Most templates are
//! *local*: a message's rendering depends on that message only, so the rendering is
//! `t_0 X_0 t_1 X_1 … X_{k-1} t_k`, where `X_j` is what supervised message `j` contributes and the
//! `t_j` are everything else, and blanking message `j` just removes `X_j`. Then the blanked
//! rendering of every message is known from `X_j`'s place in the full text.
//!
//! Four renderings establish the layout, and check it on the way:
//! - `M`: every supervised message blanked with a unique marker as content. The markers must come
//!   back verbatim, once each and in order; between them lie `t_0 … t_k`.
//! - `Z`: every supervised message blanked with `""`, as the per-message method blanks. It must equal
//!   `t_0 t_1 … t_k` (the template prints the blank's content and does not branch on it).
//! - `M_even`, `M_odd`: only the even (odd) supervised messages replaced by markers. Between two
//!   markers lie `t_j X_j t_{j+1}` with the `t`s known, so each `X_j` of the other parity is read off
//!   exactly, with its neighbours blanked, which checks that it does not depend on them.
//!
//! Finally the full rendering must equal `t_0 X_0 t_1 … t_k`. If any check fails the caller falls
//! back to rendering per message, so a template that is not local costs time, never correctness.

use std::ops::Range;

/// Marker characters from a Private Use plane: they survive `strip`, `split` and friends, and a
/// rendering that already contains one disables this method.
const MARK_OPEN: char = '\u{F0000}';
const MARK_CLOSE: char = '\u{F0001}';

/// The content that stands for supervised message `j` in the marked renderings.
pub fn marker(j: usize) -> String {
    format!("{MARK_OPEN}{j}{MARK_CLOSE}")
}

/// Whether `text` is free of marker characters (so markers found later are ours).
pub fn marker_free(text: &str) -> bool {
    !text.contains([MARK_OPEN, MARK_CLOSE])
}

/// Splits `m` (all `k` supervised messages marked) into the `k + 1` texts between the markers.
pub fn split_all_marked(m: &str, k: usize) -> Option<Vec<&str>> {
    let mut parts = Vec::with_capacity(k + 1);
    let mut pos = 0;
    for j in 0..k {
        let mark = marker(j);
        let at = pos + m[pos..].find(&mark)?;
        parts.push(&m[pos..at]);
        pos = at + mark.len();
    }
    parts.push(&m[pos..]);
    // each marker exactly once: nothing marker-like may be left between them
    parts.iter().all(|t| marker_free(t)).then_some(parts)
}

/// Whether `z` is the concatenation of `parts`.
pub fn is_concatenation(z: &str, parts: &[&str]) -> bool {
    let mut pos = 0;
    for t in parts {
        if !z[pos..].starts_with(t) {
            return false;
        }
        pos += t.len();
    }
    pos == z.len()
}

/// Reads `X_j` for every `j` not of `parity` from `mp`, the rendering where the messages of
/// `parity` are marked and the others are intact. `t` are the texts between messages.
pub fn read_unmarked<'a>(
    mp: &'a str,
    t: &[&str],
    parity: usize,
    xs: &mut [Option<&'a str>],
) -> Option<()> {
    let k = t.len() - 1;
    let mut pos = 0;
    for j in 0..k {
        if !mp[pos..].starts_with(t[j]) {
            return None;
        }
        pos += t[j].len();
        if j % 2 == parity {
            let mark = marker(j);
            if !mp[pos..].starts_with(&mark) {
                return None;
            }
            pos += mark.len();
        } else {
            // X_j runs up to t_{j+1}, which is followed by the next (marked) message's marker, or
            // by nothing when j is the last message.
            let end = if j + 1 < k {
                let next = pos + mp[pos..].find(&marker(j + 1))?;
                next.checked_sub(t[j + 1].len())?
            } else {
                mp.len().checked_sub(t[k].len())?
            };
            let x = mp.get(pos..end)?;
            if !marker_free(x) {
                return None;
            }
            xs[j] = Some(x);
            pos = end;
        }
    }
    (mp.get(pos..)? == t[k]).then_some(())
}

/// Checks `full == t_0 X_0 t_1 … X_{k-1} t_k` and returns each `X_j`'s byte range in `full`.
pub fn place(full: &str, t: &[&str], xs: &[Option<&str>]) -> Option<Vec<Range<usize>>> {
    let mut pos = 0;
    let mut ranges = Vec::with_capacity(xs.len());
    for (j, x) in xs.iter().enumerate() {
        let x = (*x)?;
        if !full[pos..].starts_with(t[j]) {
            return None;
        }
        pos += t[j].len();
        if !full[pos..].starts_with(x) {
            return None;
        }
        ranges.push(pos..pos + x.len());
        pos += x.len();
    }
    (full.get(pos..)? == t[xs.len()]).then_some(ranges)
}

/// The full rendering with the bytes of `x` removed: the per-message blanked rendering under
/// locality.
pub fn without(full: &str, x: &Range<usize>) -> String {
    let mut out = String::with_capacity(full.len() - x.len());
    out.push_str(&full[..x.start]);
    out.push_str(&full[x.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local "template": `<u>…</u>` user turns, `<a>…</a>` assistant turns.
    fn render(turns: &[(&str, &str)]) -> String {
        turns
            .iter()
            .map(|(role, c)| format!("<{role}>{c}</{role}>"))
            .collect()
    }

    #[test]
    fn layout_of_a_local_template() {
        let conv = [
            ("u", "hi"),
            ("a", "hello"),
            ("u", "more"),
            ("a", "sure"),
            ("a", "x"),
        ];
        let targets = [1usize, 3, 4];
        let full = render(&conv);
        let with = |f: &dyn Fn(usize) -> Option<String>| {
            let turns: Vec<(&str, String)> = conv
                .iter()
                .enumerate()
                .map(|(i, (r, c))| {
                    let j = targets.iter().position(|&t| t == i);
                    (*r, j.and_then(f).unwrap_or_else(|| c.to_string()))
                })
                .collect();
            let refs: Vec<(&str, &str)> = turns.iter().map(|(r, c)| (*r, c.as_str())).collect();
            render(&refs)
        };
        let m = with(&|j| Some(marker(j)));
        let t = split_all_marked(&m, 3).unwrap();
        assert_eq!(t, ["<u>hi</u><a>", "</a><u>more</u><a>", "</a><a>", "</a>"]);
        assert!(is_concatenation(&with(&|_| Some(String::new())), &t));
        let (even, odd) = (
            with(&|j| (j % 2 == 0).then(|| marker(j))),
            with(&|j| (j % 2 == 1).then(|| marker(j))),
        );
        let mut xs = vec![None; 3];
        read_unmarked(&even, &t, 0, &mut xs).unwrap();
        read_unmarked(&odd, &t, 1, &mut xs).unwrap();
        assert_eq!(xs, [Some("hello"), Some("sure"), Some("x")]);
        let ranges = place(&full, &t, &xs).unwrap();
        assert_eq!(&full[ranges[1].clone()], "sure");
        assert_eq!(
            without(&full, &ranges[0]),
            "<u>hi</u><a></a><u>more</u><a>sure</a><a>x</a>"
        );
    }

    #[test]
    fn inconsistent_layouts_are_refused() {
        assert!(split_all_marked(&format!("a{}b", marker(1)), 1).is_none());
        let twice = format!("a{}b{}", marker(0), marker(0));
        assert!(split_all_marked(&twice, 1).is_none());
        assert!(!is_concatenation("abc", &["a", "c"]));
        assert!(place("xAy", &["x", "z"], &[Some("A")]).is_none());
        assert!(!marker_free(&marker(3)));
    }
}
