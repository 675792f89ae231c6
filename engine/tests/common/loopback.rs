//! Brokers of one test process talking over loopback TCP: free ports, and a broker's
//! configuration with its cluster RPC address and seeds. Plain values (no executor).
//!
//! A test crate takes it as `mod common { pub mod loopback; }` (only what it uses, as
//! `raft_mesh.rs` says).

use std::path::PathBuf;

use freshet_engine::BrokerConfig;

/// A loopback port nobody listens on right now (the OS picks it; released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Broker `node` with `cores` cores and its data in `data_dir`: Kafka listener on a free
/// port, cluster RPC on `rpc`, seeds `seeds` (loopback ports), leader reports every 200 ms.
pub fn broker_config(
    data_dir: PathBuf,
    node: i32,
    cores: usize,
    rpc: u16,
    seeds: &[u16],
) -> BrokerConfig {
    let mut cfg = BrokerConfig::new(data_dir, format!("127.0.0.1:{}", free_port()), node, cores);
    cfg.cluster.rpc_addr = format!("127.0.0.1:{rpc}");
    cfg.cluster.seeds = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    cfg.cluster.leaders_report_interval_ms = 200;
    cfg
}
