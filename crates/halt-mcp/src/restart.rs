//! A server that exited, started again (`ProxyOptions::restart_server`): its command run again,
//! or its URL connected to again, at most [`MAX_RESTARTS`] times a minute. Requests that come
//! meanwhile wait for it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::service::{Peer, RoleClient, RunningService};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::upstream::Upstream;
use crate::{ProxyError, Shared};

/// How many times a minute a server is started again before the proxy gives up on it.
pub const MAX_RESTARTS: usize = 5;

/// How long a request waits for a server that exited to be started again.
const RESTART_WAIT: Duration = Duration::from_secs(10);

impl Shared {
    /// The server, waiting (up to [`RESTART_WAIT`]) while one that exited is started again.
    pub(crate) async fn live_upstream(&self) -> Peer<RoleClient> {
        let deadline = Instant::now() + RESTART_WAIT;
        loop {
            let restarted = self.restarted.notified();
            let peer = self.upstream();
            let waiting = self.options.restart_server && !self.gone.load(Ordering::Acquire);
            if !peer.is_transport_closed() || !waiting {
                return peer;
            }
            if tokio::time::timeout_at(deadline, restarted).await.is_err() {
                return peer;
            }
        }
    }
}

/// How a server that exited is reached again.
pub(crate) enum Again {
    /// Its command is run again.
    Command(std::process::Command),
    /// Its URL is connected to again.
    Url(String),
}

impl Again {
    /// A new session with the server, attached to `shared`.
    async fn connect(&self, shared: &Arc<Shared>) -> Result<RunningService<RoleClient, Upstream>, ProxyError> {
        let server = match self {
            Self::Command(std) => {
                let mut command = tokio::process::Command::from(std_command(std));
                command.kill_on_drop(true);
                let transport = rmcp::transport::TokioChildProcess::new(command).map_err(ProxyError::Spawn)?;
                Upstream::default().serve(transport).await
            }
            Self::Url(url) => {
                Upstream::default().serve(rmcp::transport::StreamableHttpClientTransport::from_uri(url.clone())).await
            }
        };
        let server = server.map_err(|e| ProxyError::Handshake(e.to_string()))?;
        server.service().attach(shared);
        Ok(server)
    }
}

/// Marks the server gone for good unless it was started again, and tells whoever waits for it.
struct Told<'a>(&'a Shared);

impl Drop for Told<'_> {
    fn drop(&mut self) {
        if self.0.upstream().is_transport_closed() {
            self.0.gone.store(true, Ordering::Release);
        }
        self.0.restarted.notify_waiters();
    }
}

/// Waits on the server until it is gone for good: until `stop`, or until it exits and is not
/// (or can no longer be) started again. The tools it listed are forgotten at each restart, and
/// the client is told the list changed.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    mut server: RunningService<RoleClient, Upstream>,
    again: Option<Again>,
    stop: CancellationToken,
) {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let ct = server.cancellation_token();
        tokio::select! {
            _ = server.waiting() => {}
            () = stop.cancelled() => {
                ct.cancel();
                return;
            }
        }
        let Some(again) = again.as_ref().filter(|_| shared.options.restart_server) else { return };
        // Whatever happens next, those waiting for a server hear of it.
        let _told = Told(&shared);
        loop {
            let now = Instant::now();
            restarts.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            if restarts.len() >= MAX_RESTARTS {
                tracing::warn!("the MCP server exited {MAX_RESTARTS} times within a minute: the proxy stops");
                return;
            }
            restarts.push_back(now);
            // A server that fails at once is not started again at once.
            let pause = Duration::from_millis(100 << restarts.len());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            match again.connect(&shared).await {
                Ok(next) => {
                    tracing::info!("the MCP server exited and was started again");
                    *shared.upstream.write().unwrap_or_else(PoisonError::into_inner) = next.peer().clone();
                    shared.tools.forget();
                    for client in shared.clients() {
                        let _ = client.notify_tool_list_changed().await;
                    }
                    server = next;
                    break;
                }
                Err(e) => tracing::warn!("the MCP server could not be started again: {e}"),
            }
        }
    }
}

/// A copy of a command's program, arguments, environment and folder (its standard streams are
/// the proxy's to set).
pub(crate) fn std_command(command: &std::process::Command) -> std::process::Command {
    let mut copy = std::process::Command::new(command.get_program());
    copy.args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => copy.env(k, v),
            None => copy.env_remove(k),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        copy.current_dir(dir);
    }
    copy
}
