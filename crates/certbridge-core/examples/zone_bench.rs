//! Benchmark (not a test): renders, writes and parses back zones of 1,000, 10,000 and 100,000
//! TXT records; prints time, records/s and peak memory (VmHWM). Run with
//! `cargo run --release -p certbridge-core --example zone_bench`. "write" renders and writes a
//! new file; "no-op" renders and compares with the unchanged file; "parse" reads a file back.

use certbridge_core::names::DomainName;
use certbridge_core::zone::{self, Record, WriteOptions, ZoneSpec};
use std::time::{Duration, Instant};

/// Peak resident memory of this process so far, in KiB (`VmHWM` in /proc/self/status).
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `n` dns-01-like values: per-name labels, five values per name (wildcard + apex + renewals).
fn records(n: usize, origin: &DomainName) -> Result<Vec<Record>, Box<dyn std::error::Error>> {
    (0..n)
        .map(|i| {
            let owner =
                DomainName::parse(&format!("host{}.example.org.{}", i / 5, origin.as_str()))?;
            let value = format!("{:043}", i as u128 * 2_654_435_761);
            Ok(Record::txt(owner, &value)?.with_published(1_700_000_000 + i as u64))
        })
        .collect()
}

/// CPU time of this thread so far (first field of /proc/thread-self/schedstat, in ns): on a
/// shared machine wall time also counts waiting for a core.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Runs `step` `reps` times (small sizes are repeated so the clocks can resolve them) and
/// prints per-run wall and CPU time, records/s (by CPU time) and peak memory so far.
fn timed<T>(what: &str, n: usize, reps: usize, mut step: impl FnMut(usize) -> T) -> T {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut out = step(0);
    for rep in 1..reps {
        out = step(rep);
    }
    let per_run = |d: Duration| d.as_secs_f64() / reps as f64;
    let (wall, cpu) = (
        per_run(wall.elapsed()),
        per_run(cpu_time().saturating_sub(cpu)),
    );
    println!(
        "{what:<6} {n:>7} records  wall {:>7.1} ms  cpu {:>7.1} ms  {:>9.0} records/s  peak {:>7} KiB",
        wall * 1e3,
        cpu * 1e3,
        n as f64 / cpu.max(1e-9),
        peak_kib()
    );
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let origin = DomainName::parse("signing.test")?;
    let spec = ZoneSpec::new(origin.clone(), vec![DomainName::parse("ns1.signing.test")?]);
    let dir = tempfile::tempdir()?;
    println!("start: peak {} KiB", peak_kib());
    // Ascending sizes: VmHWM only grows, so each line's peak belongs to its size.
    for n in [1_000, 10_000, 100_000] {
        let recs = records(n, &origin)?;
        let reps = (100_000 / n).max(1);
        let text = timed("render", n, reps, |_| {
            zone::render(&spec, &recs, 2026010100)
        })?;

        let options = |rep: usize| {
            let mut opts = WriteOptions::new(dir.path().join(format!("zone-{n}-{rep}")));
            opts.lock_timeout = None;
            opts
        };
        let outcome = timed("write", n, reps, |rep| {
            zone::apply(&spec, &recs, &options(rep))
        })?;
        let again = timed("no-op", n, reps, |rep| {
            zone::apply(&spec, &recs, &options(rep))
        })?;
        assert!(outcome.changed && !again.changed);

        let parsed = timed("parse", n, reps, |_| zone::parse_rendered(&text))?;
        assert_eq!(parsed.txt().count(), n);
        println!("         file {} KiB", text.len() / 1024);
    }
    Ok(())
}
