//! Sequence packing: turn supervised samples (token ids + a trained-token mask) into fixed-length
//! rows, several documents per row, with labels, per-document positions, document ids and
//! `cu_seqlens`-style boundaries for varlen attention kernels.
//!
//! # Algorithm
//!
//! Best-fit decreasing over a bounded buffer. Admitted samples wait in a buffer of
//! [`PackOptions::buffer`] samples. When the buffer is full (and at [`Packer::flush`]) the
//! buffered samples are placed largest first (ties: earlier sample first), each into the open
//! row with the *least* remaining space that still fits it (a `BTreeMap` keyed by remaining
//! space, so a placement is `O(log rows)`); a new row is opened when none fits. A row is emitted
//! as soon as it cannot take any further sample (fewer than [`MIN_DOC_LEN`] tokens left). At the
//! end of a buffer round every open row is emitted except the [`PackOptions::max_open_rows`] rows
//! with the most remaining space, which stay open for the next round. So at most
//! `max_open_rows` rows stay open between rounds (at most `max_open_rows + buffer` during one),
//! and memory is bounded by `buffer + max_open_rows * seq_len / 2` samples.
//!
//! A sample is never split across rows. The result depends only on the input order (and the
//! options), never on timing, so [`pack`] and a [`Packer`] fed the same samples produce the
//! same rows however often [`Packer::pop_ready`] is called.
//!
//! # Output layout
//!
//! All per-token arrays are row-major `[rows, seq_len]`:
//! - `input_ids`: the tokens; padding is [`PackOptions::pad_id`]; padding is always at the end.
//! - `labels`: `labels[t] = input_ids[t + 1]` when token `t + 1` belongs to the same document and
//!   its mask is `true`; otherwise [`IGNORE_INDEX`] (`-100`). So every document's last position
//!   and every padding position is `-100`, and a document's first token is never a target.
//! - `position_ids`: `0, 1, 2, …` restarting at every document; the padding run at the end of a
//!   row counts `0, 1, 2, …` as its own run.
//! - `document_ids`: `0, 1, 2, …` per document in row order; padding gets the id `n_docs` (the
//!   number of documents in that row), i.e. padding is one extra segment.
//!
//! Per-document data is kept flat: [`PackedRows::doc_lens`] and [`PackedRows::sample_ids`] hold
//! one entry per document (row 0's documents first), and [`PackedRows::row_doc_offsets`]
//! (`rows + 1` entries) says which documents belong to which row. [`PackedRows::cu_seqlens`]
//! turns that into the padded `[rows, max_segments + 1]` layout that varlen kernels want.
//!
//! # Admission
//!
//! A sample is trainable when it yields at least one label, i.e. some `mask[t]` with `t >= 1`
//! (within the first `seq_len` tokens when truncating) is `true`. Samples are handled in this
//! order: mismatched `input_ids`/`mask` lengths or a token id above `i32::MAX` are errors; an
//! empty sample is dropped (`empty`); a sample longer than `seq_len` is dropped (`too_long`,
//! [`Overflow::Drop`]) or cut to its first `seq_len` tokens ([`Overflow::Truncate`]); a sample
//! without a trained target is dropped (`nothing_to_train`). `truncated` counts the samples that
//! were cut *and* packed (a cut sample left with nothing to train counts as `nothing_to_train`).
//! Every admitted sample is eventually packed exactly once, so
//! `samples_in == packed + pending + dropped()`, and `pending == 0` after a flush.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};

mod tree;
pub use tree::DocRole;
use tree::{Piece, Pieces};

/// Label value for positions that are not trained (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// The shortest sample that can be packed: a one-token document has no target to predict.
/// Rows with fewer free positions than this are emitted at once.
pub const MIN_DOC_LEN: usize = 2;

/// Default [`PackOptions::buffer`].
pub const DEFAULT_BUFFER: usize = 1024;

/// Default [`PackOptions::max_open_rows`].
pub const DEFAULT_MAX_OPEN_ROWS: usize = 16;

/// One supervised sample: its tokens, which of them are trained, and a caller-chosen id that the
/// packed output reports for every document (see [`PackedRows::sample_ids`]). With branches it is
/// a prefix tree: `input_ids` is the trunk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Caller-supplied id, reported back per document.
    pub id: u64,
    /// Token ids; each must be at most `i32::MAX` (labels are `i32`).
    pub input_ids: Vec<u32>,
    /// `true` for tokens the model must learn to predict; same length as `input_ids`.
    pub mask: Vec<bool>,
    /// Per token loss weights (finite, non-negative; read only where `mask` is set), or empty
    /// for 1 everywhere.
    pub loss_weights: Vec<f32>,
    /// Branches that attend to the trunk's first tokens (see [`TreeBranch`]).
    pub branches: Vec<TreeBranch>,
}

/// A branch of a prefix-tree sample: a document that attends to the trunk's first `prefix_len`
/// tokens and to itself causally, its positions starting at `prefix_len`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TreeBranch {
    /// Trunk tokens it sees (0: none, an independent document).
    pub prefix_len: usize,
    /// Token ids (at most `i32::MAX`).
    pub input_ids: Vec<u32>,
    /// Trained flags, as a sample's.
    pub mask: Vec<bool>,
    /// Loss weights, as a sample's.
    pub loss_weights: Vec<f32>,
}

impl Sample {
    /// A sample with the given id, tokens and per-token trained flags.
    pub fn new(id: u64, input_ids: Vec<u32>, mask: Vec<bool>) -> Self {
        Self {
            id,
            input_ids,
            mask,
            loss_weights: Vec::new(),
            branches: Vec::new(),
        }
    }

    /// This sample with per-token loss weights (empty: 1 everywhere).
    pub fn with_loss_weights(mut self, loss_weights: Vec<f32>) -> Self {
        self.loss_weights = loss_weights;
        self
    }

    /// This sample with branches: a prefix tree whose trunk is its tokens.
    pub fn with_branches(mut self, branches: Vec<TreeBranch>) -> Self {
        self.branches = branches;
        self
    }
}

/// What to do with a sample longer than `seq_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop it and count it in [`PackStats::dropped_too_long`].
    #[default]
    Drop,
    /// Keep its first `seq_len` tokens and count it in [`PackStats::truncated`].
    Truncate,
}

impl std::str::FromStr for Overflow {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "drop" => Ok(Self::Drop),
            "truncate" => Ok(Self::Truncate),
            other => Err(Error::InvalidArgument(format!(
                "overflow must be \"drop\" or \"truncate\", got {other:?}"
            ))),
        }
    }
}

/// Packing knobs; `seq_len` is passed separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackOptions {
    /// How many admitted samples are collected before a best-fit-decreasing round (>= 1).
    pub buffer: usize,
    /// How many partially filled rows stay open between rounds (0 closes every row each round).
    pub max_open_rows: usize,
    /// Samples longer than `seq_len`.
    pub overflow: Overflow,
    /// Token id written into padding positions (at most `i32::MAX`).
    pub pad_id: u32,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
            max_open_rows: DEFAULT_MAX_OPEN_ROWS,
            overflow: Overflow::Drop,
            pad_id: 0,
        }
    }
}

/// Why a sample was not packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No tokens at all.
    Empty,
    /// Longer than `seq_len` with [`Overflow::Drop`].
    TooLong,
    /// No `mask[t]` with `t >= 1` is set (after truncation), so it would add no label.
    NothingToTrain,
}

/// What [`Packer::push`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Accepted whole; it will appear in exactly one row.
    Accepted,
    /// Accepted after cutting it to `seq_len` tokens.
    Truncated,
    /// Not packed; counted under the reason.
    Dropped(DropReason),
}

impl Admission {
    /// The name the Python API reports: `accepted`, `truncated` or `dropped_<reason>`.
    pub fn name(self) -> &'static str {
        match self {
            Admission::Accepted => "accepted",
            Admission::Truncated => "truncated",
            Admission::Dropped(DropReason::Empty) => "dropped_empty",
            Admission::Dropped(DropReason::TooLong) => "dropped_too_long",
            Admission::Dropped(DropReason::NothingToTrain) => "dropped_nothing_to_train",
        }
    }
}

/// Running totals. Sample counters change on push; row and token counters when rows are
/// emitted (materialized by [`Packer::pop_ready`] / [`Packer::flush`] / [`pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PackStats {
    /// Samples pushed (errors excluded).
    pub samples_in: u64,
    /// Samples that are a document of an emitted row.
    pub packed: u64,
    /// Admitted samples not emitted yet (buffered or in open rows); 0 after a flush. A tree counts
    /// as emitted with its first piece (its trunk), while pieces carrying further branches may
    /// still wait.
    pub pending: u64,
    /// Samples longer than `seq_len`, dropped ([`Overflow::Drop`]).
    pub dropped_too_long: u64,
    /// Samples without a trained target, dropped.
    pub dropped_nothing_to_train: u64,
    /// Samples without tokens, dropped.
    pub dropped_empty: u64,
    /// Admitted samples that were cut to `seq_len` (a subset of `packed + pending`).
    pub truncated: u64,
    /// Non-padding tokens in emitted rows.
    pub tokens: u64,
    /// Positions whose label is not [`IGNORE_INDEX`].
    pub trained_tokens: u64,
    /// Padding positions in emitted rows.
    pub padding_tokens: u64,
    /// Emitted rows.
    pub rows: u64,
    /// Branches of prefix-tree samples pushed (their samples count in `samples_in`).
    pub branches_in: u64,
    /// Branches of admitted trees (in rows once their tree is emitted).
    pub branches_packed: u64,
    /// Branches cut to fit a row with their prefix ([`Overflow::Truncate`]).
    pub branches_truncated: u64,
    /// Branches that do not fit in a row with their prefix, dropped; and the branches of dropped
    /// trees.
    pub branches_dropped: u64,
    /// Extra pieces trees were split into to fit rows, each carrying the trunk prefix its
    /// branches need.
    pub tree_splits: u64,
}

impl PackStats {
    /// All dropped samples.
    pub fn dropped(&self) -> u64 {
        self.dropped_too_long + self.dropped_nothing_to_train + self.dropped_empty
    }

    /// Non-padding tokens / all positions of emitted rows (0.0 before any row).
    pub fn efficiency(&self) -> f64 {
        let all = self.tokens + self.padding_tokens;
        if all == 0 {
            0.0
        } else {
            self.tokens as f64 / all as f64
        }
    }
}

/// Packed rows. Per-token arrays are row-major `[rows(), seq_len]`; per-document arrays are flat
/// with [`Self::row_doc_offsets`] delimiting each row's documents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackedRows {
    /// Length of every row.
    pub seq_len: usize,
    /// Token ids; padding is [`PackOptions::pad_id`], always at a row's end.
    pub input_ids: Vec<u32>,
    /// The next token where it is trained and in the same document, else [`IGNORE_INDEX`].
    pub labels: Vec<i32>,
    /// Positions restarting at `0` for every document (and for the padding run).
    pub position_ids: Vec<i32>,
    /// The document's index in its row; padding gets the row's document count.
    pub document_ids: Vec<i32>,
    /// Length of every document (padding excluded), row 0's documents first.
    pub doc_lens: Vec<u32>,
    /// The [`Sample::id`] each document came from, parallel to `doc_lens`.
    pub sample_ids: Vec<u64>,
    /// Row `r`'s documents are `doc_lens[row_doc_offsets[r]..row_doc_offsets[r + 1]]`;
    /// `rows() + 1` entries starting with 0.
    pub row_doc_offsets: Vec<usize>,
    /// Prefix-tree arrays, present when the rows hold a tree (else empty): per token the row
    /// positions `prefix_starts[t]..prefix_ends[t]` it also attends to, beyond its own document
    /// (empty, `0..0`, for every token but a branch's).
    pub prefix_starts: Vec<i32>,
    /// See [`Self::prefix_starts`].
    pub prefix_ends: Vec<i32>,
    /// Per document, with the tree arrays: its [`DocRole`] as `u8` (a sample is in these rows
    /// once per document of role 0).
    pub doc_roles: Vec<u8>,
    /// Present when a sample with loss weights was written (else empty): per position, the weight
    /// of the label there (its target token's weight; 0 where the label is [`IGNORE_INDEX`]).
    pub loss_weights: Vec<f32>,
}

impl PackedRows {
    fn new(seq_len: usize) -> Self {
        Self {
            seq_len,
            row_doc_offsets: vec![0],
            ..Self::default()
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_doc_offsets.len().saturating_sub(1)
    }

    /// Non-padding positions over all positions of these rows (0 for no rows).
    pub fn efficiency(&self) -> f64 {
        let used: u64 = self.doc_lens.iter().map(|&l| l as u64).sum();
        let all = (self.rows() * self.seq_len) as u64;
        if all == 0 {
            0.0
        } else {
            used as f64 / all as f64
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// Whether the rows carry the prefix-tree arrays.
    pub fn has_tree(&self) -> bool {
        !self.doc_roles.is_empty() || !self.prefix_starts.is_empty()
    }

    /// Whether the rows carry loss weights.
    pub fn has_loss_weights(&self) -> bool {
        !self.loss_weights.is_empty()
    }

    /// Starts the loss weights: 1 for every label written so far, 0 where there is none.
    fn ensure_loss_weights(&mut self) {
        if !self.has_loss_weights() {
            self.loss_weights = self
                .labels
                .iter()
                .map(|&l| if l == IGNORE_INDEX { 0.0 } else { 1.0 })
                .collect();
        }
    }

    /// Starts the prefix-tree arrays, empty ranges and sample roles for what is written so far.
    fn ensure_tree(&mut self) {
        if !self.has_tree() {
            self.prefix_starts = vec![0; self.input_ids.len()];
            self.prefix_ends = vec![0; self.input_ids.len()];
            self.doc_roles = vec![DocRole::Sample as u8; self.doc_lens.len()];
        }
    }

    /// Documents in row `r` (padding not counted).
    pub fn docs_in_row(&self, r: usize) -> usize {
        self.row_doc_offsets[r + 1] - self.row_doc_offsets[r]
    }

    /// The document lengths of row `r`.
    pub fn row_doc_lens(&self, r: usize) -> &[u32] {
        &self.doc_lens[self.row_doc_offsets[r]..self.row_doc_offsets[r + 1]]
    }

    /// The sample ids of row `r`'s documents.
    pub fn row_sample_ids(&self, r: usize) -> &[u64] {
        &self.sample_ids[self.row_doc_offsets[r]..self.row_doc_offsets[r + 1]]
    }

    /// Segments in row `r`: its documents plus one for the padding run if it has padding.
    pub fn segments_in_row(&self, r: usize) -> usize {
        let used: usize = self.row_doc_lens(r).iter().map(|&l| l as usize).sum();
        self.docs_in_row(r) + usize::from(used < self.seq_len)
    }

    /// The widest row in segments (documents + padding run); 0 when there are no rows.
    pub fn max_segments(&self) -> usize {
        (0..self.rows())
            .map(|r| self.segments_in_row(r))
            .max()
            .unwrap_or(0)
    }

    /// `cu_seqlens` per row, padded to a rectangle: returns `(values, width)` with
    /// `width = max_segments() + 1` and `values` row-major `[rows, width]`. Row `r` is
    /// `[0, end of doc 0, end of doc 1, …, seq_len]` where the padding run (if any) is the last
    /// segment, and the tail is filled with `seq_len` (zero-length segments). Offsets are
    /// relative to the row; for a batch of rows `B` flattened to `[B * seq_len]`, add
    /// `b * seq_len` to row `b` and drop repeated values (`unique_consecutive`) to get the
    /// global `cu_seqlens` of a varlen kernel.
    pub fn cu_seqlens(&self) -> (Vec<i32>, usize) {
        let width = self.max_segments() + 1;
        let mut out = Vec::with_capacity(self.rows() * width);
        for r in 0..self.rows() {
            let start = out.len();
            out.push(0i32);
            let mut end = 0i32;
            for &l in self.row_doc_lens(r) {
                end += l as i32;
                out.push(end);
            }
            out.resize(start + width, self.seq_len as i32);
        }
        (out, width)
    }

    /// Sample ids per row, padded to `[rows, max_segments()]` with `-1` (also in the padding
    /// segment's slot), so `ids[r][document_ids[r][t]]` is the sample of token `t`, or `-1` for
    /// padding. Ids above `i64::MAX` wrap; keep ids in range if you use this.
    pub fn sample_ids_padded(&self) -> (Vec<i64>, usize) {
        let width = self.max_segments();
        let mut out = Vec::with_capacity(self.rows() * width);
        for r in 0..self.rows() {
            let start = out.len();
            out.extend(self.row_sample_ids(r).iter().map(|&id| id as i64));
            out.resize(start + width, -1);
        }
        (out, width)
    }

    /// Appends `other`'s rows (same `seq_len`).
    pub fn append(&mut self, mut other: PackedRows) {
        debug_assert_eq!(self.seq_len, other.seq_len);
        if self.is_empty() {
            *self = other;
            return;
        }
        if other.has_loss_weights() {
            self.ensure_loss_weights();
        }
        if self.has_loss_weights() {
            other.ensure_loss_weights();
            self.loss_weights.extend_from_slice(&other.loss_weights);
        }
        if other.has_tree() {
            self.ensure_tree();
        }
        if self.has_tree() {
            other.ensure_tree();
            self.prefix_starts.extend_from_slice(&other.prefix_starts);
            self.prefix_ends.extend_from_slice(&other.prefix_ends);
            self.doc_roles.extend_from_slice(&other.doc_roles);
        }
        let base = self.doc_lens.len();
        self.input_ids.extend_from_slice(&other.input_ids);
        self.labels.extend_from_slice(&other.labels);
        self.position_ids.extend_from_slice(&other.position_ids);
        self.document_ids.extend_from_slice(&other.document_ids);
        self.doc_lens.extend_from_slice(&other.doc_lens);
        self.sample_ids.extend_from_slice(&other.sample_ids);
        self.row_doc_offsets
            .extend(other.row_doc_offsets[1..].iter().map(|&o| o + base));
    }

    fn reserve_rows(&mut self, rows: usize) {
        let n = rows.saturating_mul(self.seq_len);
        self.input_ids.reserve(n);
        self.labels.reserve(n);
        self.position_ids.reserve(n);
        self.document_ids.reserve(n);
        self.row_doc_offsets.reserve(rows);
    }

    /// Writes one document at the end of the current row.
    fn write_doc(&mut self, stats: &mut PackStats, doc: i32, s: &Sample, len: usize) {
        let (ids, mask) = (&s.input_ids[..len], &s.mask[..len]);
        let weights = (!s.loss_weights.is_empty()).then(|| &s.loss_weights[..len]);
        self.write_segment(doc, s.id, ids, mask, weights, 0);
        if self.has_tree() {
            self.prefix_starts.resize(self.input_ids.len(), 0);
            self.prefix_ends.resize(self.input_ids.len(), 0);
            self.doc_roles.push(DocRole::Sample as u8);
        }
        stats.trained_tokens += mask[1..].iter().filter(|&&m| m).count() as u64;
        stats.tokens += ids.len() as u64;
        stats.packed += 1;
        stats.pending -= 1;
    }

    /// Writes a tree's piece at the end of the current row; returns the next document id.
    fn write_piece(&mut self, stats: &mut PackStats, mut doc: i32, id: u64, piece: &Piece) -> i32 {
        self.ensure_tree();
        let base = self.input_ids.len() - self.rows() * self.seq_len;
        for seg in &piece.segments {
            let range = seg.start..seg.start + seg.len;
            let weights =
                (!piece.loss_weights.is_empty()).then(|| &piece.loss_weights[range.clone()]);
            self.write_segment(
                doc,
                id,
                &piece.ids[range.clone()],
                &piece.mask[range],
                weights,
                seg.position,
            );
            let (a, b) = seg.prefix;
            let (a, b) = if a < b {
                ((base + a) as i32, (base + b) as i32)
            } else {
                (0, 0)
            };
            self.prefix_starts.resize(self.input_ids.len(), a);
            self.prefix_ends.resize(self.input_ids.len(), b);
            self.doc_roles.push(seg.role as u8);
            stats.trained_tokens += piece.mask[seg.start + 1..seg.start + seg.len]
                .iter()
                .filter(|&&m| m)
                .count() as u64;
            doc += 1;
        }
        stats.tokens += piece.ids.len() as u64;
        if piece.first {
            stats.packed += 1;
            stats.pending -= 1;
        }
        doc
    }

    /// Writes the tokens, labels, positions (from `position`) and document id of one document.
    fn write_segment(
        &mut self,
        doc: i32,
        id: u64,
        ids: &[u32],
        mask: &[bool],
        weights: Option<&[f32]>,
        position: usize,
    ) {
        // (checked before: the weights of an empty output are empty until this document's)
        let weighted = weights.is_some() || self.has_loss_weights();
        if weights.is_some() {
            self.ensure_loss_weights();
        }
        if weighted {
            let w = |t: usize| weights.map_or(1.0, |w| w[t]);
            self.loss_weights
                .extend((1..ids.len()).map(|t| if mask[t] { w(t) } else { 0.0 }));
            self.loss_weights.push(0.0);
        }
        let n = ids.len();
        debug_assert!(n >= 1 && n == mask.len());
        self.input_ids.extend_from_slice(ids);
        self.labels
            .extend(
                ids[1..]
                    .iter()
                    .zip(&mask[1..])
                    .map(|(&t, &m)| if m { t as i32 } else { IGNORE_INDEX }),
            );
        self.labels.push(IGNORE_INDEX);
        self.position_ids
            .extend(position as i32..(position + n) as i32);
        self.document_ids.resize(self.document_ids.len() + n, doc);
        self.doc_lens.push(n as u32);
        self.sample_ids.push(id);
    }

    /// Pads the current row to `seq_len` and closes it.
    fn finish_row(&mut self, stats: &mut PackStats, pad_id: u32) {
        let row_start = self.rows() * self.seq_len;
        let used = self.input_ids.len() - row_start;
        let pad = self.seq_len - used;
        let docs = (self.doc_lens.len() - self.row_doc_offsets[self.rows()]) as i32;
        let end = row_start + self.seq_len;
        self.input_ids.resize(end, pad_id);
        self.labels.resize(end, IGNORE_INDEX);
        self.position_ids.extend(0..pad as i32);
        self.document_ids.resize(end, docs);
        if self.has_tree() {
            self.prefix_starts.resize(end, 0);
            self.prefix_ends.resize(end, 0);
        }
        if self.has_loss_weights() {
            self.loss_weights.resize(end, 0.0);
        }
        self.row_doc_offsets.push(self.doc_lens.len());
        stats.padding_tokens += pad as u64;
        stats.rows += 1;
    }
}

/// `pack`'s result: the rows and the run's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// The packed rows.
    pub rows: PackedRows,
    /// What happened to every sample.
    pub stats: PackStats,
}

fn validate(seq_len: usize, options: &PackOptions) -> Result<()> {
    if seq_len == 0 {
        return Err(Error::InvalidArgument("seq_len must be at least 1".into()));
    }
    if seq_len > i32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "seq_len must be at most {} (positions are int32), got {seq_len}",
            i32::MAX
        )));
    }
    if options.buffer == 0 {
        return Err(Error::InvalidArgument(
            "buffer must be at least 1 sample".into(),
        ));
    }
    if options.pad_id > i32::MAX as u32 {
        return Err(Error::InvalidArgument(format!(
            "pad_id must be at most {} (ids are int32), got {}",
            i32::MAX,
            options.pad_id
        )));
    }
    Ok(())
}

/// Decides what happens to a sample; returns the number of tokens to keep, or why it is dropped.
fn admit(
    id: u64,
    ids: &[u32],
    mask: &[bool],
    seq_len: usize,
    overflow: Overflow,
) -> Result<Verdict> {
    if ids.len() != mask.len() {
        return Err(Error::InvalidArgument(format!(
            "sample {id}: input_ids has {} tokens but mask has {}",
            ids.len(),
            mask.len()
        )));
    }
    if ids.iter().fold(0u32, |acc, &t| acc | t) > i32::MAX as u32 {
        let (pos, t) = ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t > i32::MAX as u32)
            .map(|(i, &t)| (i, t))
            .unwrap_or_default();
        return Err(Error::InvalidArgument(format!(
            "sample {id}: token id {t} at position {pos} does not fit in int32"
        )));
    }
    if ids.is_empty() {
        return Ok(Verdict::Drop(DropReason::Empty));
    }
    let (len, truncated) = if ids.len() > seq_len {
        match overflow {
            Overflow::Drop => return Ok(Verdict::Drop(DropReason::TooLong)),
            Overflow::Truncate => (seq_len, true),
        }
    } else {
        (ids.len(), false)
    };
    if !mask[1.min(len)..len].iter().any(|&m| m) {
        return Ok(Verdict::Drop(DropReason::NothingToTrain));
    }
    Ok(Verdict::Keep { len, truncated })
}

enum Verdict {
    Keep { len: usize, truncated: bool },
    Drop(DropReason),
}

/// Loss weights, where given, have one finite non-negative value per token (branches too).
fn check_loss_weights(s: &Sample) -> Result<()> {
    let check = |what: String, w: &[f32], n: usize| -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        if w.len() != n {
            return Err(Error::InvalidArgument(format!(
                "sample {}: {what}loss_weights has {} values for {n} tokens",
                s.id,
                w.len()
            )));
        }
        match w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            Some(t) => Err(Error::InvalidArgument(format!(
                "sample {}: {what}loss weight {} at position {t} is not a non-negative number",
                s.id, w[t]
            ))),
            None => Ok(()),
        }
    };
    check(String::new(), &s.loss_weights, s.input_ids.len())?;
    for (k, b) in s.branches.iter().enumerate() {
        check(format!("branch {k}: "), &b.loss_weights, b.input_ids.len())?;
    }
    Ok(())
}

/// A prefix-tree sample's admission: the plain verdict on its trunk, and its pieces when kept.
fn admit_tree(s: &Sample, seq_len: usize, overflow: Overflow) -> Result<(Verdict, Pieces)> {
    let verdict = admit(s.id, &s.input_ids, &s.mask, seq_len, overflow)?;
    tree::validate(s.id, s.input_ids.len(), &s.branches)?;
    let len = match verdict {
        Verdict::Keep { len, .. } => len,
        // a trunk with nothing to train may still carry trained branches
        Verdict::Drop(DropReason::NothingToTrain) => s.input_ids.len().min(seq_len),
        Verdict::Drop(_) => return Ok((verdict, Pieces::default())),
    };
    let truncated = len < s.input_ids.len();
    let weights = (!s.loss_weights.is_empty()).then(|| &s.loss_weights[..len]);
    let pieces = tree::lay_out(
        &s.input_ids[..len],
        &s.mask[..len],
        weights,
        &s.branches,
        seq_len,
        overflow,
    );
    let trains = pieces.pieces.iter().any(|p| {
        p.segments
            .iter()
            .any(|g| p.mask[g.start + 1..g.start + g.len].iter().any(|&m| m))
    });
    let verdict = if trains {
        Verdict::Keep { len, truncated }
    } else {
        Verdict::Drop(DropReason::NothingToTrain)
    };
    Ok((verdict, pieces))
}

/// Counts a tree's branches: all dropped with their tree, else as laid out.
fn count_tree(stats: &mut PackStats, s: &Sample, verdict: &Verdict, pieces: &Pieces) {
    stats.branches_in += s.branches.len() as u64;
    match verdict {
        Verdict::Keep { .. } => {
            stats.branches_packed += pieces.branches_packed;
            stats.branches_truncated += pieces.branches_truncated;
            stats.branches_dropped += pieces.branches_dropped_too_long;
            stats.tree_splits += pieces.pieces.len().saturating_sub(1) as u64;
        }
        Verdict::Drop(_) => stats.branches_dropped += s.branches.len() as u64,
    }
}

/// An admitted sample waiting in a packer: an ordinary one, or one piece of a tree.
#[derive(Debug)]
enum Stored {
    Plain(Sample),
    Piece(u64, Piece),
}

fn count_verdict(stats: &mut PackStats, verdict: &Verdict) -> Admission {
    stats.samples_in += 1;
    match *verdict {
        Verdict::Keep { truncated, .. } => {
            stats.pending += 1;
            if truncated {
                stats.truncated += 1;
                Admission::Truncated
            } else {
                Admission::Accepted
            }
        }
        Verdict::Drop(reason) => {
            match reason {
                DropReason::Empty => stats.dropped_empty += 1,
                DropReason::TooLong => stats.dropped_too_long += 1,
                DropReason::NothingToTrain => stats.dropped_nothing_to_train += 1,
            }
            Admission::Dropped(reason)
        }
    }
}

/// A sample waiting to be placed: its (kept) length and a key the owner resolves to its data.
#[derive(Debug, Clone, Copy)]
struct Item {
    len: u32,
    key: usize,
}

/// The bin-packing part, on lengths only: buffer, open rows and rows ready to be written.
#[derive(Debug)]
struct Planner {
    seq_len: u32,
    buffer: usize,
    max_open_rows: usize,
    pending: Vec<Item>,
    /// Open rows keyed by (remaining space, creation serial): best fit is the first key whose
    /// remaining space is at least the sample's length.
    open: BTreeMap<(u32, u64), Vec<Item>>,
    next_serial: u64,
    /// Rows finished, in emission order.
    closed: std::collections::VecDeque<Vec<Item>>,
}

impl Planner {
    fn new(seq_len: usize, options: &PackOptions) -> Self {
        Self {
            seq_len: seq_len as u32,
            buffer: options.buffer,
            max_open_rows: options.max_open_rows,
            pending: Vec::with_capacity(options.buffer.min(1 << 16)),
            open: BTreeMap::new(),
            next_serial: 0,
            closed: Default::default(),
        }
    }

    fn push(&mut self, item: Item) {
        self.pending.push(item);
        if self.pending.len() >= self.buffer {
            self.round(false);
        }
    }

    /// Places every buffered sample, largest first, into its best-fitting row, then closes all
    /// rows but the `max_open_rows` emptiest (all of them when `flush`).
    fn round(&mut self, flush: bool) {
        // Stable: equal lengths keep arrival order.
        self.pending.sort_by_key(|item| std::cmp::Reverse(item.len));
        for item in std::mem::take(&mut self.pending) {
            let fit = self.open.range((item.len, 0)..).next().map(|(&k, _)| k);
            let (remaining, serial, mut docs) = match fit {
                Some(k) => {
                    let docs = self.open.remove(&k).unwrap_or_default();
                    (k.0, k.1, docs)
                }
                None => {
                    self.next_serial += 1;
                    (self.seq_len, self.next_serial, Vec::new())
                }
            };
            docs.push(item);
            let remaining = remaining - item.len;
            if (remaining as usize) < MIN_DOC_LEN {
                self.closed.push_back(docs);
            } else {
                self.open.insert((remaining, serial), docs);
            }
        }
        let keep = if flush { 0 } else { self.max_open_rows };
        if self.open.len() > keep {
            // The fullest rows (smallest remaining space) go; emit them in creation order.
            let mut out: Vec<((u32, u64), Vec<Item>)> = Vec::with_capacity(self.open.len() - keep);
            while self.open.len() > keep {
                if let Some(entry) = self.open.pop_first() {
                    out.push(entry);
                }
            }
            out.sort_by_key(|&((_, serial), _)| serial);
            self.closed.extend(out.into_iter().map(|(_, docs)| docs));
        }
    }

    fn flush(&mut self) {
        self.round(true);
    }
}

/// Streaming packer: [`push`](Self::push) samples, take finished rows with
/// [`pop_ready`](Self::pop_ready), and call [`flush`](Self::flush) at the end. Produces exactly
/// the rows of [`pack`] over the same samples.
#[derive(Debug)]
pub struct Packer {
    seq_len: usize,
    options: PackOptions,
    planner: Planner,
    /// Admitted samples (already cut to their kept length) and tree pieces, indexed by
    /// `Item::key`.
    slab: Vec<Option<Stored>>,
    free: Vec<usize>,
    stats: PackStats,
}

impl Packer {
    /// A packer of rows of `seq_len` tokens; fails on a `seq_len` or option out of range.
    pub fn new(seq_len: usize, options: PackOptions) -> Result<Self> {
        validate(seq_len, &options)?;
        Ok(Self {
            seq_len,
            planner: Planner::new(seq_len, &options),
            options,
            slab: Vec::new(),
            free: Vec::new(),
            stats: PackStats::default(),
        })
    }

    /// Length of every row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The options it packs with.
    pub fn options(&self) -> &PackOptions {
        &self.options
    }

    /// Running totals (see [`PackStats`]).
    pub fn stats(&self) -> &PackStats {
        &self.stats
    }

    /// Adds a sample. Errors (length mismatch, token id above `i32::MAX`) leave the packer
    /// unchanged; drops are counted and reported.
    pub fn push(&mut self, mut sample: Sample) -> Result<Admission> {
        check_loss_weights(&sample)?;
        if !sample.branches.is_empty() {
            let (verdict, pieces) = admit_tree(&sample, self.seq_len, self.options.overflow)?;
            count_tree(&mut self.stats, &sample, &verdict, &pieces);
            if let Verdict::Keep { .. } = verdict {
                for piece in pieces.pieces {
                    let len = piece.ids.len() as u32;
                    self.insert(Stored::Piece(sample.id, piece), len);
                }
            }
            return Ok(count_verdict(&mut self.stats, &verdict));
        }
        let verdict = admit(
            sample.id,
            &sample.input_ids,
            &sample.mask,
            self.seq_len,
            self.options.overflow,
        )?;
        if let Verdict::Keep { len, .. } = verdict {
            sample.input_ids.truncate(len);
            sample.mask.truncate(len);
            sample.loss_weights.truncate(len);
            self.insert(Stored::Plain(sample), len as u32);
        }
        Ok(count_verdict(&mut self.stats, &verdict))
    }

    /// Like [`push`](Self::push) but copies borrowed data (only the kept tokens).
    pub fn push_slices(&mut self, id: u64, input_ids: &[u32], mask: &[bool]) -> Result<Admission> {
        let verdict = admit(id, input_ids, mask, self.seq_len, self.options.overflow)?;
        if let Verdict::Keep { len, .. } = verdict {
            let sample = Sample::new(id, input_ids[..len].to_vec(), mask[..len].to_vec());
            self.insert(Stored::Plain(sample), len as u32);
        }
        Ok(count_verdict(&mut self.stats, &verdict))
    }

    /// Stores an admitted sample (already cut to its kept length) or piece and hands it to the
    /// planner.
    fn insert(&mut self, sample: Stored, len: u32) {
        let key = match self.free.pop() {
            Some(k) => {
                self.slab[k] = Some(sample);
                k
            }
            None => {
                self.slab.push(Some(sample));
                self.slab.len() - 1
            }
        };
        self.planner.push(Item { len, key });
    }

    /// Rows finished so far and not yet popped.
    pub fn ready_rows(&self) -> usize {
        self.planner.closed.len()
    }

    /// Writes and returns the rows finished so far, or `None` when there are none.
    pub fn pop_ready(&mut self) -> Option<PackedRows> {
        if self.planner.closed.is_empty() {
            return None;
        }
        let mut out = PackedRows::new(self.seq_len);
        out.reserve_rows(self.planner.closed.len());
        while let Some(row) = self.planner.closed.pop_front() {
            let mut doc = 0;
            for item in row {
                match self.slab[item.key].take() {
                    Some(Stored::Plain(s)) => {
                        out.write_doc(&mut self.stats, doc, &s, s.input_ids.len());
                        doc += 1;
                    }
                    Some(Stored::Piece(id, piece)) => {
                        doc = out.write_piece(&mut self.stats, doc, id, &piece);
                    }
                    None => {}
                }
                self.free.push(item.key);
            }
            out.finish_row(&mut self.stats, self.options.pad_id);
        }
        Some(out)
    }

    /// Places everything still buffered or open and returns all unpopped rows (possibly none).
    /// The packer stays usable afterwards.
    pub fn flush(&mut self) -> PackedRows {
        self.planner.flush();
        let out = self
            .pop_ready()
            .unwrap_or_else(|| PackedRows::new(self.seq_len));
        self.slab.clear();
        self.free.clear();
        out
    }
}

/// Packs `samples` (in this order) into rows of `seq_len` tokens. Equivalent to pushing every
/// sample into a [`Packer`] and flushing, without copying the samples.
pub fn pack(samples: &[Sample], seq_len: usize, options: &PackOptions) -> Result<Packed> {
    validate(seq_len, options)?;
    let mut stats = PackStats::default();
    let mut planner = Planner::new(seq_len, options);
    let mut lens = Vec::with_capacity(samples.len());
    // tree pieces, keyed after the samples
    let mut pieces: Vec<(u64, Piece)> = Vec::new();
    for (key, s) in samples.iter().enumerate() {
        check_loss_weights(s)?;
        if !s.branches.is_empty() {
            let (verdict, tree) = admit_tree(s, seq_len, options.overflow)?;
            count_tree(&mut stats, s, &verdict, &tree);
            count_verdict(&mut stats, &verdict);
            lens.push(0);
            if let Verdict::Keep { .. } = verdict {
                for piece in tree.pieces {
                    planner.push(Item {
                        len: piece.ids.len() as u32,
                        key: samples.len() + pieces.len(),
                    });
                    pieces.push((s.id, piece));
                }
            }
            continue;
        }
        let verdict = admit(s.id, &s.input_ids, &s.mask, seq_len, options.overflow)?;
        count_verdict(&mut stats, &verdict);
        let len = match verdict {
            Verdict::Keep { len, .. } => len,
            Verdict::Drop(_) => 0,
        };
        lens.push(len);
        if len > 0 {
            planner.push(Item {
                len: len as u32,
                key,
            });
        }
    }
    planner.flush();
    let mut rows = PackedRows::new(seq_len);
    rows.reserve_rows(planner.closed.len());
    for row in planner.closed.drain(..) {
        let mut doc = 0;
        for item in row {
            if let Some((id, piece)) = item.key.checked_sub(samples.len()).map(|k| &pieces[k]) {
                doc = rows.write_piece(&mut stats, doc, *id, piece);
                continue;
            }
            let s = &samples[item.key];
            let len = lens[item.key];
            rows.write_doc(&mut stats, doc, s, len);
            doc += 1;
        }
        rows.finish_row(&mut stats, options.pad_id);
    }
    Ok(Packed { rows, stats })
}

#[cfg(test)]
mod tests;
