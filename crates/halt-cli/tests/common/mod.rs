//! What the binary's tests share: running it on a policy and some input.

#![allow(dead_code, reason = "each test file uses a part")]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The binary under test: this build's, or the one `AGENTHALT_BIN` names (to run these tests
/// against another build, such as an older release that had a bug).
pub(crate) fn bin() -> Command {
    Command::new(std::env::var_os("AGENTHALT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_agenthalt").into()))
}

pub(crate) fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agenthalt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

pub(crate) fn eval(policy: &str, input: &str, extra: &[&str]) -> (Output, Vec<Value>) {
    // Tests run in parallel: every policy gets a file of its own.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let config = temp_file(&format!("policy-{}.yaml", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)), policy);
    let mut child = bin()
        .args(["eval", "--config", config.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading (an invalid policy): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let lines =
        String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out, lines)
}

/// `agenthalt mcp-proxy --listen 127.0.0.1:0` with `args`, stopped when dropped.
pub(crate) struct Listening {
    child: Child,
    /// Where it serves MCP.
    pub(crate) url: String,
}

impl Listening {
    pub(crate) fn start(args: &[&OsStr]) -> Self {
        let mut child = bin()
            .arg("mcp-proxy")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(Ok(url.trim().to_owned()));
                }
                said.push(line);
            }
            let _ = tx.send(Err(said.join("\n")));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(url)) => Self { child, url },
            Ok(Err(said)) => panic!("the proxy exited ({:?}): {said}", child.wait()),
            Err(e) => panic!("the proxy did not say where it listens: {e}"),
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference server-everything serving Streamable HTTP on a port of its own, stopped when
/// dropped.
pub(crate) struct EverythingHttp {
    child: Child,
    /// Its MCP endpoint.
    pub(crate) url: String,
}

impl EverythingHttp {
    pub(crate) fn start(servers: &halt_testing::mcp_servers::McpServers) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = servers.command("server-everything", &[std::path::Path::new("streamableHttp")]);
        let child = command.env("PORT", port.to_string()).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        // Stopped when dropped, even if it never listens.
        let server = Self { child, url: format!("http://127.0.0.1:{port}/mcp") };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server-everything did not listen on {port}");
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
