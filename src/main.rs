//! The `dyeing-gateway` binary: parses the command line and hands over to `cli`.

fn main() {
    std::process::exit(dyeing_gateway::cli::main());
}
