//! `agenthalt`: the command-line entry point of AgentHalt.
//!
//! Subcommands arrive with their crates (`check`, `schema`, `eval`, `serve`, `demo`, `audit`);
//! for now the binary reports its version and help.

use clap::Parser;

/// Guardrails for AI agent tool calls, decided by policy, never by the prompt.
#[derive(Debug, Parser)]
#[command(name = "agenthalt", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
}
