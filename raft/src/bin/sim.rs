//! Deterministic Raft simulator.
//!
//! `sim --seed N` replays one seed; `sim --seed N --count K` runs seeds N..N+K;
//! `sim --seed N --budget-secs S` runs consecutive seeds until S seconds have passed.
//! A failing seed is printed (also when an invariant assertion aborts the process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use freshet_raft::sim::{run_seed, Backend, SimConfig};

static CURRENT_SEED: AtomicU64 = AtomicU64::new(u64::MAX);

fn usage() -> ! {
    eprintln!(
        "usage: sim [--seed N] [--count K] [--budget-secs S] [--backend storage|mem] [--quiet]"
    );
    std::process::exit(2);
}

fn main() {
    let mut seed = 1u64;
    let mut count = 1u64;
    let mut budget: Option<Duration> = None;
    let mut quiet = false;
    let mut backend = Backend::Storage;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--seed" => seed = num(),
            "--count" => count = num(),
            "--budget-secs" => {
                budget = Some(Duration::from_secs(num()));
                count = u64::MAX;
            }
            "--quiet" => quiet = true,
            "--backend" => {
                backend = match args.next().as_deref() {
                    Some("storage") => Backend::Storage,
                    Some("mem") => Backend::Mem,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let s = CURRENT_SEED.load(Ordering::SeqCst);
        eprintln!("SIM FAILED: seed {s} panicked (replay: make sim SEED={s})");
        hook(info);
    }));
    let start = Instant::now();
    let mut ran = 0u64;
    let mut s = seed;
    while ran < count {
        if budget.is_some_and(|b| start.elapsed() >= b) {
            break;
        }
        CURRENT_SEED.store(s, Ordering::SeqCst);
        let mut cfg = SimConfig::from_seed(s);
        cfg.backend = backend;
        let t = Instant::now();
        match run_seed(&cfg) {
            Ok(r) => {
                if !quiet {
                    println!(
                        "seed {} ok: nodes {}+{} spare groups {} membership changes proposed/done {:?} replicas wiped {} log starts proposed/acked/applied {:?} (leader not ready {}) fetches served/below start/not available {:?} proposed {} acked {} failed {} crashes {} partitions {} compactions {} leaderships {} envelopes sent/dropped {:?} converged in {} ms, kafka end offsets {:?}, driver {:?} ({} ms wall)",
                        r.seed,
                        r.nodes,
                        r.spares,
                        r.groups,
                        r.membership_changes,
                        r.wipes,
                        r.log_starts,
                        r.log_start_waits,
                        r.fetches,
                        r.proposed,
                        r.acked,
                        r.failed,
                        r.crashes,
                        r.partitions,
                        r.compactions,
                        r.leaderships,
                        r.envelopes,
                        r.converge_ms,
                        r.kafka_end_offsets,
                        r.driver,
                        t.elapsed().as_millis()
                    );
                }
            }
            Err(e) => {
                eprintln!("SIM FAILED: seed {s}: {e}");
                eprintln!("replay: cargo run -p freshet-raft --release --bin sim -- --seed {s} --backend {}", if backend == Backend::Mem { "mem" } else { "storage" });
                std::process::exit(1);
            }
        }
        ran += 1;
        s += 1;
    }
    println!(
        "sim: {ran} seeds from {seed} passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
