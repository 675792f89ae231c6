//! freshet-raft
