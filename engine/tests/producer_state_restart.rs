//! KIP-98 idempotent producer state survives a broker restart: it is rebuilt from the batch
//! headers of the log tail when the partition opens, so a batch retried across a restart is
//! answered as a duplicate with its original offsets instead of being appended twice; a
//! producer whose batches lie before the scanned tail is unknown and accepted (KIP-360).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use freshet_engine::{new_mesh, Acks, BrokerConfig, Shard};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

/// One uncompressed idempotent v2 batch: `n` records, producer (id, epoch), base sequence.
fn batch(n: i32, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Bytes {
    let mut records = BytesMut::new();
    for i in 0..n {
        // length, attributes, ts delta, offset delta, key len -1, value len 1, value, 0 headers
        let body = [0u8, 0, (i as u8) << 1, 1, 2, b'x', 0];
        records.put_u8((body.len() as u8) << 1);
        records.put_slice(&body);
    }
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32((49 + records.len()) as i32); // batch length
    b.put_i32(0); // leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc placeholder
    b.put_i16(0); // attributes
    b.put_i32(n - 1); // last offset delta
    b.put_i64(1_700_000_000_000); // base timestamp
    b.put_i64(1_700_000_000_000); // max timestamp
    b.put_i64(producer_id);
    b.put_i16(producer_epoch);
    b.put_i32(base_sequence);
    b.put_i32(n); // records count
    b.put_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Runs `body` on a one-core broker over `data_dir` (a "broker run"; call again to restart).
fn run_broker<F, Fut>(data_dir: std::path::PathBuf, scan_bytes: u64, body: F)
where
    F: FnOnce(std::rc::Rc<Shard>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let mut cfg = BrokerConfig::new(data_dir, "127.0.0.1:0".into(), 0, 1);
    cfg.num_partitions = 1;
    cfg.producer_state_scan_bytes = scan_bytes;
    let mesh = new_mesh(1, 64);
    let stop = Arc::new(AtomicBool::new(false));
    let results = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(1))
        .on_all_shards(move || async move {
            let shard = Shard::start(cfg, mesh, freshet_engine::system_clock(), stop)
                .await
                .expect("shard starts");
            body(shard.clone()).await;
            shard.close_partitions().await;
        })
        .unwrap()
        .join_all();
    for r in results {
        r.expect("broker ran to completion");
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("freshet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const PID: i64 = 4242;

#[test]
fn kip_98_a_batch_retried_across_a_restart_is_a_duplicate_with_its_original_offsets() {
    let dir = temp_dir("pstate-restart");
    run_broker(dir.clone(), 64 << 20, |shard| async move {
        shard
            .create_topic("t".into(), 1, -1, None, vec![])
            .await
            .unwrap();
        // Seven batches of 2 records: sequences 0, 2, ..., 12 at offsets 0, 2, ..., 12.
        for i in 0..7 {
            let out = shard
                .local_replicate("t", 0, batch(2, PID, 3, i * 2), Acks::All)
                .await
                .expect("appended");
            assert_eq!(out.base_offset, i as i64 * 2);
        }
        // Another producer's batch after them.
        let out = shard
            .local_replicate("t", 0, batch(1, PID + 1, 0, 0), Acks::All)
            .await
            .unwrap();
        assert_eq!(out.base_offset, 14);
    });
    run_broker(dir.clone(), 64 << 20, |shard| async move {
        let end_before = shard.partition("t", 0).unwrap().offsets().log_end_offset;
        assert_eq!(end_before, 15);
        // The last batch, retried after the restart: its original offsets, nothing appended.
        let out = shard
            .local_replicate("t", 0, batch(2, PID, 3, 12), Acks::All)
            .await
            .expect("a duplicate is answered, not refused");
        assert_eq!((out.base_offset, out.last_offset), (12, 13));
        // One of the last 5 batches of the producer (sequence 4 at offset 4).
        let out = shard
            .local_replicate("t", 0, batch(2, PID, 3, 4), Acks::All)
            .await
            .unwrap();
        assert_eq!((out.base_offset, out.last_offset), (4, 5));
        let out = shard
            .local_replicate("t", 0, batch(1, PID + 1, 0, 0), Acks::All)
            .await
            .unwrap();
        assert_eq!(out.base_offset, 14);
        assert_eq!(
            shard.partition("t", 0).unwrap().offsets().log_end_offset,
            15,
            "duplicates were appended"
        );
        // The sequence check is live again: a gap is OUT_OF_ORDER_SEQUENCE_NUMBER (45), an
        // older epoch INVALID_PRODUCER_EPOCH (47), the next sequence appends.
        let gap = shard
            .local_replicate("t", 0, batch(1, PID, 3, 20), Acks::All)
            .await;
        assert_eq!(gap.err(), Some(45));
        let fenced = shard
            .local_replicate("t", 0, batch(1, PID, 2, 14), Acks::All)
            .await;
        assert_eq!(fenced.err(), Some(47));
        let next = shard
            .local_replicate("t", 0, batch(1, PID, 3, 14), Acks::All)
            .await
            .unwrap();
        assert_eq!(next.base_offset, 15);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records per batch in the bound test: ~540-byte batches, so 4 KiB segments (the storage's
/// smallest) roll every ~7 batches.
const BIG: i32 = 60;

#[test]
fn kip_360_a_producer_outside_the_scanned_tail_is_unknown_and_accepted() {
    let dir = temp_dir("pstate-bound");
    run_broker(dir.clone(), 64 << 20, |shard| async move {
        shard
            .create_topic(
                "t".into(),
                1,
                -1,
                None,
                vec![("segment.bytes".to_string(), "4096".to_string())],
            )
            .await
            .unwrap();
        // PID: 10 batches; then PID+1: 10 batches, so at least one segment roll separates
        // PID's last batch from the active segment.
        for pid in [PID, PID + 1] {
            for i in 0..10 {
                shard
                    .local_replicate("t", 0, batch(BIG, pid, 0, i * BIG), Acks::All)
                    .await
                    .unwrap();
            }
        }
    });
    // A bound covering the whole log: PID's last batch is known, its retry a duplicate.
    run_broker(dir.clone(), 64 << 20, |shard| async move {
        let out = shard
            .local_replicate("t", 0, batch(BIG, PID, 0, 9 * BIG), Acks::All)
            .await
            .unwrap();
        assert_eq!(out.base_offset, 9 * BIG as i64);
        assert_eq!(
            shard.partition("t", 0).unwrap().offsets().log_end_offset,
            20 * BIG as i64
        );
    });
    // A 1-byte bound scans only the active segment: PID+1 is known, PID is not.
    run_broker(dir.clone(), 1, |shard| async move {
        let end = 20 * BIG as i64;
        let p = shard.partition("t", 0).unwrap();
        assert_eq!(p.offsets().log_end_offset, end);
        let out = shard
            .local_replicate("t", 0, batch(BIG, PID + 1, 0, 9 * BIG), Acks::All)
            .await
            .unwrap();
        assert_eq!(
            out.base_offset,
            19 * BIG as i64,
            "PID+1's last batch is in the tail"
        );
        let out = shard
            .local_replicate("t", 0, batch(BIG, PID, 0, 9 * BIG), Acks::All)
            .await
            .expect("an unknown producer's batch is accepted");
        assert_eq!(out.base_offset, end, "accepted and appended at the log end");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
