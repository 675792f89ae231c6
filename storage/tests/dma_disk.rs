//! The same log scenarios on the real disk: glommio DmaFile (O_DIRECT, io_uring).
mod common;
use common::*;
use freshet_storage::DmaDisk;
use std::future::Future;
use std::path::PathBuf;

fn run<F: Future<Output = ()> + 'static>(
    name: &str,
    f: impl FnOnce(PathBuf) -> F + Send + 'static,
) {
    let dir = std::env::temp_dir().join(format!(
        "freshet-storage-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let d2 = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || f(d2))
        .expect("executor")
        .join()
        .expect("test body");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn append_read_reopen() {
    run("arr", |d| scenario_append_read_reopen(DmaDisk, d));
}
#[test]
fn read_limits_kip74() {
    run("limits", |d| scenario_read_limits(DmaDisk, d));
}
#[test]
fn rejects_bad_batches() {
    run("bad", |d| scenario_rejects_bad_batches(DmaDisk, d));
}
#[test]
fn timestamps_and_log_append_time() {
    run("ts", |d| scenario_timestamps(DmaDisk, d));
}
#[test]
fn truncate_divergent_suffix() {
    run("trunc", |d| scenario_truncate(DmaDisk, d));
}
#[test]
fn prefix_truncate_and_retention() {
    run("prefix", |d| scenario_prefix_and_retention(DmaDisk, d));
}
#[test]
fn roll_by_age() {
    run("age", |d| scenario_roll_by_age(DmaDisk, d));
}
#[test]
fn concurrent_flush() {
    run("cflush", |d| scenario_concurrent_flush(DmaDisk, d));
}
