//! Criterion benchmarks of packing: `pack` and the streaming `Packer`.
//!
//! ```text
//! cargo bench -p turnpack-core --bench pack
//! ```
//!
//! Samples are synthetic, with lengths like the benchmark workload's (log-normal, median about 420
//! and mean about 700 tokens, a few longer than the row, which are dropped), random token ids and
//! masks of alternating prompt/answer runs. Throughput is in input tokens ("elements/s").
//! `TURNPACK_BENCH_CLOCK=cpu` measures thread CPU time instead of wall-clock time.

// A benchmark reports its workload on stderr, beside criterion's own output.
#![allow(clippy::print_stderr)]

mod common;

use common::Rng;
use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use turnpack_core::{pack, PackOptions, Packer, Sample};

/// `n` samples: log-normal lengths (median 420), masks alternating prompt and answer runs.
fn samples(n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(7);
    (0..n)
        .map(|i| {
            let len = ((420.0 * (1.0 * rng.normal()).exp()) as usize).clamp(8, 12_000);
            let ids: Vec<u32> = (0..len)
                .map(|_| (rng.next_u64() % 151_643) as u32)
                .collect();
            let mut mask = Vec::with_capacity(len);
            let mut trained = false;
            while mask.len() < len {
                // Runs of 20..220 tokens, at most half the sample (so every sample trains some).
                let run = (20 + (rng.next_u64() % 200) as usize).min(len / 2);
                mask.extend(std::iter::repeat_n(trained, run.min(len - mask.len())));
                trained = !trained;
            }
            Sample::new(i as u64, ids, mask)
        })
        .collect()
}

fn benches<M: Measurement>(c: &mut Criterion<M>) {
    let samples = samples(3000);
    let tokens: u64 = samples.iter().map(|s| s.input_ids.len() as u64).sum();
    let options = PackOptions::default();
    let packed = pack(&samples, 4096, &options).expect("packs");
    eprintln!(
        "{} samples, {tokens} tokens; seq_len 4096: {} rows, efficiency {:.4}; {:?}",
        samples.len(),
        packed.stats.rows,
        packed.stats.efficiency(),
        packed.stats
    );

    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(tokens));
    for seq_len in [4096usize, 8192] {
        g.bench_with_input(
            BenchmarkId::new("pack", seq_len),
            &seq_len,
            |b, &seq_len| b.iter(|| black_box(pack(&samples, seq_len, &options).unwrap())),
        );
        g.bench_with_input(
            BenchmarkId::new("packer_push_slices", seq_len),
            &seq_len,
            |b, &seq_len| {
                b.iter(|| {
                    let mut packer = Packer::new(seq_len, options.clone()).unwrap();
                    let mut rows = 0;
                    for s in &samples {
                        packer.push_slices(s.id, &s.input_ids, &s.mask).unwrap();
                        if packer.ready_rows() > 0 {
                            rows += packer.pop_ready().map_or(0, |r| r.rows());
                        }
                    }
                    rows += packer.flush().rows();
                    black_box(rows)
                })
            },
        );
    }
    g.finish();
}

bench_main!(benches);
