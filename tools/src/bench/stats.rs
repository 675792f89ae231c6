//! Benchmark measurements: latency histograms (hdrhistogram, microseconds), counters, the
//! per-second timeline, the final table and the JSON report.
//!
//! `Counters` and `Recorder` cross threads (producer/consumer executor threads and the
//! reporting thread) behind `Arc` (atomics; one `Mutex` taken once per delivered batch or
//! fetched batch, never per record).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Highest latency recorded, in microseconds (larger values are clamped): 10 minutes.
pub const LATENCY_US_MAX: u64 = 600_000_000;

/// Message and byte counters (cross threads as `Arc<Counters>`; relaxed atomics).
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub consumed: AtomicU64,
    pub consumed_bytes: AtomicU64,
}

impl Counters {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Latency histograms: totals and the current one-second interval (crosses threads inside a
/// `Mutex`, locked once per batch of samples).
pub struct Histograms {
    pub publish: Histogram<u64>,
    pub publish_interval: Histogram<u64>,
    pub e2e: Histogram<u64>,
    pub e2e_interval: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            publish: new_hist(),
            publish_interval: new_hist(),
            e2e: new_hist(),
            e2e_interval: new_hist(),
        }
    }
}

/// Records each sample (microseconds, clamped to 1..=LATENCY_US_MAX) in both the whole-run
/// histogram and the current interval's.
fn record_clamped(
    total: &mut Histogram<u64>,
    interval: &mut Histogram<u64>,
    samples_us: impl Iterator<Item = u64>,
) {
    for v in samples_us {
        let v = v.clamp(1, LATENCY_US_MAX);
        total.record(v).expect("value within bounds");
        interval.record(v).expect("value within bounds");
    }
}

/// Shared latency recorder.
#[derive(Default)]
pub struct Recorder {
    pub hists: Mutex<Histograms>,
}

impl Recorder {
    /// Records publish latencies (microseconds).
    pub fn publish(&self, samples_us: impl Iterator<Item = u64>) {
        let mut guard = self.hists.lock().expect("recorder lock poisoned");
        let h = &mut *guard;
        record_clamped(&mut h.publish, &mut h.publish_interval, samples_us);
    }

    /// Records end-to-end latencies (microseconds).
    pub fn e2e(&self, samples_us: impl Iterator<Item = u64>) {
        let mut guard = self.hists.lock().expect("recorder lock poisoned");
        let h = &mut *guard;
        record_clamped(&mut h.e2e, &mut h.e2e_interval, samples_us);
    }

    /// Takes the interval histograms' percentiles and resets them.
    pub fn take_interval(&self) -> (Option<Percentiles>, Option<Percentiles>) {
        let mut h = self.hists.lock().expect("recorder lock poisoned");
        let p = Percentiles::of(&h.publish_interval);
        let e = Percentiles::of(&h.e2e_interval);
        h.publish_interval.reset();
        h.e2e_interval.reset();
        (p, e)
    }

    /// Percentiles over the whole run.
    pub fn totals(&self) -> (Option<Percentiles>, Option<Percentiles>) {
        let h = self.hists.lock().expect("recorder lock poisoned");
        (Percentiles::of(&h.publish), Percentiles::of(&h.e2e))
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            p9999: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }

    fn json(&self) -> String {
        format!(
            "{{\"count\":{},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"p9999\":{:.3},\"max\":{:.3},\"mean\":{:.3}}}",
            self.count, self.p50, self.p90, self.p99, self.p999, self.p9999, self.max, self.mean
        )
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub t_s: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish: Option<Percentiles>,
    pub e2e: Option<Percentiles>,
    pub backlog: i64,
}

/// The final result of one benchmark run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub name: String,
    pub mode: String,
    pub brokers: String,
    pub topics: usize,
    pub partitions: i32,
    pub message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub acks: i16,
    pub compression: String,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub target_rate_msgs_per_s: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub consumed: u64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish: Option<Percentiles>,
    pub e2e: Option<Percentiles>,
    pub timeline: Vec<Sample>,
    pub first_error: Option<String>,
}

/// Bytes per MB in every figure (MiB, as OpenMessaging Benchmark reports).
pub const MB: f64 = 1024.0 * 1024.0;

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Report {
    /// Headline throughput: acknowledged publishes, or consumption for a consume-only run.
    pub fn throughput(&self) -> (f64, f64) {
        if self.mode == "consume" {
            (self.consume_msgs_per_s, self.consume_mb_per_s)
        } else {
            (self.publish_msgs_per_s, self.publish_mb_per_s)
        }
    }

    pub fn to_json(&self) -> String {
        let (msgs, mb) = self.throughput();
        let opt = |p: &Option<Percentiles>| p.map_or("null".to_string(), |p| p.json());
        let mut timeline = String::from("[");
        for (i, s) in self.timeline.iter().enumerate() {
            if i > 0 {
                timeline.push(',');
            }
            let _ = write!(
                timeline,
                "{{\"t_s\":{:.1},\"publish_msgs_per_s\":{:.1},\"publish_mb_per_s\":{:.3},\"consume_msgs_per_s\":{:.1},\"consume_mb_per_s\":{:.3},\"backlog\":{},\"publish_latency_ms\":{},\"e2e_latency_ms\":{}}}",
                s.t_s,
                s.publish_msgs_per_s,
                s.publish_mb_per_s,
                s.consume_msgs_per_s,
                s.consume_mb_per_s,
                s.backlog,
                opt(&s.publish),
                opt(&s.e2e)
            );
        }
        timeline.push(']');
        format!(
            "{{\"name\":{},\"mode\":{},\"brokers\":{},\"topics\":{},\"partitions\":{},\"message_size\":{},\"producers\":{},\"consumers\":{},\"acks\":{},\"compression\":{},\"batch_bytes\":{},\"linger_ms\":{},\"target_rate_msgs_per_s\":{:.1},\"duration_s\":{:.3},\"messages_sent\":{},\"messages_acked\":{},\"errors\":{},\"messages_consumed\":{},\"throughput_msgs_per_s\":{:.1},\"throughput_mb_per_s\":{:.3},\"publish_msgs_per_s\":{:.1},\"publish_mb_per_s\":{:.3},\"consume_msgs_per_s\":{:.1},\"consume_mb_per_s\":{:.3},\"publish_latency_ms\":{},\"e2e_latency_ms\":{},\"first_error\":{},\"timeline\":{}}}\n",
            json_str(&self.name),
            json_str(&self.mode),
            json_str(&self.brokers),
            self.topics,
            self.partitions,
            self.message_size,
            self.producers,
            self.consumers,
            self.acks,
            json_str(&self.compression),
            self.batch_bytes,
            self.linger_ms,
            self.target_rate_msgs_per_s,
            self.duration_s,
            self.sent,
            self.acked,
            self.errors,
            self.consumed,
            msgs,
            mb,
            self.publish_msgs_per_s,
            self.publish_mb_per_s,
            self.consume_msgs_per_s,
            self.consume_mb_per_s,
            opt(&self.publish),
            opt(&self.e2e),
            self.first_error
                .as_deref()
                .map_or("null".to_string(), json_str),
            timeline
        )
    }

    /// The human-readable final table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {} ({}) against {}: {} topic(s) x {} partitions, {} B messages, {} producer(s), {} consumer(s), acks={}, compression={}",
            self.name,
            self.mode,
            self.brokers,
            self.topics,
            self.partitions,
            self.message_size,
            self.producers,
            self.consumers,
            if self.acks == -1 { "all".to_string() } else { self.acks.to_string() },
            self.compression
        );
        let _ = writeln!(
            s,
            "duration {:.1} s, sent {}, acked {}, errors {}, consumed {}",
            self.duration_s, self.sent, self.acked, self.errors, self.consumed
        );
        let _ = writeln!(s, "{:<10} {:>14} {:>10}", "throughput", "msg/s", "MB/s");
        if self.mode != "consume" {
            let _ = writeln!(
                s,
                "{:<10} {:>14.0} {:>10.2}",
                "publish", self.publish_msgs_per_s, self.publish_mb_per_s
            );
        }
        if self.mode != "produce" {
            let _ = writeln!(
                s,
                "{:<10} {:>14.0} {:>10.2}",
                "consume", self.consume_msgs_per_s, self.consume_mb_per_s
            );
        }
        let _ = writeln!(
            s,
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)",
            "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (label, p) in [("publish", &self.publish), ("end-to-end", &self.e2e)] {
            if let Some(p) = p {
                let _ = writeln!(
                    s,
                    "{:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    label, p.p50, p.p90, p.p99, p.p999, p.p9999, p.max
                );
            }
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let r = Recorder::default();
        r.publish((1..=1000u64).map(|i| i * 1000)); // 1..1000 ms
        let (p, e) = r.totals();
        let p = p.unwrap();
        assert!(e.is_none());
        assert!((p.p50 - 500.0).abs() < 2.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 2.0, "{p:?}");
        assert_eq!(p.count, 1000);
    }

    #[test]
    fn json_report_has_the_required_keys() {
        let rep = Report {
            mode: "produce".into(),
            publish_msgs_per_s: 10.0,
            publish: Some(Percentiles::default()),
            ..Report::default()
        };
        let j = rep.to_json();
        for k in [
            "\"throughput_msgs_per_s\":10.0",
            "\"throughput_mb_per_s\"",
            "\"publish_latency_ms\":{",
            "\"p999\"",
            "\"e2e_latency_ms\":null",
        ] {
            assert!(j.contains(k), "{k} missing in {j}");
        }
    }
}
