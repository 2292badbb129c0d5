//! Byte-pair merging of one pre-token, with the semantics of `tokenizers`' BPE model: start from
//! one symbol per byte, then repeatedly apply the merge with the lowest rank, leftmost first, until
//! no adjacent pair has a merge. With `ignore_merges`, a pre-token that is itself in the
//! vocabulary becomes that one token without merging.
//!
//! Works on raw bytes: the vocabulary's byte-level spellings are decoded once at load time, so
//! the text never has to be mapped to GPT-2's byte alphabet.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustc_hash::FxHashMap;

/// Pre-tokens up to this many bytes merge in place on the stack (a linear scan per merge); longer
/// ones use a heap, as `tokenizers` does, so a long run costs O(n log n).
const SHORT: usize = 64;
/// Per-thread cache of merged pre-tokens, per model; emptied when full.
const CACHE_CAPACITY: usize = 1 << 15;
/// Pre-tokens longer than this are not cached.
const CACHE_MAX_LEN: usize = 128;

static NEXT_MODEL_ID: AtomicUsize = AtomicUsize::new(0);

/// Merged pre-tokens (bytes -> ids) of one model.
type PieceCache = FxHashMap<Box<[u8]>, Box<[u32]>>;

thread_local! {
    static CACHE: RefCell<HashMap<usize, PieceCache>> = RefCell::new(HashMap::new());
}

#[derive(Debug)]
pub struct MergeModel {
    byte_ids: [u32; 256],
    /// Token bytes -> id, for `ignore_merges`.
    vocab: FxHashMap<Box<[u8]>, u32>,
    /// `(left << 32) | right` -> (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// Byte length of each id's token (0 for ids that are not byte-level tokens).
    token_len: Vec<u32>,
    ignore_merges: bool,
    /// Key of this model's entries in the per-thread cache.
    cache_key: usize,
}

impl MergeModel {
    /// `vocab` holds every token's bytes and id; `merges` the (left, right) token pairs in rank
    /// order. Fails when a byte has no token or a merge names a token outside the vocabulary.
    pub fn new(
        vocab: Vec<(Vec<u8>, u32)>,
        merges: &[(Vec<u8>, Vec<u8>)],
        ignore_merges: bool,
    ) -> Result<Self, String> {
        let max_id = vocab.iter().map(|(_, id)| *id).max().unwrap_or(0) as usize;
        if max_id > 4 * vocab.len() + (1 << 20) {
            // ids index a table; a few far-out ids would make it huge
            return Err(format!(
                "vocabulary ids reach {max_id} for {} tokens",
                vocab.len()
            ));
        }
        let mut token_len = vec![0u32; max_id + 1];
        let mut by_bytes: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        by_bytes.reserve(vocab.len());
        for (bytes, id) in vocab {
            token_len[id as usize] = bytes.len() as u32;
            by_bytes.insert(bytes.into_boxed_slice(), id);
        }
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *by_bytes
                .get(&[b][..])
                .ok_or_else(|| format!("no token for the byte 0x{b:02X}"))?;
        }
        let id_of = |bytes: &[u8]| {
            by_bytes.get(bytes).copied().ok_or_else(|| {
                format!(
                    "merge part {:?} is not in the vocabulary",
                    String::from_utf8_lossy(bytes)
                )
            })
        };
        let mut merge_map: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        merge_map.reserve(merges.len());
        for (rank, (left, right)) in merges.iter().enumerate() {
            let merged: Vec<u8> = [left.as_slice(), right.as_slice()].concat();
            let key = pair(id_of(left)?, id_of(right)?);
            // Later duplicates win, as in `tokenizers`.
            merge_map.insert(key, (rank as u32, id_of(&merged)?));
        }
        Ok(MergeModel {
            byte_ids,
            vocab: if ignore_merges {
                by_bytes
            } else {
                FxHashMap::default()
            },
            merges: merge_map,
            token_len,
            ignore_merges,
            cache_key: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Byte length of token `id`'s text.
    #[inline]
    pub fn token_len(&self, id: u32) -> usize {
        self.token_len[id as usize] as usize
    }

    /// Appends the ids of `piece` (a non-empty pre-token) to `out`.
    pub fn encode(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() == 1 {
            out.push(self.byte_ids[piece[0] as usize]);
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(piece) {
                out.push(id);
                return;
            }
        }
        if piece.len() > CACHE_MAX_LEN {
            self.merge(piece, out);
            return;
        }
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let mine = super::cache::per_encoder(&mut cache, self.cache_key, PieceCache::default);
            if let Some(ids) = mine.get(piece) {
                out.extend_from_slice(ids);
                return;
            }
            let from = out.len();
            self.merge(piece, out);
            if mine.len() >= CACHE_CAPACITY {
                mine.clear();
            }
            mine.insert(piece.into(), out[from..].into());
        });
    }

    /// Runs the merges on `piece` without the cache.
    pub fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() <= SHORT {
            self.merge_short(piece, out)
        } else {
            self.merge_long(piece, out)
        }
    }

    #[inline]
    fn lookup(&self, left: u32, right: u32) -> (u32, u32) {
        self.merges
            .get(&pair(left, right))
            .copied()
            .unwrap_or((u32::MAX, 0))
    }

    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut syms = [0u32; SHORT];
        // ranks[i], merged[i]: the merge of syms[i] and syms[i + 1].
        let mut ranks = [u32::MAX; SHORT];
        let mut merged = [0u32; SHORT];
        let mut n = piece.len();
        for (s, &b) in syms.iter_mut().zip(piece) {
            *s = self.byte_ids[b as usize];
        }
        for i in 0..n - 1 {
            (ranks[i], merged[i]) = self.lookup(syms[i], syms[i + 1]);
        }
        loop {
            let mut best = 0;
            for i in 1..n - 1 {
                if ranks[i] < ranks[best] {
                    best = i;
                }
            }
            if n < 2 || ranks[best] == u32::MAX {
                break;
            }
            syms[best] = merged[best];
            syms.copy_within(best + 2..n, best + 1);
            ranks.copy_within(best + 1..n - 1, best);
            merged.copy_within(best + 1..n - 1, best);
            n -= 1;
            if best > 0 {
                (ranks[best - 1], merged[best - 1]) = self.lookup(syms[best - 1], syms[best]);
            }
            if best + 1 < n {
                (ranks[best], merged[best]) = self.lookup(syms[best], syms[best + 1]);
            } else {
                ranks[best] = u32::MAX;
            }
        }
        out.extend_from_slice(&syms[..n]);
    }

    /// `tokenizers`' algorithm: a heap of candidate merges ordered by (rank, position), with
    /// stale entries skipped when popped.
    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        let mut syms: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut prev: Vec<isize> = (0..n as isize).map(|i| i - 1).collect();
        let mut next: Vec<usize> = (1..=n).collect(); // n means none
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let (rank, new_id) = self.lookup(syms[i], syms[i + 1]);
            if rank != u32::MAX {
                heap.push(Reverse((rank, i, new_id)));
            }
        }
        while let Some(Reverse((_, pos, new_id))) = heap.pop() {
            if !alive[pos] || next[pos] >= n {
                continue;
            }
            let right = next[pos];
            let (rank, id) = self.lookup(syms[pos], syms[right]);
            if rank == u32::MAX || id != new_id {
                continue; // a stale entry: one side was merged since
            }
            syms[pos] = new_id;
            alive[right] = false;
            next[pos] = next[right];
            if next[pos] < n {
                prev[next[pos]] = pos as isize;
            }
            if prev[pos] >= 0 {
                let p = prev[pos] as usize;
                let (rank, id) = self.lookup(syms[p], syms[pos]);
                if rank != u32::MAX {
                    heap.push(Reverse((rank, p, id)));
                }
            }
            if next[pos] < n {
                let (rank, id) = self.lookup(syms[pos], syms[next[pos]]);
                if rank != u32::MAX {
                    heap.push(Reverse((rank, pos, id)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(syms[i]);
            i = next[i];
        }
    }
}

#[inline]
fn pair(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes, plus merges "ab", "bc", "abc" (= "ab" + "c"), "aa".
    fn model(ignore_merges: bool) -> MergeModel {
        let mut vocab: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
        for (i, t) in ["bc", "ab", "abc", "aa", "xyz"].iter().enumerate() {
            vocab.push((t.as_bytes().to_vec(), 256 + i as u32));
        }
        let m = |l: &str, r: &str| (l.as_bytes().to_vec(), r.as_bytes().to_vec());
        let merges = [m("b", "c"), m("a", "b"), m("ab", "c"), m("a", "a")];
        MergeModel::new(vocab, &merges, ignore_merges).unwrap()
    }

    fn ids(model: &MergeModel, text: &str, long: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if long {
            model.merge_long(text.as_bytes(), &mut out);
        } else {
            model.merge_short(text.as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let m = model(false);
        for long in [false, true] {
            // "bc" (rank 0) beats "ab" (rank 1), so "abc" is never reached.
            assert_eq!(ids(&m, "abc", long), [b'a' as u32, 256]);
            assert_eq!(ids(&m, "abab", long), [257, 257]);
            // Overlapping equal pairs: the leftmost merges first.
            assert_eq!(ids(&m, "aaa", long), [259, b'a' as u32]);
            assert_eq!(
                ids(&m, "xyz", long),
                [b'x' as u32, b'y' as u32, b'z' as u32]
            );
        }
    }

    #[test]
    fn ignore_merges_takes_whole_vocabulary_tokens() {
        let mut out = Vec::new();
        model(true).encode(b"xyz", &mut out);
        assert_eq!(out, [260]);
    }

    #[test]
    fn short_and_long_paths_agree() {
        let m = model(false);
        let mut state = 7u64;
        for _ in 0..2000 {
            let len = 2 + (state % 40) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ['a', 'b', 'c'][(state >> 33) as usize % 3]
                })
                .collect();
            assert_eq!(ids(&m, &text, false), ids(&m, &text, true), "{text}");
        }
    }
}
