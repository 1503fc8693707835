//! Shared by the benchmarks: criterion settings, a deterministic random
//! source, where generated fixtures are cached, and running peers (and
//! `tollgate` itself) as processes, all measured the same way.
//!
//! Included from each bench with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)] // each bench uses a different part

pub mod repo;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use criterion::Criterion;

/// Enough samples for a stable mean on a 2-core machine without making a
/// full `scripts/bench.sh` run take more than a few minutes.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// `$TOLLGATE_CACHE`, else `$HOME/.cache/tollgate`: the same root the other
/// scripts of this project cache their builds under, outside the checkout.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TOLLGATE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME or TOLLGATE_CACHE must be set to cache bench fixtures");
    PathBuf::from(home).join(".cache").join("tollgate")
}

/// The `tollgate` binary cargo built for this bench (release profile).
pub fn tollgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

/// Runs a command to completion with stdout and stderr captured through
/// pipes, as a caller that reads the result would. Every process-level
/// measurement goes through here, tollgate and peers alike.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Like [`run`], and panics unless the exit code is one of `ok_codes`
/// (`diff` exits 1 when the files differ, which is its success here).
pub fn run_expect(cmd: &mut Command, ok_codes: &[i32]) -> Output {
    let out = run(cmd);
    match out.status.code() {
        Some(code) if ok_codes.contains(&code) => out,
        _ => panic!(
            "{cmd:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// SplitMix64: tiny, fast and fully determined by its seed, so a fixture
/// generated on one machine is byte-identical on every other one.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be zero.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// 64 lowercase hex characters, e.g. a certificate fingerprint.
    pub fn sha256_hex(&mut self) -> String {
        (0..4).map(|_| format!("{:016x}", self.next_u64())).collect()
    }
}
