// The packing-quality tests report what they measured (`cargo test -- --nocapture`).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;

use super::*;

/// Small deterministic generator (xorshift64*), so the tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Lognormal length with the given mean; sigma 1 puts the 99th percentile near 6x the mean.
    fn lognormal(&mut self, mean: f64, sigma: f64) -> usize {
        let mu = mean.ln() - 0.5 * sigma * sigma;
        ((mu + sigma * self.normal()).exp().round() as usize).max(1)
    }
}

/// A chat-like sample: a prompt part (untrained) then an answer part (trained).
fn chat_sample(rng: &mut Rng, id: u64, len: usize) -> Sample {
    let prompt = rng.below(len as u64) as usize;
    let input_ids = (0..len).map(|_| rng.below(150_000) as u32).collect();
    let mask = (0..len).map(|i| i >= prompt).collect();
    Sample::new(id, input_ids, mask)
}

/// Long-tailed chat corpus: lognormal lengths, mean ~700, tail to several thousand tokens.
fn long_tailed(n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let len = rng.lognormal(700.0, 1.0);
            chat_sample(&mut rng, i as u64, len)
        })
        .collect()
}

/// Arbitrary samples including the awkward ones: empty, one token, no trained token, too long,
/// masks with holes.
fn random_samples(rng: &mut Rng, n: usize, seq_len: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let len = match rng.below(10) {
                0 => rng.below(3) as usize,
                1 => seq_len + rng.below(seq_len as u64 + 1) as usize,
                2 => seq_len - rng.below(3) as usize,
                _ => 1 + rng.below(seq_len as u64 / 2) as usize,
            };
            let input_ids: Vec<u32> = (0..len).map(|_| rng.below(1000) as u32).collect();
            let density = rng.below(4);
            let mask = (0..len).map(|_| rng.below(4) < density).collect();
            Sample::new(1000 + i as u64 * 7, input_ids, mask)
        })
        .collect()
}

fn s(id: u64, ids: &[u32], mask: &[u8]) -> Sample {
    Sample::new(id, ids.to_vec(), mask.iter().map(|&m| m != 0).collect())
}

fn opts() -> PackOptions {
    PackOptions::default()
}

/// Checks every documented invariant of `rows` against the input samples, and that every
/// sample was either packed exactly once (whole, or cut to `seq_len`) or counted as dropped.
fn check(
    samples: &[Sample],
    seq_len: usize,
    options: &PackOptions,
    rows: &PackedRows,
    stats: &PackStats,
) {
    let n_rows = rows.rows();
    assert_eq!(rows.seq_len, seq_len);
    for arr in [
        rows.labels.len(),
        rows.position_ids.len(),
        rows.document_ids.len(),
    ] {
        assert_eq!(arr, n_rows * seq_len);
    }
    assert_eq!(rows.input_ids.len(), n_rows * seq_len);
    assert_eq!(rows.doc_lens.len(), rows.sample_ids.len());
    assert_eq!(*rows.row_doc_offsets.last().unwrap(), rows.doc_lens.len());

    let by_id: HashMap<u64, &Sample> = samples.iter().map(|s| (s.id, s)).collect();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let (mut tokens, mut trained, mut padding, mut truncated) = (0u64, 0u64, 0u64, 0u64);
    let (cu, width) = rows.cu_seqlens();
    let (sid_padded, sid_width) = rows.sample_ids_padded();
    assert_eq!(width, sid_width + 1);
    for r in 0..n_rows {
        let base = r * seq_len;
        let ids = &rows.input_ids[base..base + seq_len];
        let labels = &rows.labels[base..base + seq_len];
        let pos = &rows.position_ids[base..base + seq_len];
        let docs = &rows.document_ids[base..base + seq_len];
        assert!(rows.docs_in_row(r) >= 1, "row {r} has no document");
        let mut off = 0usize;
        let cu_row = &cu[r * width..(r + 1) * width];
        assert_eq!(cu_row[0], 0);
        for (d, (&len, &id)) in rows
            .row_doc_lens(r)
            .iter()
            .zip(rows.row_sample_ids(r))
            .enumerate()
        {
            let len = len as usize;
            let sample = by_id[&id];
            *seen.entry(id).or_default() += 1;
            if len < sample.input_ids.len() {
                assert_eq!(options.overflow, Overflow::Truncate);
                assert_eq!(len, seq_len);
                truncated += 1;
            } else {
                assert_eq!(len, sample.input_ids.len());
            }
            assert_eq!(
                &ids[off..off + len],
                &sample.input_ids[..len],
                "sample {id} split or altered"
            );
            for t in 0..len {
                assert_eq!(pos[off + t], t as i32);
                assert_eq!(docs[off + t], d as i32);
                let want = if t + 1 < len && sample.mask[t + 1] {
                    sample.input_ids[t + 1] as i32
                } else {
                    IGNORE_INDEX
                };
                assert_eq!(labels[off + t], want, "label {t} of sample {id}");
                trained += u64::from(want != IGNORE_INDEX);
            }
            assert_eq!(sid_padded[r * sid_width + d], id as i64);
            off += len;
            assert_eq!(cu_row[d + 1], off as i32);
            tokens += len as u64;
        }
        assert!(off <= seq_len);
        let n_docs = rows.docs_in_row(r);
        for t in off..seq_len {
            assert_eq!(ids[t], options.pad_id);
            assert_eq!(labels[t], IGNORE_INDEX);
            assert_eq!(pos[t], (t - off) as i32);
            assert_eq!(docs[t], n_docs as i32);
        }
        padding += (seq_len - off) as u64;
        for &c in &cu_row[n_docs + 1..] {
            assert_eq!(c, seq_len as i32);
        }
        for &x in &sid_padded[r * sid_width + n_docs..(r + 1) * sid_width] {
            assert_eq!(x, -1);
        }
    }

    // Every sample: packed exactly once, or dropped for the right reason.
    let (mut empty, mut too_long, mut nothing) = (0u64, 0u64, 0u64);
    for sample in samples {
        let n = sample.input_ids.len();
        let kept = if options.overflow == Overflow::Truncate {
            n.min(seq_len)
        } else {
            n
        };
        let reason = if n == 0 {
            Some(DropReason::Empty)
        } else if n > seq_len && options.overflow == Overflow::Drop {
            Some(DropReason::TooLong)
        } else if !sample.mask[1.min(kept)..kept].iter().any(|&m| m) {
            Some(DropReason::NothingToTrain)
        } else {
            None
        };
        match reason {
            None => assert_eq!(
                seen.get(&sample.id),
                Some(&1),
                "sample {} not packed once",
                sample.id
            ),
            Some(reason) => {
                assert_eq!(
                    seen.get(&sample.id),
                    None,
                    "dropped sample {} packed",
                    sample.id
                );
                match reason {
                    DropReason::Empty => empty += 1,
                    DropReason::TooLong => too_long += 1,
                    DropReason::NothingToTrain => nothing += 1,
                }
            }
        }
    }
    let expected = PackStats {
        samples_in: samples.len() as u64,
        packed: rows.doc_lens.len() as u64,
        pending: 0,
        dropped_too_long: too_long,
        dropped_nothing_to_train: nothing,
        dropped_empty: empty,
        truncated,
        tokens,
        trained_tokens: trained,
        padding_tokens: padding,
        rows: n_rows as u64,
        ..PackStats::default()
    };
    assert_eq!(*stats, expected);
    assert_eq!(stats.samples_in, stats.packed + stats.dropped());
}

#[test]
fn hand_example_labels_positions_documents() {
    let samples = [
        s(10, &[1, 2, 3], &[0, 1, 1]),
        s(11, &[4, 5], &[0, 1]),
        s(12, &[7, 8, 9, 6], &[1, 0, 1, 1]),
    ];
    let options = PackOptions {
        pad_id: 99,
        ..opts()
    };
    let packed = pack(&samples, 12, &options).unwrap();
    let r = &packed.rows;
    // Largest first: 12 (4 tokens), 10 (3), 11 (2); 3 padding positions.
    assert_eq!(r.rows(), 1);
    assert_eq!(r.input_ids, [7, 8, 9, 6, 1, 2, 3, 4, 5, 99, 99, 99]);
    assert_eq!(
        r.labels,
        [-100, 9, 6, -100, 2, 3, -100, 5, -100, -100, -100, -100]
    );
    assert_eq!(r.position_ids, [0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 1, 2]);
    assert_eq!(r.document_ids, [0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3]);
    assert_eq!(r.doc_lens, [4, 3, 2]);
    assert_eq!(r.sample_ids, [12, 10, 11]);
    assert_eq!(r.cu_seqlens(), (vec![0, 4, 7, 9, 12], 5));
    assert_eq!(r.sample_ids_padded(), (vec![12, 10, 11, -1], 4));
    let st = packed.stats;
    assert_eq!(
        (st.tokens, st.trained_tokens, st.padding_tokens, st.rows),
        (9, 5, 3, 1)
    );
    assert!((st.efficiency() - 0.75).abs() < 1e-12);
    check(&samples, 12, &options, r, &st);
}

#[test]
fn exact_fit_rows_have_no_padding_segment() {
    let samples = [
        s(0, &[1, 2, 3, 4], &[0, 1, 1, 1]),
        s(1, &[5, 6], &[1, 1]),
        s(2, &[7, 8, 9, 10, 11, 12], &[0, 0, 0, 0, 0, 1]),
        s(3, &[13, 14], &[0, 1]),
    ];
    let packed = pack(&samples, 6, &opts()).unwrap();
    let r = &packed.rows;
    assert_eq!(r.rows(), 3);
    assert_eq!(packed.stats.padding_tokens, 4);
    assert_eq!(r.sample_ids, [2, 0, 1, 3]);
    // Row 0: sample 2 alone; row 1: samples 0 and 1; row 2: sample 3 and a padding segment.
    assert_eq!(r.cu_seqlens(), (vec![0, 6, 6, 0, 4, 6, 0, 2, 6], 3));
    assert_eq!(r.sample_ids_padded(), (vec![2, -1, 0, 1, 3, -1], 2));
    assert_eq!(r.document_ids[6..12], [0, 0, 0, 0, 1, 1]);
    assert_eq!(r.document_ids[12..], [0, 0, 1, 1, 1, 1]);
    assert_eq!(r.labels[..6], [-100, -100, -100, -100, 12, -100]);
    check(&samples, 6, &opts(), r, &packed.stats);
}

#[test]
fn drops_and_truncation_are_counted() {
    let samples = [
        s(0, &[], &[]),
        s(1, &[5], &[1]),
        s(2, &[1, 2, 3], &[1, 0, 0]),
        s(3, &[1, 2, 3, 4, 5, 6], &[0, 1, 1, 1, 1, 1]),
        s(4, &[1, 2, 3, 4, 5, 6], &[0, 0, 0, 0, 1, 1]),
        s(5, &[1, 2, 3], &[0, 0, 1]),
    ];
    let drop = pack(&samples, 4, &opts()).unwrap();
    let st = drop.stats;
    assert_eq!(
        (
            st.samples_in,
            st.packed,
            st.dropped_empty,
            st.dropped_too_long,
            st.dropped_nothing_to_train,
            st.truncated
        ),
        (6, 1, 1, 2, 2, 0)
    );
    assert_eq!(drop.rows.sample_ids, [5]);
    check(&samples, 4, &opts(), &drop.rows, &drop.stats);

    let options = PackOptions {
        overflow: Overflow::Truncate,
        ..opts()
    };
    let cut = pack(&samples, 4, &options).unwrap();
    let st = cut.stats;
    // Sample 3 is cut to [1, 2, 3, 4]; sample 4's trained tokens are all past the cut.
    assert_eq!(
        (
            st.packed,
            st.dropped_too_long,
            st.dropped_nothing_to_train,
            st.truncated
        ),
        (2, 0, 3, 1)
    );
    assert_eq!(cut.rows.sample_ids, [3, 5]);
    assert_eq!(cut.rows.input_ids[..4], [1, 2, 3, 4]);
    assert_eq!(cut.rows.labels[..4], [2, 3, 4, -100]);
    check(&samples, 4, &options, &cut.rows, &cut.stats);
}

#[test]
fn errors_name_the_sample() {
    let bad = [s(0, &[1, 2], &[0, 1]), s(41, &[1, 2, 3], &[0, 1])];
    match pack(&bad, 8, &opts()) {
        Err(Error::InvalidArgument(m)) => {
            assert!(
                m.contains("sample 41") && m.contains("3") && m.contains("2"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let huge = [Sample::new(7, vec![1, u32::MAX], vec![false, true])];
    match pack(&huge, 8, &opts()) {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains("sample 7") && m.contains("position 1"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pack(&[], 0, &opts()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Packer::new(0, opts()),
        Err(Error::InvalidArgument(_))
    ));
    let no_buffer = PackOptions {
        buffer: 0,
        ..opts()
    };
    assert!(matches!(
        pack(&[], 8, &no_buffer),
        Err(Error::InvalidArgument(_))
    ));
    let bad_pad = PackOptions {
        pad_id: u32::MAX,
        ..opts()
    };
    assert!(matches!(
        Packer::new(8, bad_pad),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        pack(&[], i32::MAX as usize + 1, &opts()),
        Err(Error::InvalidArgument(_))
    ));
    assert!("nope".parse::<Overflow>().is_err());
    assert_eq!("truncate".parse::<Overflow>().unwrap(), Overflow::Truncate);

    // A failed push changes nothing.
    let mut packer = Packer::new(8, opts()).unwrap();
    assert!(packer.push(s(3, &[1, 2], &[1])).is_err());
    assert_eq!(*packer.stats(), PackStats::default());
}

#[test]
fn empty_input_gives_no_rows() {
    let packed = pack(&[], 16, &opts()).unwrap();
    assert!(packed.rows.is_empty());
    assert_eq!(packed.rows.cu_seqlens(), (vec![], 1));
    assert_eq!(packed.rows.sample_ids_padded(), (vec![], 0));
    assert_eq!(packed.stats, PackStats::default());
    assert_eq!(packed.stats.efficiency(), 0.0);
    let mut packer = Packer::new(16, opts()).unwrap();
    assert!(packer.pop_ready().is_none());
    assert!(packer.flush().is_empty());
}

#[test]
fn tiny_seq_len_and_edge_options() {
    // seq_len 1 can hold nothing trainable; seq_len 2 holds exactly one 2-token sample per row.
    let samples = [
        s(0, &[1, 2], &[0, 1]),
        s(1, &[3], &[1]),
        s(2, &[4, 5], &[1, 1]),
    ];
    let one = pack(&samples, 1, &opts()).unwrap();
    assert!(one.rows.is_empty());
    check(&samples, 1, &opts(), &one.rows, &one.stats);
    for buffer in [1, 2, 5] {
        for max_open_rows in [0, 1, 3] {
            let options = PackOptions {
                buffer,
                max_open_rows,
                ..opts()
            };
            let two = pack(&samples, 2, &options).unwrap();
            assert_eq!(two.rows.rows(), 2);
            check(&samples, 2, &options, &two.rows, &two.stats);
        }
    }
}

#[test]
fn randomized_accounting() {
    let mut rng = Rng::new(7);
    for round in 0..60 {
        let seq_len = [1usize, 2, 3, 8, 17, 64, 300][round % 7];
        let n = rng.below(200) as usize;
        let samples = random_samples(&mut rng, n, seq_len.max(3));
        let options = PackOptions {
            buffer: 1 + rng.below(40) as usize,
            max_open_rows: rng.below(6) as usize,
            overflow: if rng.below(2) == 0 {
                Overflow::Drop
            } else {
                Overflow::Truncate
            },
            pad_id: rng.below(5) as u32,
        };
        let packed = pack(&samples, seq_len, &options).unwrap();
        check(&samples, seq_len, &options, &packed.rows, &packed.stats);
        assert_eq!(
            pack(&samples, seq_len, &options).unwrap(),
            packed,
            "not deterministic"
        );
    }
}

/// Pushes `samples` into a packer, popping after random pushes, and concatenates the output.
fn stream(
    samples: &[Sample],
    seq_len: usize,
    options: &PackOptions,
    rng: &mut Rng,
) -> (PackedRows, PackStats) {
    let mut packer = Packer::new(seq_len, options.clone()).unwrap();
    let mut out = PackedRows::new(seq_len);
    for (i, sample) in samples.iter().enumerate() {
        let admission = if i % 2 == 0 {
            packer.push(sample.clone()).unwrap()
        } else {
            packer
                .push_slices(sample.id, &sample.input_ids, &sample.mask)
                .unwrap()
        };
        let st = packer.stats();
        assert_eq!(st.samples_in, st.packed + st.pending + st.dropped());
        if let Admission::Dropped(_) = admission {
            assert!(st.dropped() > 0);
        }
        if rng.below(5) == 0 {
            if let Some(rows) = packer.pop_ready() {
                assert!(!rows.is_empty());
                out.append(rows);
            }
        }
    }
    out.append(packer.flush());
    assert_eq!(packer.stats().pending, 0);
    (out, *packer.stats())
}

#[test]
fn packer_matches_pack() {
    let mut rng = Rng::new(11);
    for round in 0..30 {
        let seq_len = [8usize, 64, 512][round % 3];
        let n = rng.below(300) as usize;
        let samples = random_samples(&mut rng, n, seq_len);
        let options = PackOptions {
            buffer: 1 + rng.below(64) as usize,
            max_open_rows: rng.below(8) as usize,
            overflow: if round % 2 == 0 {
                Overflow::Drop
            } else {
                Overflow::Truncate
            },
            pad_id: 3,
        };
        let packed = pack(&samples, seq_len, &options).unwrap();
        let (rows, stats) = stream(&samples, seq_len, &options, &mut rng);
        assert_eq!(rows, packed.rows);
        assert_eq!(stats, packed.stats);
    }
    let samples = long_tailed(3000, 5);
    let packed = pack(&samples, 4096, &opts()).unwrap();
    let (rows, stats) = stream(&samples, 4096, &opts(), &mut rng);
    assert_eq!(rows, packed.rows);
    assert_eq!(stats, packed.stats);
    check(&samples, 4096, &opts(), &rows, &stats);
}

#[test]
fn packer_is_reusable_after_flush() {
    let samples = long_tailed(500, 3);
    let mut packer = Packer::new(4096, opts()).unwrap();
    let mut all = PackedRows::new(4096);
    for half in samples.chunks(250) {
        for sample in half {
            packer.push(sample.clone()).unwrap();
        }
        all.append(packer.flush());
    }
    check(&samples, 4096, &opts(), &all, packer.stats());
}

#[test]
fn long_tailed_efficiency_at_4096() {
    let seq_len = 4096;
    let mut total = PackStats::default();
    for seed in 1..=3 {
        let samples = long_tailed(20_000, seed);
        let mut packer = Packer::new(seq_len, opts()).unwrap();
        let mut rows = 0;
        for sample in samples {
            packer.push(sample).unwrap();
            if let Some(batch) = packer.pop_ready() {
                rows += batch.rows();
            }
        }
        rows += packer.flush().rows();
        let st = *packer.stats();
        assert_eq!(st.rows, rows as u64);
        println!(
            "seed {seed}: {} samples packed into {} rows ({} dropped too long), mean doc {:.0} tokens, \
             efficiency {:.5}",
            st.packed,
            st.rows,
            st.dropped_too_long,
            st.tokens as f64 / st.packed as f64,
            st.efficiency()
        );
        assert!(st.efficiency() >= 0.99, "efficiency {}", st.efficiency());
        total.tokens += st.tokens;
        total.padding_tokens += st.padding_tokens;
    }
    println!("overall efficiency {:.5}", total.efficiency());
}

/// Release-mode throughput: `cargo test --release -p turnpack-core pack::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let samples = long_tailed(100_000, 42);
    let n_tokens: usize = samples.iter().map(|s| s.input_ids.len()).sum();
    let mut best = f64::INFINITY;
    let mut eff = 0.0;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let packed = pack(&samples, 4096, &opts()).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        eff = packed.stats.efficiency();
        std::hint::black_box(packed);
    }
    println!(
        "pack: {n_tokens} input tokens in {:.3}s = {:.1}M tokens/s (efficiency {eff:.5})",
        best,
        n_tokens as f64 / best / 1e6
    );
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let copies: Vec<Sample> = samples.clone();
        let t = std::time::Instant::now();
        let mut packer = Packer::new(4096, opts()).unwrap();
        for sample in copies {
            packer.push(sample).unwrap();
            if packer.ready_rows() >= 64 {
                std::hint::black_box(packer.pop_ready());
            }
        }
        std::hint::black_box(packer.flush());
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "Packer (owned push, pop every 64 rows): {:.1}M tokens/s",
        n_tokens as f64 / best / 1e6
    );
}

#[test]
fn a_tree_packs_its_branches_after_the_trunk_and_splits_with_its_prefix() {
    let trunk = s(7, &[1, 2, 3, 4, 5, 6], &[0, 0, 1, 1, 0, 0]);
    let branch = |prefix_len: usize, ids: &[u32]| TreeBranch {
        prefix_len,
        input_ids: ids.to_vec(),
        mask: std::iter::once(false)
            .chain(std::iter::repeat(true))
            .take(ids.len())
            .collect(),
        loss_weights: Vec::new(),
    };
    let tree = trunk.with_branches(vec![branch(2, &[3, 9, 9]), branch(4, &[5, 8])]);
    let out = pack(std::slice::from_ref(&tree), 16, &PackOptions::default()).unwrap();
    let r = &out.rows;
    assert_eq!(r.input_ids[..11], [1, 2, 3, 4, 5, 6, 3, 9, 9, 5, 8]);
    assert_eq!(r.position_ids[..11], [0, 1, 2, 3, 4, 5, 2, 3, 4, 4, 5]);
    assert_eq!(r.document_ids[..11], [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2]);
    assert_eq!(r.prefix_starts[..11], [0; 11]);
    assert_eq!(r.prefix_ends[..11], [0, 0, 0, 0, 0, 0, 2, 2, 2, 4, 4]);
    assert_eq!(r.labels[6..11], [9, 9, IGNORE_INDEX, 8, IGNORE_INDEX]);
    assert_eq!(r.doc_roles, [0, 1, 1]);
    assert_eq!((out.stats.packed, out.stats.branches_packed), (1, 2));
    assert_eq!(out.stats.trained_tokens, 2 + 2 + 1);
    // rows of 9: the trunk and the first branch fill one; the second branch goes to another row,
    // which carries the trunk's first 4 tokens as context (prefix ranges are row positions)
    let out = pack(std::slice::from_ref(&tree), 9, &PackOptions::default()).unwrap();
    let r = &out.rows;
    assert_eq!(out.stats.tree_splits, 1);
    assert_eq!(r.doc_roles, [0, 1, 2, 1]);
    assert_eq!(r.input_ids[9..15], [1, 2, 3, 4, 5, 8]);
    assert_eq!(r.position_ids[9..15], [0, 1, 2, 3, 4, 5]);
    assert_eq!(r.prefix_ends[9..15], [0, 0, 0, 0, 4, 4]);
    assert_eq!(r.labels[9..15], [-100, -100, -100, -100, 8, -100]);
    assert_eq!(out.stats.trained_tokens, 2 + 2 + 1);
    // the streaming packer gives the same rows
    let mut p = Packer::new(9, PackOptions::default()).unwrap();
    p.push(tree).unwrap();
    assert_eq!(p.flush(), out.rows);
}

#[test]
fn loss_weights_follow_the_labels_and_default_to_one() {
    let plain = s(1, &[1, 2, 3], &[0, 1, 1]);
    let weighted = s(2, &[4, 5, 6, 7], &[0, 1, 0, 1]).with_loss_weights(vec![9.0, 0.5, 9.0, 2.0]);
    let out = pack(&[plain.clone(), weighted], 8, &PackOptions::default()).unwrap();
    let r = &out.rows;
    // the longer sample first (best-fit decreasing), its labels' weights are their targets'
    assert_eq!(r.labels[..7], [5, -100, 7, -100, 2, 3, -100]);
    assert_eq!(
        r.loss_weights[..8],
        [0.5, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    );
    let none = pack(&[plain], 8, &PackOptions::default()).unwrap();
    assert!(!none.rows.has_loss_weights());
    let bad = s(3, &[1, 2], &[0, 1]).with_loss_weights(vec![1.0]);
    assert!(pack(&[bad], 8, &PackOptions::default()).is_err());
}
