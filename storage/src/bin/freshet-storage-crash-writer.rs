//! Test helper for the kill -9 test (storage/tests/kill9.rs): appends batches to a log
//! on the real disk (glommio DmaFile) forever, flushing every third batch, and prints
//! `durable <offset>` after each flush. Batch `k` (base offset 5k) holds 5 records whose
//! values are filled with byte `k % 251`, timestamps from `k`.
//!
//! Usage: freshet-storage-crash-writer <dir>

use bytes::Bytes;
use freshet_storage::batch::build_batch;
use freshet_storage::{DmaDisk, Log, LogConfig, SystemClock};
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;

/// Records per batch; the test relies on it.
const RECORDS: usize = 5;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: crash-writer <dir>"));
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let cfg = LogConfig {
                segment_bytes_max: 1 << 20,
                preallocate_bytes: 256 << 10,
                ..LogConfig::default()
            };
            let log = Log::open(DmaDisk, dir, cfg, Rc::new(SystemClock))
                .await
                .expect("open log");
            let mut out = std::io::stdout().lock();
            writeln!(out, "start {}", log.next_offset()).expect("stdout");
            out.flush().expect("stdout");
            let mut k = log.next_offset() / RECORDS as i64;
            loop {
                let b = build_batch(RECORDS, 100 + (k as usize * 131) % 3000, k, (k % 251) as u8);
                let info = log.append(Bytes::from(b), 1, None).await.expect("append");
                assert_eq!(info.first_offset, k * RECORDS as i64);
                if k % 3 == 2 {
                    let d = log.flush().await.expect("flush");
                    writeln!(out, "durable {d}").expect("stdout");
                    out.flush().expect("stdout");
                }
                k += 1;
            }
        })
        .expect("executor")
        .join()
        .expect("writer");
}
