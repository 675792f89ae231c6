//! storage-bench: the freshet-storage `Log` against raw O_DIRECT writes of the same bytes on
//! the same disk in the same run (glommio `DmaFile`, io_uring).
//!
//! Cases: 1 KiB records in 16 KiB / 256 KiB / 1 MiB batches, with a flush (fdatasync) after
//! every batch and with a flush every 1 MiB. For each: throughput (MB/s) and its ratio to a
//! raw sequential O_DIRECT write+fdatasync of the same bytes (one write per fdatasync interval), and for flush-per-batch the p50/p99/p99.9
//! of append+flush against raw write+fdatasync. Log and raw run in 8 alternating slices so
//! both see the same machine. Then sequential read throughput: cold (a
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

/// The log under test, fed in slices so it can be interleaved with the raw baseline.
struct LogWriter {
    log: Log<DmaDisk>,
    batch: Bytes,
    flush_every_bytes: usize,
    since_flush: usize,
    run: Run,
}

impl LogWriter {
    async fn new(dir: &Path, batch: &Bytes, flush_every_bytes: usize) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        let log = Log::open(
            DmaDisk,
            dir.to_path_buf(),
            log_cfg(8 << 20),
            Rc::new(SystemClock),
        )
        .await
        .expect("open log");
        LogWriter {
            log,
            batch: batch.clone(),
            flush_every_bytes,
            since_flush: 0,
            run: Run {
                bytes: 0,
                elapsed: Duration::ZERO,
                lat_us: (flush_every_bytes <= batch.len()).then(hist),
            },
        }
    }

    /// Appends about `bytes` (whole batches), flushing per the policy, and ends flushed.
    async fn slice(&mut self, bytes: usize) {
        let n = (bytes / self.batch.len()).max(1);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            self.log
                .append(self.batch.clone(), 1, None)
                .await
                .expect("append");
            self.since_flush += self.batch.len();
            if self.since_flush >= self.flush_every_bytes {
                self.log.flush().await.expect("flush");
                self.since_flush = 0;
                if let Some(h) = &mut self.run.lat_us {
                    h.record(t.elapsed().as_micros() as u64).expect("record");
                }
            }
        }
        self.log.flush().await.expect("flush");
        self.since_flush = 0;
        self.run.elapsed += start.elapsed();
        self.run.bytes += n * self.batch.len();
    }

    async fn finish(self) -> Run {
        self.log.close().await.expect("close");
        self.run
    }
}

/// Raw baseline: sequential O_DIRECT writes of `write_bytes` (rounded up to 4 KiB), each
/// followed by fdatasync once `sync_every_bytes` have been written; the file is preallocated
/// in the same 32 MiB steps the log uses.
struct RawWriter {
    f: DmaFile,
    write_bytes: usize,
    sync_every_bytes: usize,
    pos: u64,
    allocated: u64,
    since_sync: usize,
    run: Run,
}

impl RawWriter {
    async fn new(dir: &Path, write_bytes: usize, sync_every_bytes: usize) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("mkdir");
        // glommio probes IOPOLL on the first DMA file of a device: make sure it is not
        // empty (see freshet_storage::disk::dma).
        let path = dir.join("raw.dat");
        std::fs::write(&path, vec![0u8; 4096]).expect("seed raw file");
        let f: DmaFile = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .expect("open raw");
        RawWriter {
            f,
            write_bytes,
            sync_every_bytes,
            pos: 0,
            allocated: 0,
            since_sync: 0,
            run: Run {
                bytes: 0,
                elapsed: Duration::ZERO,
                lat_us: (sync_every_bytes <= write_bytes).then(hist),
            },
        }
    }

    async fn slice(&mut self, bytes: usize) {
        let size = self.write_bytes.div_ceil(4096) * 4096;
        let n = (bytes / self.write_bytes).max(1);
        let step = 32u64 << 20;
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            if self.pos + size as u64 > self.allocated {
                self.allocated += step.max(size as u64);
                self.f
                    .pre_allocate(self.allocated, false)
                    .await
                    .expect("fallocate");
            }
            let mut buf = self.f.alloc_dma_buffer(size);
            buf.as_bytes_mut().fill(0x5a);
            self.f.write_at(buf, self.pos).await.expect("write");
            self.pos += size as u64;
            self.since_sync += self.write_bytes;
            if self.since_sync >= self.sync_every_bytes {
                self.f.fdatasync().await.expect("fdatasync");
                self.since_sync = 0;
                if let Some(h) = &mut self.run.lat_us {
                    h.record(t.elapsed().as_micros() as u64).expect("record");
                }
            }
        }
        self.f.fdatasync().await.expect("fdatasync");
        self.since_sync = 0;
        self.run.elapsed += start.elapsed();
        self.run.bytes += n * self.write_bytes;
    }

    async fn finish(self) -> Run {
        self.f.close().await.expect("close");
        self.run
    }
}

/// Runs the log and the raw baseline over `total` bytes in `SLICES` alternating slices, so
/// both see the same (shared, noisy) machine.
async fn bench_pair(
    base: &Path,
    batch: &Bytes,
    raw_write: usize,
    flush_every: usize,
    total: usize,
) -> (Run, Run) {
    const SLICES: usize = 8;
    let mut raw = RawWriter::new(&base.join("raw"), raw_write, flush_every).await;
    let mut log = LogWriter::new(&base.join("log"), batch, flush_every).await;
    raw.slice(8 * MIB).await; // warm-up, not counted
    raw.run = Run {
        bytes: 0,
        elapsed: Duration::ZERO,
        lat_us: raw.run.lat_us.as_ref().map(|_| hist()),
    };
    for _ in 0..SLICES {
        raw.slice(total / SLICES).await;
        log.slice(total / SLICES).await;
    }
    (log.finish().await, raw.finish().await)
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
                    let (log, raw) = bench_pair(&base, &batch, raw_write, flush_every, total).await;
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
