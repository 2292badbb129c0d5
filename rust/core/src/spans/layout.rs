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
//! A message may also change the template's text next to it (Qwen3 fills the think block that its
//! blank prints empty): its *region* is where its window differs from the all-blank window
//! `t_j t_{j+1}`. The full rendering must be the all-blank one with every region's own text in
//! place, and a few more renderings (blanking by the bits of the message index; see the caller)
//! check that no message changes another's text. If any check fails the caller falls back to
//! rendering per message, so a template that is not local costs time, never correctness.

use super::diff::Blanked;
use super::render::{blank_like, Renderer};
use minijinja::value::Value;
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

/// The window of every message `j` not of `parity` in `mp`, the rendering where the messages of
/// `parity` are marked and the others are intact: the text between the neighbouring markers (or the
/// ends of the text), which holds `t_j`, message `j`'s own text and `t_{j+1}`.
pub fn windows<'a>(
    mp: &'a str,
    k: usize,
    parity: usize,
    out: &mut [Option<&'a str>],
) -> Option<()> {
    // marker positions of the marked messages, in order, each once
    let mut marks = Vec::new();
    let mut pos = 0;
    for j in (parity..k).step_by(2) {
        let mark = marker(j);
        let at = pos + mp[pos..].find(&mark)?;
        marks.push((j, at, at + mark.len()));
        pos = at + mark.len();
    }
    let before = |j: usize| marks.iter().find(|m| m.0 + 1 == j).map_or(0, |m| m.2);
    let after = |j: usize| {
        marks
            .iter()
            .find(|m| m.0 == j + 1)
            .map_or(mp.len(), |m| m.1)
    };
    for j in (1 - parity..k).step_by(2) {
        let w = mp.get(before(j)..after(j))?;
        if !marker_free(w) {
            return None;
        }
        out[j] = Some(w);
    }
    Some(())
}

/// Where message `j`'s rendering differs from its blank one: `blank` is the byte range in the
/// all-blank rendering `Z`, `own` the text that replaces it in the full rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region<'a> {
    pub blank: Range<usize>,
    pub own: &'a str,
}

/// Each message's region, from its window (message intact, neighbours blank) against the all-blank
/// window `t_j t_{j+1}`: their common prefix and suffix are the template's own text. Regions must
/// come in order without overlapping.
pub fn regions<'a>(t: &[&str], windows: &[Option<&'a str>]) -> Option<Vec<Region<'a>>> {
    let mut out: Vec<Region<'a>> = Vec::with_capacity(windows.len());
    let mut z = 0; // where window j starts in Z
    for (j, w) in windows.iter().enumerate() {
        let w = (*w)?;
        let (head, tail) = (t[j], t[j + 1]);
        let blank_len = head.len() + tail.len();
        let blank_byte = |i: usize| {
            if i < head.len() {
                head.as_bytes()[i]
            } else {
                tail.as_bytes()[i - head.len()]
            }
        };
        let wb = w.as_bytes();
        let mut prefix = 0;
        while prefix < wb.len().min(blank_len) && wb[prefix] == blank_byte(prefix) {
            prefix += 1;
        }
        let mut suffix = 0;
        while suffix < (wb.len() - prefix).min(blank_len - prefix)
            && wb[wb.len() - 1 - suffix] == blank_byte(blank_len - 1 - suffix)
        {
            suffix += 1;
        }
        // `get` refuses a cut inside a character; such a region is simply not used
        let own = w.get(prefix..wb.len() - suffix)?;
        let blank = z + prefix..z + blank_len - suffix;
        if out.last().is_some_and(|r| r.blank.end > blank.start) {
            return None;
        }
        out.push(Region { blank, own });
        z += head.len();
    }
    Some(out)
}

/// Checks that the full rendering is the all-blank one `z` with every region's blank text replaced
/// by its own text, and returns each region's byte range in `full`.
pub fn place(full: &str, z: &str, regions: &[Region<'_>]) -> Option<Vec<Range<usize>>> {
    let (mut zpos, mut fpos) = (0, 0);
    let mut out = Vec::with_capacity(regions.len());
    for r in regions {
        let same = z.get(zpos..r.blank.start)?;
        if !full[fpos..].starts_with(same) {
            return None;
        }
        fpos += same.len();
        if !full[fpos..].starts_with(r.own) {
            return None;
        }
        out.push(fpos..fpos + r.own.len());
        fpos += r.own.len();
        zpos = r.blank.end;
    }
    (full.get(fpos..)? == z.get(zpos..)?).then_some(out)
}

/// Every target's blanked rendering, known from the layout renderings.
pub(crate) struct Layout {
    /// The rendering with every target blanked.
    blanked: String,
    /// Per target: its own text's range in the full rendering, and the range of `blanked` that
    /// takes its place when it alone is blanked.
    regions: Vec<(Range<usize>, Range<usize>)>,
}

impl Layout {
    /// The layout of `targets` (message indices) in `text`, the full rendering of `messages`, or
    /// `None` when the template is not local.
    pub(crate) fn build(
        renderer: &Renderer<'_>,
        messages: &[Value],
        targets: &[usize],
        text: &str,
    ) -> Option<Layout> {
        if !marker_free(text) {
            return None;
        }
        let render_with = |content: &dyn Fn(usize) -> Option<String>| -> Option<String> {
            let mut replaced = messages.to_vec();
            for (j, &i) in targets.iter().enumerate() {
                if let Some(c) = content(j) {
                    replaced[i] = blank_like(&messages[i], Value::from(c));
                }
            }
            renderer.text(&replaced, false)
        };
        let k = targets.len();
        let marked = render_with(&|j| Some(marker(j)))?;
        let t = split_all_marked(&marked, k)?;
        let blanked = render_with(&|_| Some(String::new()))?;
        if !is_concatenation(&blanked, &t) {
            return None;
        }
        let even = render_with(&|j| (j % 2 == 0).then(|| marker(j)))?;
        let odd = if k > 1 {
            render_with(&|j| (j % 2 == 1).then(|| marker(j)))?
        } else {
            text.to_string()
        };
        let mut windows = vec![None; k];
        self::windows(&even, k, 0, &mut windows)?;
        self::windows(&odd, k, 1, &mut windows)?;
        let regions = regions(&t, &windows)?;
        let placed = place(text, &blanked, &regions)?;
        let regions = placed
            .into_iter()
            .zip(&regions)
            .map(|(at, r)| (at, r.blank.clone()))
            .collect();
        let layout = Layout { blanked, regions };
        // The parity renderings check every pair of messages at an odd distance (one blank, the
        // other intact). Pairs at even distances are checked by blanking along the other bits of
        // the index: each pair differs in some bit, so some rendering blanks one and keeps the
        // other, and must equal what the layout predicts.
        let mut bit = 1;
        while (1usize << bit) < k {
            let blank = |j: usize| (j >> bit) & 1 == 0;
            let rendered = render_with(&|j| blank(j).then(String::new))?;
            if rendered != layout.with_blanked(text, blank) {
                return None;
            }
            bit += 1;
        }
        Some(layout)
    }

    /// The full rendering with the targets `blank(j)` says blanked.
    fn with_blanked(&self, full: &str, blank: impl Fn(usize) -> bool) -> String {
        let mut out = String::with_capacity(full.len());
        let mut pos = 0;
        for (j, (own, blank_range)) in self.regions.iter().enumerate() {
            if blank(j) {
                out.push_str(&full[pos..own.start]);
                out.push_str(&self.blanked[blank_range.clone()]);
                pos = own.end;
            }
        }
        out.push_str(&full[pos..]);
        out
    }

    /// The full rendering with target `j` alone blanked (`None` would mean a region off char
    /// boundaries, which [`place`] does not produce; the caller then renders it).
    pub(crate) fn blanked<'a>(&'a self, full: &'a str, j: usize) -> Option<Blanked<'a>> {
        let (own, blank) = self.regions.get(j)?;
        Blanked::spliced(full, own.clone(), self.blanked.get(blank.clone())?)
    }
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
        let z = with(&|_| Some(String::new()));
        assert!(is_concatenation(&z, &t));
        let (even, odd) = (
            with(&|j| (j % 2 == 0).then(|| marker(j))),
            with(&|j| (j % 2 == 1).then(|| marker(j))),
        );
        let mut w = vec![None; 3];
        windows(&even, 3, 0, &mut w).unwrap();
        windows(&odd, 3, 1, &mut w).unwrap();
        assert_eq!(w[1], Some("</a><u>more</u><a>sure</a><a>"));
        let r = regions(&t, &w).unwrap();
        let owns: Vec<&str> = r.iter().map(|r| r.own).collect();
        assert_eq!(owns, ["hello", "sure", "x"]);
        let at = place(&full, &z, &r).unwrap();
        assert_eq!(&full[at[1].clone()], "sure");
    }

    #[test]
    fn a_message_may_change_the_template_text_around_it() {
        // like Qwen3's last turn: the blank prints an empty think block, the real one fills it
        let t = ["<a><think>", "</think></a>"];
        let w = [Some("<a><think>why</think>yes</a>")];
        let r = regions(&t, &w).unwrap();
        assert_eq!(r[0].own, "why</think>yes");
        assert_eq!(r[0].blank, 10..18);
        let z = "<a><think></think></a>";
        assert_eq!(
            place("<a><think>why</think>yes</a>", z, &r).unwrap(),
            vec![10..24]
        );
    }

    #[test]
    fn inconsistent_layouts_are_refused() {
        assert!(split_all_marked(&format!("a{}b", marker(1)), 1).is_none());
        let twice = format!("a{}b{}", marker(0), marker(0));
        assert!(split_all_marked(&twice, 1).is_none());
        assert!(!is_concatenation("abc", &["a", "c"]));
        let r = [Region {
            blank: 1..1,
            own: "A",
        }];
        assert!(place("xAy", "xz", &r).is_none());
        assert!(!marker_free(&marker(3)));
    }
}
