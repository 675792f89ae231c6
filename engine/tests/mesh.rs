//! Two cores joined by the channel mesh: metadata changes made on core 1 run on core 0, reach
//! every core, and partitions are written and read through their owners from either core.
//! Also checks that topics survive a restart with a different core count.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use freshet_engine::{new_mesh, Acks, BrokerConfig, Shard};
use freshet_storage::batch::build_batch;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

/// One valid uncompressed v2 batch with `n` records of 1-byte values (the storage crate's
/// test builder).
fn batch(n: i32) -> Bytes {
    Bytes::from(build_batch(n as usize, 1, 1_700_000_000_000, b'x'))
}

fn run_cores<F, Fut>(cores: usize, data_dir: std::path::PathBuf, body: F)
where
    F: FnOnce(std::rc::Rc<Shard>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let mut cfg = BrokerConfig::new(data_dir, "127.0.0.1:0".into(), 0, cores);
    cfg.num_partitions = 1;
    let mesh = new_mesh(cores, 64);
    let stop = Arc::new(AtomicBool::new(false));
    let results = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(cores))
        .on_all_shards(move || async move {
            let shard = Shard::start(cfg, mesh, freshet_engine::system_clock(), stop)
                .await
                .expect("shard starts");
            body(shard.clone()).await;
            shard.close_partitions().await;
        })
        .unwrap()
        .join_all();
    for r in results {
        r.expect("core ran to completion");
    }
}

#[test]
fn topics_created_on_any_core_are_served_by_their_owners_and_survive_restart() {
    let dir = std::env::temp_dir().join(format!("freshet-mesh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run_cores(2, dir.clone(), |shard| async move {
        if shard.core() == 1 {
            let t = shard
                .create_topic("orders".into(), 4, -1, None, vec![])
                .await
                .expect("created via core 0");
            assert_eq!(t.partitions, 4);
            // Every core has applied the change before create_topic returned.
            for c in 0..2 {
                let seen = shard
                    .invoke_on(c, |s| async move { s.metadata().topic("orders").is_some() })
                    .await
                    .unwrap();
                assert!(seen, "core {c} has the topic");
            }
            // Write every partition from core 1 through its owner, acks=all.
            for p in 0..4 {
                let owner = shard.owner_of("orders", p);
                let out = shard
                    .invoke_on(owner, move |s| async move {
                        s.local_replicate("orders", p, batch(p + 1), Acks::All)
                            .await
                    })
                    .await
                    .unwrap()
                    .expect("appended");
                assert_eq!(out.base_offset, 0);
                assert_eq!(out.last_offset, p as i64);
            }
            assert!(shard
                .create_topic("orders".into(), 1, -1, None, vec![])
                .await
                .is_err());
            // Tell core 0 we are done (it serves our calls until then).
            shard
                .invoke_on(0, |s| async move {
                    s.extension(|| std::cell::Cell::new(false)).set(true)
                })
                .await
                .unwrap();
        } else {
            let done = shard.extension(|| std::cell::Cell::new(false));
            for _ in 0..1000 {
                if done.get() {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(done.get(), "core 1 finished within 10 s");
        }
    });
    // Restart with one core: metadata and data are back.
    run_cores(1, dir.clone(), |shard| async move {
        let t = shard
            .metadata()
            .topic("orders")
            .cloned()
            .expect("persisted");
        assert_eq!(t.partitions, 4);
        for p in 0..4 {
            let d = shard
                .local_read("orders", p, 0, 1 << 20)
                .await
                .expect("readable");
            assert_eq!(d.offsets.high_watermark, p as i64 + 1);
            assert_eq!(d.records.len(), batch(p + 1).len());
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
