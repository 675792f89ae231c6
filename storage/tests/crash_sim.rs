//! Crash consistency over the simulated disk: seeded random appends, flushes, truncations,
//! I/O errors and power losses (torn / lost unflushed writes). After every recovery, every
//! batch ever reported durable is intact and in order, and what is visible is exactly a
//! prefix of what was appended (nothing after a torn write).
mod common;
use bytes::Bytes;
use common::batch;
use freshet_storage::batch::{parse_header, BATCH_HEADER_BYTES};
use freshet_storage::disk::sim::SplitMix64;
use freshet_storage::{Log, LogConfig, ManualClock, SimDisk, SimFaults};
use futures_lite::future::block_on;
use std::path::PathBuf;
use std::rc::Rc;

fn cfg(rng: &mut SplitMix64) -> LogConfig {
    LogConfig {
        segment_bytes_max: [8 << 10, 16 << 10, 64 << 10][rng.below(3) as usize],
        index_interval_bytes: [512, 4096][rng.below(2) as usize],
        preallocate_bytes: [4096, 32 << 10][rng.below(2) as usize],
        cache_bytes_max: [0, 8 << 10, 1 << 20][rng.below(3) as usize],
        write_buffer_bytes: [4096, 8192, 64 << 10][rng.below(3) as usize],
        read_ahead_bytes: [4096, 16 << 10][rng.below(2) as usize],
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The bytes the log must serve for a client batch appended at `base` in `term`.
fn stamped(client: &[u8], base: i64, term: i32) -> Vec<u8> {
    let mut v = client.to_vec();
    v[0..8].copy_from_slice(&base.to_be_bytes());
    v[12..16].copy_from_slice(&term.to_be_bytes());
    v
}

async fn read_everything(log: &Log<SimDisk>, seed: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = log.log_start_offset();
    while off < log.next_offset() {
        let data = log
            .read(off, 3000, i64::MAX)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: read at {off} after recovery: {e}"));
        assert!(!data.is_empty());
        let mut at = 0;
        while at < data.len() {
            let h = freshet_storage::validate_batch(&data[at..]).expect("served batches are valid");
            out.push(data[at..at + h.size_bytes()].to_vec());
            off = h.last_offset() + 1;
            at += h.size_bytes();
        }
    }
    out
}

fn run_seed(seed: u64, steps: usize) {
    block_on(async move {
        let mut rng = SplitMix64::new(seed ^ 0xC0FFEE);
        let disk = SimDisk::new(seed);
        let dir = PathBuf::from("/data/t-0");
        let clock = Rc::new(ManualClock::new(1_000));
        let cfg = cfg(&mut rng);
        let mut log = Log::open(disk.clone(), dir.clone(), cfg.clone(), clock.clone())
            .await
            .unwrap();
        // model: expected bytes of every batch in the log, in order
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut durable_batches = 0usize; // model[..durable_batches] must survive any crash
        let mut term = 1i32;
        let mut crashes = 0;
        let trace = std::env::var("FRESHET_CRASH_TRACE").is_ok();
        if trace {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        for step in 0..steps {
            let op = rng.below(100);
            if trace {
                let names: Vec<String> = disk
                    .paths()
                    .iter()
                    .filter_map(|p| {
                        p.file_name()
                            .map(|n| n.to_string_lossy().trim_start_matches('0').to_string())
                    })
                    .collect();
                eprintln!("files {names:?}");
                eprintln!("step {step} op {op} leo {} durable {} model {} durable_batches {durable_batches} segs {}", log.next_offset(), log.durable_offset(), model.len(), log.segment_count());
            }
            if op < 55 {
                let n = 1 + rng.below(3) as usize;
                let mut req = Vec::new();
                let mut parts = Vec::new();
                for _ in 0..n {
                    let b = batch(
                        1 + rng.below(4) as usize,
                        rng.below(1500) as usize,
                        step as i64,
                        rng.below(256) as u8,
                    );
                    parts.push(b.clone());
                    req.extend_from_slice(&b);
                }
                match log.append(Bytes::from(req), term, None).await {
                    Ok(info) => {
                        let mut base = info.first_offset;
                        for p in parts {
                            let h = parse_header(&p);
                            model.push(stamped(&p, base, term));
                            base += h.last_offset_delta as i64 + 1;
                        }
                        assert_eq!(base - 1, info.last_offset);
                    }
                    Err(e) => {
                        assert_eq!(e.kafka_error_code(), 56, "only I/O failures expected: {e}")
                    }
                }
            } else if op < 80 {
                if let Ok(d) = log.flush().await {
                    assert_eq!(d, log.next_offset());
                    durable_batches = model.len();
                }
            } else if op < 82 && !log.is_failed() {
                // a consumer reading while the log is being written (read-ahead, cache, disk)
                disk.set_faults(SimFaults::default());
                let start = log.log_start_offset();
                let got = read_everything(&log, seed).await;
                let first = model
                    .iter()
                    .position(|b| parse_header(b).last_offset() >= start)
                    .unwrap_or(model.len());
                assert_eq!(
                    got.len(),
                    model.len() - first,
                    "seed {seed} step {step}: live read length"
                );
                for (g, m) in got.iter().zip(&model[first..]) {
                    assert!(g == m, "seed {seed} step {step}: live read differs");
                }
            } else if op < 85 && !model.is_empty() {
                // Raft truncation at a batch boundary, then a new term.
                let keep = rng.below(model.len() as u64 + 1) as usize;
                let at = if keep == model.len() {
                    log.next_offset()
                } else {
                    parse_header(&model[keep]).base_offset
                };
                let removes = keep < model.len();
                let r = log.truncate(at).await;
                if trace {
                    eprintln!("truncate({at}) -> {r:?}; now {:?}", log.segments());
                }
                if r.is_ok() {
                    model.truncate(keep);
                    assert_eq!(log.next_offset(), at);
                    term += 1;
                    if removes {
                        // a truncation that removes something leaves the rest durable
                        durable_batches = model.len();
                    }
                } else {
                    // A failed truncation may have removed any part of the suffix.
                    durable_batches = durable_batches.min(keep);
                }
            } else if op < 88 {
                // a burst of I/O errors
                disk.set_faults(SimFaults {
                    io_error_per_million: 200_000,
                    read_bitflip_per_million: 0,
                });
            } else if op < 92 {
                disk.set_faults(SimFaults::default());
            } else {
                // power loss
                let log_segments_before = log.segments();
                drop(log);
                if rng.below(2) == 0 {
                    disk.crash();
                } else {
                    disk.lose_unflushed();
                }
                disk.set_faults(SimFaults::default());
                crashes += 1;
                if trace {
                    eprintln!("crash; before: {:?}", log_segments_before);
                }
                log = Log::open(disk.clone(), dir.clone(), cfg.clone(), clock.clone())
                    .await
                    .unwrap();
                if trace {
                    eprintln!("reopened: {:?}", log.segments());
                }
                let got = read_everything(&log, seed).await;
                assert!(
                    got.len() >= durable_batches,
                    "seed {seed} step {step}: {} batches recovered, {} were durable",
                    got.len(),
                    durable_batches
                );
                assert!(
                    got.len() <= model.len(),
                    "seed {seed} step {step}: more batches than appended"
                );
                for (i, g) in got.iter().enumerate() {
                    assert!(
                        *g == model[i],
                        "seed {seed} step {step}: batch {i} differs after recovery (durable {durable_batches})"
                    );
                }
                model.truncate(got.len());
                durable_batches = model.len();
                assert_eq!(log.durable_offset(), log.next_offset());
                term += 1;
            }
        }
        assert!(crashes > 0 || steps < 30);
        // Final check without crash: everything is readable with faults off.
        disk.set_faults(SimFaults::default());
        drop(log);
        let log = Log::open(disk.clone(), dir.clone(), cfg, clock)
            .await
            .unwrap();
        let got = read_everything(&log, seed).await;
        assert!(
            got.len() >= durable_batches,
            "seed {seed}: final reopen has {} batches, {durable_batches} durable",
            got.len()
        );
        for (i, g) in got.iter().enumerate() {
            assert!(*g == model[i], "seed {seed}: final batch {i} differs");
        }
    });
}

#[test]
fn crash_consistency_seeded_loop() {
    let seeds: u64 = std::env::var("FRESHET_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let first: u64 = std::env::var("FRESHET_CRASH_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds {
        run_seed(seed, 200);
    }
}

/// A bit flipped in the active segment's last batch: recovery cuts the log before it and
/// nothing from that batch on is served.
#[test]
fn bitflip_in_tail_is_cut_on_recovery() {
    block_on(async {
        let disk = SimDisk::new(11);
        let dir = PathBuf::from("/data/flip");
        let clock = Rc::new(ManualClock::new(0));
        let log = Log::open(
            disk.clone(),
            dir.clone(),
            common::small_cfg(),
            clock.clone(),
        )
        .await
        .unwrap();
        for i in 0..10 {
            log.append(batch(2, 300, i, 7), 1, None).await.unwrap();
        }
        log.flush().await.unwrap();
        drop(log);
        let seg = dir.join(format!("{:020}.log", 0));
        let len = 10 * batch(2, 300, 0, 7).len() as u64;
        let victim_pos = len - 100; // inside the 10th batch (offsets 18..19)
        disk.flip_bit(&seg, victim_pos, 3);
        let log = Log::open(disk.clone(), dir.clone(), common::small_cfg(), clock)
            .await
            .unwrap();
        assert_eq!(log.next_offset(), 18, "log ends at the last intact batch");
        assert!(log.read(18, 1000, i64::MAX).await.unwrap().is_empty());
    });
}

/// A bit flipped in a sealed segment (trusted via its index): reads of that batch fail with
/// KAFKA_STORAGE_ERROR; the corrupt bytes are never returned.
#[test]
fn bitflip_in_sealed_segment_is_never_served() {
    block_on(async {
        let disk = SimDisk::new(12);
        let dir = PathBuf::from("/data/flip2");
        let clock = Rc::new(ManualClock::new(0));
        let mut cfg = common::small_cfg();
        cfg.cache_bytes_max = 0;
        let log = Log::open(disk.clone(), dir.clone(), cfg.clone(), clock.clone())
            .await
            .unwrap();
        for i in 0..100 {
            log.append(batch(1, 1000, i, 7), 1, None).await.unwrap();
        }
        log.flush().await.unwrap();
        assert!(log.segment_count() > 1);
        log.close().await.unwrap();
        let seg = dir.join(format!("{:020}.log", 0));
        let b = batch(1, 1000, 0, 7).len() as u64;
        disk.flip_bit(&seg, 5 * b + BATCH_HEADER_BYTES as u64 + 10, 0);
        let log = Log::open(disk.clone(), dir.clone(), cfg, clock)
            .await
            .unwrap();
        let e = log.read(5, 100, i64::MAX).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), 56, "{e}");
        // a read starting before it stops with an error rather than serve it
        let r = log.read(4, 1 << 20, i64::MAX).await;
        assert!(
            r.is_err(),
            "a read spanning the corrupt batch must fail, not skip or serve it"
        );
        // batches before it are fine
        assert_eq!(
            parse_header(&log.read(4, 10, i64::MAX).await.unwrap()).base_offset,
            4
        );
    });
}

/// Transient bit flips on the way from disk are caught by the CRC check on read.
#[test]
fn transient_read_bitflips_are_detected() {
    block_on(async {
        let disk = SimDisk::new(13);
        let dir = PathBuf::from("/data/flip3");
        let clock = Rc::new(ManualClock::new(0));
        let mut cfg = common::small_cfg();
        cfg.cache_bytes_max = 0;
        cfg.read_ahead_bytes = 4096;
        let log = Log::open(disk.clone(), dir.clone(), cfg, clock)
            .await
            .unwrap();
        for i in 0..50 {
            log.append(batch(1, 1000, i, 7), 1, None).await.unwrap();
        }
        log.flush().await.unwrap();
        disk.set_faults(SimFaults {
            io_error_per_million: 0,
            read_bitflip_per_million: 1_000_000,
        });
        let mut errors = 0;
        for o in 0..50 {
            match log.read(o, 100, i64::MAX).await {
                Ok(d) => {
                    freshet_storage::validate_batch(&d).expect("anything served is intact");
                }
                Err(e) => {
                    assert_eq!(e.kafka_error_code(), 56);
                    errors += 1;
                }
            }
        }
        assert!(
            errors > 0,
            "every disk read had a flipped bit somewhere; some must hit a batch"
        );
    });
}
