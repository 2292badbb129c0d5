//! Shared by the benchmarks: a deterministic RNG, and the choice of clock.
//!
//! `TURNPACK_BENCH_CLOCK=cpu` measures the benchmark thread's CPU time instead of wall-clock time:
//! on a machine shared with other work, wall-clock times grow with the load, CPU times much less.
//! (Every benchmark here is single-threaded.)

#![allow(dead_code)] // each bench target uses a subset

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::Criterion;
use std::time::Duration;

/// splitmix64: small, deterministic, good enough for drawing a workload.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`; Unix only).
pub struct ThreadCpuTime;

#[cfg(unix)]
#[allow(unsafe_code)] // the one libc call; the crate itself has no unsafe code
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant Linux provides.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    panic!("TURNPACK_BENCH_CLOCK=cpu needs a Unix thread CPU-time clock")
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Durations in nanoseconds, like wall time.
        WallTime.formatter()
    }
}

/// Whether `TURNPACK_BENCH_CLOCK=cpu` asks for CPU time.
pub fn cpu_clock() -> bool {
    match std::env::var("TURNPACK_BENCH_CLOCK").as_deref() {
        Ok("cpu") => true,
        Ok("wall") | Err(_) => false,
        Ok(other) => panic!("TURNPACK_BENCH_CLOCK must be \"wall\" or \"cpu\", got {other:?}"),
    }
}

/// The benchmarks' settings (command-line options still override them).
pub fn config<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// `main` of a bench target whose benchmarks are `$f::<M>(&mut Criterion<M>)`, on the chosen clock.
#[macro_export]
macro_rules! bench_main {
    ($f:ident) => {
        fn main() {
            if common::cpu_clock() {
                let mut c =
                    common::config(Criterion::default().with_measurement(common::ThreadCpuTime))
                        .configure_from_args();
                $f(&mut c);
                c.final_summary();
            } else {
                let mut c = common::config(Criterion::default()).configure_from_args();
                $f(&mut c);
                c.final_summary();
            }
        }
    };
}
