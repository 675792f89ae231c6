//! Log scenarios over the simulated disk.
mod common;
use common::*;
use freshet_storage::SimDisk;
use futures_lite::future::block_on;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from("/sim/topic-0")
}

#[test]
fn append_read_reopen() {
    block_on(scenario_append_read_reopen(SimDisk::new(1), dir()));
}
#[test]
fn read_limits_kip74() {
    block_on(scenario_read_limits(SimDisk::new(2), dir()));
}
#[test]
fn rejects_bad_batches() {
    block_on(scenario_rejects_bad_batches(SimDisk::new(3), dir()));
}
#[test]
fn timestamps_and_log_append_time() {
    block_on(scenario_timestamps(SimDisk::new(4), dir()));
}
#[test]
fn truncate_divergent_suffix() {
    block_on(scenario_truncate(SimDisk::new(5), dir()));
}
#[test]
fn prefix_truncate_and_retention() {
    block_on(scenario_prefix_and_retention(SimDisk::new(6), dir()));
}
#[test]
fn roll_by_age() {
    block_on(scenario_roll_by_age(SimDisk::new(7), dir()));
}
#[test]
fn concurrent_flush() {
    block_on(scenario_concurrent_flush(SimDisk::new(8), dir()));
}
