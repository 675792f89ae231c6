//! The seam between nodes: one [`Envelope`] per ordered node pair per driver pass, holding
//! every Raft message of every group for that destination, with heartbeats coalesced into
//! compact [`Beat`]s (group, term, commit) instead of full messages.
//!
//! Ownership: envelopes are plain values moved between nodes (the real transport serializes
//! them; the simulator moves them through [`crate::sim::SimNetwork`]). A `Transport` is per
//! core, `!Send`.

use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};

/// Identifies a Raft group (one per partition); assigned by the engine.
pub type GroupId = u64;
/// Identifies a node; equal to the Raft peer id of its replica in every group.
pub type NodeId = u64;

/// A heartbeat or heartbeat response of one group, without the per-message overhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The group.
    pub group: GroupId,
    /// Sender's term.
    pub term: u64,
    /// Heartbeat: `min(matched, committed)` the leader sends; response: follower's commit.
    pub commit: u64,
    /// ReadIndex context (empty unless a read-index request is in flight).
    pub context: Bytes,
}

/// Everything one node sends another in one pass.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Sender node.
    pub from: NodeId,
    /// Destination node.
    pub to: NodeId,
    /// Full Raft messages (appends, votes, their responses, ...), each tagged with its group.
    pub messages: Vec<(GroupId, Message)>,
    /// Coalesced `MsgHeartbeat`s.
    pub heartbeats: Vec<Beat>,
    /// Coalesced `MsgHeartbeatResponse`s.
    pub heartbeat_responses: Vec<Beat>,
}

impl Envelope {
    /// An empty envelope from `from` to `to`.
    pub fn new(from: NodeId, to: NodeId) -> Self {
        Self {
            from,
            to,
            ..Default::default()
        }
    }

    /// True if there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.heartbeats.is_empty()
            && self.heartbeat_responses.is_empty()
    }

    /// Adds a message of `group`; heartbeats and their responses are coalesced into beats.
    pub fn push(&mut self, group: GroupId, m: Message) {
        assert_eq!(m.to, self.to, "message for another node in this envelope");
        assert_eq!(
            m.from, self.from,
            "message from another node in this envelope"
        );
        let beat = |m: &Message| Beat {
            group,
            term: m.term,
            commit: m.commit,
            context: m.context.clone(),
        };
        match m.get_msg_type() {
            MessageType::MsgHeartbeat => self.heartbeats.push(beat(&m)),
            MessageType::MsgHeartbeatResponse => self.heartbeat_responses.push(beat(&m)),
            _ => self.messages.push((group, m)),
        }
    }

    /// Expands the envelope back into per-group Raft messages, in a fixed order: heartbeats,
    /// heartbeat responses, then the other messages in the order they were sent.
    pub fn into_messages(self) -> Vec<(GroupId, Message)> {
        let (from, to) = (self.from, self.to);
        let expand = |b: Beat, t: MessageType| {
            let mut m = Message {
                from,
                to,
                term: b.term,
                commit: b.commit,
                context: b.context,
                ..Default::default()
            };
            m.set_msg_type(t);
            (b.group, m)
        };
        let mut out = Vec::with_capacity(
            self.heartbeats.len() + self.heartbeat_responses.len() + self.messages.len(),
        );
        out.extend(
            self.heartbeats
                .into_iter()
                .map(|b| expand(b, MessageType::MsgHeartbeat)),
        );
        out.extend(
            self.heartbeat_responses
                .into_iter()
                .map(|b| expand(b, MessageType::MsgHeartbeatResponse)),
        );
        out.extend(self.messages);
        out
    }
}

/// Sends envelopes to other nodes. Delivery is best-effort: Raft tolerates loss, duplication
/// and reordering of messages (it retries); a transport must never corrupt one.
pub trait Transport {
    /// Queues `env` for delivery to `env.to`.
    fn send(&self, env: Envelope);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MessageType, term: u64, commit: u64) -> Message {
        let mut m = Message {
            from: 1,
            to: 2,
            term,
            commit,
            ..Default::default()
        };
        m.set_msg_type(t);
        m
    }

    #[test]
    fn heartbeats_of_many_groups_travel_as_beats_and_expand_back() {
        let mut env = Envelope::new(1, 2);
        for g in 0..100 {
            env.push(g, msg(MessageType::MsgHeartbeat, 3, g));
        }
        env.push(7, msg(MessageType::MsgHeartbeatResponse, 3, 9));
        env.push(8, msg(MessageType::MsgAppend, 3, 1));
        assert_eq!(env.heartbeats.len(), 100);
        assert_eq!(env.messages.len(), 1);
        let back = env.into_messages();
        assert_eq!(back.len(), 102);
        let (g, m) = &back[42];
        assert_eq!(*g, 42);
        assert_eq!(m.get_msg_type(), MessageType::MsgHeartbeat);
        assert_eq!((m.from, m.to, m.term, m.commit), (1, 2, 3, 42));
        assert_eq!(
            back[100].1.get_msg_type(),
            MessageType::MsgHeartbeatResponse
        );
        assert_eq!(back[101].0, 8);
    }
}
