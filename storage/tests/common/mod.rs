//! Scenarios shared by the simulated-disk and real-disk (glommio) test suites: every
//! scenario is generic over `Disk` and runs against both.
#![allow(dead_code)]

use bytes::Bytes;
use freshet_storage::batch::{build_batch, parse_header};
use freshet_storage::{Disk, Log, LogConfig, ManualClock, StorageError};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub fn small_cfg() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 1024,
        preallocate_bytes: 64 << 10,
        cache_bytes_max: 16 << 10,
        write_buffer_bytes: 16 << 10,
        read_ahead_bytes: 8 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub fn batch(records: usize, value_bytes: usize, ts: i64, fill: u8) -> Bytes {
    Bytes::from(build_batch(records, value_bytes, ts, fill))
}

pub async fn open<D: Disk>(
    disk: &D,
    dir: &Path,
    cfg: LogConfig,
    clock: &Rc<ManualClock>,
) -> Log<D> {
    Log::open(disk.clone(), dir.to_path_buf(), cfg, clock.clone())
        .await
        .expect("open log")
}

/// Reads every batch from `from` to the end, returning (base, last, fill byte of first value).
pub async fn read_all<D: Disk>(log: &Log<D>, from: i64) -> Vec<(i64, i64, i32)> {
    let mut out = Vec::new();
    let mut off = from;
    let end = log.next_offset();
    while off < end {
        let data = log.read(off, 4096, i64::MAX).await.expect("read");
        assert!(
            !data.is_empty(),
            "read at {off} below LEO {end} returned nothing"
        );
        let mut at = 0;
        while at < data.len() {
            let b = &data[at..];
            let h = freshet_storage::validate_batch(b).expect("served batch is valid");
            out.push((h.base_offset, h.last_offset(), h.partition_leader_epoch));
            off = h.last_offset() + 1;
            at += h.size_bytes();
        }
    }
    out
}

/// Scenario: append, flush, read back across segments, restart, read again.
pub async fn scenario_append_read_reopen<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(1_000_000));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    assert_eq!(log.next_offset(), 0);
    let mut expect = Vec::new();
    for i in 0..200i64 {
        let n = 1 + (i as usize % 5);
        let info = log
            .append(
                batch(n, 100 + (i as usize * 37) % 900, 1000 + i * 10, i as u8),
                3,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            info.first_offset,
            expect.last().map(|(_, l, _)| l + 1).unwrap_or(0)
        );
        assert_eq!(info.last_offset, info.first_offset + n as i64 - 1);
        expect.push((info.first_offset, info.last_offset, 3));
        if i % 17 == 0 {
            let d = log.flush().await.unwrap();
            assert_eq!(d, info.last_offset + 1);
        }
    }
    assert!(log.segment_count() > 2, "small segments must have rolled");
    // Before the final flush everything is readable (cache holds unwritten data).
    assert_eq!(read_all(&log, 0).await, expect);
    let durable = log.flush().await.unwrap();
    assert_eq!(durable, log.next_offset());
    assert_eq!(read_all(&log, 0).await, expect);
    // A read in the middle of a batch returns the batch containing it (Kafka fetch).
    let (b, l, _) = expect[50];
    if l > b {
        let d = log.read(b + 1, 1, i64::MAX).await.unwrap();
        assert_eq!(parse_header(&d).base_offset, b);
    }
    // Offsets out of range are errors with the Kafka code 1.
    let e = log
        .read(log.next_offset() + 1, 100, i64::MAX)
        .await
        .unwrap_err();
    assert_eq!(e.kafka_error_code(), 1);
    log.close().await.unwrap();
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    assert_eq!(log.next_offset(), expect.last().unwrap().1 + 1);
    assert_eq!(log.durable_offset(), log.next_offset());
    assert_eq!(read_all(&log, 0).await, expect);
    // New appends continue the offsets.
    let info = log.append(batch(2, 10, 5, 9), 4, None).await.unwrap();
    assert_eq!(info.first_offset, expect.last().unwrap().1 + 1);
    log.flush().await.unwrap();
    assert_eq!(log.epoch_end_offset(3), Some((3, info.first_offset)));
    assert_eq!(log.epoch_end_offset(4), Some((4, info.last_offset + 1)));
    assert_eq!(log.epoch_end_offset(2), None);
    log.close().await.unwrap();
}

/// Scenario: KIP-74 — max_bytes smaller than a batch still returns one whole batch; `upto`
/// (high watermark) is never crossed.
pub async fn scenario_read_limits<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    for i in 0..10 {
        log.append(batch(3, 500, i, i as u8), 1, None)
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    let one = log.read(0, 1, i64::MAX).await.unwrap();
    let h = parse_header(&one);
    assert_eq!(one.len(), h.size_bytes(), "exactly one whole batch");
    let none = log.read(0, 10_000, 0).await.unwrap();
    assert!(none.is_empty(), "nothing at or above the high watermark");
    let some = log.read(0, 1 << 20, 6).await.unwrap();
    let mut at = 0;
    let mut last = -1;
    while at < some.len() {
        let h = parse_header(&some[at..]);
        assert!(h.base_offset < 6);
        last = h.last_offset();
        at += h.size_bytes();
    }
    assert_eq!(last, 5, "batches [0..2], [3..5] are below hw 6");
    log.close().await.unwrap();
}

/// Scenario: invalid input is refused whole, with the right Kafka error code.
pub async fn scenario_rejects_bad_batches<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    let good = build_batch(2, 10, 0, 1);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xff;
    let mut two = good.clone();
    two.extend_from_slice(&bad_crc);
    let e = log.append(Bytes::from(two), 1, None).await.unwrap_err();
    assert!(matches!(e, StorageError::CorruptBatch(_)), "{e}");
    assert_eq!(e.kafka_error_code(), 2);
    assert_eq!(
        log.next_offset(),
        0,
        "nothing appended when one batch of the request is bad"
    );
    let mut magic1 = good.clone();
    magic1[16] = 1;
    assert_eq!(
        log.append(Bytes::from(magic1), 1, None)
            .await
            .unwrap_err()
            .kafka_error_code(),
        43
    );
    let big = build_batch(1, 2 << 20, 0, 1);
    assert_eq!(
        log.append(Bytes::from(big), 1, None)
            .await
            .unwrap_err()
            .kafka_error_code(),
        10
    );
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    assert_eq!(
        log.append(Bytes::from(truncated), 1, None)
            .await
            .unwrap_err()
            .kafka_error_code(),
        2
    );
    log.close().await.unwrap();
}

/// Scenario: LogAppendTime stamping recomputes the CRC; timestamps are searchable.
pub async fn scenario_timestamps<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    // CreateTime batches with ts 1000 + 10*i (records i*3.. with ts +0,+1,+2)
    for i in 0..100i64 {
        log.append(batch(3, 300, 1000 + 10 * i, 0), 1, None)
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some((0, 1000)));
    // ts 1502 = batch 50 (ts 1500..1502) record 2 -> offset 152
    assert_eq!(
        log.offset_for_timestamp(1502).await.unwrap(),
        Some((152, 1502))
    );
    // ts 1505 lies between batches: first record >= it is batch 51's first (offset 153, ts 1510)
    assert_eq!(
        log.offset_for_timestamp(1505).await.unwrap(),
        Some((153, 1510))
    );
    assert_eq!(log.offset_for_timestamp(10_000).await.unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((1992, 299)));
    let info = log
        .append(batch(2, 10, 5, 0), 1, Some(777_777))
        .await
        .unwrap();
    assert_eq!(info.max_timestamp, 777_777);
    let d = log.read(info.first_offset, 1000, i64::MAX).await.unwrap();
    let h = freshet_storage::validate_batch(&d).expect("stamped batch has a valid CRC");
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 777_777);
    assert_eq!(
        log.offset_for_timestamp(5000).await.unwrap(),
        Some((info.first_offset, 777_777))
    );
    log.flush().await.unwrap();
    log.close().await.unwrap();
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    let d = log.read(info.first_offset, 1000, i64::MAX).await.unwrap();
    assert_eq!(
        freshet_storage::validate_batch(&d).unwrap().max_timestamp,
        777_777
    );
    assert_eq!(
        log.offset_for_timestamp(1502).await.unwrap(),
        Some((152, 1502))
    );
    assert_eq!(log.max_timestamp(), Some((777_777, info.last_offset)));
    log.close().await.unwrap();
}

/// Scenario: Raft truncation of a divergent suffix, then new appends in a new term.
pub async fn scenario_truncate<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    for i in 0..120i64 {
        log.append(batch(2, 700, i, 1), (i / 40) as i32 + 1, None)
            .await
            .unwrap();
    }
    assert!(log.segment_count() >= 3);
    // cut inside a batch: the whole batch containing offset 101 goes
    log.truncate(101).await.unwrap();
    assert_eq!(log.next_offset(), 100);
    assert_eq!(log.durable_offset(), 100);
    // epoch 3 started at offset 160, now gone: epoch 2 ends at the new LEO (KIP-101)
    assert_eq!(log.epoch_end_offset(2), Some((2, 100)));
    assert_eq!(log.epoch_end_offset(9), Some((2, 100)));
    let info = log.append(batch(1, 10, 0, 2), 7, None).await.unwrap();
    assert_eq!(info.first_offset, 100);
    log.flush().await.unwrap();
    let all = read_all(&log, 0).await;
    assert_eq!(all.len(), 51);
    assert_eq!(all[50], (100, 100, 7));
    log.truncate(20).await.unwrap();
    assert_eq!(log.next_offset(), 20);
    assert_eq!(log.epochs(), vec![(1, 0)]);
    log.close().await.unwrap();
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    assert_eq!(log.next_offset(), 20);
    assert_eq!(read_all(&log, 0).await.len(), 10);
    assert_eq!(log.epochs(), vec![(1, 0)]);
    log.close().await.unwrap();
}

/// Scenario: DeleteRecords / snapshots move the log start; retention deletes old segments.
pub async fn scenario_prefix_and_retention<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(1_000_000));
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    for i in 0..100i64 {
        log.append(batch(1, 2000, 1_000_000 + i, 1), 1, None)
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    let segs = log.segment_count();
    assert!(segs >= 3);
    log.prefix_truncate(40).await.unwrap();
    assert_eq!(log.log_start_offset(), 40);
    assert!(
        log.segment_count() < segs,
        "segments wholly below 40 are deleted"
    );
    assert_eq!(
        log.read(39, 100, i64::MAX)
            .await
            .unwrap_err()
            .kafka_error_code(),
        1
    );
    assert_eq!(
        parse_header(&log.read(40, 100, i64::MAX).await.unwrap()).base_offset,
        40
    );
    log.close().await.unwrap();
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    assert_eq!(
        log.log_start_offset(),
        40,
        "log start offset is checkpointed"
    );
    // retention.bytes: keep about 2 segments
    let mut cfg = small_cfg();
    cfg.retention_bytes = Some(50 << 10);
    log.set_config(cfg.clone());
    let deleted = log.enforce_retention().await.unwrap();
    assert!(deleted >= 1);
    assert!(
        log.size_bytes() >= 50 << 10,
        "retention.bytes never deletes below the limit"
    );
    assert!(log.log_start_offset() > 40);
    // retention.ms: everything older than the clock - 1000 ms except the active segment
    cfg.retention_bytes = None;
    cfg.retention_ms = Some(1000);
    log.set_config(cfg);
    clock.advance_ms(10_000);
    log.enforce_retention().await.unwrap();
    assert_eq!(log.segment_count(), 1);
    let lso = log.log_start_offset();
    assert_eq!(read_all(&log, lso).await.last().unwrap().1, 99);
    // prefix truncate beyond the end empties the log and restarts at that offset
    log.prefix_truncate(500).await.unwrap();
    assert_eq!(log.next_offset(), 500);
    assert_eq!(log.log_start_offset(), 500);
    let info = log.append(batch(1, 10, 0, 1), 2, None).await.unwrap();
    assert_eq!(info.first_offset, 500);
    log.close().await.unwrap();
    let log = open(&disk, &dir, small_cfg(), &clock).await;
    assert_eq!(log.log_start_offset(), 500);
    assert_eq!(log.next_offset(), 501);
    log.delete().await.unwrap();
}

/// Scenario: segment.ms rolls an old segment.
pub async fn scenario_roll_by_age<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let mut cfg = small_cfg();
    cfg.segment_ms = 1000;
    let log = open(&disk, &dir, cfg, &clock).await;
    log.append(batch(1, 10, 0, 1), 1, None).await.unwrap();
    log.append(batch(1, 10, 0, 1), 1, None).await.unwrap();
    assert_eq!(log.segment_count(), 1);
    clock.advance_ms(1000);
    log.append(batch(1, 10, 0, 1), 1, None).await.unwrap();
    assert_eq!(log.segment_count(), 2);
    log.close().await.unwrap();
}

/// Scenario: concurrent flushes share fdatasync rounds and all see their data durable.
pub async fn scenario_concurrent_flush<D: Disk>(disk: D, dir: PathBuf) {
    let clock = Rc::new(ManualClock::new(0));
    let log = Rc::new(open(&disk, &dir, small_cfg(), &clock).await);
    let mut futs = Vec::new();
    for i in 0..20 {
        let log = log.clone();
        futs.push(async move {
            let info = log.append(batch(1, 100, 0, i), 1, None).await.unwrap();
            let d = log.flush().await.unwrap();
            assert!(d > info.last_offset, "flush covers the caller's own append");
            d
        });
    }
    let mut done = 0;
    for f in futs {
        let _ = f.await;
        done += 1;
    }
    assert_eq!(done, 20);
    assert_eq!(log.durable_offset(), 20);
}
