//! OpenMessaging-Benchmark workload files.
//!
//! OMB workloads are flat YAML maps of scalars (`key: value`, `#` comments), so a small parser
//! for exactly that subset is used instead of a YAML crate (serde_yaml is unmaintained and would
//! pull serde into the binary for ten scalar fields). Anything outside the subset (nesting,
//! lists, multi-line strings) is rejected with the line number.

use std::collections::BTreeMap;

/// A parsed workload (OMB field names in the comments).
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// `name`
    pub name: String,
    /// `topics`
    pub topics: usize,
    /// `partitionsPerTopic`
    pub partitions_per_topic: i32,
    /// `messageSize`
    pub message_size: usize,
    /// `subscriptionsPerTopic`
    pub subscriptions_per_topic: usize,
    /// `producersPerTopic`
    pub producers_per_topic: usize,
    /// `consumerPerSubscription`
    pub consumers_per_subscription: usize,
    /// `producerRate` (msg/s over all producers; 0 = max)
    pub producer_rate_msgs_per_s: f64,
    /// `consumerBacklogSizeGB` (only 0 is supported)
    pub consumer_backlog_gb: f64,
    /// `testDurationMinutes`
    pub test_duration_minutes: f64,
    /// `keyDistributor`: NO_KEY, KEY_ROUND_ROBIN or RANDOM_NANO
    pub key_distributor: String,
}

/// Errors reading a workload file.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("field {field}: {msg}")]
    Field { field: String, msg: String },
}

/// Parses the flat `key: value` YAML subset into a map.
pub fn parse_flat_yaml(text: &str) -> Result<BTreeMap<String, String>, WorkloadError> {
    let mut map = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') || line.trim_start().starts_with('-') {
            return Err(WorkloadError::Syntax {
                line: i + 1,
                msg: "nested values and lists are not supported in workload files".into(),
            });
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(WorkloadError::Syntax {
                line: i + 1,
                msg: format!("expected 'key: value', got '{}'", line.trim()),
            });
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        map.insert(k.trim().to_string(), v.to_string());
    }
    Ok(map)
}

fn strip_comment(line: &str) -> &str {
    // A '#' starts a comment unless inside quotes.
    let mut in_quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (c, in_quote) {
            ('"' | '\'', None) => in_quote = Some(c),
            (c2, Some(q)) if c2 == q => in_quote = None,
            ('#', None) => return &line[..i],
            _ => {}
        }
    }
    line
}

fn num<T: std::str::FromStr>(
    m: &BTreeMap<String, String>,
    field: &str,
    default: Option<T>,
) -> Result<T, WorkloadError> {
    match m.get(field) {
        Some(v) => v.parse::<T>().map_err(|_| WorkloadError::Field {
            field: field.into(),
            msg: format!("'{v}' is not a number"),
        }),
        None => default.ok_or_else(|| WorkloadError::Field {
            field: field.into(),
            msg: "missing".into(),
        }),
    }
}

impl Workload {
    pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
        let m = parse_flat_yaml(text)?;
        let w = Workload {
            name: m.get("name").cloned().unwrap_or_else(|| "workload".into()),
            topics: num(&m, "topics", Some(1))?,
            partitions_per_topic: num(&m, "partitionsPerTopic", None)?,
            message_size: num(&m, "messageSize", None)?,
            subscriptions_per_topic: num(&m, "subscriptionsPerTopic", Some(1))?,
            producers_per_topic: num(&m, "producersPerTopic", Some(1))?,
            consumers_per_subscription: num(&m, "consumerPerSubscription", Some(1))?,
            producer_rate_msgs_per_s: num(&m, "producerRate", Some(0.0))?,
            consumer_backlog_gb: num(&m, "consumerBacklogSizeGB", Some(0.0))?,
            test_duration_minutes: num(&m, "testDurationMinutes", Some(15.0))?,
            key_distributor: m
                .get("keyDistributor")
                .cloned()
                .unwrap_or_else(|| "NO_KEY".into()),
        };
        if w.topics == 0 || w.partitions_per_topic < 1 || w.message_size < 8 {
            return Err(WorkloadError::Field {
                field: "topics/partitionsPerTopic/messageSize".into(),
                msg: "need at least 1 topic, 1 partition and 8-byte messages".into(),
            });
        }
        if w.consumer_backlog_gb != 0.0 {
            return Err(WorkloadError::Field {
                field: "consumerBacklogSizeGB".into(),
                msg: "backlog drain tests are not supported; use 0".into(),
            });
        }
        if !["NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO", "ZIP_LATENT"]
            .contains(&w.key_distributor.as_str())
        {
            return Err(WorkloadError::Field {
                field: "keyDistributor".into(),
                msg: format!("unknown distributor {}", w.key_distributor),
            });
        }
        Ok(w)
    }

    pub fn load(path: &std::path::Path) -> Result<Workload, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|e| WorkloadError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Workload::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_omb_workload_file() {
        let w = Workload::parse(
            "name: 1 topic / 16 partitions / 1Kb\n\n# a comment\ntopics: 1\npartitionsPerTopic: 16\n\
             messageSize: 1024\npayloadFile: \"payload/payload-1Kb.data\"\nsubscriptionsPerTopic: 1\n\
             consumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 50000 # msg/s\n\
             consumerBacklogSizeGB: 0\ntestDurationMinutes: 15\n",
        )
        .unwrap();
        assert_eq!(w.name, "1 topic / 16 partitions / 1Kb");
        assert_eq!(w.partitions_per_topic, 16);
        assert_eq!(w.message_size, 1024);
        assert_eq!(w.producer_rate_msgs_per_s, 50000.0);
        assert_eq!(w.test_duration_minutes, 15.0);
    }

    #[test]
    fn rejects_nesting_and_bad_numbers_with_a_location() {
        let e = Workload::parse("topics: 1\n  nested: 2\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Workload::parse("partitionsPerTopic: many\nmessageSize: 10\n").unwrap_err();
        assert!(e.to_string().contains("partitionsPerTopic"), "{e}");
    }

    #[test]
    fn every_shipped_workload_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/workloads");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                Workload::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(
            n >= 4,
            "expected the standard workloads in {}",
            dir.display()
        );
    }
}
