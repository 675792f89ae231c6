//! Sparse offset and time indexes of a segment (in memory, plus their on-disk encoding),
//! and the two checkpoint files. Layouts: docs/design/log-format.md (little-endian).
//! Per core, owned by the log.

use crate::disk::{align_up, Disk, DiskFile, IoBuf};
use std::io;
use std::path::Path;

/// Magic of an offset index file.
pub const OFFSET_INDEX_MAGIC: [u8; 8] = *b"FRSHOIX1";
/// Magic of a time index file.
pub const TIME_INDEX_MAGIC: [u8; 8] = *b"FRSHTIX1";
/// Magic of the log-start-offset checkpoint.
pub const LOG_START_MAGIC: [u8; 8] = *b"FRSHLSO1";
/// Magic of the leader-epoch checkpoint.
pub const EPOCH_MAGIC: [u8; 8] = *b"FRSHEPC1";

const OFFSET_HEADER_BYTES: usize = 56;
const TIME_HEADER_BYTES: usize = 24;

/// One offset index entry: batch base offset relative to the segment base, and the batch's
/// byte position in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// One time index entry: the largest timestamp seen in the segment up to and including the
/// batch at `position` (monotonic), that batch's relative base offset and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
    pub position: u32,
}

/// The in-memory sparse indexes of one segment.
#[derive(Clone, Debug, Default)]
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// log bytes appended since the last entry
    pub bytes_since_entry: u64,
    /// running maximum timestamp of the segment
    pub running_max_ts: i64,
}

impl SegmentIndex {
    pub(crate) fn new() -> Self {
        SegmentIndex {
            running_max_ts: i64::MIN,
            ..Default::default()
        }
    }

    /// Records a batch appended at `position`. An entry is added for the first batch and
    /// then whenever `interval_bytes` of log have passed since the previous entry.
    pub(crate) fn on_batch(
        &mut self,
        rel_offset: u32,
        position: u32,
        size_bytes: u64,
        max_ts: i64,
        interval_bytes: u32,
    ) {
        self.running_max_ts = self.running_max_ts.max(max_ts);
        if self.offsets.is_empty() || self.bytes_since_entry >= interval_bytes as u64 {
            if let Some(last) = self.offsets.last() {
                assert!(
                    last.rel_offset < rel_offset && last.position < position,
                    "index entries must increase: {last:?} then ({rel_offset}, {position})"
                );
            }
            self.offsets.push(OffsetEntry {
                rel_offset,
                position,
            });
            self.times.push(TimeEntry {
                timestamp: self.running_max_ts,
                rel_offset,
                position,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size_bytes;
    }

    /// Position to start scanning for the batch containing `rel_offset`.
    pub(crate) fn position_for_offset(&self, rel_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Position to start scanning for the first batch with max timestamp >= `ts`.
    pub(crate) fn position_for_timestamp(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].position
        }
    }
}

/// Summary of a sealed segment stored in its offset index header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

fn pad(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(align_up(v.len() as u64).max(crate::disk::ALIGN) as usize, 0);
    v
}

pub(crate) fn encode_offset_index(s: &SegmentSummary, idx: &SegmentIndex) -> Vec<u8> {
    let mut v = Vec::with_capacity(OFFSET_HEADER_BYTES + idx.offsets.len() * 8);
    v.extend_from_slice(&OFFSET_INDEX_MAGIC);
    v.extend_from_slice(&s.base_offset.to_le_bytes());
    v.extend_from_slice(&s.size_bytes.to_le_bytes());
    v.extend_from_slice(&s.next_offset.to_le_bytes());
    v.extend_from_slice(&s.max_timestamp.to_le_bytes());
    v.extend_from_slice(&s.offset_of_max_timestamp.to_le_bytes());
    v.extend_from_slice(&(idx.offsets.len() as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // crc placeholder
    for e in &idx.offsets {
        v.extend_from_slice(&e.rel_offset.to_le_bytes());
        v.extend_from_slice(&e.position.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..52]), &v[OFFSET_HEADER_BYTES..]);
    v[52..56].copy_from_slice(&crc.to_le_bytes());
    pad(v)
}

pub(crate) fn encode_time_index(base_offset: i64, idx: &SegmentIndex) -> Vec<u8> {
    let mut v = Vec::with_capacity(TIME_HEADER_BYTES + idx.times.len() * 16);
    v.extend_from_slice(&TIME_INDEX_MAGIC);
    v.extend_from_slice(&base_offset.to_le_bytes());
    v.extend_from_slice(&(idx.times.len() as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for e in &idx.times {
        v.extend_from_slice(&e.timestamp.to_le_bytes());
        v.extend_from_slice(&e.rel_offset.to_le_bytes());
        v.extend_from_slice(&e.position.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..20]), &v[TIME_HEADER_BYTES..]);
    v[20..24].copy_from_slice(&crc.to_le_bytes());
    pad(v)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes both index files of a segment; `None` if either is damaged or inconsistent.
pub(crate) fn decode_indexes(
    base_offset: i64,
    oix: &[u8],
    tix: &[u8],
) -> Option<(SegmentSummary, SegmentIndex)> {
    if oix.len() < OFFSET_HEADER_BYTES || oix[..8] != OFFSET_INDEX_MAGIC {
        return None;
    }
    let n = le_u32(oix, 48) as usize;
    let end = OFFSET_HEADER_BYTES.checked_add(n.checked_mul(8)?)?;
    if end > oix.len() {
        return None;
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&oix[..52]), &oix[OFFSET_HEADER_BYTES..end]);
    if crc != le_u32(oix, 52) {
        return None;
    }
    let s = SegmentSummary {
        base_offset: le_i64(oix, 8),
        size_bytes: le_i64(oix, 16) as u64,
        next_offset: le_i64(oix, 24),
        max_timestamp: le_i64(oix, 32),
        offset_of_max_timestamp: le_i64(oix, 40),
    };
    if s.base_offset != base_offset || s.next_offset < base_offset {
        return None;
    }
    let mut idx = SegmentIndex::new();
    idx.running_max_ts = s.max_timestamp;
    for i in 0..n {
        let at = OFFSET_HEADER_BYTES + i * 8;
        idx.offsets.push(OffsetEntry {
            rel_offset: le_u32(oix, at),
            position: le_u32(oix, at + 4),
        });
    }
    if tix.len() < TIME_HEADER_BYTES
        || tix[..8] != TIME_INDEX_MAGIC
        || le_i64(tix, 8) != base_offset
    {
        return None;
    }
    let tn = le_u32(tix, 16) as usize;
    let tend = TIME_HEADER_BYTES.checked_add(tn.checked_mul(16)?)?;
    if tend > tix.len() {
        return None;
    }
    let tcrc = crc32c::crc32c_append(crc32c::crc32c(&tix[..20]), &tix[TIME_HEADER_BYTES..tend]);
    if tcrc != le_u32(tix, 20) {
        return None;
    }
    for i in 0..tn {
        let at = TIME_HEADER_BYTES + i * 16;
        idx.times.push(TimeEntry {
            timestamp: le_i64(tix, at),
            rel_offset: le_u32(tix, at + 8),
            position: le_u32(tix, at + 12),
        });
    }
    let increasing = idx
        .offsets
        .windows(2)
        .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position);
    let in_bounds = idx
        .offsets
        .iter()
        .all(|e| (e.position as u64) < s.size_bytes.max(1));
    if !increasing || !in_bounds {
        return None;
    }
    Some((s, idx))
}

pub(crate) fn encode_log_start(log_start_offset: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&LOG_START_MAGIC);
    v.extend_from_slice(&log_start_offset.to_le_bytes());
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    pad(v)
}

pub(crate) fn decode_log_start(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[..8] != LOG_START_MAGIC || crc32c::crc32c(&b[..16]) != le_u32(b, 16) {
        return None;
    }
    Some(le_i64(b, 8))
}

pub(crate) fn encode_epochs(epochs: &[(i32, i64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + epochs.len() * 12);
    v.extend_from_slice(&EPOCH_MAGIC);
    v.extend_from_slice(&(epochs.len() as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    for (e, o) in epochs {
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&v[..12]), &v[16..]);
    v[12..16].copy_from_slice(&crc.to_le_bytes());
    pad(v)
}

pub(crate) fn decode_epochs(b: &[u8]) -> Option<Vec<(i32, i64)>> {
    if b.len() < 16 || b[..8] != EPOCH_MAGIC {
        return None;
    }
    let n = le_u32(b, 8) as usize;
    let end = 16usize.checked_add(n.checked_mul(12)?)?;
    if end > b.len() {
        return None;
    }
    if crc32c::crc32c_append(crc32c::crc32c(&b[..12]), &b[16..end]) != le_u32(b, 12) {
        return None;
    }
    let v: Vec<(i32, i64)> = (0..n)
        .map(|i| (le_i32(b, 16 + i * 12), le_i64(b, 20 + i * 12)))
        .collect();
    let ordered = v.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
    ordered.then_some(v)
}

/// Reads a whole small file; `Ok(None)` if it does not exist.
pub(crate) async fn read_small_file<D: Disk>(
    disk: &D,
    path: &Path,
) -> io::Result<Option<bytes::Bytes>> {
    let f = match disk.open(path, false).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = f.size().await?;
    let b = f.read_at(0, align_up(size) as usize).await?;
    Ok(Some(b.slice(..(size as usize).min(b.len()))))
}

/// Writes a small file, content padded to the alignment. With `durable`: through
/// `<name>.tmp`, fdatasync, rename and a directory sync (checkpoints). Without: in place and
/// unsynced (segment indexes: a lost or torn one fails its CRC and is rebuilt by a scan; one
/// is only written after its segment's data is durable, and removed before its name is
/// reused, so a surviving index is never ahead of or about other data).
pub(crate) async fn write_small_file<D: Disk>(
    disk: &D,
    dir: &Path,
    name: &str,
    content: &[u8],
    durable: bool,
) -> io::Result<()> {
    assert!(
        (content.len() as u64).is_multiple_of(crate::disk::ALIGN),
        "small files are written padded"
    );
    let target = dir.join(name);
    let path = if durable {
        dir.join(format!("{name}.tmp"))
    } else {
        target.clone()
    };
    let f = disk.open(&path, true).await?;
    f.truncate(0).await?;
    let mut buf = disk.alloc_buf(content.len());
    buf.as_mut_slice().copy_from_slice(content);
    f.write_at(buf, 0).await?;
    f.truncate(content.len() as u64).await?;
    if !durable {
        return Ok(());
    }
    f.fdatasync().await?;
    drop(f);
    disk.rename(&path, &target).await?;
    disk.sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sim::SplitMix64;

    /// Property (seeded): for random batch sizes and intervals, the position the index gives
    /// for any offset is the start of a batch at or before the one holding it, and the scan
    /// from there to it covers less than one interval plus one batch.
    #[test]
    fn offset_lookup_is_a_short_scan_from_a_batch_start() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100 {
            let interval = [128u32, 1024, 4096][rng.below(3) as usize];
            let mut idx = SegmentIndex::new();
            let mut batches = Vec::new(); // (rel base, count, pos, size)
            let (mut rel, mut pos) = (0u32, 0u32);
            for _ in 0..(1 + rng.below(300)) {
                let count = 1 + rng.below(5) as u32;
                let size = 61 + rng.below(3000) as u32;
                idx.on_batch(rel, pos, size as u64, rng.below(1000) as i64, interval);
                batches.push((rel, count, pos, size));
                rel += count;
                pos += size;
            }
            let biggest = batches.iter().map(|b| b.3).max().unwrap();
            for &(b_rel, count, b_pos, _) in &batches {
                for o in b_rel..b_rel + count {
                    let start = idx.position_for_offset(o);
                    assert!(start <= b_pos, "lookup starts after the batch");
                    assert!(
                        batches.iter().any(|b| b.2 == start),
                        "lookup lands on a batch start"
                    );
                    assert!(b_pos - start < interval + biggest, "scan is short");
                }
            }
        }
    }

    #[test]
    fn time_lookup_never_skips_a_qualifying_batch() {
        let mut rng = SplitMix64::new(8);
        for _ in 0..100 {
            let mut idx = SegmentIndex::new();
            let mut batches = Vec::new(); // (pos, max_ts)
            let mut pos = 0u32;
            for i in 0..(1 + rng.below(200)) {
                let ts = rng.below(10_000) as i64;
                idx.on_batch(i as u32, pos, 500, ts, 1024);
                batches.push((pos, ts));
                pos += 500;
            }
            for _ in 0..50 {
                let t = rng.below(11_000) as i64;
                let start = idx.position_for_timestamp(t);
                if let Some(first) = batches.iter().find(|b| b.1 >= t) {
                    assert!(
                        start <= first.0,
                        "time lookup skipped the first batch with ts >= {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn index_files_round_trip_and_damage_is_detected() {
        let mut idx = SegmentIndex::new();
        for i in 0..100u32 {
            idx.on_batch(i * 3, i * 700, 700, i as i64 * 10, 1000);
        }
        let s = SegmentSummary {
            base_offset: 500,
            size_bytes: 70_000,
            next_offset: 800,
            max_timestamp: 990,
            offset_of_max_timestamp: 799,
        };
        let o = encode_offset_index(&s, &idx);
        let t = encode_time_index(500, &idx);
        assert_eq!(o.len() % 4096, 0);
        let (s2, idx2) = decode_indexes(500, &o, &t).expect("round trip");
        assert_eq!(s2, s);
        assert_eq!(idx2.offsets, idx.offsets);
        assert_eq!(idx2.times, idx.times);
        assert!(decode_indexes(501, &o, &t).is_none(), "wrong base offset");
        let mut bad = o.clone();
        bad[70] ^= 1;
        assert!(decode_indexes(500, &bad, &t).is_none(), "flipped entry bit");
        let mut badt = t.clone();
        badt[30] ^= 4;
        assert!(
            decode_indexes(500, &o, &badt).is_none(),
            "flipped time entry bit"
        );
        assert_eq!(decode_log_start(&encode_log_start(42)), Some(42));
        let e = vec![(1, 0), (3, 10), (7, 99)];
        assert_eq!(decode_epochs(&encode_epochs(&e)), Some(e));
    }
}
