//! Prefix-tree samples: a trunk and branches that each attend to the trunk's first tokens, laid
//! out as one run of segments in a row (the trunk first), and split into several such runs when
//! the tree does not fit in a row, each carrying the trunk prefix its branches need.

use super::{Overflow, TreeBranch};
use crate::error::{Error, Result};

/// What a document of a packed row is (see [`super::PackedRows::doc_roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DocRole {
    /// A sample's own document: an ordinary sample, or the trunk of a tree.
    Sample = 0,
    /// A branch of a tree.
    Branch = 1,
    /// A copy of a trunk's first tokens, context only, for branches split into another row.
    Context = 2,
}

/// One document of a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    /// Its tokens are the piece's `start..start + len`.
    pub start: usize,
    pub len: usize,
    /// The position of its first token.
    pub position: usize,
    /// The piece's tokens it also attends to (empty for none), relative to the piece.
    pub prefix: (usize, usize),
    pub role: DocRole,
}

/// A run of segments placed together in one row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Piece {
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
    /// Per token loss weights when the tree has any, else empty.
    pub loss_weights: Vec<f32>,
    pub segments: Vec<Segment>,
    /// Whether it holds the sample's own document (its first piece).
    pub first: bool,
}

/// What admitting a tree sample gave.
#[derive(Debug, Default)]
pub(super) struct Pieces {
    pub pieces: Vec<Piece>,
    pub branches_packed: u64,
    pub branches_truncated: u64,
    pub branches_dropped_too_long: u64,
}

/// Checks a tree's branches against its trunk of `trunk_len` tokens.
pub(super) fn validate(id: u64, trunk_len: usize, branches: &[TreeBranch]) -> Result<()> {
    for (k, b) in branches.iter().enumerate() {
        let bad = |why: String| Error::InvalidArgument(format!("sample {id}: branch {k}: {why}"));
        if b.input_ids.len() != b.mask.len() {
            return Err(bad(format!(
                "input_ids has {} tokens but mask has {}",
                b.input_ids.len(),
                b.mask.len()
            )));
        }
        if b.input_ids.is_empty() {
            return Err(bad("it has no tokens".into()));
        }
        if b.prefix_len > trunk_len {
            return Err(bad(format!(
                "prefix_len {} is longer than the trunk ({trunk_len} tokens)",
                b.prefix_len
            )));
        }
        if let Some((pos, t)) = b
            .input_ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t > i32::MAX as u32)
        {
            return Err(bad(format!(
                "token id {t} at position {pos} does not fit in int32"
            )));
        }
    }
    Ok(())
}

/// Lays out a tree whose trunk is `trunk_ids[..trunk_len]` (already cut to what is kept): the
/// trunk with as many branches as fit after it, in order, then further pieces that each carry the
/// trunk prefix their branches need. A branch that does not fit in a row even with only its
/// prefix is cut (`Overflow::Truncate`, when it keeps a target) or dropped, and counted.
pub(super) fn lay_out(
    trunk_ids: &[u32],
    trunk_mask: &[bool],
    trunk_weights: Option<&[f32]>,
    branches: &[TreeBranch],
    seq_len: usize,
    overflow: Overflow,
) -> Pieces {
    let mut out = Pieces::default();
    let trunk_len = trunk_ids.len();
    let weighted = trunk_weights.is_some() || branches.iter().any(|b| !b.loss_weights.is_empty());
    let weights_of = |w: Option<&[f32]>, n: usize| -> Vec<f32> {
        match (weighted, w) {
            (false, _) => Vec::new(),
            (true, Some(w)) => w[..n].to_vec(),
            (true, None) => vec![1.0; n],
        }
    };
    let mut current = Piece {
        ids: trunk_ids.to_vec(),
        mask: trunk_mask.to_vec(),
        loss_weights: weights_of(trunk_weights, trunk_len),
        segments: vec![Segment {
            start: 0,
            len: trunk_len,
            position: 0,
            prefix: (0, 0),
            role: DocRole::Sample,
        }],
        first: true,
    };
    // the trunk tokens the current piece holds (all of it in the first piece)
    let mut held = trunk_len;
    let mut continuation = false;
    for b in branches {
        let mut len = b.input_ids.len();
        if b.prefix_len + len > seq_len || b.prefix_len > trunk_len {
            let keep = seq_len.saturating_sub(b.prefix_len);
            let trains = keep >= 2 && b.mask[1..keep.min(len)].iter().any(|&m| m);
            if overflow == Overflow::Drop || b.prefix_len > trunk_len || !trains {
                out.branches_dropped_too_long += 1;
                continue;
            }
            len = keep;
            out.branches_truncated += 1;
        }
        let need = if continuation {
            b.prefix_len.max(held)
        } else {
            held
        };
        let fits = current.ids.len() - held + need + len <= seq_len;
        if !fits || (!continuation && b.prefix_len > held) {
            // a new piece carrying the prefix this branch needs
            out.pieces
                .push(std::mem::replace(&mut current, empty_piece()));
            continuation = true;
            held = 0;
        }
        if continuation && b.prefix_len > held {
            grow_context(&mut current, trunk_ids, held, b.prefix_len, weighted);
            held = b.prefix_len;
        }
        let start = current.ids.len();
        current.ids.extend_from_slice(&b.input_ids[..len]);
        current.mask.extend_from_slice(&b.mask[..len]);
        let w = (!b.loss_weights.is_empty()).then_some(b.loss_weights.as_slice());
        current.loss_weights.extend(weights_of(w, len));
        current.segments.push(Segment {
            start,
            len,
            position: b.prefix_len,
            prefix: (0, b.prefix_len),
            role: DocRole::Branch,
        });
        out.branches_packed += 1;
    }
    out.pieces.push(current);
    out
}

fn empty_piece() -> Piece {
    Piece {
        ids: Vec::new(),
        mask: Vec::new(),
        loss_weights: Vec::new(),
        segments: Vec::new(),
        first: false,
    }
}

/// Extends (or creates) a continuation piece's context copy of the trunk from `held` to `to`
/// tokens; the copy is its first segment and branches follow it, so they move along.
fn grow_context(piece: &mut Piece, trunk_ids: &[u32], held: usize, to: usize, weighted: bool) {
    let add = to - held;
    let has_context = piece
        .segments
        .first()
        .is_some_and(|s| s.role == DocRole::Context);
    piece
        .ids
        .splice(held..held, trunk_ids[held..to].iter().copied());
    piece
        .mask
        .splice(held..held, std::iter::repeat_n(false, add));
    if weighted {
        piece
            .loss_weights
            .splice(held..held, std::iter::repeat_n(0.0, add));
    }
    for s in piece.segments.iter_mut() {
        if s.role != DocRole::Context {
            s.start += add;
        }
    }
    if has_context {
        piece.segments[0].len = to;
    } else {
        piece.segments.insert(
            0,
            Segment {
                start: 0,
                len: to,
                position: 0,
                prefix: (0, 0),
                role: DocRole::Context,
            },
        );
    }
}
