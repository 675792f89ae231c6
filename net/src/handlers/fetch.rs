//! Fetch (key 1): reads from each partition's owning core (one mesh call per core), long
//! polling (min_bytes / max_wait_ms, woken by high-watermark advances), per-partition and
//! total max_bytes with at least one batch (KIP-74), incremental fetch sessions (KIP-227),
//! topic ids for v13+. Records go into the response as the `Bytes` storage returned.
//! A partition this broker holds no replica of is NOT_LEADER_OR_FOLLOWER without asking the
//! engine (which answers the same on a follower); v9+ `current_leader_epoch` is checked on the
//! owning core against the partition's epoch (KIP-320: FENCED_LEADER_EPOCH /
//! UNKNOWN_LEADER_EPOCH). v12+ (KIP-951): those partitions name the current leader, and v16+
//! responses carry its endpoint.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_engine::metadata::MetadataSnapshot;
use freshet_engine::{code, FetchedData, PartitionOffsets, Shard};
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::cluster_view::{hosts_replica, leader_lookup, ClusterView, LeaderHints};
use super::offset_for_leader_epoch::fencing_error;
use super::{topic_name, uuid_of, HandlerFuture, RequestContext};
use crate::fetch_session::{classify, SessionAction, SessionPartition};

pub const API_KEY: ApiKey = ApiKey::Fetch;
pub const VERSIONS: VersionRange = VersionRange { min: 4, max: 16 };

/// First Fetch version whose partitions carry `current_leader` (KIP-951).
const CURRENT_LEADER_VERSION: i16 = 12;
/// First Fetch version whose responses carry `node_endpoints` (KIP-951).
const NODE_ENDPOINTS_VERSION: i16 = 16;

/// Upper bound on max_wait_ms we honour (a client asking for more waits this long).
const MAX_WAIT_MS_CAP: i32 = 30_000;

type ReadResult = Result<FetchedData, (i16, Option<PartitionOffsets>)>;

pub fn handle(ctx: RequestContext, body: Bytes) -> HandlerFuture {
    Box::pin(async move {
        let req: FetchRequest = ctx.decode(body)?;
        let shard = ctx.shard().clone();
        let snap = shard.metadata();
        let by_id = ctx.api_version >= 13;
        let started = Instant::now();

        // The partitions of this request, resolved against metadata.
        let mut requested = Vec::new();
        let mut unknown: Vec<SessionPartition> = Vec::new();
        for t in &req.topics {
            let meta = if by_id {
                snap.topic_by_id(t.topic_id.as_bytes())
            } else {
                snap.topic(t.topic.0.as_str())
            };
            for p in &t.partitions {
                let sp = SessionPartition {
                    topic: meta
                        .map(|m| m.name.clone())
                        .unwrap_or_else(|| t.topic.0.as_str().to_string()),
                    topic_id: meta.map(|m| m.id).unwrap_or(*t.topic_id.as_bytes()),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: if ctx.api_version >= 9 {
                        p.current_leader_epoch
                    } else {
                        -1
                    },
                    last_high_watermark: -1,
                    last_log_start_offset: -1,
                };
                match meta {
                    Some(m) if p.partition >= 0 && p.partition < m.partitions => requested.push(sp),
                    _ => unknown.push(sp),
                }
            }
        }

        // KIP-227: decide the session and the partitions to read.
        let action = if ctx.api_version >= 7 {
            classify(req.session_id, req.session_epoch)
        } else {
            SessionAction::Sessionless
        };
        let mut session_id = 0;
        let mut incremental = false;
        let plan: Vec<SessionPartition> = {
            let mut cache = ctx.net.fetch_sessions.borrow_mut();
            match action {
                SessionAction::Sessionless => {
                    if req.session_id != 0 {
                        cache.remove(req.session_id);
                    }
                    requested
                }
                SessionAction::New { close } => {
                    if close != 0 {
                        cache.remove(close);
                    }
                    session_id = cache.create(requested.clone());
                    requested
                }
                SessionAction::Incremental { id, epoch } => {
                    match cache.begin_incremental(id, epoch) {
                        Err(err) => {
                            drop(cache);
                            tracing::debug!(session = id, epoch, err, "fetch session rejected");
                            return ctx.respond(
                                &FetchResponse::default()
                                    .with_error_code(err)
                                    .with_session_id(0),
                            );
                        }
                        Ok(s) => {
                            for p in requested {
                                s.upsert(p);
                            }
                            for f in &req.forgotten_topics_data {
                                let name = if by_id {
                                    snap.topic_by_id(f.topic_id.as_bytes())
                                        .map(|m| m.name.clone())
                                        .unwrap_or_default()
                                } else {
                                    f.topic.0.as_str().to_string()
                                };
                                for p in &f.partitions {
                                    s.forget(&name, *p);
                                }
                            }
                            session_id = id;
                            incremental = true;
                            s.partitions.clone()
                        }
                    }
                }
            }
        };

        // Read; if fewer than min_bytes arrived, wait for a high-watermark advance and retry
        // until max_wait_ms passes.
        let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP) as u64);
        let deadline = started + max_wait;
        let mut results = read_all(&shard, &plan).await;
        loop {
            let total: usize = results
                .iter()
                .map(|r| r.as_ref().map(|d| d.records.len()).unwrap_or(0))
                .sum();
            let any_error = results.iter().any(|r| r.is_err());
            let now = Instant::now();
            if total >= req.min_bytes.max(0) as usize || any_error || now >= deadline {
                break;
            }
            wait_for_data(&shard, &plan, &results, deadline - now).await;
            if shard.stopping() {
                break;
            }
            results = read_all(&shard, &plan).await;
        }

        // Assemble in plan order (the request's for a full fetch, the session's for an
        // incremental one), total max_bytes (at least one batch overall, KIP-74).
        let mut budget = if req.max_bytes <= 0 {
            usize::MAX
        } else {
            req.max_bytes as usize
        };
        let mut first_data = true;
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        let mut sent: Vec<(usize, i64, i64)> = Vec::new();
        // Session partitions whose records went into this response (KIP-227 rotation).
        let mut returned_data: Vec<(String, i32)> = Vec::new();
        for (i, (sp, r)) in plan.iter().zip(results).enumerate() {
            let mut pd = PartitionData::default()
                .with_partition_index(sp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica((-1).into());
            let mut changed = true;
            match r {
                Ok(d) => {
                    let o = d.offsets;
                    pd.high_watermark = o.high_watermark;
                    pd.last_stable_offset = o.last_stable_offset;
                    pd.log_start_offset = o.log_start_offset;
                    // Whole batches that fit the remaining total budget; the first partition
                    // with data gets at least one batch (KIP-74), as Kafka's
                    // min(partition max, remaining total) read limit does.
                    let records = trim_to_budget(d.records, budget, first_data);
                    if !records.is_empty() {
                        budget = budget.saturating_sub(records.len());
                        first_data = false;
                    }
                    if !records.is_empty() {
                        returned_data.push((sp.topic.clone(), sp.partition));
                    }
                    changed = !records.is_empty()
                        || o.high_watermark != sp.last_high_watermark
                        || o.log_start_offset != sp.last_log_start_offset;
                    sent.push((i, o.high_watermark, o.log_start_offset));
                    pd.records = Some(records);
                }
                Err((err, offsets)) => {
                    pd.error_code = err;
                    if let Some(o) = offsets {
                        pd.high_watermark = o.high_watermark;
                        pd.last_stable_offset = o.last_stable_offset;
                        pd.log_start_offset = o.log_start_offset;
                    }
                    pd.records = Some(Bytes::new());
                }
            }
            if incremental && !changed {
                continue;
            }
            push_partition(&mut topics, sp, pd, by_id);
        }
        for sp in &unknown {
            let err = if by_id {
                code::UNKNOWN_TOPIC_ID
            } else {
                code::UNKNOWN_TOPIC_OR_PARTITION
            };
            let pd = PartitionData::default()
                .with_partition_index(sp.partition)
                .with_error_code(err)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_records(Some(Bytes::new()));
            push_partition(&mut topics, sp, pd, by_id);
        }
        if session_id != 0 {
            let mut cache = ctx.net.fetch_sessions.borrow_mut();
            if let Some(s) = cache.get_mut(session_id) {
                for (i, hw, lso) in sent {
                    let key = &plan[i];
                    if let Some(p) = s
                        .partitions
                        .iter_mut()
                        .find(|p| p.topic == key.topic && p.partition == key.partition)
                    {
                        p.last_high_watermark = hw;
                        p.last_log_start_offset = lso;
                    }
                }
                // Fairness: the next response starts with the partitions that got nothing.
                s.rotate_to_end(&returned_data);
            }
        }
        let mut resp = FetchResponse::default()
            .with_error_code(code::NONE)
            .with_session_id(session_id);
        if ctx.api_version >= CURRENT_LEADER_VERSION {
            let snap = shard.metadata();
            let leader_of = leader_lookup(&shard);
            let down = shard.down_brokers();
            let view = ClusterView::this_node(&shard, &snap, &leader_of, &down);
            let endpoints = add_leader_hints(&view, &mut topics);
            if ctx.api_version >= NODE_ENDPOINTS_VERSION {
                resp.node_endpoints = endpoints;
            }
        }
        ctx.respond(&resp.with_responses(topics))
    })
}

/// Byte offset of batchLength in a record batch header (v0-v2 message formats alike).
const BATCH_LENGTH_END: usize = 12;

/// The longest prefix of whole record batches in `records` not larger than `budget`; with
/// `at_least_one`, the first batch even when it is larger (KIP-74). A trailing partial batch
/// (storage may cut one at the partition limit) is kept only when everything before it fits.
fn trim_to_budget(records: Bytes, budget: usize, at_least_one: bool) -> Bytes {
    if records.len() <= budget {
        return records;
    }
    let mut end = 0;
    while end + BATCH_LENGTH_END <= records.len() {
        let len_bytes: [u8; 4] = records[end + 8..end + BATCH_LENGTH_END]
            .try_into()
            .expect("a 4-byte slice");
        let batch_bytes = BATCH_LENGTH_END + i32::from_be_bytes(len_bytes).max(0) as usize;
        let next = (end + batch_bytes).min(records.len());
        if next > budget && !(end == 0 && at_least_one) {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

/// KIP-951: names the current leader in every partition answered NOT_LEADER_OR_FOLLOWER or
/// FENCED_LEADER_EPOCH and returns the leaders' endpoints (sent from v16).
fn add_leader_hints(
    view: &ClusterView<'_>,
    topics: &mut [FetchableTopicResponse],
) -> Vec<NodeEndpoint> {
    let snap = view.snap;
    let mut hints = LeaderHints::default();
    for tr in topics.iter_mut() {
        let Some(t) = snap
            .topic(tr.topic.0.as_str())
            .or_else(|| snap.topic_by_id(tr.topic_id.as_bytes()))
        else {
            continue;
        };
        for pd in &mut tr.partitions {
            if !matches!(
                pd.error_code,
                code::NOT_LEADER_OR_FOLLOWER | code::FENCED_LEADER_EPOCH
            ) {
                continue;
            }
            if let Some((leader, epoch)) = hints.hint(view, t, pd.partition_index) {
                pd.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    hints
        .endpoints()
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect()
}

fn push_partition(
    topics: &mut Vec<FetchableTopicResponse>,
    sp: &SessionPartition,
    pd: PartitionData,
    by_id: bool,
) {
    let same = |t: &FetchableTopicResponse| {
        if by_id {
            t.topic_id == uuid_of(&sp.topic_id)
        } else {
            t.topic.0.as_str() == sp.topic
        }
    };
    match topics.last_mut() {
        Some(t) if same(t) => t.partitions.push(pd),
        _ => topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic_name(&sp.topic))
                .with_topic_id(uuid_of(&sp.topic_id))
                .with_partitions(vec![pd]),
        ),
    }
}

/// Where a planned partition is read: here, or nowhere because another broker holds it.
fn not_hosted(snap: &MetadataSnapshot, node_id: i32, p: &SessionPartition) -> bool {
    snap.topic(&p.topic)
        .is_some_and(|t| !hosts_replica(t, p.partition, node_id))
}

/// Reads every planned partition on its owning core; results in plan order. A partition this
/// broker holds no replica of is NOT_LEADER_OR_FOLLOWER; on the owning core the KIP-320
/// epoch check comes first, as in Kafka (`Partition.localLogWithEpochOrThrow`).
async fn read_all(shard: &Rc<Shard>, plan: &[SessionPartition]) -> Vec<ReadResult> {
    // Per owning core: (plan index, topic, partition, fetch offset, max bytes, current epoch).
    type Read = (usize, String, i32, i64, usize, i32);
    let snap = shard.metadata();
    let node_id = shard.config().node_id;
    let mut results: Vec<Option<ReadResult>> = (0..plan.len()).map(|_| None).collect();
    let mut per_core: BTreeMap<usize, Vec<Read>> = BTreeMap::new();
    for (i, p) in plan.iter().enumerate() {
        if not_hosted(&snap, node_id, p) {
            results[i] = Some(Err((code::NOT_LEADER_OR_FOLLOWER, None)));
            continue;
        }
        per_core
            .entry(shard.owner_of(&p.topic, p.partition))
            .or_default()
            .push((
                i,
                p.topic.clone(),
                p.partition,
                p.fetch_offset,
                p.max_bytes.max(0) as usize,
                p.current_leader_epoch,
            ));
    }
    let mut tasks = Vec::new();
    for (core, items) in per_core {
        let shard = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let idx: Vec<usize> = items.iter().map(|x| x.0).collect();
            let r = shard
                .invoke_on(core, move |s| async move {
                    let mut out = Vec::with_capacity(items.len());
                    for (_, t, p, off, max, current_epoch) in items {
                        if let Some(part) = s.partition(&t, p) {
                            let e = fencing_error(current_epoch, part.leader_epoch());
                            if e != code::NONE {
                                out.push(Err((e, Some(part.offsets()))));
                                continue;
                            }
                        }
                        out.push(s.local_read(&t, p, off, max).await);
                    }
                    out
                })
                .await;
            (idx, r)
        }));
    }
    for t in tasks {
        let (idx, r) = t.await;
        let n = idx.len();
        let r = r.unwrap_or_else(|_| vec![Err((code::NOT_LEADER_OR_FOLLOWER, None)); n]);
        for (i, v) in idx.into_iter().zip(r) {
            results[i] = Some(v);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every planned partition was read"))
        .collect()
}

/// Waits until any planned partition's high watermark moves past what we read, or `timeout`.
async fn wait_for_data(
    shard: &Rc<Shard>,
    plan: &[SessionPartition],
    results: &[ReadResult],
    timeout: Duration,
) {
    let mut per_core: BTreeMap<usize, Vec<(String, i32, i64)>> = BTreeMap::new();
    for (p, r) in plan.iter().zip(results) {
        // Wait for the high watermark to pass the fetch offset (data to read).
        if r.is_err() {
            continue;
        }
        let seen = p.fetch_offset;
        per_core
            .entry(shard.owner_of(&p.topic, p.partition))
            .or_default()
            .push((p.topic.clone(), p.partition, seen));
    }
    if per_core.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    let (tx, rx) = glommio::channels::local_channel::new_bounded(per_core.len());
    let tx = Rc::new(tx);
    for (core, parts) in per_core {
        let shard = shard.clone();
        let tx = tx.clone();
        glommio::spawn_local(async move {
            let r = shard
                .invoke_on(core, move |s| async move {
                    s.local_wait_for_data(parts, timeout).await
                })
                .await;
            let _ = tx.try_send(r.unwrap_or(false));
        })
        .detach();
    }
    let _ = rx.recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::cluster_view::fixture;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    /// KIP-951 in Fetch: partitions answered NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH
    /// name the leader another broker holds (v12+), the response lists its endpoint (v16+);
    /// the answer encodes at every version from v12.
    #[test]
    fn not_leader_and_fenced_answers_name_the_current_leader() {
        let (_, snap) = fixture::two_brokers();
        let view = fixture::view_of_broker_0(&snap);
        let part = |index: i32, error_code: i16| {
            PartitionData::default()
                .with_partition_index(index)
                .with_error_code(error_code)
                .with_records(Some(Bytes::new()))
        };
        let mut topics = vec![FetchableTopicResponse::default()
            .with_topic(topic_name("t"))
            .with_partitions(vec![
                part(0, code::NOT_LEADER_OR_FOLLOWER),
                part(1, code::FENCED_LEADER_EPOCH),
                part(2, code::NOT_LEADER_OR_FOLLOWER),
                part(0, code::OFFSET_OUT_OF_RANGE),
            ])];
        let endpoints = add_leader_hints(&view, &mut topics);
        let leaders: Vec<(i32, i32)> = topics[0]
            .partitions
            .iter()
            .map(|p| (p.current_leader.leader_id.0, p.current_leader.leader_epoch))
            .collect();
        let none = LeaderIdAndEpoch::default();
        let unset = (none.leader_id.0, none.leader_epoch);
        assert_eq!(leaders, vec![(1, 7), (1, 7), unset, unset]);
        assert_eq!(endpoints.len(), 1);
        assert_eq!((endpoints[0].node_id.0, endpoints[0].port), (1, 9001));
        for v in CURRENT_LEADER_VERSION..=VERSIONS.max {
            let mut resp = FetchResponse::default().with_responses(topics.clone());
            if v >= NODE_ENDPOINTS_VERSION {
                resp.node_endpoints = endpoints.clone();
            }
            resp.encode(&mut BytesMut::new(), v).unwrap();
        }
    }

    /// A fake batch of `total` bytes whose header carries batchLength = total - 12.
    fn batch(total: usize) -> Vec<u8> {
        let mut b = vec![0u8; total];
        b[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        b
    }

    /// KIP-74: the total max_bytes bounds the response in whole batches, except that the
    /// first partition with data always gets its first batch.
    #[test]
    fn kip_74_total_budget_cuts_at_batch_boundaries_with_at_least_one_batch() {
        let mut all = batch(100);
        all.extend(batch(50));
        all.extend(batch(200));
        let all = Bytes::from(all);
        assert_eq!(trim_to_budget(all.clone(), 1000, false).len(), 350);
        assert_eq!(trim_to_budget(all.clone(), 349, false).len(), 150);
        assert_eq!(trim_to_budget(all.clone(), 150, false).len(), 150);
        assert_eq!(trim_to_budget(all.clone(), 149, false).len(), 100);
        assert_eq!(trim_to_budget(all.clone(), 99, false).len(), 0);
        assert_eq!(trim_to_budget(all.clone(), 1, true).len(), 100);
        assert_eq!(trim_to_budget(all.clone(), 0, true).len(), 100);
        // A partial trailing batch (cut by the partition limit) stays when everything fits.
        let cut = all.slice(..300);
        assert_eq!(trim_to_budget(cut.clone(), 300, false).len(), 300);
        assert_eq!(trim_to_budget(cut.clone(), 299, false).len(), 150);
        // Garbage lengths cannot overrun: a negative length counts as a bare header.
        let mut bad = batch(40);
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(trim_to_budget(Bytes::from(bad), 10, true).len(), 12);
    }
}
