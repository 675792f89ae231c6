//! The `freshet` binary: broker (`freshet start`) and client-side tools.
mod bench;
mod cli;
mod client;
mod start;

use clap::{Parser, Subcommand};

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
