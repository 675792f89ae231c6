//! DescribeLogDirs (key 35, KIP-113): the one log directory (`<data-dir>/kafka`) with the size of
//! each asked partition (null topics = every partition), read on the partitions' owning cores
//! (one mesh call per core), and from v4 the volume's total and usable bytes (statvfs).
//! Partitions that do not exist are left out, as Kafka does; offset lag is 0 (every replica
//! here is the leader).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use freshet_engine::Shard;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::protocol::VersionRange;

use super::admin_common::{on_owning_cores, sb, StepFuture};
use super::{topic_name, HandlerFuture, RequestContext};

pub const API_KEY: ApiKey = ApiKey::DescribeLogDirs;
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

/// Runs on the owning core: the partition's size in bytes, if it is open there.
fn size_step(s: Rc<Shard>, topic: String, partition: i32, _: ()) -> StepFuture<Option<u64>> {
    Box::pin(async move { s.partition(&topic, partition).map(|p| p.size_bytes()) })
}

/// (total, usable) bytes of the file system holding `path`, or None if it cannot be asked.
fn volume_bytes(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as i64;
    Some((
        (st.f_blocks as i64).saturating_mul(frsize),
        (st.f_bavail as i64).saturating_mul(frsize),
    ))
}

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: DescribeLogDirsRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        // Asked partitions that exist, per topic in request order.
        let mut asked: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        match &req.topics {
            None => {
                for t in snap.topics.values() {
                    asked.insert(t.name.clone(), (0..t.partitions).collect());
                }
            }
            Some(topics) => {
                for t in topics {
                    let name = t.topic.0.as_str();
                    if let Some(m) = snap.topic(name) {
                        let e = asked.entry(name.to_string()).or_default();
                        for p in &t.partitions {
                            if *p >= 0 && *p < m.partitions && !e.contains(p) {
                                e.push(*p);
                            }
                        }
                    }
                }
            }
        }
        let work: Vec<(String, i32, ())> = asked
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p, ())))
            .collect();
        let sizes = on_owning_cores(&shard, work.clone(), size_step, None).await;
        let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
        for ((t, p, ()), size) in work.into_iter().zip(sizes) {
            let Some(size) = size else { continue };
            if topics.last().is_none_or(|l| l.name.0.as_str() != t) {
                topics.push(DescribeLogDirsTopic::default().with_name(topic_name(&t)));
            }
            let last = topics.last_mut().expect("pushed above");
            last.partitions.push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(size as i64)
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
        let dir = shard.config().data_dir.join("kafka");
        let mut result = DescribeLogDirsResult::default()
            .with_log_dir(sb(dir.display().to_string()))
            .with_topics(topics);
        if ctx.api_version >= 4 {
            if let Some((total, usable)) = volume_bytes(&dir) {
                result.total_bytes = total;
                result.usable_bytes = usable;
            }
        }
        ctx.respond(&DescribeLogDirsResponse::default().with_results(vec![result]))
    })
}
