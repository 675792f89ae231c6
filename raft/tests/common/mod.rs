//! Set-up shared by the raft crate's runtime tests: a glommio executor to run a scenario in,
//! and a data batch builder.

use std::future::Future;

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
