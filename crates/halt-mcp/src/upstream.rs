//! The proxy as the server's client: requests go up through [`send`]; what the server sends on
//! its own (progress, logs, list changes, its requests to the client) comes down through
//! [`Upstream`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, ClientResult, GetMeta, Implementation, ProgressToken,
    RequestMetaObject, ServerNotification, ServerRequest, ServerResult,
};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer, ServiceError,
};
use rmcp::{ErrorData as McpError, Service};
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// The `_meta` keys of the 2026-07-28 lifecycle, which describe the client to the proxy and are
/// not passed on: the proxy describes itself to the server.
const LIFECYCLE_PREFIX: &str = "io.modelcontextprotocol/";

/// Puts a request's `_meta` back (rmcp hands it to the handler apart), but for the client's
/// lifecycle keys. Its progress token is kept apart by [`send`].
pub(crate) fn restore_meta(request: &mut ClientRequest, meta: RequestMetaObject) {
    let target = request.get_meta_mut();
    for (k, v) in meta.0.0 {
        if !k.starts_with(LIFECYCLE_PREFIX) {
            target.0.0.insert(k, v);
        }
    }
}

/// Completes a result from a server of an older protocol for a 2026-07-28 client, which
/// requires `resultType` of every result, and `ttlMs` and `cacheScope` of every cacheable one:
/// `complete`, and where the server said nothing, immediately stale and private to the client.
/// A `tools/list` answered per agent (`per_agent`: hiding is on) is always private. Results the
/// proxy makes itself pass unchanged, or gain what they lack as well.
pub(crate) fn for_modern_client(result: &mut ServerResult, per_agent: bool) {
    use rmcp::model::{CacheScope, ResultType};
    let (kind, hints) = match result {
        ServerResult::ListToolsResult(r) => {
            if per_agent {
                r.cache_scope = Some(CacheScope::Private);
            }
            (&mut r.result_type, Some((&mut r.ttl_ms, &mut r.cache_scope)))
        }
        ServerResult::ListPromptsResult(r) => (&mut r.result_type, Some((&mut r.ttl_ms, &mut r.cache_scope))),
        ServerResult::ListResourcesResult(r) => (&mut r.result_type, Some((&mut r.ttl_ms, &mut r.cache_scope))),
        ServerResult::ListResourceTemplatesResult(r) => (&mut r.result_type, Some((&mut r.ttl_ms, &mut r.cache_scope))),
        ServerResult::ReadResourceResult(r) => (&mut r.result_type, Some((&mut r.ttl_ms, &mut r.cache_scope))),
        ServerResult::CompleteResult(r) => (&mut r.result_type, None),
        ServerResult::GetPromptResult(r) => (&mut r.result_type, None),
        ServerResult::CallToolResult(r) => (&mut r.result_type, None),
        _ => return,
    };
    kind.get_or_insert(ResultType::COMPLETE);
    if let Some((ttl, scope)) = hints {
        ttl.get_or_insert(0);
        scope.get_or_insert(CacheScope::Private);
    }
}

/// Which client, under which of its progress tokens, each request passed on reports to.
#[derive(Default)]
pub(crate) struct ProgressMap(Mutex<HashMap<ProgressToken, (ProgressToken, Peer<RoleServer>)>>);

impl ProgressMap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, (ProgressToken, Peer<RoleServer>)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends `request` of `client` to the server and waits for its answer; when `cancelled` fires
/// first, tells the server the request is cancelled. The client's progress token, if any, is
/// mapped to the one rmcp gives the request upstream, so that the server's progress reaches
/// that client.
pub(crate) async fn send(
    shared: &Shared,
    mut request: ClientRequest,
    cancelled: &CancellationToken,
    client: &Peer<RoleServer>,
) -> Result<ServerResult, McpError> {
    let client_token = request.get_meta_mut().get_progress_token();
    let mut handle = shared
        .live_upstream()
        .await
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .map_err(upstream_error)?;
    if let Some(token) = &client_token {
        shared.progress.lock().insert(handle.progress_token.clone(), (token.clone(), client.clone()));
    }
    let upstream_token = handle.progress_token.clone();
    let answer = tokio::select! {
        answer = &mut handle.rx => answer.unwrap_or(Err(ServiceError::TransportClosed)).map_err(upstream_error),
        () = cancelled.cancelled() => {
            let _ = handle.cancel(Some("cancelled by the client".into())).await;
            Err(McpError::internal_error("cancelled by the client", None))
        }
    };
    shared.progress.lock().remove(&upstream_token);
    answer
}

/// What the client is told when the server cannot answer.
fn upstream_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
            McpError::internal_error("the MCP server behind the proxy is gone", None)
        }
        other => McpError::internal_error(format!("the MCP server behind the proxy failed: {other}"), None),
    }
}

/// The proxy's client role towards the server.
#[derive(Default)]
pub(crate) struct Upstream {
    shared: OnceLock<Arc<Shared>>,
}

impl Upstream {
    /// Gives it what it passes the server's messages on with, once the handshake is done.
    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::clone(shared));
    }

    /// The client a request of the server goes to: the one connected. With none, or several
    /// (sessions over HTTP share the server), nobody can tell whose it is.
    fn client(&self) -> Result<Peer<RoleServer>, McpError> {
        let clients = self.shared.get().map(|s| s.clients()).unwrap_or_default();
        match <[_; 1]>::try_from(clients) {
            Ok([client]) => Ok(client),
            Err(none) if none.is_empty() => {
                Err(McpError::internal_error("no MCP client is connected to the proxy", None))
            }
            Err(_) => Err(McpError::internal_error(
                "several MCP clients share this server through the proxy: its requests go to none of them",
                None,
            )),
        }
    }
}

impl Service<RoleClient> for Upstream {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        if let ServerRequest::PingRequest(_) = request {
            return Ok(ClientResult::empty(()));
        }
        // The server asks the client (sampling, elicitation, roots): passed on as it came.
        let client = self.client()?;
        let mut request = request;
        let target = request.get_meta_mut();
        for (k, v) in context.meta.0.0 {
            target.0.0.insert(k, v);
        }
        tokio::select! {
            answer = client.send_request(request) => answer.map_err(|e| match e {
                ServiceError::McpError(e) => e,
                other => McpError::internal_error(format!("the MCP client did not answer: {other}"), None),
            }),
            () = context.ct.cancelled() => Err(McpError::internal_error("cancelled by the server", None)),
        }
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        let Some(shared) = self.shared.get() else { return Ok(()) };
        let notification = match notification {
            ServerNotification::ProgressNotification(mut n) => {
                // Progress on a request passed on reaches the client under the client's token;
                // any other is the proxy's own business.
                let Some((token, client)) = shared.progress.lock().get(&n.params.progress_token).cloned() else {
                    return Ok(());
                };
                n.params.progress_token = token;
                let _ = client.send_notification(ServerNotification::ProgressNotification(n)).await;
                return Ok(());
            }
            // The server cancelling a request of its own to the client: rmcp ends it here.
            ServerNotification::CancelledNotification(_) => return Ok(()),
            other => other,
        };
        for client in shared.clients() {
            let _ = client.send_notification(notification.clone()).await;
        }
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        // What the proxy passes on to its client, so that the server offers what needs it. Not
        // roots: a client's roots could widen what a server (the filesystem's) may reach; not
        // sampling, deprecated since 2026-07-28 (a server's request for it is passed on anyway).
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("agenthalt-mcp-proxy", env!("CARGO_PKG_VERSION")),
        )
    }
}
