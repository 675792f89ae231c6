//! Admin calls: topics (CreateTopics, DeleteTopics, DescribeConfigs, AlterConfigs) and groups
//! (ListGroups, DescribeGroups, DeleteGroups, OffsetFetch, OffsetCommit).
//!
//! Owned by one glommio executor (per-core, `!Send`).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ConsumerProtocolAssignment, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{Client, ClientError};

/// Resource type of a topic in DescribeConfigs/AlterConfigs.
const RESOURCE_TOPIC: i8 = 2;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The error for Kafka error `code` in `context`, with the broker's error message appended
/// when it sent one.
fn kafka_error_with_message(context: String, code: i16, message: Option<StrBytes>) -> ClientError {
    let msg = message.map(|m| format!(" ({m})")).unwrap_or_default();
    ClientError::kafka(format!("{context}{msg}"), code)
}

/// Creates a topic. `configs` are topic-level overrides.
pub async fn create_topic(
    client: &Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<(), ClientError> {
    let conn = client.any_conn().await?;
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(name));
    t.num_partitions = partitions;
    t.replication_factor = replication_factor;
    for (k, v) in configs {
        let mut c = CreatableTopicConfig::default();
        c.name = s(k);
        c.value = Some(s(v));
        t.configs.push(c);
    }
    let mut req = CreateTopicsRequest::default();
    req.topics.push(t);
    req.timeout_ms = 30_000;
    let (resp, _) = conn.call(&req).await?;
    for r in resp.topics {
        if r.error_code != 0 {
            return Err(kafka_error_with_message(
                format!("create topic {name}"),
                r.error_code,
                r.error_message,
            ));
        }
    }
    client.invalidate_topic(name);
    Ok(())
}

/// One ongoing partition reassignment (ListPartitionReassignments, KIP-455).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    /// Every replica (the target first, then those being removed).
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// Moves `topic`/`partition` to `replicas` (preferred leader first), or cancels its ongoing
/// reassignment (`None`), with AlterPartitionReassignments (KIP-455).
pub async fn alter_reassignment(
    client: &Client,
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> Result<(), ClientError> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
    let conn = client.any_conn().await?;
    let mut p = ReassignablePartition::default();
    p.partition_index = partition;
    p.replicas = replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect());
    let mut t = ReassignableTopic::default();
    t.name = TopicName(s(topic));
    t.partitions.push(p);
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    req.allow_replication_factor_change = true;
    req.topics.push(t);
    let (resp, _) = conn.call(&req).await?;
    let what = match replicas {
        Some(r) => format!("reassign {topic}-{partition} to {r:?}"),
        None => format!("cancel the reassignment of {topic}-{partition}"),
    };
    if resp.error_code != 0 {
        return Err(kafka_error_with_message(
            what,
            resp.error_code,
            resp.error_message,
        ));
    }
    for t in resp.responses {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(kafka_error_with_message(
                    what,
                    p.error_code,
                    p.error_message,
                ));
            }
        }
    }
    client.invalidate_topic(topic);
    Ok(())
}

/// Ongoing reassignments (ListPartitionReassignments, KIP-455): all, or those of `topics`.
pub async fn list_reassignments(
    client: &Client,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Result<Vec<Reassignment>, ClientError> {
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let conn = client.any_conn().await?;
    let mut req = ListPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|(t, ps)| {
                let mut x = ListPartitionReassignmentsTopics::default();
                x.name = TopicName(s(t));
                x.partition_indexes = ps.clone();
                x
            })
            .collect()
    });
    let (resp, _) = conn.call(&req).await?;
    if resp.error_code != 0 {
        return Err(kafka_error_with_message(
            "list partition reassignments".into(),
            resp.error_code,
            resp.error_message,
        ));
    }
    let ids = |v: Vec<kafka_protocol::messages::BrokerId>| v.into_iter().map(|b| b.0).collect();
    let mut out = Vec::new();
    for t in resp.topics {
        for p in t.partitions {
            out.push(Reassignment {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(p.replicas),
                adding: ids(p.adding_replicas),
                removing: ids(p.removing_replicas),
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// Deletes a topic.
pub async fn delete_topic(client: &Client, name: &str) -> Result<(), ClientError> {
    let conn = client.any_conn().await?;
    let version = conn.version(ApiKey::DeleteTopics)?;
    let mut req = DeleteTopicsRequest::default();
    if version >= 6 {
        let mut st = DeleteTopicState::default();
        st.name = Some(TopicName(s(name)));
        req.topics.push(st);
    } else {
        req.topic_names.push(TopicName(s(name)));
    }
    req.timeout_ms = 30_000;
    let resp = conn.call_version(&req, version).await?;
    for r in resp.responses {
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("delete topic {name}"),
                r.error_code,
            ));
        }
    }
    client.invalidate_topic(name);
    Ok(())
}

/// One configuration entry as DescribeConfigs reports it.
#[derive(Clone, Debug)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    pub is_default: bool,
    pub sensitive: bool,
}

/// Reads a topic's configuration.
pub async fn describe_topic_configs(
    client: &Client,
    name: &str,
) -> Result<Vec<ConfigEntry>, ClientError> {
    let conn = client.any_conn().await?;
    let mut r = DescribeConfigsResource::default();
    r.resource_type = RESOURCE_TOPIC;
    r.resource_name = s(name);
    r.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources.push(r);
    let (resp, version) = conn.call(&req).await?;
    let mut out = Vec::new();
    for res in resp.results {
        if res.error_code != 0 {
            return Err(ClientError::kafka(
                format!("describe configs of topic {name}"),
                res.error_code,
            ));
        }
        for c in res.configs {
            // v1+: config_source 5 = DEFAULT_CONFIG (KIP-226).
            let is_default = if version >= 1 {
                c.config_source == 5
            } else {
                false
            };
            out.push(ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                read_only: c.read_only,
                is_default,
                sensitive: c.is_sensitive,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Sets topic configs with AlterConfigs (the whole set of overrides given is applied; keys not
/// given keep their current override, since we first read them back).
pub async fn alter_topic_configs(
    client: &Client,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), ClientError> {
    // AlterConfigs replaces all overrides, so start from the current non-default values.
    let current = describe_topic_configs(client, name).await?;
    let mut merged: BTreeMap<String, String> = current
        .into_iter()
        .filter(|c| !c.is_default && !c.read_only)
        .filter_map(|c| c.value.map(|v| (c.name, v)))
        .collect();
    for (k, v) in set {
        merged.insert(k.clone(), v.clone());
    }
    for k in delete {
        merged.remove(k);
    }
    let conn = client.any_conn().await?;
    let mut r = AlterConfigsResource::default();
    r.resource_type = RESOURCE_TOPIC;
    r.resource_name = s(name);
    for (k, v) in merged {
        let mut c = AlterableConfig::default();
        c.name = s(&k);
        c.value = Some(s(&v));
        r.configs.push(c);
    }
    let mut req = AlterConfigsRequest::default();
    req.resources.push(r);
    let (resp, _) = conn.call(&req).await?;
    for r in resp.responses {
        if r.error_code != 0 {
            return Err(kafka_error_with_message(
                format!("alter configs of topic {name}"),
                r.error_code,
                r.error_message,
            ));
        }
    }
    Ok(())
}

/// A group as ListGroups reports it.
#[derive(Clone, Debug)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// Lists groups on every broker.
pub async fn list_groups(client: &Client) -> Result<Vec<ListedGroup>, ClientError> {
    let meta = client.metadata(Some(&[]), false).await?;
    let mut out = Vec::new();
    let addrs: Vec<String> = if meta.brokers.is_empty() {
        vec![client.any_conn().await?.addr().to_string()]
    } else {
        meta.brokers.iter().map(|b| b.addr()).collect()
    };
    for a in addrs {
        let conn = client.conn_to(&a).await?;
        let req = ListGroupsRequest::default();
        let (resp, _) = conn.call(&req).await?;
        if resp.error_code != 0 {
            return Err(ClientError::kafka("list groups", resp.error_code));
        }
        for g in resp.groups {
            out.push(ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            });
        }
    }
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out.dedup_by(|a, b| a.group_id == b.group_id);
    Ok(out)
}

/// A member as DescribeGroups reports it, with its decoded assignment.
#[derive(Clone, Debug)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group as DescribeGroups reports it.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMemberInfo>,
}

/// Describes a group at its coordinator.
pub async fn describe_group(client: &Client, group: &str) -> Result<GroupInfo, ClientError> {
    let conn = client.group_coordinator(group).await?;
    let mut req = DescribeGroupsRequest::default();
    req.groups.push(GroupId(s(group)));
    let (resp, _) = conn.call(&req).await?;
    let g = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Protocol("DescribeGroups returned no group".into()))?;
    if g.error_code != 0 {
        return Err(ClientError::kafka(
            format!("describe group {group}"),
            g.error_code,
        ));
    }
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let assignment = decode_assignment(&m.member_assignment);
            GroupMemberInfo {
                member_id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment,
            }
        })
        .collect();
    Ok(GroupInfo {
        group_id: g.group_id.0.to_string(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
    })
}

/// Decodes a consumer-protocol assignment (version prefix + ConsumerProtocolAssignment).
pub fn decode_assignment(raw: &Bytes) -> Vec<(String, Vec<i32>)> {
    if raw.len() < 2 {
        return Vec::new();
    }
    let mut b = raw.clone();
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = bytes::Buf::get_i16(&mut b);
    match ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Deletes groups.
pub async fn delete_group(client: &Client, group: &str) -> Result<(), ClientError> {
    let conn = client.group_coordinator(group).await?;
    let mut req = DeleteGroupsRequest::default();
    req.groups_names.push(GroupId(s(group)));
    let (resp, _) = conn.call(&req).await?;
    for r in resp.results {
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("delete group {group}"),
                r.error_code,
            ));
        }
    }
    Ok(())
}

/// Committed offsets of `group` (all topics), as topic -> partition -> offset.
pub async fn fetch_committed(
    client: &Client,
    group: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, ClientError> {
    let conn = client.group_coordinator(group).await?;
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s(group));
    req.topics = None; // all topics (v2+)
    let (resp, _) = conn.call(&req).await?;
    if resp.error_code != 0 {
        return Err(ClientError::kafka(
            format!("fetch offsets of group {group}"),
            resp.error_code,
        ));
    }
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.entry(t.name.0.to_string())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits offsets for `group` (generation -1 = outside of a live generation, as admin tools
/// do; `member_id` empty).
pub async fn commit_offsets(
    client: &Client,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), ClientError> {
    let conn = client.group_coordinator(group).await?;
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = generation;
    req.member_id = s(member_id);
    req.retention_time_ms = -1;
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (t, p, o) in offsets {
        by_topic.entry(t.as_str()).or_default().push((*p, *o));
    }
    for (t, parts) in by_topic {
        let mut rt = OffsetCommitRequestTopic::default();
        rt.name = TopicName(s(t));
        for (p, o) in parts {
            let mut rp = OffsetCommitRequestPartition::default();
            rp.partition_index = p;
            rp.committed_offset = o;
            rp.committed_leader_epoch = -1;
            rt.partitions.push(rp);
        }
        req.topics.push(rt);
    }
    let (resp, _) = conn.call(&req).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(ClientError::kafka(
                    format!(
                        "commit offset of {}-{} for group {group}",
                        t.name.0, p.partition_index
                    ),
                    p.error_code,
                ));
            }
        }
    }
    Ok(())
}
