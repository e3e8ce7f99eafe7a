//! Project automation. `cargo xtask ci` runs everything CI runs, in the order a developer wants
//! to hear about failures: formatting, lints, tests, docs.

mod workload;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci       fmt check, clippy -D warnings, the whole test suite, docs with -D warnings
  fmt      cargo fmt --all --check
  clippy   cargo clippy --workspace --all-targets --all-features -- -D warnings
  test     cargo test --workspace --all-features
  doc      cargo doc --workspace --all-features --no-deps with -D warnings
  lean     the facade with only `scope` pulls in neither regex nor sled (part of ci)
  workload [N]
           print N (default 100000) recorded calls, one JSON object per line, mixing every
           guard's functions, for `agenthalt eval` throughput runs";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let steps: &[Step] = match task.as_str() {
        "ci" => {
            if let Err(msg) = lean_scope_build() {
                #[allow(clippy::print_stderr, reason = "a command-line tool reports failure")]
                {
                    eprintln!("xtask: {msg}");
                }
                return ExitCode::FAILURE;
            }
            &[FMT, CLIPPY, TEST, DOC]
        }
        "lean" => {
            return match lean_scope_build() {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    #[allow(clippy::print_stderr, reason = "a command-line tool reports failure")]
                    {
                        eprintln!("xtask: {msg}");
                    }
                    ExitCode::FAILURE
                }
            };
        }
        "fmt" => &[FMT],
        "clippy" => &[CLIPPY],
        "test" => &[TEST],
        "doc" => &[DOC],
        "workload" => {
            let n = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
            return match workload::write(n, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        _ => {
            #[allow(clippy::print_stderr, reason = "the usage text of a command-line tool")]
            {
                eprintln!("{USAGE}");
            }
            return ExitCode::from(2);
        }
    };
    for step in steps {
        if let Err(msg) = run(step) {
            #[allow(clippy::print_stderr, reason = "a command-line tool reports failure")]
            {
                eprintln!("xtask: {msg}");
            }
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const FMT: Step = Step { name: "fmt", args: &["fmt", "--all", "--check"], env: &[] };
const CLIPPY: Step = Step {
    name: "clippy",
    args: &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
    env: &[],
};
const TEST: Step = Step { name: "test", args: &["test", "--workspace", "--all-features"], env: &[] };
const DOC: Step = Step {
    name: "doc",
    args: &["doc", "--workspace", "--all-features", "--no-deps"],
    env: &[("RUSTDOCFLAGS", "-D warnings")],
};

/// DESIGN: `agenthalt --no-default-features --features scope` depends on neither regex nor sled.
fn lean_scope_build() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "agenthalt",
            "--no-default-features",
            "--features",
            "scope",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .map_err(|e| format!("lean: cannot start cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!("lean: cargo tree failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let heavy: Vec<&str> = tree.lines().filter(|l| l.starts_with("regex v") || l.starts_with("sled v")).collect();
    if heavy.is_empty() { Ok(()) } else { Err(format!("lean: the scope-only facade pulls in {}", heavy.join(", "))) }
}

fn run(step: &Step) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    #[allow(clippy::print_stderr, reason = "progress of a command-line tool")]
    {
        eprintln!("xtask: running {}: cargo {}", step.name, step.args.join(" "));
    }
    let status = Command::new(cargo)
        .args(step.args)
        .envs(step.env.iter().copied())
        .status()
        .map_err(|e| format!("{}: cannot start cargo: {e}", step.name))?;
    if status.success() { Ok(()) } else { Err(format!("{} failed ({status})", step.name)) }
}
