//! `agenthalt`: the command-line entry point of AgentHalt.

mod audit;
mod demo;
mod eval;
mod log;
mod mcp;
mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use halt_config::PolicyLoader;

/// The command evaluates calls on several threads and allocates on every call: an allocator
/// built for that (glibc's is slow to free across threads) pays off here. Libraries leave the
/// choice to the program, as this one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Guardrails for AI agent tool calls, decided by policy, never by the prompt.
#[derive(Debug, Parser)]
#[command(name = "agenthalt", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file and summarise its guards.
    #[command(
        after_help = "Examples:\n  agenthalt check examples/policy.yaml\n\nExit status: 0 when valid, 2 with the errors on stderr."
    )]
    Check {
        /// The policy file (YAML or JSON).
        file: PathBuf,
    },
    /// Print the JSON Schema of policy files (for editors).
    #[command(after_help = "Examples:\n  agenthalt schema > agenthalt.schema.json")]
    Schema,
    /// Dry-run a policy against recorded calls: one JSON call per line in, one decision per line out.
    #[command(after_help = "Examples:
  agenthalt eval --config examples/policy.yaml --input examples/calls.jsonl --clock replay
  cat calls.jsonl | agenthalt eval --config policy.yaml --summary

Input lines: {\"call_id\"?, \"function_name\", \"arguments\"?, \"agent_id\"?, \"session_id\"?, \"timestamp\"?, \"metadata\"?}
Output lines: {\"call_id\", \"function_name\", \"decision\", \"executed\", \"risk_score\", \"reasons\", \"guards\", \"modified_arguments\"?}
A line that is not a valid call is answered with {\"line\": N, \"error\": \"...\"} and the run goes on.
Calls that would run commit their effects (spend, counts) before the next line.

Exit status: 0, 1 on an I/O failure, 2 for an invalid policy (before any input is read).")]
    Eval(EvalArgs),
    /// Run the server on the embedded store with a scripted agent whose story trips every
    /// guard; watch it and decide its approvals at the dashboard.
    #[command(after_help = "Examples:
  agenthalt demo                 # http://127.0.0.1:8550/, sign in with the token it prints
  agenthalt demo --headless      # the same story, approvals decided by script, then a summary

Each run starts the story afresh in --dir (its sled store, policy and audit log).

Exit status: 0; with --headless, 1 unless every guard denied or asked at least once.")]
    Demo(DemoArgs),
    /// Run the decision server: agents in any language ask it over HTTP before they act.
    #[command(after_help = "Examples:
  agenthalt serve --config examples/policy.yaml
  agenthalt serve --config policy.yaml --bind 0.0.0.0:8550    # needs server.tokens in the policy

The API is described at /openapi.json and in docs/server.md. SIGHUP reloads the policy (as POST
/v1/policy/reload does); SIGTERM or Ctrl-C stops the server once requests in flight finish.

Exit status: 0 after a clean shutdown, 2 when the policy, the store or the address is refused.")]
    Serve(ServeArgs),
    /// Stand between an MCP client and an MCP server: every tools/call through the policy first.
    #[command(after_help = "Examples:
  agenthalt mcp-proxy --config policy.yaml -- npx -y @modelcontextprotocol/server-filesystem ~/work
  agenthalt mcp-proxy --config policy.yaml --agent-id claude -- node server.js
  agenthalt mcp-proxy --config policy.yaml --listen 127.0.0.1:8931 --upstream http://127.0.0.1:3001/mcp

The server runs as a child speaking MCP on its stdin and stdout, or is reached over Streamable
HTTP (--upstream); the proxy speaks MCP on its own stdin and stdout (stderr is for messages), or
over Streamable HTTP at /mcp on a loopback address (--listen). A denied call comes back as a tool
result with isError; approvals wait on the policy's approval handler (webhook, or a decision
server sharing the store), or go to the client's user with mcp.ask_client. See docs/mcp.md.

Exit status: 0 when the client closes (or, with --listen, on SIGTERM or Ctrl-C), 1 when the server
exits first, 2 when the policy, the server's command or the address is refused.")]
    McpProxy(McpProxyArgs),
    /// Verify or query audit logs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Options of `agenthalt eval`.
#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// The policy file.
    #[arg(long)]
    config: PathBuf,
    /// The calls, one JSON object per line; `-` (the default) reads standard input.
    #[arg(long, default_value = "-")]
    input: String,
    /// `system` uses the wall clock; `replay` follows each call's `timestamp` (never backwards).
    #[arg(long, value_enum, default_value_t = ClockArg::System)]
    clock: ClockArg,
    /// Treat every approval request as approved (the call runs and its effects count); the same
    /// as `--approvals approve-all`.
    #[arg(long, conflicts_with = "approvals")]
    approve_all: bool,
    /// Who answers approval requests: `deny` (the default: nobody, so they are refused),
    /// `approve-all`, or `console` (a person at the terminal decides each, within the policy's
    /// `approvals.timeout_seconds`).
    #[arg(long, value_enum, default_value_t = ApprovalsArg::Deny)]
    approvals: ApprovalsArg,
    /// Write the run's audit log (hash-chained, redacted JSONL) to this file, appending to its
    /// chain if it exists.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Print counts per decision and per guard to standard error at the end.
    #[arg(long)]
    summary: bool,
}

/// Options of `agenthalt demo`.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Decide approvals by script, print a summary and exit (for CI).
    #[arg(long)]
    headless: bool,
    /// The address to listen on (default 127.0.0.1:8550; with --headless, a free port).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// Where the demo keeps its store, policy and audit log (emptied at each start).
    #[arg(long, default_value = ".agenthalt/demo")]
    dir: PathBuf,
}

/// Options of `agenthalt serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The policy file.
    #[arg(long)]
    config: PathBuf,
    /// The address to listen on (default: the policy's `server.bind`, else 127.0.0.1:8550).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
}

/// Options of `agenthalt mcp-proxy`.
#[derive(Debug, clap::Args)]
struct McpProxyArgs {
    /// The policy file.
    #[arg(long)]
    config: PathBuf,
    /// The agent the calls come from (default: the policy's `mcp.agent_id`, else the MCP
    /// client's name).
    #[arg(long)]
    agent_id: Option<String>,
    /// Serve MCP over Streamable HTTP on this loopback address (`127.0.0.1:8931`, path `/mcp`)
    /// rather than on standard input and output.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The MCP server's Streamable HTTP endpoint (`http://127.0.0.1:3001/mcp`), instead of a
    /// command.
    #[arg(long, conflicts_with = "server")]
    upstream: Option<String>,
    /// The MCP server's command and its arguments.
    #[arg(last = true, required_unless_present = "upstream")]
    server: Vec<String>,
}

/// Who answers approval requests in `eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ApprovalsArg {
    Deny,
    ApproveAll,
    Console,
}

/// Which clock `eval` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClockArg {
    System,
    Replay,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Schema => schema(),
        Command::Eval(args) => eval::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Serve(args) => {
            log::install();
            serve::run(&args)
        }
        Command::McpProxy(args) => {
            log::install();
            mcp::run(&args)
        }
        Command::Audit(command) => audit::run(&command),
    }
}

/// The runtime of the commands that serve, or `None` (said on stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| report(&format!("cannot start the runtime: {e}")))
        .ok()
}

#[allow(clippy::print_stderr, reason = "a command-line tool reports errors on stderr")]
fn report(message: &dyn std::fmt::Display) {
    eprintln!("agenthalt: {message}");
}

fn check(file: &std::path::Path) -> ExitCode {
    let policy = match PolicyLoader::new().load_file(file) {
        Ok(p) => p,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    // The engine is built as `eval` builds it, so that `check` never calls valid a policy that
    // `eval` would refuse.
    if let Err(e) = policy.build_engine() {
        report(&format!("{}: {e}", file.display()));
        return ExitCode::from(2);
    }
    if policy.guards.is_empty() {
        report(&format!("warning: {}: the policy has no guards, so every call is allowed", file.display()));
    }
    let mut out = std::io::stdout().lock();
    let store = match &policy.store {
        None => "not set (eval: memory; serve: sled under ./.agenthalt)".to_owned(),
        Some(halt_config::StoreSettings::Memory) => "memory".to_owned(),
        Some(halt_config::StoreSettings::Sled(s)) => {
            format!("sled at {} ({:?})", s.path.display(), s.durability).to_lowercase()
        }
        Some(halt_config::StoreSettings::Redis(r)) => format!("redis at {} (prefix {})", r.url, r.prefix),
    };
    let mut text = format!(
        "{}: valid, {} guard(s), mode {}, store {store}\n",
        file.display(),
        policy.guards.len(),
        serde_json::to_value(policy.engine.mode).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    );
    for g in &policy.guards {
        let state = if g.enabled { "" } else { " (disabled)" };
        text.push_str(&format!("  {} [{}]{state}\n", g.name, g.kind));
        if let serde_json::Value::Object(settings) = g.guard.describe() {
            for (k, v) in settings {
                let empty = v.is_null()
                    || v.as_array().is_some_and(Vec::is_empty)
                    || v.as_object().is_some_and(serde_json::Map::is_empty);
                if !empty {
                    text.push_str(&format!("    {k}: {v}\n"));
                }
            }
        }
    }
    let a = &policy.approvals;
    let handler = serde_json::to_value(a.handler).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let expires = a.expires_after_seconds.unwrap_or(policy.engine.approval_timeout_seconds);
    text.push_str(&format!("  approvals: handler {handler}, expire after {expires} s"));
    for (pattern, n) in &a.require_approvers {
        text.push_str(&format!(", {pattern} needs {n} approvers"));
    }
    text.push_str(&format!("\n  policy version {}\n", policy.version));
    let server = &policy.server;
    let bind = server.bind.as_deref().unwrap_or("127.0.0.1:8550");
    if server.tokens.is_empty() {
        text.push_str(&format!("  serve: {bind}, no tokens (loopback only)\n"));
    } else {
        let mut roles = std::collections::BTreeMap::new();
        for t in &server.tokens {
            *roles.entry(t.role.as_str()).or_insert(0) += 1;
        }
        let roles: Vec<String> = roles.iter().map(|(r, n)| format!("{r} {n}")).collect();
        text.push_str(&format!("  serve: {bind}, {} token(s): {}\n", server.tokens.len(), roles.join(", ")));
    }
    if let Some(a) = &policy.audit {
        let mut sinks = Vec::new();
        if let Some(f) = &a.file {
            sinks.push(format!("file {}", f.path.display()));
        }
        if a.tracing {
            sinks.push("tracing".to_owned());
        }
        if a.memory > 0 {
            sinks.push(format!("memory ({} entries)", a.memory));
        }
        let required = if a.required { ", required" } else { "" };
        text.push_str(&format!("  audit: {}{required}\n", sinks.join(", ")));
    }
    match out.write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

fn schema() -> ExitCode {
    let schema = halt_config::policy_schema(PolicyLoader::new().registry());
    let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
