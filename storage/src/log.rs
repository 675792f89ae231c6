//! The per-partition segmented log. See docs/design/log-format.md for the files and
//! docs/ARCHITECTURE.md for where it sits.

use crate::batch::{
    self, framed_size, parse_header, stamp_header, BatchHeader, BATCH_HEADER_BYTES,
};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::disk::{align_down, align_up, Disk, DiskFile, DmaDisk, IoBuf, ALIGN};
use crate::error::{Result, StorageError};
use crate::index::{self, SegmentIndex, SegmentSummary};
use crate::sync::LocalMutex;
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

const LOG_START_FILE: &str = "log-start-offset.checkpoint";
const EPOCH_FILE: &str = "leader-epoch.checkpoint";
/// Largest segment (index positions are u32; Kafka's segment.bytes is an int).
const SEGMENT_BYTES_CAP: u64 = i32::MAX as u64;
/// A chunk holding at most this much is moved to a bigger buffer rather than split a batch.
const GROW_COPY_BYTES_MAX: usize = 64 << 10;
/// Reads during recovery scans are this large.
const SCAN_READ_BYTES: usize = 1 << 20;

/// What [`Log::append`] assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// base offset of the first appended batch
    pub first_offset: i64,
    /// last offset of the last appended batch
    pub last_offset: i64,
    /// largest max_timestamp among the appended batches (the log append time if stamped)
    pub max_timestamp: i64,
    /// last offset of the batch holding `max_timestamp`
    pub offset_of_max_timestamp: i64,
    /// the log append time written, if any (for the Produce response)
    pub log_append_time_ms: Option<i64>,
    /// number of records appended
    pub records_count: u64,
    /// bytes appended
    pub size_bytes: u64,
}

fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}
fn offset_index_name(base: i64) -> String {
    format!("{base:020}.index")
}
fn time_index_name(base: i64) -> String {
    format!("{base:020}.timeindex")
}

struct Segment<D: Disk> {
    base_offset: i64,
    file: Rc<D::File>,
    /// logical length: bytes of complete batches appended (some perhaps still buffered)
    size_bytes: u64,
    /// bytes written to the file (readable from disk)
    written_bytes: u64,
    next_offset: i64,
    index: SegmentIndex,
    /// (max timestamp, last offset of its batch)
    max_ts: Option<(i64, i64)>,
    created_ms: i64,
    allocated_bytes: u64,
    /// index files on disk match this (sealed) segment
    index_persisted: bool,
}

impl<D: Disk> Segment<D> {
    /// A new segment with nothing in it yet, starting at `base_offset` in `file` (already
    /// created and cut to length 0).
    fn empty(base_offset: i64, file: Rc<D::File>, created_ms: i64) -> Self {
        Segment {
            base_offset,
            file,
            size_bytes: 0,
            written_bytes: 0,
            next_offset: base_offset,
            index: SegmentIndex::new(),
            max_ts: None,
            created_ms,
            allocated_bytes: 0,
            index_persisted: false,
        }
    }

    fn summary(&self) -> SegmentSummary {
        let (ts, off) = self.max_ts.unwrap_or((i64::MIN, -1));
        SegmentSummary {
            base_offset: self.base_offset,
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp: ts,
            offset_of_max_timestamp: off,
        }
    }
}

/// A 4 KiB-aligned slice of a segment file being filled by appends.
struct Chunk<D: Disk> {
    seg_base: i64,
    file: Rc<D::File>,
    /// file position of buf[0] (aligned)
    pos: u64,
    buf: D::Buf,
    /// bytes of buf holding log data
    len: usize,
    /// holds data not yet written to disk
    dirty: bool,
}

/// One batch in the recent-batch cache: the broker-stamped header and the client's bytes
/// (zero-copy slice of the Produce request) after it.
struct CacheEntry {
    base_offset: i64,
    last_offset: i64,
    max_ts: i64,
    head: [u8; BATCH_HEADER_BYTES],
    body: Bytes,
    /// append sequence number at the end of this batch
    end_seq: u64,
}

impl CacheEntry {
    fn size_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.body.len()
    }
}

struct ReadAhead {
    seg_base: i64,
    layout_gen: u64,
    pos: u64,
    data: Bytes,
}

struct State<D: Disk> {
    cfg: LogConfig,
    segments: Vec<Segment<D>>,
    log_start_offset: i64,
    next_offset: i64,
    durable_offset: i64,
    chunks: VecDeque<Chunk<D>>,
    /// bytes appended since open (monotonic)
    appended_seq: u64,
    /// appended bytes known written to disk
    written_seq: u64,
    /// appended bytes known durable
    durable_seq: u64,
    pending_msgs: u64,
    cache: VecDeque<CacheEntry>,
    cache_bytes: u64,
    /// (epoch, start offset), strictly increasing in both
    epochs: Vec<(i32, i64)>,
    epochs_dirty: bool,
    dir_dirty: bool,
    unsynced_segments: BTreeSet<i64>,
    read_ahead: Option<ReadAhead>,
    layout_gen: u64,
    failed: Option<String>,
    last_flush_ms: i64,
}

/// A partition's segmented, direct-I/O log.
///
/// **Owned by one core; `!Send` by design** (interior `RefCell`s and `Rc`s). Many tasks of
/// that core share it through `Rc<Log>`; every method takes `&self` and no `RefCell`
/// borrow is held across an `.await`. Appends are serialised by an async mutex, disk
/// rounds (write-out and fdatasync) by another; concurrent `flush()` callers share rounds.
/// The log starts no tasks of its own: the engine drives flush policy and retention.
///
/// ```compile_fail
/// fn owned_by_one_core<T: Send>() {}
/// owned_by_one_core::<freshet_storage::Log<freshet_storage::SimDisk>>();
/// ```
pub struct Log<D: Disk = DmaDisk> {
    disk: D,
    dir: PathBuf,
    clock: Rc<dyn Clock>,
    st: RefCell<State<D>>,
    append_lock: LocalMutex,
    io_lock: LocalMutex,
}

struct ScanOut {
    end_pos: u64,
    next_offset: i64,
    index: SegmentIndex,
    max_ts: Option<(i64, i64)>,
    epochs: Vec<(i32, i64)>,
    /// why the scan stopped before the end of data, if it hit something bad
    damage: Option<String>,
}

/// Scans a segment from position 0, validating every batch (framing, magic 2, CRC32C,
/// consecutive offsets), rebuilding its index. Stops at the first invalid batch, at the end
/// of data, or (with `stop_offset`) before the first batch whose last offset >= it.
async fn scan_segment<F: DiskFile>(
    file: &F,
    base_offset: i64,
    stop_offset: Option<i64>,
    interval_bytes: u32,
) -> io::Result<ScanOut> {
    let file_size = file.size().await?;
    let mut out = ScanOut {
        end_pos: 0,
        next_offset: base_offset,
        index: SegmentIndex::new(),
        max_ts: None,
        epochs: Vec::new(),
        damage: None,
    };
    let mut buf = Bytes::new();
    let mut buf_start = 0u64;
    let mut pos = 0u64;
    loop {
        if pos + BATCH_HEADER_BYTES as u64 > file_size {
            break;
        }
        if pos < buf_start || pos + BATCH_HEADER_BYTES as u64 > buf_start + buf.len() as u64 {
            buf_start = align_down(pos);
            buf = file.read_at(buf_start, SCAN_READ_BYTES).await?;
            if pos + BATCH_HEADER_BYTES as u64 > buf_start + buf.len() as u64 {
                break;
            }
        }
        let at = (pos - buf_start) as usize;
        if buf[at..at + BATCH_HEADER_BYTES].iter().all(|b| *b == 0) {
            break; // preallocated zeros: the clean end of data
        }
        let Some(size) = framed_size(&buf[at..]) else {
            out.damage = Some(format!("bad batch length at byte {pos}"));
            break;
        };
        if size as u64 > SEGMENT_BYTES_CAP || pos + size as u64 > file_size {
            out.damage = Some(format!("batch at byte {pos} runs past the end of the file"));
            break;
        }
        if pos + size as u64 > buf_start + buf.len() as u64 {
            buf_start = align_down(pos);
            let want = align_up((pos - buf_start) + size as u64).max(SCAN_READ_BYTES as u64);
            buf = file.read_at(buf_start, want as usize).await?;
            if pos + size as u64 > buf_start + buf.len() as u64 {
                out.damage = Some(format!("short read of batch at byte {pos}"));
                break;
            }
        }
        let at = (pos - buf_start) as usize;
        let b = &buf[at..at + size];
        let h = match batch::validate_batch(b) {
            Ok(h) => h,
            Err(e) => {
                out.damage = Some(format!("batch at byte {pos}: {e}"));
                break;
            }
        };
        if h.base_offset != out.next_offset {
            out.damage = Some(format!(
                "batch at byte {pos} has base offset {} where {} was expected",
                h.base_offset, out.next_offset
            ));
            break;
        }
        let rel = h.base_offset - base_offset;
        if rel > u32::MAX as i64 / 2 {
            out.damage = Some(format!(
                "offset {} too far from segment base",
                h.base_offset
            ));
            break;
        }
        if let Some(s) = stop_offset {
            if h.last_offset() >= s {
                break;
            }
        }
        out.index.on_batch(
            rel as u32,
            pos as u32,
            size as u64,
            h.max_timestamp,
            interval_bytes,
        );
        if out.max_ts.is_none_or(|(ts, _)| h.max_timestamp > ts) {
            out.max_ts = Some((h.max_timestamp, h.last_offset()));
        }
        if out
            .epochs
            .last()
            .is_none_or(|(e, _)| h.partition_leader_epoch > *e)
        {
            out.epochs.push((h.partition_leader_epoch, h.base_offset));
        }
        out.next_offset = h.last_offset() + 1;
        pos += size as u64;
        out.end_pos = pos;
    }
    Ok(out)
}

/// Polls all futures to completion concurrently; results in input order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outs.into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

fn io_failed(st: &State<impl Disk>) -> Result<()> {
    match &st.failed {
        Some(m) => Err(StorageError::LogFailed(m.clone())),
        None => Ok(()),
    }
}

impl<D: Disk> Log<D> {
    /// Opens the log in `dir`, creating it if missing, recovering it otherwise: the last
    /// segment is scanned and cut at the first torn or corrupt batch, damaged or missing
    /// indexes are rebuilt, later segments that do not continue the offsets are removed.
    pub async fn open(disk: D, dir: PathBuf, cfg: LogConfig, clock: Rc<dyn Clock>) -> Result<Self> {
        disk.create_dir_all(&dir).await?;
        let names = disk.list_dir(&dir).await?;
        let mut bases: Vec<i64> = Vec::new();
        for n in &names {
            if n.ends_with(".tmp") {
                disk.remove_file(&dir.join(n)).await?;
            } else if let Some(stem) = n.strip_suffix(".log") {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            }
        }
        bases.sort_unstable();
        for n in &names {
            let stem = n
                .strip_suffix(".index")
                .or_else(|| n.strip_suffix(".timeindex"));
            if let Some(b) = stem.and_then(|s| s.parse::<i64>().ok()) {
                if !bases.contains(&b) {
                    disk.remove_file(&dir.join(n)).await?;
                }
            }
        }
        let lso_ckpt = match index::read_small_file(&disk, &dir.join(LOG_START_FILE)).await? {
            Some(b) => index::decode_log_start(&b),
            None => None,
        };
        let epoch_ckpt = match index::read_small_file(&disk, &dir.join(EPOCH_FILE)).await? {
            Some(b) => index::decode_epochs(&b),
            None => None,
        };
        let now = clock.now_ms();
        let interval = cfg.index_interval_bytes;
        // Phase 1: load every segment (trusting a valid index only for sealed segments).
        // With no epoch checkpoint every segment is scanned to rebuild the epochs.
        let trust_indexes = epoch_ckpt.is_some();
        // (segment, damaged, epochs seen by its scan if it was scanned)
        type Loaded<D> = (Segment<D>, bool, Option<Vec<(i32, i64)>>);
        let mut loaded: Vec<Loaded<D>> = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(base));
            let file = Rc::new(disk.open(&path, false).await?);
            let is_last = i + 1 == bases.len();
            let mut from_index = None;
            if trust_indexes && !is_last {
                let oix = index::read_small_file(&disk, &dir.join(offset_index_name(base))).await?;
                let tix = index::read_small_file(&disk, &dir.join(time_index_name(base))).await?;
                if let (Some(o), Some(t)) = (oix, tix) {
                    if let Some((s, idx)) = index::decode_indexes(base, &o, &t) {
                        if s.size_bytes <= file.size().await? {
                            from_index = Some((s, idx));
                        }
                    }
                }
            }
            if let Some((s, idx)) = from_index {
                let seg = Segment {
                    base_offset: base,
                    file,
                    size_bytes: s.size_bytes,
                    written_bytes: s.size_bytes,
                    next_offset: s.next_offset,
                    index: idx,
                    max_ts: (s.offset_of_max_timestamp >= 0)
                        .then_some((s.max_timestamp, s.offset_of_max_timestamp)),
                    created_ms: now,
                    allocated_bytes: s.size_bytes,
                    index_persisted: true,
                };
                loaded.push((seg, false, None));
                continue;
            }
            let scan = scan_segment(&*file, base, None, interval).await?;
            if let Some(d) = &scan.damage {
                tracing::warn!(?path, damage = %d, end = scan.end_pos, "log cut at damaged batch");
            }
            for n in [offset_index_name(base), time_index_name(base)] {
                if names.contains(&n) {
                    disk.remove_file(&dir.join(n)).await?;
                }
            }
            let size = scan.end_pos;
            let seg = Segment {
                base_offset: base,
                file,
                size_bytes: size,
                written_bytes: size,
                next_offset: scan.next_offset,
                index: scan.index,
                max_ts: scan.max_ts,
                created_ms: now,
                allocated_bytes: size,
                index_persisted: false,
            };
            loaded.push((seg, scan.damage.is_some(), Some(scan.epochs)));
        }
        // Phase 2: keep the longest consistent chain. Empty segments that are not last
        // (an interrupted roll) and segments wholly below the checkpointed log start (an
        // interrupted prefix truncation) are removed; a segment that does not continue the
        // offsets, and everything after a damaged batch, is removed.
        let n_loaded = loaded.len();
        let mut segments: Vec<Segment<D>> = Vec::new();
        let mut epochs: Vec<(i32, i64)> = Vec::new();
        let mut first_scanned: Option<i64> = None;
        let mut cut = false;
        for (i, (seg, damaged, seg_epochs)) in loaded.into_iter().enumerate() {
            let later = i + 1 < n_loaded;
            let base = seg.base_offset;
            let below_start = lso_ckpt.is_some_and(|l| seg.next_offset <= l);
            let expected = segments.last().map(|p| p.next_offset);
            // An empty file inside the previous segment's offsets is a roll that failed
            // half-way; an empty file at the expected offset is a segment whose data was
            // lost, and ends the chain.
            let orphan = seg.size_bytes == 0 && expected.is_some_and(|e| base < e);
            let leftover = later && (orphan || below_start);
            let discontinuous = !leftover && expected.is_some_and(|e| e != base);
            if cut || discontinuous || leftover {
                if discontinuous && !cut {
                    tracing::warn!(
                        base,
                        ?expected,
                        "segment does not continue the log; removing it and later ones"
                    );
                    cut = true;
                }
                drop(seg);
                Self::remove_segment_files(&disk, &dir, base).await?;
                continue;
            }
            if let Some(se) = seg_epochs {
                first_scanned.get_or_insert(base);
                for (e, o) in se {
                    if epochs.last().is_none_or(|(le, _)| e > *le) {
                        epochs.push((e, o));
                    }
                }
            }
            if damaged {
                cut = true;
            }
            segments.push(seg);
        }
        if let Some(last) = segments.last_mut() {
            if last.index_persisted {
                // The active segment is always scanned: later segments were dropped above,
                // so this sealed one becomes active again and its index files go stale.
                let base = last.base_offset;
                let scan = scan_segment(&*last.file, base, None, interval).await?;
                if let Some(d) = &scan.damage {
                    tracing::warn!(base, damage = %d, end = scan.end_pos, "log cut at damaged batch");
                }
                Self::remove_index_files(&disk, &dir, base).await?;
                last.size_bytes = scan.end_pos;
                last.written_bytes = scan.end_pos;
                last.allocated_bytes = scan.end_pos;
                last.next_offset = scan.next_offset;
                last.index = scan.index;
                last.max_ts = scan.max_ts;
                last.index_persisted = false;
                first_scanned.get_or_insert(base);
                for (e, o) in scan.epochs {
                    if epochs.last().is_none_or(|(le, _)| e > *le) {
                        epochs.push((e, o));
                    }
                }
            }
        }
        if let Some(last) = segments.last() {
            // Cut anything after the last good batch so it can never resurface.
            last.file.truncate(last.size_bytes).await?;
            last.file.fdatasync().await?;
        }
        // Epochs: the checkpoint for the part not scanned, scans for the rest.
        if let Some(ck) = epoch_ckpt {
            let limit = first_scanned.unwrap_or(i64::MAX);
            let mut merged: Vec<(i32, i64)> = ck.into_iter().filter(|(_, o)| *o < limit).collect();
            for (e, o) in epochs {
                if merged.last().is_none_or(|(le, _)| e > *le) {
                    merged.push((e, o));
                }
            }
            epochs = merged;
        }
        let mut dir_dirty = false;
        if segments.is_empty() {
            let base = lso_ckpt.unwrap_or(0).max(0);
            let path = dir.join(segment_name(base));
            let file = Rc::new(disk.open(&path, true).await?);
            file.truncate(0).await?;
            dir_dirty = true;
            segments.push(Segment::empty(base, file, now));
        }
        let next_offset = segments.last().expect("one segment").next_offset;
        epochs.retain(|(_, o)| *o < next_offset);
        let log_start_offset = lso_ckpt
            .unwrap_or(i64::MIN)
            .max(segments[0].base_offset)
            .min(next_offset);
        // Everything found on disk is made durable before it is reported durable.
        segments
            .last()
            .expect("one segment")
            .file
            .fdatasync()
            .await?;
        if dir_dirty {
            disk.sync_dir(&dir).await?;
        }
        let mut chunks = VecDeque::new();
        {
            let last = segments.last().expect("one segment");
            let tail = last.size_bytes % ALIGN;
            if tail != 0 {
                let page_pos = align_down(last.size_bytes);
                let page = last.file.read_at(page_pos, ALIGN as usize).await?;
                if (page.len() as u64) < tail {
                    return Err(StorageError::Io(io::Error::other(
                        "short read of the tail page",
                    )));
                }
                let mut buf = disk.alloc_buf(cfg.write_buffer_bytes.max(ALIGN as u32) as usize);
                buf.as_mut_slice()[..tail as usize].copy_from_slice(&page[..tail as usize]);
                chunks.push_back(Chunk {
                    seg_base: last.base_offset,
                    file: last.file.clone(),
                    pos: page_pos,
                    buf,
                    len: tail as usize,
                    dirty: false,
                });
            }
        }
        let log = Log {
            disk,
            dir,
            clock,
            st: RefCell::new(State {
                cfg,
                segments,
                log_start_offset,
                next_offset,
                durable_offset: next_offset,
                chunks,
                appended_seq: 0,
                written_seq: 0,
                durable_seq: 0,
                pending_msgs: 0,
                cache: VecDeque::new(),
                cache_bytes: 0,
                epochs,
                epochs_dirty: true,
                dir_dirty: false,
                unsynced_segments: BTreeSet::new(),
                read_ahead: None,
                layout_gen: 0,
                failed: None,
                last_flush_ms: now,
            }),
            append_lock: LocalMutex::default(),
            io_lock: LocalMutex::default(),
        };
        // Persist rebuilt indexes of sealed segments and the epoch checkpoint now.
        {
            let _io = log.io_lock.lock().await;
            log.persist_metadata().await?;
        }
        Ok(log)
    }

    async fn remove_index_files(disk: &D, dir: &Path, base: i64) -> io::Result<()> {
        for n in [offset_index_name(base), time_index_name(base)] {
            match disk.remove_file(&dir.join(n)).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Indexes first: an interrupted removal never leaves an index without its segment
    /// (a stale index must not describe a later segment of the same name).
    async fn remove_segment_files(disk: &D, dir: &Path, base: i64) -> io::Result<()> {
        for n in [
            offset_index_name(base),
            time_index_name(base),
            segment_name(base),
        ] {
            match disk.remove_file(&dir.join(n)).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Log end offset (LEO): the offset the next appended record gets.
    pub fn next_offset(&self) -> i64 {
        self.st.borrow().next_offset
    }

    /// Offsets below this are durable (exclusive end of the durable prefix).
    pub fn durable_offset(&self) -> i64 {
        self.st.borrow().durable_offset
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.st.borrow().log_start_offset
    }

    /// Bytes appended but not yet durable.
    pub fn pending_bytes(&self) -> u64 {
        let st = self.st.borrow();
        st.appended_seq - st.durable_seq
    }

    /// Records appended but not yet durable.
    pub fn pending_messages(&self) -> u64 {
        self.st.borrow().pending_msgs
    }

    /// Milliseconds since the last completed flush (for the flush policy).
    pub fn ms_since_last_flush(&self) -> u64 {
        let last = self.st.borrow().last_flush_ms;
        (self.clock.now_ms() - last).max(0) as u64
    }

    /// Whether the configured flush policy says a flush is due now.
    pub fn flush_due(&self) -> bool {
        let (policy, bytes, msgs) = {
            let st = self.st.borrow();
            (
                st.cfg.flush_policy.clone(),
                st.appended_seq - st.durable_seq,
                st.pending_msgs,
            )
        };
        policy.should_flush(bytes, msgs, self.ms_since_last_flush())
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.st.borrow().segments.iter().map(|s| s.size_bytes).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }

    /// Whether an earlier I/O error failed the log (it then refuses appends, flushes and
    /// reads until reopened; the engine should report KAFKA_STORAGE_ERROR and reopen it).
    pub fn is_failed(&self) -> bool {
        self.st.borrow().failed.is_some()
    }

    /// (base offset, size in bytes, next offset) of every segment, oldest first.
    pub fn segments(&self) -> Vec<(i64, u64, i64)> {
        let st = self.st.borrow();
        st.segments
            .iter()
            .map(|s| (s.base_offset, s.size_bytes, s.next_offset))
            .collect()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.st.borrow().cfg.clone()
    }

    /// Replaces the configuration (dynamic topic config change); takes effect at the next
    /// append, roll, flush decision or retention run.
    pub fn set_config(&self, cfg: LogConfig) {
        self.st.borrow_mut().cfg = cfg;
    }

    /// Largest timestamp in the log and the last offset of its batch (ListOffsets -3,
    /// KIP-734; per batch).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.st.borrow();
        st.segments
            .iter()
            .filter_map(|s| s.max_ts)
            .filter(|(_, o)| *o >= st.log_start_offset)
            .fold(None, |acc: Option<(i64, i64)>, x| match acc {
                Some(a) if a.0 >= x.0 => Some(a),
                _ => Some(x),
            })
    }

    /// OffsetForLeaderEpoch (KIP-101/KIP-279): the largest epoch <= `epoch` known to this
    /// log, and its end offset (the start offset of the next epoch, or the LEO). `None` if
    /// `epoch` is below every epoch in the log.
    pub fn epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.st.borrow();
        let i = st.epochs.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return None;
        }
        let end = st.epochs.get(i).map(|(_, o)| *o).unwrap_or(st.next_offset);
        Some((st.epochs[i - 1].0, end))
    }

    /// The (epoch, start offset) entries of the leader-epoch cache.
    pub fn epochs(&self) -> Vec<(i32, i64)> {
        self.st.borrow().epochs.clone()
    }

    /// Appends one or more concatenated v2 batches as sent by a client. Each is validated
    /// (nothing is appended if any is invalid), gets consecutive offsets from
    /// `next_offset()` and `term` as its partitionLeaderEpoch; with `log_append_time_ms`
    /// the LogAppendTime bit and timestamps are set and the CRC recomputed. Not durable
    /// until [`Log::flush`].
    pub async fn append(
        &self,
        batches: Bytes,
        term: i32,
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo> {
        let batch_bytes_max = self.st.borrow().cfg.batch_bytes_max;
        let headers = batch::validate_batches(&batches, batch_bytes_max)?;
        let _g = self.append_lock.lock().await;
        io_failed(&self.st.borrow())?;
        let total_bytes = batches.len() as u64;
        let total_records: i64 = headers
            .iter()
            .map(|(_, h)| h.last_offset_delta as i64 + 1)
            .sum();
        if self.needs_roll(total_bytes, total_records) {
            self.roll().await?;
        }
        // Back-pressure: bound the unwritten buffer to a few chunks.
        let must_write = {
            let st = self.st.borrow();
            st.appended_seq - st.written_seq >= 4 * st.cfg.write_buffer_bytes as u64
        };
        if must_write {
            let _io = self.io_lock.lock().await;
            self.round(false).await?;
        }
        let mut st = self.st.borrow_mut();
        io_failed(&st)?;
        Ok(self.append_locked(&mut st, &batches, &headers, term, log_append_time_ms))
    }

    fn needs_roll(&self, total_bytes: u64, total_records: i64) -> bool {
        let st = self.st.borrow();
        let seg = st.segments.last().expect("active segment");
        if seg.size_bytes == 0 {
            return false;
        }
        let max = st.cfg.segment_bytes_max.clamp(ALIGN, SEGMENT_BYTES_CAP);
        let aged = self.clock.now_ms() - seg.created_ms >= st.cfg.segment_ms as i64;
        seg.size_bytes + total_bytes > max
            || aged
            || st.next_offset + total_records - seg.base_offset > (u32::MAX / 2) as i64
    }

    /// Starts a new active segment at next_offset. Caller holds the append lock.
    async fn roll(&self) -> Result<()> {
        let (base, now) = (self.st.borrow().next_offset, self.clock.now_ms());
        let path = self.dir.join(segment_name(base));
        Self::remove_index_files(&self.disk, &self.dir, base).await?;
        let file = Rc::new(self.disk.open(&path, true).await?);
        file.truncate(0).await?;
        let mut st = self.st.borrow_mut();
        st.dir_dirty = true;
        st.segments.push(Segment::empty(base, file, now));
        Ok(())
    }

    fn append_locked(
        &self,
        st: &mut State<D>,
        batches: &Bytes,
        headers: &[(usize, BatchHeader)],
        term: i32,
        log_append_time_ms: Option<i64>,
    ) -> AppendInfo {
        let first_offset = st.next_offset;
        let mut info = AppendInfo {
            first_offset,
            last_offset: first_offset - 1,
            max_timestamp: i64::MIN,
            offset_of_max_timestamp: -1,
            log_append_time_ms,
            records_count: 0,
            size_bytes: 0,
        };
        let interval = st.cfg.index_interval_bytes;
        let chunk_cap = align_up(st.cfg.write_buffer_bytes.max(ALIGN as u32) as u64) as usize;
        for &(at, h) in headers {
            let size = h.size_bytes();
            let base = st.next_offset;
            let last = base + h.last_offset_delta as i64;
            let mut head = [0u8; BATCH_HEADER_BYTES];
            head.copy_from_slice(&batches[at..at + BATCH_HEADER_BYTES]);
            let body = batches.slice(at + BATCH_HEADER_BYTES..at + size);
            stamp_header(&mut head, base, term, log_append_time_ms, &body);
            let max_ts = log_append_time_ms.unwrap_or(h.max_timestamp);
            // Copy into the aligned write buffer (the one copy of client bytes).
            let (seg_base, seg_file, pos) = {
                let seg = st.segments.last().expect("active segment");
                (seg.base_offset, seg.file.clone(), seg.size_bytes)
            };
            let mut file_pos = pos;
            // A batch that does not fit the current chunk, when that chunk holds little (such
            // as only the partial page kept from the last write): move it into a buffer big
            // enough for the whole batch, so the batch goes to disk in one write.
            if let Some(c) = st.chunks.back_mut() {
                let cap = c.buf.as_slice().len();
                if c.seg_base == seg_base && cap - c.len < size && c.len <= GROW_COPY_BYTES_MAX {
                    let new_cap = align_up((c.len + size) as u64).max(chunk_cap as u64) as usize;
                    let mut nb = self.disk.alloc_buf(new_cap);
                    nb.as_mut_slice()[..c.len].copy_from_slice(&c.buf.as_slice()[..c.len]);
                    c.buf = nb;
                }
            }
            for part in [&head[..], &body[..]] {
                let mut rest = part;
                while !rest.is_empty() {
                    let need_new = match st.chunks.back() {
                        Some(c) => c.seg_base != seg_base || c.len == c.buf.as_slice().len(),
                        None => true,
                    };
                    if need_new {
                        assert!(
                            file_pos.is_multiple_of(ALIGN),
                            "a new write chunk must start page-aligned (segment {seg_base}, position {file_pos})"
                        );
                        let batch_rest = size as u64 - (file_pos - pos);
                        let cap = align_up(batch_rest).max(chunk_cap as u64) as usize;
                        st.chunks.push_back(Chunk {
                            seg_base,
                            file: seg_file.clone(),
                            pos: file_pos,
                            buf: self.disk.alloc_buf(cap),
                            len: 0,
                            dirty: false,
                        });
                    }
                    let c = st.chunks.back_mut().expect("chunk");
                    assert!(
                        c.pos + c.len as u64 == file_pos,
                        "write chunk out of step: chunk covers to {}, log at {file_pos}",
                        c.pos + c.len as u64
                    );
                    let room = c.buf.as_slice().len() - c.len;
                    let n = room.min(rest.len());
                    c.buf.as_mut_slice()[c.len..c.len + n].copy_from_slice(&rest[..n]);
                    c.len += n;
                    c.dirty = true;
                    rest = &rest[n..];
                    file_pos += n as u64;
                }
            }
            let seg = st.segments.last_mut().expect("active segment");
            seg.index.on_batch(
                (base - seg.base_offset) as u32,
                pos as u32,
                size as u64,
                max_ts,
                interval,
            );
            seg.size_bytes += size as u64;
            seg.next_offset = last + 1;
            if seg.max_ts.is_none_or(|(ts, _)| max_ts > ts) {
                seg.max_ts = Some((max_ts, last));
            }
            if st.epochs.last().is_none_or(|(e, _)| term > *e) {
                st.epochs.push((term, base));
                st.epochs_dirty = true;
            }
            st.appended_seq += size as u64;
            st.pending_msgs += h.records_count as u64;
            st.next_offset = last + 1;
            let end_seq = st.appended_seq;
            st.cache_bytes += size as u64;
            st.cache.push_back(CacheEntry {
                base_offset: base,
                last_offset: last,
                max_ts,
                head,
                body,
                end_seq,
            });
            if max_ts > info.max_timestamp {
                info.max_timestamp = max_ts;
                info.offset_of_max_timestamp = last;
            }
            info.last_offset = last;
            info.records_count += h.records_count as u64;
            info.size_bytes += size as u64;
        }
        Self::evict_cache(st);
        info
    }

    fn evict_cache(st: &mut State<D>) {
        while st.cache_bytes > st.cfg.cache_bytes_max {
            match st.cache.front() {
                Some(e) if e.end_seq <= st.written_seq => {
                    st.cache_bytes -= e.size_bytes() as u64;
                    st.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Makes everything appended so far durable (fdatasync) and returns the durable offset.
    /// Concurrent callers share rounds: a caller whose data an in-flight round does not
    /// cover waits for it and then the next round covers everyone waiting.
    pub async fn flush(&self) -> Result<i64> {
        let target = self.st.borrow().next_offset;
        loop {
            {
                let st = self.st.borrow();
                io_failed(&st)?;
                if st.durable_offset >= target {
                    return Ok(st.durable_offset);
                }
            }
            let _io = self.io_lock.lock().await;
            if self.st.borrow().durable_offset >= target {
                continue;
            }
            self.round(true).await?;
        }
    }

    /// One disk round: writes every buffered chunk, and with `sync` fdatasyncs every file
    /// written since the last sync and publishes the durable offset. Caller holds io_lock.
    async fn round(&self, sync: bool) -> Result<()> {
        let r = self.round_inner(sync).await;
        if let Err(e) = &r {
            let mut st = self.st.borrow_mut();
            if st.failed.is_none() {
                tracing::error!(dir = ?self.dir, error = %e, "log i/o failed; refusing further writes");
                st.failed = Some(e.to_string());
            }
        }
        r
    }

    async fn round_inner(&self, sync: bool) -> Result<()> {
        io_failed(&self.st.borrow())?;
        // 1. Take the buffered chunks; leave a copy of a partial tail page for the next
        //    round to rewrite.
        let (taken, seq_target, offset_target, msgs_target) = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let active = st.segments.last().expect("active segment").base_offset;
            let mut taken: Vec<Chunk<D>> = st.chunks.drain(..).collect();
            let mut keep: Option<Chunk<D>> = None;
            if let Some(last) = taken.last() {
                let cap = last.buf.as_slice().len();
                if last.seg_base == active && last.len < cap {
                    let page = align_down(last.len as u64) as usize;
                    let mut buf = self.disk.alloc_buf(cap);
                    buf.as_mut_slice()[..last.len - page]
                        .copy_from_slice(&last.buf.as_slice()[page..last.len]);
                    keep = Some(Chunk {
                        seg_base: last.seg_base,
                        file: last.file.clone(),
                        pos: last.pos + page as u64,
                        buf,
                        len: last.len - page,
                        dirty: false,
                    });
                }
            }
            taken.retain(|c| c.dirty);
            if let Some(k) = keep {
                if k.len > 0 {
                    st.chunks.push_back(k);
                }
            }
            (taken, st.appended_seq, st.next_offset, st.pending_msgs)
        };
        // 2. Preallocate ahead of the writes.
        let mut grow: Vec<(i64, Rc<D::File>, u64)> = Vec::new();
        {
            let st = self.st.borrow();
            for c in &taken {
                let end = c.pos + align_up(c.len as u64);
                let seg = st.segments.iter().find(|s| s.base_offset == c.seg_base);
                if let Some(seg) = seg {
                    if end > seg.allocated_bytes {
                        let step = st.cfg.preallocate_bytes.max(ALIGN);
                        let target = align_up(end.max(seg.allocated_bytes + step));
                        match grow.iter_mut().find(|g| g.0 == c.seg_base) {
                            Some(g) => g.2 = g.2.max(target),
                            None => grow.push((c.seg_base, c.file.clone(), target)),
                        }
                    }
                }
            }
        }
        for (base, file, target) in &grow {
            file.preallocate(*target).await?;
            let mut st = self.st.borrow_mut();
            if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == *base) {
                seg.allocated_bytes = seg.allocated_bytes.max(*target);
            }
        }
        // 3. Write the chunks concurrently (they cover disjoint aligned ranges).
        let mut files = Vec::with_capacity(taken.len());
        let mut writes = Vec::with_capacity(taken.len());
        let mut ends = Vec::with_capacity(taken.len());
        for mut c in taken {
            let len = align_up(c.len as u64) as usize;
            c.buf.trim_to(len);
            ends.push((c.seg_base, c.pos + c.len as u64));
            files.push(c.file);
            writes.push((c.buf, c.pos));
        }
        let futs: Vec<_> = files
            .iter()
            .zip(writes)
            .map(|(f, (buf, pos))| f.write_at(buf, pos))
            .collect();
        for r in join_all(futs).await {
            r?;
        }
        {
            let mut st = self.st.borrow_mut();
            for (base, end) in ends {
                st.unsynced_segments.insert(base);
                if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == base) {
                    seg.written_bytes = seg.written_bytes.max(end);
                }
            }
            st.written_seq = st.written_seq.max(seq_target);
            Self::evict_cache(&mut st);
        }
        if !sync {
            return Ok(());
        }
        // 4. fdatasync every file written since the last sync, then the directory.
        let (to_sync, dir_dirty): (Vec<Rc<D::File>>, bool) = {
            let mut st = self.st.borrow_mut();
            let bases = std::mem::take(&mut st.unsynced_segments);
            let files = st
                .segments
                .iter()
                .filter(|s| bases.contains(&s.base_offset))
                .map(|s| s.file.clone())
                .collect();
            let d = std::mem::replace(&mut st.dir_dirty, false);
            (files, d)
        };
        let syncs: Vec<_> = to_sync.iter().map(|f| f.fdatasync()).collect();
        for r in join_all(syncs).await {
            r?;
        }
        if dir_dirty {
            self.disk.sync_dir(&self.dir).await?;
        }
        {
            let now = self.clock.now_ms();
            let mut st = self.st.borrow_mut();
            st.durable_offset = st.durable_offset.max(offset_target);
            st.durable_seq = st.durable_seq.max(seq_target);
            st.pending_msgs -= msgs_target.min(st.pending_msgs);
            st.last_flush_ms = now;
        }
        // 5. Metadata that follows durable data: epoch checkpoint, sealed segment indexes.
        self.persist_metadata().await
    }

    /// Writes the epoch checkpoint if changed and the index files of sealed, durable
    /// segments that lack them. Caller holds io_lock.
    async fn persist_metadata(&self) -> Result<()> {
        let epochs = {
            let mut st = self.st.borrow_mut();
            std::mem::replace(&mut st.epochs_dirty, false).then(|| st.epochs.clone())
        };
        if let Some(e) = epochs {
            index::write_small_file(
                &self.disk,
                &self.dir,
                EPOCH_FILE,
                &index::encode_epochs(&e),
                true,
            )
            .await?;
        }
        loop {
            let job = {
                let st = self.st.borrow();
                let n = st.segments.len();
                st.segments[..n - 1]
                    .iter()
                    .find(|s| {
                        !s.index_persisted
                            && s.next_offset <= st.durable_offset
                            && s.written_bytes == s.size_bytes
                    })
                    .map(|s| {
                        (
                            s.base_offset,
                            index::encode_offset_index(&s.summary(), &s.index),
                            index::encode_time_index(s.base_offset, &s.index),
                        )
                    })
            };
            let Some((base, oix, tix)) = job else { break };
            index::write_small_file(&self.disk, &self.dir, &time_index_name(base), &tix, false)
                .await?;
            index::write_small_file(&self.disk, &self.dir, &offset_index_name(base), &oix, false)
                .await?;
            let mut st = self.st.borrow_mut();
            if let Some(s) = st.segments.iter_mut().find(|s| s.base_offset == base) {
                s.index_persisted = true;
            }
        }
        Ok(())
    }

    fn check_range(st: &State<D>, offset: i64) -> Result<()> {
        if offset < st.log_start_offset || offset > st.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: st.log_start_offset,
                next_offset: st.next_offset,
            });
        }
        Ok(())
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes` in total
    /// but at least one whole batch if any exists below `upto` (KIP-74), never a batch
    /// whose base offset >= `upto` (the high watermark). Recent batches come from the
    /// per-log cache; older ones from disk (aligned read-ahead) with their CRC32C checked.
    /// Data from one segment per call. Empty at the end of the log.
    pub async fn read(&self, offset: i64, max_bytes: usize, upto: i64) -> Result<Bytes> {
        loop {
            let plan = {
                let st = self.st.borrow();
                io_failed(&st)?;
                Self::check_range(&st, offset)?;
                if offset >= st.next_offset || offset >= upto {
                    return Ok(Bytes::new());
                }
                if let Some(first) = st.cache.front() {
                    if offset >= first.base_offset {
                        return Ok(Self::read_cache(&st, offset, max_bytes, upto));
                    }
                }
                let si = st.segments.partition_point(|s| s.base_offset <= offset);
                assert!(
                    si > 0,
                    "offset {offset} in range but below the first segment"
                );
                let seg = &st.segments[si - 1];
                let pos = seg
                    .index
                    .position_for_offset((offset - seg.base_offset) as u32)
                    as u64;
                let ra = st
                    .read_ahead
                    .as_ref()
                    .filter(|r| r.seg_base == seg.base_offset && r.layout_gen == st.layout_gen)
                    .map(|r| (r.pos, r.data.clone()));
                (
                    seg.base_offset,
                    seg.file.clone(),
                    pos,
                    seg.written_bytes.min(seg.size_bytes),
                    st.layout_gen,
                    st.cfg.read_ahead_bytes,
                    ra,
                )
            };
            let (seg_base, file, pos, limit, gen, ra_bytes, ra) = plan;
            let out = self
                .read_disk(
                    seg_base, &*file, pos, limit, offset, max_bytes, upto, ra_bytes, ra,
                )
                .await?;
            let mut st = self.st.borrow_mut();
            if st.layout_gen != gen {
                continue; // truncated meanwhile: retry against the new layout
            }
            let (data, buf) = out;
            if let Some((bpos, bdata)) = buf {
                st.read_ahead = Some(ReadAhead {
                    seg_base,
                    layout_gen: gen,
                    pos: bpos,
                    data: bdata,
                });
            }
            return Ok(data);
        }
    }

    fn read_cache(st: &State<D>, offset: i64, max_bytes: usize, upto: i64) -> Bytes {
        let i = st.cache.partition_point(|e| e.last_offset < offset);
        let mut n = 0usize;
        let mut total = 0usize;
        for e in st.cache.range(i..) {
            if e.base_offset >= upto {
                break;
            }
            let s = e.size_bytes();
            if n > 0 && total + s > max_bytes {
                break;
            }
            total += s;
            n += 1;
            if total >= max_bytes {
                break;
            }
        }
        let mut out = BytesMut::with_capacity(total);
        for e in st.cache.range(i..i + n) {
            out.extend_from_slice(&e.head);
            out.extend_from_slice(&e.body);
        }
        out.freeze()
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_disk(
        &self,
        seg_base: i64,
        file: &D::File,
        start_pos: u64,
        limit: u64,
        offset: i64,
        max_bytes: usize,
        upto: i64,
        ra_bytes: u32,
        ra: Option<(u64, Bytes)>,
    ) -> Result<(Bytes, Option<(u64, Bytes)>)> {
        let (mut buf_pos, mut buf) = ra.unwrap_or((0, Bytes::new()));
        let mut pos = start_pos;
        let mut out_start: Option<u64> = None;
        let mut total = 0usize;
        let corrupt = |position: u64, reason: String| StorageError::CorruptLog {
            file: segment_name(seg_base),
            position,
            reason,
        };
        loop {
            if pos + BATCH_HEADER_BYTES as u64 > limit {
                break;
            }
            // Bytes needed from `from` (the output start, or this header) to this header end.
            let from = out_start.unwrap_or(pos);
            if from < buf_pos || pos + BATCH_HEADER_BYTES as u64 > buf_pos + buf.len() as u64 {
                let want = (limit - from).min(max_bytes.max(ra_bytes as usize) as u64 + ALIGN);
                buf_pos = align_down(from);
                buf = file
                    .read_at(buf_pos, align_up(want + (from - buf_pos)) as usize)
                    .await?;
                if pos + BATCH_HEADER_BYTES as u64 > buf_pos + buf.len() as u64 {
                    return Err(corrupt(pos, "short read".into()));
                }
            }
            let at = (pos - buf_pos) as usize;
            let Some(size) = framed_size(&buf[at..]) else {
                return Err(corrupt(pos, "bad batch length".into()));
            };
            if pos + size as u64 > limit {
                return Err(corrupt(
                    pos,
                    "batch runs past the end of the segment".into(),
                ));
            }
            let h = parse_header(&buf[at..]);
            if h.last_offset() < offset {
                pos += size as u64;
                continue;
            }
            if out_start.is_none() && h.base_offset > offset {
                return Err(corrupt(
                    pos,
                    format!("expected offset {offset}, found batch at {}", h.base_offset),
                ));
            }
            if h.base_offset >= upto {
                break;
            }
            if out_start.is_some() && total + size > max_bytes {
                break;
            }
            let from = out_start.unwrap_or(pos);
            if pos + size as u64 > buf_pos + buf.len() as u64 {
                let want = (pos + size as u64 - from).max(ra_bytes as u64);
                buf_pos = align_down(from);
                buf = file
                    .read_at(buf_pos, align_up(want + (from - buf_pos)) as usize)
                    .await?;
                if pos + size as u64 > buf_pos + buf.len() as u64 {
                    return Err(corrupt(pos, "short read".into()));
                }
            }
            let at = (pos - buf_pos) as usize;
            if let Err(e) = batch::validate_batch(&buf[at..at + size]) {
                return Err(corrupt(pos, e.to_string()));
            }
            out_start.get_or_insert(pos);
            total += size;
            pos += size as u64;
            if total >= max_bytes {
                break;
            }
        }
        let data = match out_start {
            Some(s) => buf.slice((s - buf_pos) as usize..(pos - buf_pos) as usize),
            None => Bytes::new(),
        };
        // Only bytes below `limit` were on disk when read: a later read must not trust the
        // rest of the buffer (the tail of the active segment is still being written).
        let valid = limit.saturating_sub(buf_pos).min(buf.len() as u64) as usize;
        let keep = (valid > 0).then(|| (buf_pos, buf.slice(..valid)));
        Ok((data, keep))
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is >= `ts_ms` and
    /// that timestamp (exact for uncompressed CreateTime batches; the batch's base offset
    /// and max timestamp otherwise). `None` if every record is older.
    pub async fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>> {
        let mut si = 0usize;
        loop {
            let plan = {
                let st = self.st.borrow();
                io_failed(&st)?;
                let lso = st.log_start_offset;
                let mut found = None;
                while si < st.segments.len() {
                    let s = &st.segments[si];
                    if s.max_ts.is_some_and(|(t, _)| t >= ts_ms) && s.next_offset > lso {
                        found = Some(si);
                        break;
                    }
                    si += 1;
                }
                let Some(i) = found else { return Ok(None) };
                let s = &st.segments[i];
                let pos = s.index.position_for_timestamp(ts_ms) as u64;
                let cached_from = st.cache.front().map(|e| e.base_offset).unwrap_or(i64::MAX);
                (
                    s.base_offset,
                    s.file.clone(),
                    pos,
                    s.written_bytes.min(s.size_bytes),
                    s.size_bytes,
                    cached_from,
                    lso,
                )
            };
            let (seg_base, file, pos, limit, size, cached_from, lso) = plan;
            if let Some(r) = self
                .time_scan_disk(seg_base, &*file, pos, limit, ts_ms, lso, cached_from)
                .await?
            {
                return Ok(Some(r));
            }
            if limit < size {
                // The rest of this segment is only in the cache (not yet written).
                let st = self.st.borrow();
                for e in &st.cache {
                    if e.last_offset < lso || e.max_ts < ts_ms {
                        continue;
                    }
                    let mut b = Vec::with_capacity(e.size_bytes());
                    b.extend_from_slice(&e.head);
                    b.extend_from_slice(&e.body);
                    return Ok(
                        batch::first_record_at_or_after(&b, ts_ms).map(|(o, t)| (o.max(lso), t))
                    );
                }
                return Ok(None);
            }
            si += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn time_scan_disk(
        &self,
        seg_base: i64,
        file: &D::File,
        mut pos: u64,
        limit: u64,
        ts_ms: i64,
        lso: i64,
        _cached_from: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut buf = Bytes::new();
        let mut buf_pos = 0u64;
        let corrupt = |position: u64, reason: String| StorageError::CorruptLog {
            file: segment_name(seg_base),
            position,
            reason,
        };
        while pos + BATCH_HEADER_BYTES as u64 <= limit {
            if pos < buf_pos || pos + BATCH_HEADER_BYTES as u64 > buf_pos + buf.len() as u64 {
                buf_pos = align_down(pos);
                buf = file.read_at(buf_pos, SCAN_READ_BYTES).await?;
            }
            let at = (pos - buf_pos) as usize;
            if at + BATCH_HEADER_BYTES > buf.len() {
                return Err(corrupt(pos, "short read".into()));
            }
            let Some(size) = framed_size(&buf[at..]) else {
                return Err(corrupt(pos, "bad batch length".into()));
            };
            if pos + size as u64 > limit {
                return Err(corrupt(
                    pos,
                    "batch runs past the end of the segment".into(),
                ));
            }
            let h = parse_header(&buf[at..]);
            if h.max_timestamp >= ts_ms && h.last_offset() >= lso {
                if pos + size as u64 > buf_pos + buf.len() as u64 {
                    buf_pos = align_down(pos);
                    buf = file
                        .read_at(buf_pos, align_up(pos - buf_pos + size as u64) as usize)
                        .await?;
                }
                let at = (pos - buf_pos) as usize;
                if at + size > buf.len() {
                    return Err(corrupt(pos, "short read".into()));
                }
                let b = &buf[at..at + size];
                if let Err(e) = batch::validate_batch(b) {
                    return Err(corrupt(pos, e.to_string()));
                }
                if let Some((o, t)) = batch::first_record_at_or_after(b, ts_ms) {
                    return Ok(Some((o.max(lso), t)));
                }
            }
            pos += size as u64;
        }
        Ok(None)
    }

    /// Drops every offset >= `offset` (Raft removes a divergent suffix). A batch holding
    /// `offset` is dropped whole, so the new LEO may be below `offset`. When something is
    /// removed, the remaining log is durable on return; `offset >= next_offset()` is a no-op.
    pub async fn truncate(&self, offset: i64) -> Result<()> {
        let _a = self.append_lock.lock().await;
        let _io = self.io_lock.lock().await;
        {
            let st = self.st.borrow();
            io_failed(&st)?;
            if offset >= st.next_offset {
                return Ok(());
            }
            if offset < st.log_start_offset {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start_offset: st.log_start_offset,
                    next_offset: st.next_offset,
                });
            }
        }
        let r = self.truncate_locked(offset).await;
        if let Err(e) = &r {
            self.st
                .borrow_mut()
                .failed
                .get_or_insert_with(|| e.to_string());
        }
        r
    }

    async fn truncate_locked(&self, offset: i64) -> Result<()> {
        // Everything buffered goes to disk first; then the files are cut.
        self.round_inner(true).await?;
        let (doomed, keep_base, keep_file) = {
            let mut st = self.st.borrow_mut();
            st.layout_gen += 1;
            st.read_ahead = None;
            // keep the last segment whose base <= offset (at least the first one)
            let keep = st
                .segments
                .partition_point(|s| s.base_offset <= offset)
                .max(1);
            let doomed: Vec<i64> = st.segments.drain(keep..).map(|s| s.base_offset).collect();
            let k = st.segments.last().expect("kept segment");
            (doomed, k.base_offset, k.file.clone())
        };
        // Newest first, so an interrupted truncation always leaves a prefix of the log.
        for base in doomed.iter().rev() {
            Self::remove_segment_files(&self.disk, &self.dir, *base).await?;
        }
        // The kept segment becomes active: its index files are stale.
        Self::remove_index_files(&self.disk, &self.dir, keep_base).await?;
        self.disk.sync_dir(&self.dir).await?;
        let interval = self.st.borrow().cfg.index_interval_bytes;
        let scan = scan_segment(&*keep_file, keep_base, Some(offset), interval).await?;
        if let Some(d) = scan.damage {
            tracing::warn!(dir = ?self.dir, damage = %d, "damaged batch found while truncating; cutting there");
        }
        keep_file.truncate(scan.end_pos).await?;
        keep_file.fdatasync().await?;
        let tail = scan.end_pos % ALIGN;
        let page = if tail != 0 {
            Some(
                keep_file
                    .read_at(align_down(scan.end_pos), ALIGN as usize)
                    .await?,
            )
        } else {
            None
        };
        let new_leo = scan.next_offset;
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let seg = st.segments.last_mut().expect("kept segment");
            seg.size_bytes = scan.end_pos;
            seg.written_bytes = scan.end_pos;
            seg.allocated_bytes = scan.end_pos;
            seg.next_offset = new_leo;
            seg.index = scan.index;
            seg.max_ts = scan.max_ts;
            seg.index_persisted = false;
            st.chunks.clear();
            if let Some(page) = page {
                if (page.len() as u64) < tail {
                    return Err(StorageError::Io(io::Error::other(
                        "short read of the tail page",
                    )));
                }
                let cap = align_up(st.cfg.write_buffer_bytes.max(ALIGN as u32) as u64) as usize;
                let mut buf = self.disk.alloc_buf(cap);
                buf.as_mut_slice()[..tail as usize].copy_from_slice(&page[..tail as usize]);
                st.chunks.push_back(Chunk {
                    seg_base: seg.base_offset,
                    file: seg.file.clone(),
                    pos: align_down(scan.end_pos),
                    buf,
                    len: tail as usize,
                    dirty: false,
                });
            }
            while st.cache.back().is_some_and(|e| e.base_offset >= new_leo) {
                let e = st.cache.pop_back().expect("entry");
                st.cache_bytes -= e.size_bytes() as u64;
            }
            st.next_offset = new_leo;
            st.durable_offset = new_leo;
            st.written_seq = st.appended_seq;
            st.durable_seq = st.appended_seq;
            st.pending_msgs = 0;
            st.epochs.retain(|(_, o)| *o < new_leo);
            st.unsynced_segments.clear();
            st.log_start_offset = st.log_start_offset.min(new_leo);
        }
        let epochs = self.st.borrow().epochs.clone();
        index::write_small_file(
            &self.disk,
            &self.dir,
            EPOCH_FILE,
            &index::encode_epochs(&epochs),
            true,
        )
        .await?;
        self.st.borrow_mut().epochs_dirty = false;
        Ok(())
    }

    /// Moves the log start offset up to `offset` (DeleteRecords, Raft snapshots): persisted
    /// in a checkpoint, whole segments below it deleted. Beyond the log end, the log is
    /// emptied and restarts at `offset`.
    pub async fn prefix_truncate(&self, offset: i64) -> Result<()> {
        let _a = self.append_lock.lock().await;
        let _io = self.io_lock.lock().await;
        io_failed(&self.st.borrow())?;
        if offset <= self.st.borrow().log_start_offset {
            return Ok(());
        }
        self.round_inner(true).await?;
        let (leo, active_size) = {
            let st = self.st.borrow();
            (
                st.next_offset,
                st.segments.last().expect("active").size_bytes,
            )
        };
        if offset >= leo && (active_size > 0 || offset > leo) {
            // Nothing left: start a fresh segment at `offset`.
            let path = self.dir.join(segment_name(offset));
            Self::remove_index_files(&self.disk, &self.dir, offset).await?;
            let file = Rc::new(self.disk.open(&path, true).await?);
            file.truncate(0).await?;
            self.disk.sync_dir(&self.dir).await?;
            let now = self.clock.now_ms();
            let mut st = self.st.borrow_mut();
            st.segments.push(Segment::empty(offset, file, now));
            st.chunks.clear();
            st.next_offset = offset;
            st.durable_offset = offset;
            st.layout_gen += 1;
            st.read_ahead = None;
        }
        {
            let mut st = self.st.borrow_mut();
            Self::advance_log_start(&mut st, offset);
            st.epochs_dirty = true;
        }
        index::write_small_file(
            &self.disk,
            &self.dir,
            LOG_START_FILE,
            &index::encode_log_start(offset),
            true,
        )
        .await?;
        self.persist_metadata().await?;
        self.delete_segments_below_start().await?;
        Ok(())
    }

    /// Takes the first `k` segments out of the layout (cached read positions go stale) and
    /// returns their base offsets; their files are still to be removed.
    fn drain_leading_segments(st: &mut State<D>, k: usize) -> Vec<i64> {
        if k > 0 {
            st.layout_gen += 1;
            st.read_ahead = None;
        }
        st.segments.drain(..k).map(|s| s.base_offset).collect()
    }

    /// Moves the log start offset up to `offset` in memory: the leader epoch covering
    /// `offset` now starts there (earlier epochs go) and cached entries wholly below it are
    /// dropped. Returns whether the epoch list changed (nothing here persists it).
    fn advance_log_start(st: &mut State<D>, offset: i64) -> bool {
        st.log_start_offset = offset;
        let i = st.epochs.partition_point(|(_, o)| *o <= offset);
        if i > 0 {
            st.epochs.drain(..i - 1);
            st.epochs[0].1 = offset;
        }
        while st.cache.front().is_some_and(|e| e.last_offset < offset) {
            let e = st.cache.pop_front().expect("entry");
            st.cache_bytes -= e.size_bytes() as u64;
        }
        i > 0
    }

    /// Deletes leading segments that hold no offset >= log_start_offset (never the active).
    async fn delete_segments_below_start(&self) -> Result<u64> {
        let doomed: Vec<i64> = {
            let mut st = self.st.borrow_mut();
            let lso = st.log_start_offset;
            let n = st.segments.len();
            let k = st.segments[..n - 1]
                .iter()
                .take_while(|s| s.next_offset <= lso)
                .count();
            Self::drain_leading_segments(&mut st, k)
        };
        for b in &doomed {
            Self::remove_segment_files(&self.disk, &self.dir, *b).await?;
        }
        Ok(doomed.len() as u64)
    }

    /// Retention (Kafka retention.bytes / retention.ms): deletes whole old segments that
    /// are durable and not active. Returns how many were deleted. Called periodically by
    /// the engine.
    pub async fn enforce_retention(&self) -> Result<u64> {
        let _a = self.append_lock.lock().await;
        let _io = self.io_lock.lock().await;
        io_failed(&self.st.borrow())?;
        let now = self.clock.now_ms();
        let doomed = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let n = st.segments.len();
            let mut total: u64 = st.segments.iter().map(|s| s.size_bytes).sum();
            let mut k = 0usize;
            while k + 1 < n {
                let s = &st.segments[k];
                if s.next_offset > st.durable_offset {
                    break;
                }
                let by_ms = st
                    .cfg
                    .retention_ms
                    .is_some_and(|ms| s.max_ts.is_none_or(|(ts, _)| ts < now - ms as i64));
                let by_bytes = st
                    .cfg
                    .retention_bytes
                    .is_some_and(|b| total.saturating_sub(s.size_bytes) >= b);
                if !(by_ms || by_bytes) {
                    break;
                }
                total -= s.size_bytes;
                k += 1;
            }
            let doomed = Self::drain_leading_segments(st, k);
            let first = st.segments[0].base_offset;
            if first > st.log_start_offset && Self::advance_log_start(st, first) {
                st.epochs_dirty = true;
            }
            doomed
        };
        for b in &doomed {
            Self::remove_segment_files(&self.disk, &self.dir, *b).await?;
        }
        if !doomed.is_empty() {
            self.disk.sync_dir(&self.dir).await?;
            self.persist_metadata().await?;
        }
        Ok(doomed.len() as u64)
    }

    /// Flushes and closes the log.
    pub async fn close(self) -> Result<()> {
        self.flush().await?;
        let _io = self.io_lock.lock().await;
        self.persist_metadata().await
    }

    /// Removes every file of the log and its directory (DeleteTopics).
    pub async fn delete(self) -> Result<()> {
        let _a = self.append_lock.lock().await;
        let _io = self.io_lock.lock().await;
        {
            let mut st = self.st.borrow_mut();
            st.chunks.clear();
            st.segments.clear();
            st.cache.clear();
        }
        for n in self.disk.list_dir(&self.dir).await? {
            self.disk.remove_file(&self.dir.join(n)).await?;
        }
        self.disk.remove_dir(&self.dir).await?;
        Ok(())
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_all_keeps_order() {
        let out =
            futures_lite::future::block_on(join_all((1..=2).map(|i| async move { i }).collect()));
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn batch_header_size_constants_match_kafka() {
        use crate::batch::LOG_OVERHEAD_BYTES;
        // Kafka RECORD_BATCH_OVERHEAD = 61, LOG_OVERHEAD = 12.
        assert_eq!(BATCH_HEADER_BYTES, 61);
        assert_eq!(LOG_OVERHEAD_BYTES, 12);
    }
}
