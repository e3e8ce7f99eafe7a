//! The proxy served over Streamable HTTP: rmcp's `StreamableHttpService` on axum, every client
//! through one session with the server.
//!
//! rmcp's service checks each POST before the proxy sees it: the `Host` (loopback names only)
//! and `Origin` headers against DNS rebinding, the `MCP-Protocol-Version` header against the
//! body, and the 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) against the
//! body's method, name and arguments. A mismatch is answered with HTTP 400 and never reaches the
//! engine.

#![allow(
    deprecated,
    reason = "logging and resources/subscribe are gone from 2026-07-28, but 2025-11-25 clients use them: passed on"
)]

use std::future::Future;
use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientNotification, ClientRequest, CompleteRequest,
    CompleteRequestParams, CompleteResult, CustomNotification, CustomRequest, CustomResult, GetPromptRequest,
    GetPromptRequestParams, GetPromptResponse, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResponse, RequestOptionalParam, RootsListChangedNotification, ServerConfig, ServerResult,
    SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams, Tool, UnsubscribeRequest,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, Service};
use tokio_util::sync::CancellationToken;

use crate::restart::{Again, supervise};
use crate::{Downstream, Proxy, ProxyError, ProxyOptions};

/// The path the proxy answers MCP on.
pub const MCP_PATH: &str = "/mcp";

/// How the proxy is served over HTTP.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HttpOptions {
    /// The browser origins allowed to call the proxy (`https://app.example.com:443`,
    /// `http://localhost:*`). A request with any other `Origin` header is refused; requests with
    /// none (programs, not browsers) pass.
    pub allowed_origins: Vec<String>,
}

impl HttpOptions {
    /// Options allowing `origins`.
    #[must_use]
    pub fn with_allowed_origins(origins: Vec<String>) -> Self {
        Self { allowed_origins: origins }
    }
}

impl Proxy {
    /// Completes the handshake with a server speaking Streamable HTTP at `url`
    /// (`http://127.0.0.1:3001/mcp`, or `https://`). Installs ring as the process's rustls
    /// provider unless one is installed.
    ///
    /// # Errors
    /// The server does not answer the handshake.
    pub async fn connect_http(
        engine: halt_engine::Engine,
        options: ProxyOptions,
        url: &str,
    ) -> Result<Self, ProxyError> {
        install_tls();
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.to_owned());
        let mut proxy = Self::connect(engine, options, transport).await?;
        proxy.again = Some(Again::Url(url.to_owned()));
        Ok(proxy)
    }

    /// Serves MCP over Streamable HTTP at [`MCP_PATH`] on `listener` (bound to a loopback
    /// address: the proxy authenticates nobody) until `shutdown` completes or the server goes.
    /// Sessions of 2025-11-25 clients and stateless 2026-07-28 requests share the one session
    /// with the server: its notifications go to every session, the progress of a request to
    /// its client, and its own requests (sampling, elicitation) to the one session when there is
    /// one (with several, nobody can tell whose they are: they are refused).
    ///
    /// # Errors
    /// The listener is not on a loopback address, the HTTP server failed, or the MCP server
    /// exited first.
    pub async fn serve_http(
        self,
        listener: tokio::net::TcpListener,
        options: HttpOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let local = listener.local_addr().map_err(ProxyError::Http)?;
        if !local.ip().is_loopback() {
            return Err(ProxyError::Http(std::io::Error::other(format!(
                "{local} is not a loopback address: the HTTP proxy authenticates nobody"
            ))));
        }
        let Self { shared, server, again } = self;
        let stop = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default()
            .with_allowed_origins(options.allowed_origins)
            .enforce_origin_validation();
        config.cancellation_token = stop.child_token();
        let downstream = Arc::new(Downstream { shared: Arc::clone(&shared) });
        let service = StreamableHttpService::new(
            move || Ok(HttpDownstream(Arc::clone(&downstream))),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let app = axum::Router::new().route_service(MCP_PATH, service);
        let graceful = stop.clone();
        let mut http = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { graceful.cancelled().await }).await
        });
        let mut server_done = tokio::spawn(supervise(shared, server, again, stop.clone()));
        let result = tokio::select! {
            served = &mut http => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ProxyError::Http(e)),
                Err(e) => Err(ProxyError::Http(std::io::Error::other(e))),
            },
            _ = &mut server_done => Err(ProxyError::ServerExited),
            () = shutdown => Ok(()),
        };
        stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), http).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server_done).await;
        result
    }
}

/// Installs ring as the process's rustls provider, unless the program installed one: rmcp's
/// HTTP client (reqwest, built without a provider of its own) takes it for `https://`, and
/// panics without one.
pub(crate) fn install_tls() {
    // ring, as the rest of the workspace uses; aws-lc-rs would build C.
    #[allow(deprecated, reason = "ring has no post-quantum key exchange; it is what the workspace builds")]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

/// The proxy as rmcp's HTTP service wants it (a [`ServerHandler`]): each method is the request
/// it stands for, handled as on stdio.
#[derive(Clone)]
struct HttpDownstream(Arc<Downstream>);

/// The server answered a request with another kind of result.
fn unexpected() -> McpError {
    McpError::internal_error("the MCP server behind the proxy answered with another kind of result", None)
}

impl HttpDownstream {
    async fn pass(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        self.0.handle_request(request, context).await
    }

    async fn empty(&self, request: ClientRequest, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        match self.pass(request, context).await? {
            ServerResult::EmptyResult(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn notify(&self, notification: ClientNotification, context: NotificationContext<RoleServer>) {
        let _ = self.0.handle_notification(notification, context).await;
    }
}

/// A request whose parameters are optional.
fn optional<M: Default, P>(params: Option<P>) -> RequestOptionalParam<M, P> {
    RequestOptionalParam { method: M::default(), params, extensions: rmcp::model::Extensions::default() }
}

impl ServerHandler for HttpDownstream {
    fn get_info(&self) -> ServerConfig {
        self.0.shared.info.clone()
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0.shared.tools.definition(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        match self.pass(ClientRequest::CallToolRequest(CallToolRequest::new(request)), context).await? {
            ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
            _ => Err(unexpected()),
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        match self.pass(ClientRequest::ListToolsRequest(optional(request)), context).await? {
            ServerResult::ListToolsResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        match self.pass(ClientRequest::CompleteRequest(CompleteRequest::new(request)), context).await? {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.empty(ClientRequest::SetLevelRequest(SetLevelRequest::new(request)), context).await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        match self.pass(ClientRequest::GetPromptRequest(GetPromptRequest::new(request)), context).await? {
            ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(unexpected()),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        match self.pass(ClientRequest::ListPromptsRequest(optional(request)), context).await? {
            ServerResult::ListPromptsResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        match self.pass(ClientRequest::ListResourcesRequest(optional(request)), context).await? {
            ServerResult::ListResourcesResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        match self.pass(ClientRequest::ListResourceTemplatesRequest(optional(request)), context).await? {
            ServerResult::ListResourceTemplatesResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        match self.pass(ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request)), context).await? {
            ServerResult::ReadResourceResult(r) => Ok(ReadResourceResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(unexpected()),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.empty(ClientRequest::SubscribeRequest(SubscribeRequest::new(request)), context).await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.empty(ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request)), context).await
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        match self.pass(ClientRequest::CustomRequest(request), context).await? {
            ServerResult::CustomResult(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // A 2025-11-25 session: it hears the server's notifications from now on.
        self.0.shared.add_client(context.peer);
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        let changed = ClientNotification::RootsListChangedNotification(RootsListChangedNotification::default());
        self.notify(changed, context).await;
    }

    async fn on_custom_notification(&self, notification: CustomNotification, context: NotificationContext<RoleServer>) {
        self.notify(ClientNotification::CustomNotification(notification), context).await;
    }
}
