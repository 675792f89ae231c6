//! Set-up shared by the raft crate's runtime tests: a glommio executor to run a scenario in,
//! a data batch builder and a polling wait.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet_raft::batch::encode_batch;

/// Runs `f` on a fresh glommio executor and waits for it.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}

/// One Kafka v2 batch of `records` one-byte records.
pub fn batch(records: usize) -> Bytes {
    let recs: Vec<_> = (0..records).map(|_| (None, Some(&b"v"[..]))).collect();
    encode_batch(0, 0, -1, &recs)
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}
