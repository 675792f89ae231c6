//! The contract freshet-raft relies on from `freshet_storage::Log` (through `GroupLog`):
//! after a power loss with torn writes and a reopen, every batch below the recovered end
//! reads back intact, and appends after recovery read back intact too.

use std::path::PathBuf;
use std::rc::Rc;

use bytes::BytesMut;
use freshet_raft::batch::{encode_batch, split_batches};
use freshet_raft::log::GroupLog;
use freshet_raft::rng::SimRng;
use freshet_storage::{Clock, Log, LogConfig, ManualClock, SimDisk};
use futures_lite::future::block_on;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes_max: 256 << 10,
        preallocate_bytes: 64 << 10,
        cache_bytes_max: 64 << 10,
        write_buffer_bytes: 16 << 10,
        read_ahead_bytes: 16 << 10,
        ..LogConfig::default()
    }
}

async fn open(disk: &SimDisk) -> Log<SimDisk> {
    let clock: Rc<dyn Clock> = Rc::new(ManualClock::new(0));
    Log::open(disk.clone(), PathBuf::from("/g"), cfg(), clock)
        .await
        .expect("open")
}

async fn read_all(log: &Log<SimDisk>) -> Result<usize, String> {
    let mut off = log.log_start_offset();
    let mut n = 0;
    while off < log.next_offset() {
        let b = GroupLog::read(log, off, 1 << 20, i64::MAX)
            .await
            .map_err(|e| format!("read at {off}: {e}"))?;
        let batches = split_batches(b).map_err(|e| e.to_string())?;
        let (h, _) = batches.last().ok_or("empty read")?;
        off = h.base_offset + i64::from(h.offset_count());
        n += batches.len();
    }
    Ok(n)
}

/// Reads `[from, upto)` in slices of at most `max_bytes` (as the driver's asynchronous fetch
/// does) and checks every batch parses.
async fn read_range(
    log: &Log<SimDisk>,
    from: i64,
    upto: i64,
    max_bytes: usize,
) -> Result<(), String> {
    let mut off = from;
    while off < upto {
        let b = GroupLog::read(log, off, max_bytes, upto)
            .await
            .map_err(|e| format!("read at {off} (max {max_bytes}, upto {upto}): {e}"))?;
        let batches = split_batches(b).map_err(|e| e.to_string())?;
        let Some((h, _)) = batches.last() else { break };
        off = h.base_offset + i64::from(h.offset_count());
    }
    Ok(())
}

#[test]
fn batches_read_back_after_crash_recovery_with_raft_like_flushes() {
    // Seed 13 failed before storage 48b233a (stale read-ahead after reopen).
    for seed in 0..150u64 {
        block_on(async {
            let mut rng = SimRng::new(seed);
            let disk = SimDisk::new(seed);
            let flush_pm = [1_000_000, 500_000, 100_000][rng.below(3) as usize];
            let mut log = open(&disk).await;
            for round in 0..8 {
                for _ in 0..(20 + rng.below(200)) {
                    let n = 1 + rng.below(4) as usize;
                    let v = vec![7u8; rng.below(1500) as usize];
                    let recs: Vec<_> = (0..n).map(|_| (Some(&b"k"[..]), Some(&v[..]))).collect();
                    GroupLog::append(&log, encode_batch(0, 0, -1, &recs), round)
                        .await
                        .expect("append");
                    if rng.chance(flush_pm) {
                        GroupLog::flush(&log).await.expect("flush");
                    }
                    if rng.chance(50_000) {
                        let end = log.next_offset();
                        let from = rng.below(end as u64 + 1) as i64;
                        if let Err(e) = read_range(&log, from, end, 8 << 10).await {
                            panic!("seed {seed} round {round}: {e}");
                        }
                    }
                }
                drop(log);
                let torn = rng.chance(500_000);
                if torn {
                    disk.crash();
                } else {
                    disk.lose_unflushed();
                }
                log = open(&disk).await;
                let end = log.next_offset();
                if let Err(e) = read_range(&log, log.log_start_offset(), end, 8 << 10).await {
                    panic!("seed {seed} round {round} after reopen (torn {torn}): {e}");
                }
            }
        });
    }
}

#[test]
fn batches_read_back_after_torn_crash_recovery_and_further_appends() {
    for seed in 0..200u64 {
        block_on(async {
            let mut rng = SimRng::new(seed);
            let disk = SimDisk::new(seed);
            let mut log = open(&disk).await;
            for round in 0..4 {
                for _ in 0..(20 + rng.below(60)) {
                    let n = 1 + rng.below(4) as usize;
                    let v = vec![7u8; rng.below(1500) as usize];
                    let recs: Vec<_> = (0..n).map(|_| (None, Some(&v[..]))).collect();
                    let mut b = BytesMut::new();
                    b.extend_from_slice(&encode_batch(0, 0, -1, &recs));
                    GroupLog::append(&log, b.freeze(), round)
                        .await
                        .expect("append");
                    if rng.chance(100_000) {
                        GroupLog::flush(&log).await.expect("flush");
                    }
                }
                if let Err(e) = read_all(&log).await {
                    panic!("seed {seed} round {round} before crash: {e}");
                }
                drop(log);
                if rng.chance(500_000) {
                    disk.crash();
                } else {
                    disk.lose_unflushed();
                }
                log = open(&disk).await;
                if let Err(e) = read_all(&log).await {
                    panic!("seed {seed} round {round} after reopen: {e}");
                }
            }
        });
    }
}

/// Log compaction (Raft §7) on the storage log: `prefix_truncate` to a batch boundary and
/// `reset_to` (a follower installing a snapshot) hold after a power loss, including one that
/// interrupts `reset_to` between its two storage calls (the next call finishes it), and the
/// log keeps appending densely from the new position.
#[test]
fn prefix_truncate_and_reset_to_survive_power_loss_and_appends_continue_section_7() {
    for seed in 0..120u64 {
        block_on(async {
            let mut rng = SimRng::new(seed ^ 0x5EED);
            let disk = SimDisk::new(seed);
            let mut log = open(&disk).await;
            for round in 0..6 {
                let mut bases = Vec::new();
                for _ in 0..(10 + rng.below(120)) {
                    let n = 1 + rng.below(4) as usize;
                    let v = vec![3u8; rng.below(3000) as usize];
                    let recs: Vec<_> = (0..n).map(|_| (None, Some(&v[..]))).collect();
                    let base = GroupLog::append(&log, encode_batch(0, 0, -1, &recs), round)
                        .await
                        .expect("append");
                    bases.push(base);
                    if rng.chance(200_000) {
                        GroupLog::flush(&log).await.expect("flush");
                    }
                }
                // The driver compacts only applied (so flushed) entries.
                GroupLog::flush(&log).await.expect("flush");
                let durable_end = log.next_offset();
                let at = bases[rng.below(bases.len() as u64) as usize];
                let mode = rng.below(3);
                let expect_start = match mode {
                    0 => {
                        GroupLog::prefix_truncate(&log, at).await.expect("prefix");
                        at
                    }
                    1 => {
                        let to = at + rng.below(2 * (durable_end - at) as u64 + 2) as i64;
                        GroupLog::reset_to(&log, to).await.expect("reset");
                        to
                    }
                    _ => {
                        // Interrupted install: only the first half (the suffix cut) happened.
                        Log::truncate(&log, at).await.expect("truncate");
                        at
                    }
                };
                drop(log);
                if rng.chance(500_000) {
                    disk.crash();
                } else {
                    disk.lose_unflushed();
                }
                log = open(&disk).await;
                if mode == 2 {
                    GroupLog::reset_to(&log, at).await.expect("finish reset");
                }
                assert_eq!(
                    log.log_start_offset(),
                    expect_start,
                    "seed {seed} round {round} mode {mode}: start after reopen"
                );
                let end = log.next_offset();
                let want_end = if mode == 0 { durable_end } else { expect_start };
                assert_eq!(end, want_end, "seed {seed} round {round} mode {mode}: end");
                if let Err(e) = read_all(&log).await {
                    panic!("seed {seed} round {round} mode {mode}: {e}");
                }
                let b = encode_batch(0, 0, -1, &[(None, Some(&b"x"[..]))]);
                assert_eq!(GroupLog::append(&log, b, 99).await.expect("append"), end);
                GroupLog::flush(&log).await.expect("flush");
            }
        });
    }
}
