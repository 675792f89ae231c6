//! Bounded, seeded mutation fuzzer for record-batch handling of untrusted Produce data.
//!
//! Scenario: a client's Produce carries arbitrary bytes in its records field. Validation
//! (`validate_batches`, run before append) must accept or refuse them with an error, never
//! panic; and a batch it accepts is stored as sent, so everything that later parses stored
//! records (`first_record_at_or_after`, used by ListOffsets by timestamp, KIP-79) must cope with
//! any record bytes inside a batch whose header and CRC are fine.
//!
//! Half of the mutated inputs get their CRC32C recomputed, so the fuzzer reaches past the CRC
//! check into the field checks and the record parser (a client can always send a correct CRC).
//!
//! Environment: `FRESHET_FUZZ_SECS` (default 20; this test uses half of it), `FRESHET_FUZZ_SEED`
//! replays (the seed is printed first), `FRESHET_FUZZ_ITERS` bounds by iterations instead.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshet_storage::batch::{build_batch, first_record_at_or_after, BATCH_HEADER_BYTES};
use freshet_storage::validate_batches;

const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;
const BATCH_BYTES_MAX: u32 = 1 << 20;
/// A base offset the broker could have assigned.
const STORED_BASE_OFFSET: i64 = 1_000_000;

/// xorshift64*: small, fast, deterministic for a given seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fix_crc(b: &mut [u8]) {
    if b.len() > CRC_FROM {
        let crc = crc32c::crc32c(&b[CRC_FROM..]);
        b[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }
}

fn varint(x: i64) -> Vec<u8> {
    let mut z = ((x << 1) ^ (x >> 63)) as u64;
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

/// A one-batch Produce payload whose records area is `records` (raw record bytes), with a
/// correct header and CRC: what any client can send.
fn batch_with_records(records: &[u8], count: i32) -> Vec<u8> {
    let mut b = build_batch(1, 0, 1_700_000_000_000, b'x')[..BATCH_HEADER_BYTES].to_vec();
    b.extend_from_slice(records);
    let batch_length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
    b[57..61].copy_from_slice(&count.to_be_bytes()); // records count
    fix_crc(&mut b);
    b
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (records, value_bytes) in [(1, 0), (1, 10), (3, 5), (10, 1), (50, 20)] {
        let mut b = build_batch(records, value_bytes, 1_700_000_000_000, b'x');
        fix_crc(&mut b);
        out.push(b);
    }
    // Two batches back to back (a Produce may carry several).
    let two = [out[1].clone(), out[2].clone()].concat();
    out.push(two);
    out
}

const INTERESTING: [i64; 10] = [
    0,
    1,
    -1,
    0x7f,
    0x80,
    0x7fff,
    0x7fff_ffff,
    -0x8000_0000,
    i64::MAX,
    i64::MIN,
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut d = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = d.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            2 if len >= 8 => {
                // An interesting integer over a header field or inside the records.
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                let i = rng.below(len - width + 1);
                d[i..i + width].copy_from_slice(&v.to_be_bytes()[8 - width..]);
            }
            3 if len > BATCH_HEADER_BYTES => {
                // A varint-ish run of continuation bytes in the records area.
                let i = BATCH_HEADER_BYTES + rng.below(len - BATCH_HEADER_BYTES);
                let n = 1 + rng.below(12);
                for byte in &mut d[i..(i + n).min(len)] {
                    *byte = 0x80 | rng.next() as u8;
                }
            }
            7 if len > BATCH_HEADER_BYTES && rng.below(2) == 0 => {
                // An extreme zigzag varint (i64::MAX / i64::MIN / huge length) in the records.
                let v = [i64::MAX, i64::MIN, i64::MAX / 2, -2][rng.below(4)];
                let i = BATCH_HEADER_BYTES + rng.below(len - BATCH_HEADER_BYTES);
                let enc = varint(v);
                let end = (i + enc.len()).min(len);
                d.splice(i..end, enc);
            }
            4 => {
                let i = rng.below(len + 1);
                let ins: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                d.splice(i..i, ins);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                d.drain(i..i + n);
            }
            6 => d.truncate(rng.below(len + 1)),
            _ if len >= 23 => {
                // Attributes: compression codec, timestamp type, transactional, control bits.
                let attrs = (rng.next() as u16) & 0x7f;
                d[21..23].copy_from_slice(&attrs.to_be_bytes());
            }
            _ => {}
        }
    }
    if rng.below(2) == 0 {
        fix_crc(&mut d);
    }
    d
}

/// What the broker does with a Produce records field, then with what it stored.
fn exercise(bytes: &[u8], rng_ts: i64) -> bool {
    match validate_batches(bytes, BATCH_BYTES_MAX) {
        Err(_) => false,
        Ok(batches) => {
            for (at, h) in batches {
                // As stored: the broker assigns the base offset (the CRC does not cover it).
                let mut batch = bytes[at..at + h.size_bytes()].to_vec();
                batch[..8].copy_from_slice(&STORED_BASE_OFFSET.to_be_bytes());
                for ts in [
                    i64::MIN,
                    0,
                    h.base_timestamp,
                    h.max_timestamp,
                    rng_ts,
                    i64::MAX,
                ] {
                    let _ = first_record_at_or_after(&batch, ts);
                }
            }
            true
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// ListOffsets by timestamp (KIP-79) reads the offset delta of stored records; a client chose it.
/// An extreme one must give an error or some answer, not an arithmetic overflow panic.
#[test]
fn extreme_offset_and_timestamp_deltas_in_a_stored_batch() {
    for (ts_delta, off_delta) in [
        (0, i64::MAX),
        (0, i64::MIN),
        (i64::MAX, 0),
        (i64::MIN, i64::MAX),
    ] {
        let mut rec = vec![0u8]; // attributes
        rec.extend(varint(ts_delta));
        rec.extend(varint(off_delta));
        rec.extend(varint(-1)); // null key
        rec.extend(varint(0)); // empty value
        rec.extend(varint(0)); // no headers
        let mut records = varint(rec.len() as i64);
        records.extend(rec);
        let bytes = batch_with_records(&records, 1);
        // Accepted or refused, then parsed as stored: never a panic.
        exercise(&bytes, 1_700_000_000_000);
    }
}

#[test]
fn seed_batches_are_valid() {
    for (i, s) in seeds().iter().enumerate() {
        assert!(exercise(s, 0), "seed {i} does not validate");
    }
}

#[test]
fn mutated_batches_are_refused_or_stored_and_parsed_without_panic() {
    let seed = env_u64("FRESHET_FUZZ_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
    });
    let secs = env_u64("FRESHET_FUZZ_SECS").unwrap_or(20).div_ceil(2);
    let max_iters = env_u64("FRESHET_FUZZ_ITERS");
    let _ = writeln!(
        std::io::stderr(),
        "fuzz_batch: seed {seed} (replay: FRESHET_FUZZ_SEED={seed}), budget {secs}s"
    );
    let seeds = seeds();
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut iters, mut accepted) = (0u64, 0u64);
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    while max_iters.map_or(Instant::now() < deadline, |n| iters < n) {
        let base = rng.below(seeds.len());
        let input = mutate(&mut rng, &seeds[base]);
        let ts = rng.next() as i64;
        iters += 1;
        match panic::catch_unwind(AssertUnwindSafe(|| exercise(&input, ts))) {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|m| m.to_string()))
                    .unwrap_or_default();
                failure = Some((iters, msg, input, ts));
                break;
            }
        }
    }
    panic::set_hook(default_hook);
    eprintln!("fuzz_batch: {iters} inputs, {accepted} accepted");
    if let Some((iter, msg, input, ts)) = failure {
        let hex: String = input.iter().map(|x| format!("{x:02x}")).collect();
        panic!(
            "panicked on input #{iter} (ts {ts}; replay: FRESHET_FUZZ_SEED={seed} FRESHET_FUZZ_ITERS={iter}): {msg}\n\
             batch ({} bytes): {hex}",
            input.len()
        );
    }
    assert!(accepted > 100, "only {accepted} of {iters} inputs passed validation: the fuzzer is not reaching the parser");
}
