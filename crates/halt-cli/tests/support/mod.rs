//! What the MCP proxy's process tests share.

#![allow(dead_code, reason = "each test file uses a part")]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `agenthalt mcp-proxy --listen 127.0.0.1:0` with `args`, stopped when dropped.
pub(crate) struct Listening {
    child: Child,
    /// Where it serves MCP.
    pub(crate) url: String,
}

impl Listening {
    pub(crate) fn start(args: &[&OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agenthalt"))
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
