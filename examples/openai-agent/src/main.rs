//! An agent loop guarded by AgentHalt. The real `async-openai` client talks to a local server
//! that speaks the Chat Completions wire format (no network, no key): the model asks for three
//! tool calls at once; one is allowed, one denied, one needs approval. The loop runs only the
//! allowed one, answers all three in order, and sends the conversation back.
//!
//! Run with `cargo run -p openai-agent`.

#![allow(clippy::print_stdout, reason = "an example shows what it does")]

use std::sync::{Arc, Mutex};

use agenthalt::config::PolicyLoader;
use agenthalt::openai::ToolGuard;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const POLICY: &str = r#"
guards:
  scope:
    deny_functions: ["delete_*"]
  purchase:
    require_approval_above: 100
    max_single_purchase: 5000
"#;

/// What the model proposes on its first turn: three tool calls at once.
fn first_turn() -> Value {
    json!({
        "id": "chatcmpl-local-1", "object": "chat.completion", "created": 1_800_000_000, "model": "gpt-4.1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [
                {"id": "call_weather", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_delete", "type": "function", "function": {"name": "delete_file", "arguments": "{\"path\":\"/srv/db.sqlite\"}"}},
                {"id": "call_buy", "type": "function", "function": {"name": "purchase_item", "arguments": "{\"item\":\"GPU\",\"amount\":2400}"}}
            ]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90}
    })
}

/// Its last turn, once every call has an answer.
fn last_turn(text: &str) -> Value {
    json!({
        "id": "chatcmpl-local-2", "object": "chat.completion", "created": 1_800_000_001, "model": "gpt-4.1",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140}
    })
}

/// A local server speaking the Chat Completions wire format; it keeps every request it gets.
async fn serve(listener: TcpListener, requests: Arc<Mutex<Vec<Value>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let requests = Arc::clone(&requests);
        tokio::spawn(async move {
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            let body = loop {
                let Ok(n) = stream.read(&mut buf).await else { return };
                if n == 0 {
                    return;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break raw[end + 4..end + 4 + length].to_vec();
                }
            };
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let messages = request["messages"].as_array().cloned().unwrap_or_default();
            requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
            let reply = if messages.iter().any(|m| m["role"] == "tool") {
                let answered: Vec<&str> = messages.iter().filter_map(|m| m["tool_call_id"].as_str()).collect();
                last_turn(&format!("Done. I heard back about {}.", answered.join(", ")))
            } else {
                first_turn()
            };
            let body = reply.to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The tools this agent really has.
fn run_tool(name: &str, arguments: &serde_json::Map<String, Value>) -> String {
    match name {
        "get_weather" => format!("{}: 4 °C, light snow", arguments.get("city").and_then(Value::as_str).unwrap_or("?")),
        other => format!("{other} ran"),
    }
}

/// The conversation's outcome, for the test that runs this example.
#[derive(Debug)]
struct Run {
    ran: Vec<String>,
    answers: Vec<(String, String)>,
    last: String,
    requests: Vec<Value>,
}

async fn agent() -> Result<Run, Box<dyn std::error::Error>> {
    // The HTTP client needs a TLS provider even for plain HTTP on loopback; ring needs nothing
    // but a C compiler to build.
    #[allow(deprecated, reason = "plain HTTP on loopback: no key exchange happens at all")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let requests = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, Arc::clone(&requests)));

    let engine = PolicyLoader::new().load_str(POLICY, "policy.yaml")?.build_engine()?;
    let guard = ToolGuard::new(engine).agent("assistant").session("conversation-1");
    let client = Client::with_config(OpenAIConfig::new().with_api_base(base).with_api_key("not-needed"));

    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestUserMessage::from("Check Oslo's weather, clean up the old database, and buy a GPU.")
            .into(),
    ];
    let request = CreateChatCompletionRequestArgs::default().model("gpt-4.1").messages(messages.clone()).build()?;
    let response = client.chat().create(request).await?;
    let message = &response.choices[0].message;

    let decisions = guard.check_async_openai(message).await;
    let assistant = ChatCompletionRequestAssistantMessageArgs::default()
        .tool_calls(message.tool_calls.clone().unwrap_or_default())
        .build()?;
    messages.push(assistant.into());
    let mut ran = Vec::new();
    let mut answers = Vec::new();
    for decision in &decisions {
        // Every call gets exactly one answer, in the order the model asked.
        let text = match decision.arguments() {
            Some(arguments) => {
                ran.push(decision.name.clone());
                run_tool(&decision.name, arguments)
            }
            None => guard.answer(decision).unwrap_or_default(),
        };
        println!("{:<14} {:<14} -> {text}", decision.call_id, decision.name);
        answers.push((decision.call_id.clone(), text.clone()));
        messages.push(ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: ChatCompletionRequestToolMessageContent::Text(text),
            tool_call_id: decision.call_id.clone(),
        }));
    }
    let request = CreateChatCompletionRequestArgs::default().model("gpt-4.1").messages(messages).build()?;
    let response = client.chat().create(request).await?;
    let last = response.choices[0].message.content.clone().unwrap_or_default();
    println!("assistant: {last}");
    let requests = requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(Run { ran, answers, last, requests })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = agent().await?;
    // What the example shows, checked: the loop ran only the allowed call, answered all three
    // in order, and the model heard back about each.
    assert_eq!(run.ran, ["get_weather"]);
    let ids: Vec<&str> = run.answers.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["call_weather", "call_delete", "call_buy"]);
    assert!(run.answers[1].1.contains("blocked by policy"));
    assert!(run.answers[2].1.contains("needs a person's approval"));
    assert!(!run.answers[1].1.contains("db.sqlite"), "an answer never repeats the call's values");
    assert_eq!(run.last, "Done. I heard back about call_weather, call_delete, call_buy.");
    assert_eq!(run.requests.len(), 2);
    Ok(())
}
