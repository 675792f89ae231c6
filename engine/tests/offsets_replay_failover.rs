//! The group coordinator's replay of a `__consumer_offsets` partition on the replica that has
//! just been elected its leader (`group::wire::replay_offsets_partition`), with three replicas
//! of one partition on their own Raft runtimes over loopback TCP, as the broker runs them: the
//! replay starts from the status change that reports the new leadership.
//!
//! Raft §5.4.2: a new leader counts the entries of earlier terms as committed only once an
//! entry of its own term is, so `Partition::read` gives nothing until then — even when the
//! high watermark it applied as a follower already covers its whole log. The replay must wait
//! for that entry, not only for the high watermark; reading at once found "nothing below the
//! high watermark", failed the load and left the groups COORDINATOR_LOAD_IN_PROGRESS for
//! another retry interval (a coordinator failover took 500 ms longer than it needed).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use freshet_engine::group::wire::replay_offsets_partition;
use freshet_engine::partition::{Acks, Partition};
use glommio::channels::local_channel;

mod common {
    pub mod raft_mesh;
}
use common::raft_mesh::{partition_spec, raft_mesh, wait_until, PartitionSlot};

const GROUP: u64 = 11;

/// One offset commit as the coordinator appends it: a batch of keyed records.
fn commit_batch(i: u8) -> Bytes {
    let (key, value) = ([b'k', i], [b'v', i]);
    freshet_raft::batch::encode_batch(
        0,
        1_700_000_000_000,
        -1,
        &[(Some(&key[..]), Some(&value[..]))],
    )
}

#[test]
fn a_new_offsets_leader_replays_every_commit_from_the_status_change_that_elects_it() {
    let dir = std::env::temp_dir().join(format!("freshet-offsets-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mesh = raft_mesh(&[1, 2, 3]);
            let mut slots: Vec<(u64, PartitionSlot)> = Vec::new();
            for (node, (raft, slot)) in (1..=3u64).zip(&mesh) {
                let spec = partition_spec(
                    "__consumer_offsets",
                    [2; 16],
                    GROUP,
                    vec![0, 1, 2],
                    d.join(format!("node-{node}")),
                    2,
                );
                let p = Partition::open(spec, raft.clone(), node, freshet_engine::system_clock())
                    .await
                    .expect("partition opens");
                *slot.borrow_mut() = Some(p.clone());
                if let Some(st) = raft.status(GROUP) {
                    p.on_status(&st);
                }
                slots.push((node, slot.clone()));
            }
            let p = |i: usize| slots[i].1.borrow().clone().expect("open");
            wait_until("a leader", 15, || (0..3).any(|i| p(i).is_leader())).await;
            let old = (0..3).find(|&i| p(i).is_leader()).unwrap();
            for i in 0..3u8 {
                p(old).replicate(commit_batch(i), Acks::All).await.unwrap();
            }
            // Every replica applied the three commits: a follower's high watermark covers its log.
            for i in 0..3 {
                wait_until("every replica applied the commits", 15, || {
                    p(i).high_watermark() == 3 && p(i).offsets().log_end_offset == 3
                })
                .await;
            }
            // On the followers, the status change that makes one of them leader starts the
            // replay there (as group::wire's on_partition_leadership does).
            let (tx, rx) = local_channel::new_bounded(2);
            let tx = Rc::new(tx);
            let started = Rc::new(Cell::new(false));
            for (i, (raft, _)) in mesh.iter().enumerate().filter(|(i, _)| *i != old) {
                let slot = slots[i].1.clone();
                let (tx, started) = (tx.clone(), started.clone());
                raft.on_change(Box::new(move |_, _| {
                    let Some(p) = slot.borrow().clone() else {
                        return;
                    };
                    if !p.is_leader() || started.replace(true) {
                        return;
                    }
                    let tx = tx.clone();
                    glommio::spawn_local(async move {
                        let replayed = replay_offsets_partition(&p, || true).await;
                        let _ = tx.try_send((p.high_watermark(), replayed));
                    })
                    .detach();
                }));
            }
            // The leader's node goes away.
            let gone = slots[old].1.borrow_mut().take().unwrap();
            gone.close(false).await.unwrap();
            let (hw, replayed) =
                futures_lite::future::or(async { rx.recv().await.unwrap() }, async {
                    glommio::timer::sleep(Duration::from_secs(15)).await;
                    panic!("no follower became leader");
                })
                .await;
            let replayed = replayed.expect("the new leader replays its offsets partition");
            let keys: Vec<&[u8]> = replayed.iter().map(|(k, _)| &k[..]).collect();
            assert_eq!(
                keys,
                vec![&b"k\x00"[..], b"k\x01", b"k\x02"],
                "every commit, in order"
            );
            assert_eq!(hw, 3);
            for (raft, _) in &mesh {
                raft.stop().await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
