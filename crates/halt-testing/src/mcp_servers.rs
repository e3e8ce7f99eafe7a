//! The reference MCP servers from npm (`@modelcontextprotocol/server-filesystem` and
//! `server-everything`), run with the machine's Node.js: real peers nobody here wrote.
//!
//! They are looked for under `$AGENTHALT_MCP_SERVERS` (default `~/.cache/agenthalt-mcp`, where
//! `.ci/run` installs them), and the Python `mcp` SDK (PyPI) under its `python/` folder. Under
//! `CI=true` a missing one is a failure, never a quiet skip.

#![allow(clippy::print_stderr, reason = "a skipped test says so")]

use std::path::{Path, PathBuf};

/// The packages a test may ask for.
pub const PACKAGES: [&str; 2] = ["server-filesystem", "server-everything"];

/// Where the reference servers are installed.
#[derive(Debug, Clone)]
pub struct McpServers {
    dir: PathBuf,
}

impl McpServers {
    /// The installed servers, or `None` (outside CI) when one is missing.
    ///
    /// # Panics
    /// Under `CI=true`, when one is missing.
    #[must_use]
    pub fn find() -> Option<Self> {
        let dir = std::env::var_os("AGENTHALT_MCP_SERVERS").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/agenthalt-mcp"),
            PathBuf::from,
        );
        let servers = Self { dir };
        if PACKAGES.iter().all(|p| servers.script(p).exists()) {
            return Some(servers);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the reference MCP servers are missing from {}: `npm install --prefix {0} @modelcontextprotocol/server-filesystem @modelcontextprotocol/server-everything`",
            servers.dir.display()
        );
        eprintln!("SKIPPED: the reference MCP servers are not installed in {}", servers.dir.display());
        None
    }

    /// The folder holding the Python `mcp` SDK, for `PYTHONPATH`; `None` (outside CI) when it
    /// is not installed.
    ///
    /// # Panics
    /// Under `CI=true`, when it is missing.
    #[must_use]
    pub fn python_sdk(&self) -> Option<PathBuf> {
        let dir = self.dir.join("python");
        if dir.join("mcp/__init__.py").exists() {
            return Some(dir);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Python mcp SDK is missing: `python3 -m pip install --target {} mcp`",
            dir.display()
        );
        eprintln!("SKIPPED: the Python mcp SDK is not installed in {}", dir.display());
        None
    }

    /// The script that starts `package` (one of [`PACKAGES`]) with `node`.
    #[must_use]
    pub fn script(&self, package: &str) -> PathBuf {
        self.dir.join("node_modules/@modelcontextprotocol").join(package).join("dist/index.js")
    }

    /// The command that starts `package` with `args`, its standard error silenced.
    #[must_use]
    pub fn command(&self, package: &str, args: &[&Path]) -> std::process::Command {
        let mut command = std::process::Command::new("node");
        command.arg(self.script(package)).args(args).stderr(std::process::Stdio::null());
        command
    }
}
