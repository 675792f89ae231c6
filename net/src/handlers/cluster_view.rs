//! The cluster as the handlers describe it to clients: brokers, partition leaders and in-sync
//! replicas, the controller, group coordinators, and the KIP-951 leader hints of Produce and
//! Fetch. Clients (librdkafka, kafka-python, the rdkafka crate) follow leaders with this alone.
//!
//! Per core, per request: a [`ClusterView`] borrows this core's metadata snapshot and asks a
//! leader lookup (this core's leader table, `Shard::leader_of`); nothing crosses cores. The
//! functions are pure over those two inputs, so the tests need no broker.
//!
//! Kafka's rules followed here (KRaft `MetadataCache`): a partition whose leader is unknown, or
//! is not a live registered broker, is LEADER_NOT_AVAILABLE with leader -1 and its replicas
//! still listed; the broker list holds the live registered brokers (a broker this node found
//! down, `Shard::broker_is_down`, is left out, as Kafka leaves out fenced brokers) and replicas
//! on down brokers are `offline_replicas` and never in the ISR. The controller id is the
//! controller group's leader while it is live, else this node: every node forwards controller
//! requests to the leader (KIP-590), and naming a dead node would strand admin clients, which
//! wait for that node without asking for new metadata. A cluster of one (no other broker
//! registered) keeps the one-node answers: this node is the controller and every coordinator.

use std::collections::BTreeMap;
use std::rc::Rc;

use freshet_engine::code;
use freshet_engine::metadata::{MetadataSnapshot, TopicMeta, CONTROLLER_GROUP};
use freshet_engine::Shard;

use super::metadata::split_host_port;

/// Kafka error code COORDINATOR_NOT_AVAILABLE.
pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Who leads a Raft group, as this core's leader table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader {
    /// Broker id of the leader.
    pub leader: i32,
    /// Leader epoch (the Raft term).
    pub epoch: i32,
    /// Broker ids of the in-sync replicas (the leader included); may be empty when unknown.
    pub isr: Vec<i32>,
}

/// A broker a client can connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionState {
    pub error: i16,
    /// Leader broker id, -1 when unknown.
    pub leader: i32,
    /// Leader epoch, -1 when unknown.
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on brokers this node considers down (Metadata v5+ `offline_replicas`).
    pub offline: Vec<i32>,
}

/// The cluster from this core's point of view, for one request.
pub(crate) struct ClusterView<'a> {
    pub snap: &'a MetadataSnapshot,
    /// This node at its advertised Kafka address.
    pub this: Endpoint,
    /// Leader of a Raft group (partition groups ≥ 1, the controller group 0).
    pub leader_of: &'a dyn Fn(u64) -> Option<Leader>,
    /// Brokers this node considers down (`Shard::down_brokers`); never this node.
    pub down: &'a [i32],
}

impl<'a> ClusterView<'a> {
    /// This node's view: `snap`, its advertised address and its leader table.
    pub fn this_node(
        shard: &Shard,
        snap: &'a MetadataSnapshot,
        leader_of: &'a dyn Fn(u64) -> Option<Leader>,
        down: &'a [i32],
    ) -> Self {
        let (host, port) = split_host_port(shard.config().advertised_addr());
        ClusterView {
            snap,
            this: Endpoint {
                id: shard.config().node_id,
                host,
                port,
                rack: None,
            },
            leader_of,
            down,
        }
    }

    /// True while no broker other than this node is registered: the one-node answers apply.
    pub fn single_node(&self) -> bool {
        self.snap.brokers.keys().all(|id| *id == self.this.id)
    }

    /// Every live registered broker by id, and this node (a client that bootstrapped here can
    /// always come back), registered or not yet.
    pub fn brokers(&self) -> Vec<Endpoint> {
        let mut out: BTreeMap<i32, Endpoint> = self
            .snap
            .brokers
            .values()
            .filter(|b| !self.is_down(b.id))
            .map(|b| {
                (
                    b.id,
                    Endpoint {
                        id: b.id,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                    },
                )
            })
            .collect();
        let me = self
            .broker(self.this.id)
            .expect("this node is always a broker");
        out.insert(me.id, me);
        out.into_values().collect()
    }

    /// True when this node considers broker `id` down (never this node).
    pub fn is_down(&self, id: i32) -> bool {
        id != self.this.id && self.down.contains(&id)
    }

    /// Broker `id`'s endpoint, if it is one of [`Self::brokers`].
    pub fn broker(&self, id: i32) -> Option<Endpoint> {
        if id == self.this.id {
            // Our own advertised address wins over a stale registration (its rack stays).
            let rack = self.snap.brokers.get(&id).and_then(|b| b.rack.clone());
            return Some(Endpoint {
                rack: rack.or_else(|| self.this.rack.clone()),
                ..self.this.clone()
            });
        }
        if self.is_down(id) {
            return None;
        }
        self.snap.brokers.get(&id).map(|b| Endpoint {
            id: b.id,
            host: b.host.clone(),
            port: b.port,
            rack: b.rack.clone(),
        })
    }

    /// Ids of the brokers replicas can be placed on.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers().iter().map(|b| b.id).collect()
    }

    /// The leader of `group` if it is a broker clients can reach.
    fn reachable_leader(&self, group: u64) -> Option<Leader> {
        (self.leader_of)(group).filter(|l| l.leader >= 0 && self.broker(l.leader).is_some())
    }

    /// Partition `p` of `t` as Metadata reports it (leader, epoch, replicas, ISR).
    pub fn partition(&self, t: &TopicMeta, p: i32) -> PartitionState {
        let Some(a) = t.assignment(p) else {
            // A partition without an assignment has no replica anywhere yet.
            return PartitionState {
                error: code::LEADER_NOT_AVAILABLE,
                leader: -1,
                epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                offline: Vec::new(),
            };
        };
        let replicas = a.all_replicas();
        let offline: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| self.is_down(*r))
            .collect();
        match self.reachable_leader(a.group) {
            Some(l) => {
                let isr = if l.isr.is_empty() {
                    vec![l.leader]
                } else {
                    // Only brokers this answer lists (live and registered): Kafka never names
                    // an ISR member that is absent from the brokers array.
                    l.isr
                        .into_iter()
                        .filter(|b| self.broker(*b).is_some())
                        .collect()
                };
                PartitionState {
                    error: code::NONE,
                    leader: l.leader,
                    epoch: l.epoch,
                    replicas,
                    isr,
                    offline,
                }
            }
            None => PartitionState {
                error: code::LEADER_NOT_AVAILABLE,
                leader: -1,
                epoch: -1,
                replicas,
                isr: Vec::new(),
                offline,
            },
        }
    }

    /// The controller id clients see: this node in a cluster of one; otherwise the leader of
    /// the controller group while it is live, else this node (it forwards controller requests
    /// to the leader once one is elected, KIP-590; see the module doc).
    pub fn controller_id(&self) -> i32 {
        if self.single_node() {
            return self.this.id;
        }
        self.reachable_leader(CONTROLLER_GROUP)
            .map_or(self.this.id, |l| l.leader)
    }

    /// The coordinator of a group whose offsets live in partition `p` of the offsets topic
    /// `offsets_topic`: the partition's leader. In a cluster of one, this node (the group
    /// service answers COORDINATOR_LOAD_IN_PROGRESS while it loads). Err is a Kafka code.
    pub fn coordinator(&self, offsets_topic: &str, p: i32) -> Result<Endpoint, i16> {
        if self.single_node() {
            return Ok(self.this.clone());
        }
        let t = self
            .snap
            .topic(offsets_topic)
            .ok_or(COORDINATOR_NOT_AVAILABLE)?;
        let a = t.assignment(p).ok_or(COORDINATOR_NOT_AVAILABLE)?;
        let l = self
            .reachable_leader(a.group)
            .ok_or(COORDINATOR_NOT_AVAILABLE)?;
        self.broker(l.leader).ok_or(COORDINATOR_NOT_AVAILABLE)
    }

    /// KIP-951: the leader (id, epoch) to name in a Produce/Fetch answer whose partition error
    /// says this broker is not (or no longer) the leader — only another broker clients can
    /// reach; naming ourselves would only make the client retry here.
    pub fn leader_hint(&self, t: &TopicMeta, p: i32) -> Option<(i32, i32)> {
        let a = t.assignment(p)?;
        self.reachable_leader(a.group)
            .filter(|l| l.leader != self.this.id)
            .map(|l| (l.leader, l.epoch))
    }
}

/// True when broker `node_id` holds a replica of partition `p` of `t`; requests for a partition
/// it does not hold belong elsewhere (NOT_LEADER_OR_FOLLOWER without asking the engine).
pub(crate) fn hosts_replica(t: &TopicMeta, p: i32, node_id: i32) -> bool {
    t.assignment(p).is_some_and(|a| a.is_holder(node_id))
}

/// The KIP-951 leader hints of one Produce or Fetch response: each partition answered
/// NOT_LEADER_OR_FOLLOWER (or FENCED_LEADER_EPOCH) names its current leader, and the response
/// lists those leaders' endpoints once each, so the client moves without a Metadata round.
#[derive(Default)]
pub(crate) struct LeaderHints {
    endpoints: BTreeMap<i32, Endpoint>,
}

impl LeaderHints {
    /// The (leader id, epoch) to put in partition `p`'s answer, if one is worth naming.
    pub fn hint(&mut self, view: &ClusterView<'_>, t: &TopicMeta, p: i32) -> Option<(i32, i32)> {
        let (leader, epoch) = view.leader_hint(t, p)?;
        let e = view.broker(leader)?;
        self.endpoints.insert(leader, e);
        Some((leader, epoch))
    }

    /// The endpoints of every leader named, by id.
    pub fn endpoints(self) -> Vec<Endpoint> {
        self.endpoints.into_values().collect()
    }
}

/// This core's leader lookup: its copy of the cluster's leader table (`Shard::leader_of`,
/// fed by the local Raft groups and the other nodes' leader reports; a map lookup).
pub(crate) fn leader_lookup(shard: &Rc<Shard>) -> impl Fn(u64) -> Option<Leader> + 'static {
    let shard = shard.clone();
    move |group| {
        shard.leader_of(group).map(|l| Leader {
            leader: l.leader,
            epoch: l.epoch,
            isr: l.isr,
        })
    }
}

/// Test fixtures shared by the handlers' tests.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use freshet_engine::metadata::{BrokerInfo, PartitionAssignment};
    use freshet_engine::TopicConfig;

    /// Topic "t": 3 partitions, groups 10..12, replicas [0, 1]; brokers 0 (`h0:9000`) and
    /// 1 (`h1:9001`).
    pub fn two_brokers() -> (TopicMeta, MetadataSnapshot) {
        let t = TopicMeta {
            name: "t".to_string(),
            id: [3; 16],
            partitions: 3,
            config: TopicConfig::default(),
            revision: 1,
            assignments: (0..3)
                .map(|p| PartitionAssignment::new(10 + p, vec![0, 1]))
                .collect(),
        };
        let snap = MetadataSnapshot {
            revision: 1,
            topics: [("t".to_string(), t.clone())].into_iter().collect(),
            brokers: (0..2)
                .map(|id| {
                    (
                        id,
                        BrokerInfo {
                            id,
                            host: format!("h{id}"),
                            port: 9000 + id,
                            rpc_addr: String::new(),
                            rack: None,
                        },
                    )
                })
                .collect(),
            next_group: 20,
        };
        (t, snap)
    }

    /// Broker 1 leads every group at epoch 7 except group 12 (unknown).
    pub fn broker_1_leads(group: u64) -> Option<Leader> {
        (group != 12).then_some(Leader {
            leader: 1,
            epoch: 7,
            isr: vec![1, 0],
        })
    }

    /// Broker 0's view of [`two_brokers`] with [`broker_1_leads`].
    pub fn view_of_broker_0(snap: &MetadataSnapshot) -> ClusterView<'_> {
        ClusterView {
            snap,
            this: Endpoint {
                id: 0,
                host: "h0".to_string(),
                port: 9000,
                rack: None,
            },
            leader_of: &broker_1_leads,
            down: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_engine::metadata::{BrokerInfo, PartitionAssignment};
    use freshet_engine::TopicConfig;
    use std::collections::HashMap;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            id,
            host: format!("10.0.0.{id}"),
            port: 9092,
            rpc_addr: format!("10.0.0.{id}:33145"),
            rack: (id == 2).then(|| "r2".to_string()),
        }
    }

    fn topic(name: &str, replicas: &[&[i32]], first_group: u64) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            id: [7; 16],
            partitions: replicas.len() as i32,
            config: TopicConfig::default(),
            revision: 1,
            assignments: replicas
                .iter()
                .enumerate()
                .map(|(i, r)| PartitionAssignment::new(first_group + i as u64, r.to_vec()))
                .collect(),
        }
    }

    fn snap(brokers: &[i32], topics: Vec<TopicMeta>) -> MetadataSnapshot {
        MetadataSnapshot {
            revision: 3,
            topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
            brokers: brokers.iter().map(|b| (*b, broker(*b))).collect(),
            next_group: 100,
        }
    }

    fn this(id: i32) -> Endpoint {
        Endpoint {
            id,
            host: "advertised".to_string(),
            port: 19092,
            rack: None,
        }
    }

    fn leaders(table: &[(u64, i32, i32, &[i32])]) -> impl Fn(u64) -> Option<Leader> {
        let m: HashMap<u64, Leader> = table
            .iter()
            .map(|(g, l, e, isr)| {
                (
                    *g,
                    Leader {
                        leader: *l,
                        epoch: *e,
                        isr: isr.to_vec(),
                    },
                )
            })
            .collect();
        move |g| m.get(&g).cloned()
    }

    /// A client that bootstrapped on any node learns every broker (and the node it asked,
    /// at the address that node advertises).
    #[test]
    fn metadata_lists_every_registered_broker_and_this_node() {
        let s = snap(&[0, 1, 2], vec![]);
        let none = leaders(&[]);
        let v = ClusterView {
            snap: &s,
            this: this(1),
            leader_of: &none,
            down: &[],
        };
        let ids: Vec<i32> = v.brokers().iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!(v.brokers()[1].host, "advertised", "own address wins");
        assert_eq!(v.brokers()[2].rack.as_deref(), Some("r2"));
        assert_eq!(v.broker_ids(), vec![0, 1, 2]);
        assert!(!v.single_node());
        // Before any broker registered (a starting cluster of one): this node alone.
        let empty = snap(&[], vec![]);
        let v = ClusterView {
            snap: &empty,
            this: this(5),
            leader_of: &none,
            down: &[],
        };
        assert_eq!(v.brokers(), vec![this(5)]);
        assert_eq!(v.broker_ids(), vec![5]);
        assert!(v.single_node());
    }

    /// Metadata per partition: the leader and epoch from the leader table, replicas from the
    /// assignment (preferred leader first), ISR from the leader; an unknown leader — or one
    /// that is not a registered broker — is LEADER_NOT_AVAILABLE with leader -1, as Kafka does.
    #[test]
    fn partition_leaders_come_from_the_leader_table() {
        let t = topic("orders", &[&[0, 1, 2], &[1, 2, 0], &[2, 0, 1]], 10);
        let s = snap(&[0, 1, 2], vec![t.clone()]);
        let table = leaders(&[(10, 0, 4, &[0, 1, 2]), (11, 9, 2, &[9]), (13, 0, 1, &[])]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        assert_eq!(
            v.partition(&t, 0),
            PartitionState {
                error: code::NONE,
                leader: 0,
                epoch: 4,
                replicas: vec![0, 1, 2],
                isr: vec![0, 1, 2],
                offline: vec![],
            }
        );
        let unknown_broker = v.partition(&t, 1);
        assert_eq!(unknown_broker.error, code::LEADER_NOT_AVAILABLE);
        assert_eq!(unknown_broker.leader, -1);
        assert_eq!(unknown_broker.replicas, vec![1, 2, 0]);
        let no_leader = v.partition(&t, 2);
        assert_eq!(no_leader.error, code::LEADER_NOT_AVAILABLE);
        assert_eq!((no_leader.leader, no_leader.epoch), (-1, -1));
        assert_eq!(no_leader.replicas, vec![2, 0, 1]);
        // Out of range: no assignment.
        assert_eq!(v.partition(&t, 3).error, code::LEADER_NOT_AVAILABLE);
        // An empty ISR from the table still names the leader.
        let t1 = topic("one", &[&[0]], 13);
        assert_eq!(v.partition(&t1, 0).isr, vec![0]);
    }

    /// The controller is the controller group's leader; while it is unknown (an election) in a
    /// real cluster, this node, which forwards (KIP-590); this node in a cluster of one.
    #[test]
    fn controller_is_the_controller_group_leader() {
        let s = snap(&[0, 1, 2], vec![]);
        let table = leaders(&[(CONTROLLER_GROUP, 2, 7, &[0, 1, 2])]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        assert_eq!(v.controller_id(), 2);
        let none = leaders(&[]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &none,
            down: &[],
        };
        assert_eq!(v.controller_id(), 0);
        let one = snap(&[4], vec![]);
        let v = ClusterView {
            snap: &one,
            this: this(4),
            leader_of: &none,
            down: &[],
        };
        assert_eq!(v.controller_id(), 4);
    }

    /// A broker this node found down (its connection failed, or it stopped answering) is what
    /// Kafka calls fenced: left out of the broker list, never named as leader, controller or
    /// coordinator, out of every ISR, and its replicas are listed offline (Metadata v5+).
    #[test]
    fn a_down_broker_is_unlisted_offline_and_never_named() {
        let t = topic("orders", &[&[2, 0, 1], &[0, 1, 2]], 10);
        let offsets = topic("__consumer_offsets", &[&[2, 0]], 20);
        let s = snap(&[0, 1, 2], vec![t.clone(), offsets]);
        // The table may still hold node 2's claims for a moment (until the engine's table
        // drops them): the view must not name it either way.
        let table = leaders(&[
            (CONTROLLER_GROUP, 2, 7, &[2, 0, 1]),
            (10, 2, 3, &[2, 0, 1]),
            (11, 0, 3, &[0, 1, 2]),
            (20, 2, 1, &[2, 0]),
        ]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[2],
        };
        assert_eq!(v.broker_ids(), vec![0, 1]);
        assert!(v.broker(2).is_none());
        let p0 = v.partition(&t, 0);
        assert_eq!((p0.error, p0.leader), (code::LEADER_NOT_AVAILABLE, -1));
        assert_eq!(p0.replicas, vec![2, 0, 1], "replicas keep the assignment");
        assert_eq!(p0.offline, vec![2]);
        let p1 = v.partition(&t, 1);
        assert_eq!((p1.error, p1.leader), (code::NONE, 0));
        assert_eq!(p1.isr, vec![0, 1]);
        assert_eq!(p1.offline, vec![2]);
        // The controller leader is down: this node answers for it (and forwards).
        assert_eq!(v.controller_id(), 0);
        assert_eq!(
            v.coordinator("__consumer_offsets", 0),
            Err(COORDINATOR_NOT_AVAILABLE)
        );
        assert_eq!(v.leader_hint(&t, 0), None);
        // This node is never down in its own view.
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[0],
        };
        assert_eq!(v.broker_ids(), vec![0, 1, 2]);
    }

    /// Every id an answer names is one it lists: an ISR member that is not a registered broker
    /// (a node whose registration this node has not applied yet) is left out of the ISR, as a
    /// leader or controller that is not registered is not named (clients such as librdkafka
    /// decommission a broker missing from Metadata's brokers array).
    #[test]
    fn an_unlisted_broker_is_never_named_in_an_isr_or_as_leader() {
        let t = topic("orders", &[&[0, 1, 3], &[3, 0, 1]], 10);
        let s = snap(&[0, 1], vec![t.clone()]);
        let table = leaders(&[
            (CONTROLLER_GROUP, 3, 2, &[3, 0, 1]),
            (10, 0, 3, &[0, 3, 1]),
            (11, 3, 3, &[3, 0, 1]),
        ]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        let listed = v.broker_ids();
        assert_eq!(listed, vec![0, 1]);
        let p0 = v.partition(&t, 0);
        assert_eq!((p0.error, p0.leader), (code::NONE, 0));
        assert_eq!(p0.isr, vec![0, 1]);
        let p1 = v.partition(&t, 1);
        assert_eq!((p1.error, p1.leader), (code::LEADER_NOT_AVAILABLE, -1));
        assert!(p1.isr.is_empty());
        assert_eq!(v.controller_id(), 0);
        for p in [p0, p1] {
            assert!(p.isr.iter().all(|b| listed.contains(b)), "{p:?}");
        }
    }

    /// FindCoordinator: a group's coordinator is the leader of its offsets partition;
    /// COORDINATOR_NOT_AVAILABLE while that leader (or the topic) is unknown.
    #[test]
    fn coordinator_is_the_offsets_partition_leader() {
        let offsets = topic("__consumer_offsets", &[&[0, 1], &[1, 2]], 20);
        let s = snap(&[0, 1, 2], vec![offsets]);
        let table = leaders(&[(20, 1, 3, &[0, 1])]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        let c = v.coordinator("__consumer_offsets", 0).unwrap();
        assert_eq!((c.id, c.host.as_str(), c.port), (1, "10.0.0.1", 9092));
        assert_eq!(
            v.coordinator("__consumer_offsets", 1),
            Err(COORDINATOR_NOT_AVAILABLE)
        );
        assert_eq!(
            v.coordinator("__consumer_offsets", 5),
            Err(COORDINATOR_NOT_AVAILABLE)
        );
        let bare = snap(&[0, 1, 2], vec![]);
        let v = ClusterView {
            snap: &bare,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        assert_eq!(
            v.coordinator("__consumer_offsets", 0),
            Err(COORDINATOR_NOT_AVAILABLE)
        );
        // One node: always this node.
        let one = snap(&[], vec![]);
        let none = leaders(&[]);
        let v = ClusterView {
            snap: &one,
            this: this(0),
            leader_of: &none,
            down: &[],
        };
        assert_eq!(v.coordinator("__consumer_offsets", 3), Ok(this(0)));
    }

    /// KIP-951: a NOT_LEADER_OR_FOLLOWER answer names the current leader when it is another
    /// reachable broker; replicas hosted here are recognised by the assignment.
    #[test]
    fn leader_hints_name_only_other_known_leaders() {
        let t = topic("t", &[&[1, 0], &[0, 1], &[2, 1]], 30);
        let s = snap(&[0, 1, 2], vec![t.clone()]);
        let table = leaders(&[(30, 1, 5, &[1, 0]), (31, 0, 6, &[0, 1])]);
        let v = ClusterView {
            snap: &s,
            this: this(0),
            leader_of: &table,
            down: &[],
        };
        assert_eq!(v.leader_hint(&t, 0), Some((1, 5)));
        assert_eq!(v.leader_hint(&t, 1), None, "we lead it ourselves");
        assert_eq!(v.leader_hint(&t, 2), None, "leader unknown");
        assert!(hosts_replica(&t, 0, 0));
        assert!(hosts_replica(&t, 1, 0));
        assert!(!hosts_replica(&t, 2, 0));
        assert!(!hosts_replica(&t, 9, 0));
        // One response naming the leader of partitions 0 twice lists its endpoint once.
        let mut hints = LeaderHints::default();
        assert_eq!(hints.hint(&v, &t, 0), Some((1, 5)));
        assert_eq!(hints.hint(&v, &t, 0), Some((1, 5)));
        assert_eq!(hints.hint(&v, &t, 2), None);
        let e = hints.endpoints();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].id, e[0].host.as_str()), (1, "10.0.0.1"));
    }
}
