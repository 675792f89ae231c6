//! The `freshet` binary: broker (`freshet start`) and client-side tools.
mod bench;
mod cli;
mod client;
mod start;

use clap::{Parser, Subcommand};

/// See `freshet_net::alloc`: huge speculative allocations by the protocol decoder must not
/// abort the broker.
#[global_allocator]
static ALLOCATOR: freshet_net::alloc::BrokerAllocator = freshet_net::alloc::BrokerAllocator;

/// Freshet: a Kafka-compatible event streaming engine.
#[derive(Parser, Debug)]
#[command(name = "freshet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Start(start::StartArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() {
    let args = match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => cli::exit_on_parse_error(e),
    };
    let code = match args.command {
        Command::Start(a) => start::run(a),
        Command::Client(c) => cli::run(c),
    };
    std::process::exit(code);
}
