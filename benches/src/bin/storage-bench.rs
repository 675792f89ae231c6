//! storage-bench: the freshet-storage `Log` against raw O_DIRECT writes of the same bytes on
//! the same disk in the same run (glommio `DmaFile`, io_uring).
//!
//! Cases: 1 KiB records in 16 KiB / 256 KiB / 1 MiB batches, with a flush (fdatasync) after
//! every batch and with a flush every 1 MiB. For each: throughput (MB/s) and its ratio to a
//! raw sequential O_DIRECT write+fdatasync of the same bytes (one write per fdatasync interval), and for flush-per-batch the p50/p99/p99.9
//! of append+flush against raw write+fdatasync. Then sequential read throughput: cold (a
//! freshly opened log, from disk) and from the recent-batch cache.
//!
//! Usage: storage-bench [--dir DIR] [--total-mib N]

use bytes::Bytes;
use freshet_storage::batch::build_batch;
use freshet_storage::{DmaDisk, FlushPolicy, Log, LogConfig, SystemClock};
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const RECORD_VALUE_BYTES: usize = 1000; // ~1 KiB per record with its framing

struct Args {
    dir: PathBuf,
    total_bytes: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("target/storage-bench-data"),
        total_bytes: 512 * MIB,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => args.dir = PathBuf::from(it.next().expect("--dir DIR")),
            "--total-mib" => {
                args.total_bytes = it
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("--total-mib N")
                    * MIB
            }
            "-h" | "--help" => {
                println!("storage-bench [--dir DIR] [--total-mib N]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A client batch of `batch_bytes` made of ~1 KiB records.
fn client_batch(batch_bytes: usize) -> Bytes {
    let records = (batch_bytes / KIB).max(1);
    Bytes::from(build_batch(
        records,
        RECORD_VALUE_BYTES,
        1_700_000_000_000,
        0x5a,
    ))
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

struct Run {
    bytes: usize,
    elapsed: Duration,
    lat_us: Option<Histogram<u64>>,
}

impl Run {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

fn log_cfg(cache_bytes_max: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max: 128 << 20,
        retention_ms: None,
        flush_policy: FlushPolicy::EveryAppend,
        batch_bytes_max: 2 << 20,
        preallocate_bytes: 32 << 20,
        cache_bytes_max,
        ..LogConfig::default()
    }
}

async fn bench_log(dir: &Path, batch: &Bytes, total: usize, flush_every_bytes: usize) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        DmaDisk,
        dir.to_path_buf(),
        log_cfg(8 << 20),
        Rc::new(SystemClock),
    )
    .await
    .expect("open log");
    let n = total / batch.len();
    let mut h = hist();
    let mut since_flush = 0usize;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        log.append(batch.clone(), 1, None).await.expect("append");
        since_flush += batch.len();
        if since_flush >= flush_every_bytes {
            log.flush().await.expect("flush");
            since_flush = 0;
            h.record(t.elapsed().as_micros() as u64).expect("record");
        }
    }
    log.flush().await.expect("flush");
    let elapsed = start.elapsed();
    log.close().await.expect("close");
    Run {
        bytes: n * batch.len(),
        elapsed,
        lat_us: (flush_every_bytes <= batch.len()).then_some(h),
    }
}

/// Raw baseline: sequential O_DIRECT writes of `write_bytes` (rounded up to 4 KiB), each
/// followed by fdatasync when `sync_every_bytes` have been written; the file is preallocated
/// in the same 32 MiB steps the log uses.
async fn bench_raw(dir: &Path, write_bytes: usize, total: usize, sync_every_bytes: usize) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    // glommio probes IOPOLL on the first DMA file of a device: make sure it is not empty
    // (see freshet_storage::disk::dma).
    let path = dir.join("raw.dat");
    std::fs::write(&path, vec![0u8; 4096]).expect("seed raw file");
    let f: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .expect("open raw");
    let size = write_bytes.div_ceil(4096) * 4096;
    let n = total / write_bytes;
    let step = 32u64 << 20;
    let mut allocated = 0u64;
    let mut h = hist();
    let mut pos = 0u64;
    let mut since_sync = 0usize;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        if pos + size as u64 > allocated {
            allocated += step.max(size as u64);
            f.pre_allocate(allocated, false).await.expect("fallocate");
        }
        let mut buf = f.alloc_dma_buffer(size);
        buf.as_bytes_mut().fill(0x5a);
        f.write_at(buf, pos).await.expect("write");
        pos += size as u64;
        since_sync += write_bytes;
        if since_sync >= sync_every_bytes {
            f.fdatasync().await.expect("fdatasync");
            since_sync = 0;
            h.record(t.elapsed().as_micros() as u64).expect("record");
        }
    }
    f.fdatasync().await.expect("fdatasync");
    let elapsed = start.elapsed();
    f.close().await.expect("close");
    Run {
        bytes: n * write_bytes,
        elapsed,
        lat_us: (sync_every_bytes <= write_bytes).then_some(h),
    }
}

async fn read_all(log: &Log<DmaDisk>) -> (usize, Duration) {
    let start = Instant::now();
    let mut off = log.log_start_offset();
    let end = log.next_offset();
    let mut bytes = 0usize;
    while off < end {
        let d = log.read(off, MIB, i64::MAX).await.expect("read");
        assert!(!d.is_empty());
        let mut at = 0;
        while at < d.len() {
            let h = freshet_storage::batch::parse_header(&d[at..]);
            off = h.last_offset() + 1;
            at += h.size_bytes();
        }
        bytes += d.len();
    }
    (bytes, start.elapsed())
}

fn pct(h: &Option<Histogram<u64>>, q: f64) -> String {
    match h {
        Some(h) => format!("{}", h.value_at_quantile(q)),
        None => "-".into(),
    }
}

fn main() {
    let args = parse_args();
    let out = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("storage-bench")
        .spawn(move || async move {
            let mut rows = Vec::new();
            let base = args.dir.clone();
            for &batch_bytes in &[16 * KIB, 256 * KIB, MIB] {
                let batch = client_batch(batch_bytes);
                for &(mode, flush_every) in
                    &[("flush per batch", 0usize), ("flush every 1 MiB", MIB)]
                {
                    let flush_every = if flush_every == 0 {
                        batch.len()
                    } else {
                        flush_every
                    };
                    // The raw baseline writes what an ideal writer would: one write of the
                    // bytes between two fdatasyncs (the batch, or 1 MiB), then fdatasync.
                    // A warm-up run (allocator, file system) first.
                    let raw_write = flush_every.max(batch.len());
                    // at most 4096 fdatasyncs per case (16 KiB batches: 64 MiB)
                    let total = args.total_bytes.min(4096 * flush_every.max(batch.len()));
                    let _ = bench_raw(&base.join("raw"), raw_write, 16 * MIB, flush_every).await;
                    let raw = bench_raw(&base.join("raw"), raw_write, total, flush_every).await;
                    let log = bench_log(&base.join("log"), &batch, total, flush_every).await;
                    rows.push((batch_bytes, mode, log, raw));
                }
            }
            // Reads: cold (fresh open, from disk) and from the cache.
            let dir = base.join("read");
            let _ = std::fs::remove_dir_all(&dir);
            let batch = client_batch(MIB);
            let cache_all = (args.total_bytes + 64 * MIB) as u64;
            let log = Log::open(
                DmaDisk,
                dir.clone(),
                log_cfg(cache_all),
                Rc::new(SystemClock),
            )
            .await
            .expect("open");
            for _ in 0..args.total_bytes / batch.len() {
                log.append(batch.clone(), 1, None).await.expect("append");
            }
            log.flush().await.expect("flush");
            let (cache_bytes, cache_t) = read_all(&log).await;
            log.close().await.expect("close");
            let log = Log::open(DmaDisk, dir.clone(), log_cfg(8 << 20), Rc::new(SystemClock))
                .await
                .expect("reopen");
            let (cold_bytes, cold_t) = read_all(&log).await;
            log.close().await.expect("close");
            let _ = std::fs::remove_dir_all(&base);
            (rows, (cold_bytes, cold_t), (cache_bytes, cache_t))
        })
        .expect("executor")
        .join()
        .expect("bench");
    let (rows, cold, cache) = out;
    let mbs = |b: usize, t: Duration| b as f64 / 1e6 / t.as_secs_f64();
    println!(
        "storage-bench: up to {} MiB per case (at most 4096 fdatasyncs), 1 KiB records, glommio DmaFile (O_DIRECT, io_uring), one core",
        args.total_bytes / MIB
    );
    println!();
    println!("| batch | flush | log MB/s | raw MB/s | log/raw | log p50/p99/p99.9 µs | raw p50/p99/p99.9 µs | p99 log/raw |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (batch_bytes, mode, log, raw) in &rows {
        let p99 = match (&log.lat_us, &raw.lat_us) {
            (Some(l), Some(r)) => format!(
                "{:.2}",
                l.value_at_quantile(0.99) as f64 / r.value_at_quantile(0.99).max(1) as f64
            ),
            _ => "-".into(),
        };
        println!(
            "| {} KiB | {} | {:.0} | {:.0} | {:.2} | {}/{}/{} | {}/{}/{} | {} |",
            batch_bytes / KIB,
            mode,
            log.mb_s(),
            raw.mb_s(),
            log.mb_s() / raw.mb_s(),
            pct(&log.lat_us, 0.5),
            pct(&log.lat_us, 0.99),
            pct(&log.lat_us, 0.999),
            pct(&raw.lat_us, 0.5),
            pct(&raw.lat_us, 0.99),
            pct(&raw.lat_us, 0.999),
            p99
        );
    }
    println!();
    println!("| sequential read (1 MiB fetches) | MB/s |");
    println!("|---|---:|");
    println!(
        "| cold (fresh open, from disk, CRC checked) | {:.0} |",
        mbs(cold.0, cold.1)
    );
    println!("| recent-batch cache | {:.0} |", mbs(cache.0, cache.1));
}
