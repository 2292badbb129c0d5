//! Per-thread caches keyed by encoder: each thread keeps its own (regex states, merged pieces),
//! so that encoding never takes a lock.

use std::collections::HashMap;

/// Per-thread caches are kept for this many encoders at most.
const MAX_ENCODERS_PER_THREAD: usize = 8;

/// Encoder `id`'s entry in a per-thread cache map, made by `make` when missing. Encoders that are
/// gone leave their entries behind; a thread rarely uses more than a few, so a full map is emptied.
pub(crate) fn per_encoder<V>(
    map: &mut HashMap<usize, V>,
    id: usize,
    make: impl FnOnce() -> V,
) -> &mut V {
    if map.len() >= MAX_ENCODERS_PER_THREAD && !map.contains_key(&id) {
        map.clear();
    }
    map.entry(id).or_insert_with(make)
}
