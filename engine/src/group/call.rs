//! Group requests as messages, so they can run on the core that owns the group.
//!
//! A connection's core turns a Kafka request into [`GroupCall`]s, one per group, and hands each
//! to a [`GroupRouter`], which runs it on the owning core (`GroupService::dispatch` there,
//! directly when local, over the channel mesh otherwise) and brings back the [`GroupReply`].
//! Both types are plain `Send` data.

use super::api::*;
use super::error::GroupError;
use super::service::{GroupService, LocalFuture};

/// One group operation, addressed to the core owning the group (or, for `List`, to each core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    Commit(CommitRequest),
    Fetch {
        group_id: String,
        /// `None`: every committed offset of the group.
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    List {
        states: Vec<String>,
        types: Vec<String>,
    },
    Describe {
        group_id: String,
    },
    DeleteGroup {
        group_id: String,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
}

impl GroupCall {
    /// The group this call is about (`None` for `List`, which goes to every core).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupCall::Join(r) => Some(&r.group_id),
            GroupCall::Sync(r) => Some(&r.group_id),
            GroupCall::Heartbeat(r) => Some(&r.group_id),
            GroupCall::Commit(r) => Some(&r.group_id),
            GroupCall::Leave { group_id, .. }
            | GroupCall::Fetch { group_id, .. }
            | GroupCall::Describe { group_id }
            | GroupCall::DeleteGroup { group_id }
            | GroupCall::DeleteOffsets { group_id, .. } => Some(group_id),
            GroupCall::List { .. } => None,
        }
    }
}

impl GroupCall {
    /// The reply carrying `error` for this call (when it could not reach its core).
    pub fn error_reply(&self, error: GroupError) -> GroupReply {
        let code = error.code();
        match self {
            GroupCall::Join(r) => GroupReply::Join(JoinResponse::error(code, r.member_id.clone())),
            GroupCall::Sync(_) => GroupReply::Sync(SyncResponse::error(code)),
            GroupCall::Heartbeat(_) => GroupReply::Heartbeat(code),
            GroupCall::Leave { .. } => GroupReply::Leave(Err(error)),
            GroupCall::Commit(_) => GroupReply::Commit(Err(error)),
            GroupCall::Fetch { .. } => GroupReply::Fetch(Err(error)),
            GroupCall::List { .. } => GroupReply::List(code, Vec::new()),
            GroupCall::Describe { .. } => GroupReply::Describe(Err(error)),
            GroupCall::DeleteGroup { .. } => GroupReply::DeleteGroup(code),
            GroupCall::DeleteOffsets { .. } => GroupReply::DeleteOffsets(Err(error)),
        }
    }
}

/// Answer to a [`GroupCall`] (same variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
    /// Kafka error code.
    Heartbeat(i16),
    Leave(Result<Vec<LeaveResult>, GroupError>),
    Commit(Result<Vec<(String, i32, i16)>, GroupError>),
    Fetch(Result<Vec<FetchedOffset>, GroupError>),
    /// (error code, groups of that core).
    List(i16, Vec<ListedGroup>),
    Describe(Result<DescribedGroup, GroupError>),
    /// Kafka error code.
    DeleteGroup(i16),
    DeleteOffsets(Result<Vec<(String, i32, i16)>, GroupError>),
}

impl GroupService {
    /// Runs one call on this core's coordinator.
    pub async fn dispatch(&self, call: GroupCall) -> GroupReply {
        match call {
            GroupCall::Join(r) => GroupReply::Join(self.join(r).await),
            GroupCall::Sync(r) => GroupReply::Sync(self.sync(r).await),
            GroupCall::Heartbeat(r) => GroupReply::Heartbeat(self.heartbeat(&r)),
            GroupCall::Leave { group_id, members } => {
                GroupReply::Leave(self.leave(&group_id, &members).await)
            }
            GroupCall::Commit(r) => GroupReply::Commit(self.commit(&r).await),
            GroupCall::Fetch { group_id, topics } => {
                GroupReply::Fetch(self.fetch_offsets(&group_id, topics.as_deref()))
            }
            GroupCall::List { states, types } => {
                let (e, g) = self.list_groups(&states, &types);
                GroupReply::List(e, g)
            }
            GroupCall::Describe { group_id } => GroupReply::Describe(self.describe(&group_id)),
            GroupCall::DeleteGroup { group_id } => {
                GroupReply::DeleteGroup(self.delete_group(&group_id).await)
            }
            GroupCall::DeleteOffsets {
                group_id,
                partitions,
            } => GroupReply::DeleteOffsets(self.delete_offsets(&group_id, &partitions).await),
        }
    }
}

/// Runs group calls on the right core. Implemented by the broker over its channel mesh; the
/// net handlers use only this. Per core (`!Send`).
pub trait GroupRouter {
    /// Number of cores (for `List`, which asks each).
    fn cores(&self) -> usize;
    /// The core owning `group_id` (the core of its `__consumer_offsets` partition).
    fn core_of_group(&self, group_id: &str) -> usize;
    /// Runs `call` on `core` and returns its reply.
    fn call(&self, core: usize, call: GroupCall) -> LocalFuture<'_, GroupReply>;
}
