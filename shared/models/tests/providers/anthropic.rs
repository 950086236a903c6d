//! Anthropic Messages against a scripted server.

use crate::scripted::{KEY, Reply, Scripted, simple_request, tool_inputs, tool_loop_request};
use aos_kernel::llm::{LlmError, Model, StopReason};
use aos_kernel::model::Usage;
use aos_models::AnthropicMessages;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn provider(server: &Scripted) -> AnthropicMessages {
    AnthropicMessages::new(KEY.into(), Some(server.url.clone())).unwrap()
}

fn answer(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 12, "output_tokens": 4},
    })
}

#[tokio::test]
async fn cache_markers_end_the_system_and_the_transcript_and_the_context_follows() {
    let mut reply = answer(
        json!([
            {"type": "text", "text": "Checking two more cities."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Lyon"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Nice"}},
        ]),
        "tool_use",
    );
    reply["usage"] = json!({
        "input_tokens": 40,
        "output_tokens": 60,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 1500,
    });
    let server = Scripted::start(vec![Reply::ok(reply)]).await;

    let response = provider(&server)
        .complete(&tool_loop_request("anthropic:claude-sonnet-4-5"))
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 512,
            "system": [{
                "type": "text",
                "text": "You are terse.",
                "cache_control": {"type": "ephemeral"},
            }],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny",
                     "is_error": false, "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Memory: the user prefers Celsius."},
                ]},
            ],
            "tools": [{
                "name": "weather",
                "description": "Current weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }],
        })
    );
    assert_eq!(response.stop, StopReason::ToolUse);
    assert_eq!(response.text(), "Checking two more cities.");
    assert_eq!(
        tool_inputs(&response.content),
        vec![
            ("toolu_1".into(), "weather".into(), json!({"city": "Lyon"})),
            ("toolu_2".into(), "weather".into(), json!({"city": "Nice"})),
        ]
    );
    assert_eq!(response.model, "anthropic:claude-sonnet-4-5-20250929");
    assert_eq!(
        response.usage,
        Usage {
            llm_calls: 1,
            input_tokens: 40,
            output_tokens: 60,
            cache_write_tokens: 300,
            cache_read_tokens: 1500,
            ..Usage::default()
        }
    );
}

#[tokio::test]
async fn without_context_the_marker_is_on_the_last_user_block() {
    let server = Scripted::start(vec![Reply::ok(answer(
        json!([{"type": "text", "text": "Hello."}]),
        "end_turn",
    ))])
    .await;

    let response = provider(&server)
        .complete(&simple_request("anthropic:claude-haiku-4-5"))
        .await
        .unwrap();

    assert_eq!(
        server.only_request().body["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
        ]}])
    );
    assert_eq!(response.stop, StopReason::EndTurn);
    assert_eq!(response.text(), "Hello.");
}

#[tokio::test]
async fn max_tokens_and_refusal_stops_are_reported() {
    let server = Scripted::start(vec![
        Reply::ok(answer(
            json!([{"type": "text", "text": "The answer is cu"}]),
            "max_tokens",
        )),
        Reply::ok(answer(json!([]), "refusal")),
    ])
    .await;
    let model = provider(&server);
    let request = simple_request("anthropic:claude-haiku-4-5");

    let cut = model.complete(&request).await.unwrap();
    assert_eq!(cut.stop, StopReason::MaxTokens);
    assert_eq!(cut.text(), "The answer is cu");
    assert_eq!(
        model.complete(&request).await.unwrap().stop,
        StopReason::Refusal
    );
}

#[tokio::test]
async fn overloaded_is_transient() {
    let server = Scripted::start(vec![Reply::status(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )])
    .await;

    let e = provider(&server)
        .complete(&simple_request("anthropic:claude-haiku-4-5"))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        LlmError::Transient {
            reason: "anthropic HTTP 529 (overloaded_error): Overloaded".into(),
            retry_after_ms: None,
        }
    );
}

#[tokio::test]
async fn rate_limits_carry_the_retry_advice() {
    let server = Scripted::start(vec![
        Reply::status(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
        )
        .header("retry-after", "7"),
    ])
    .await;

    let e = provider(&server)
        .complete(&simple_request("anthropic:claude-haiku-4-5"))
        .await
        .unwrap_err();

    let LlmError::Transient {
        reason,
        retry_after_ms,
    } = e
    else {
        panic!("expected transient, got {e:?}")
    };
    assert_eq!(retry_after_ms, Some(7000));
    assert!(
        reason.starts_with("anthropic HTTP 429 (rate_limit_error): Number of request"),
        "{reason}"
    );
}

#[tokio::test]
async fn refused_credentials_are_permanent_and_the_key_is_not_shown() {
    let server = Scripted::start(vec![Reply::status(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": format!("invalid x-api-key {KEY}")}}),
    )])
    .await;

    let e = provider(&server)
        .complete(&simple_request("anthropic:claude-haiku-4-5"))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        LlmError::Permanent(
            "anthropic HTTP 401 (authentication_error): invalid x-api-key [redacted]".into()
        )
    );
    assert!(!format!("{e} {e:?} {:?}", provider(&server)).contains(KEY));
}

#[tokio::test]
async fn a_slow_server_is_a_transient_failure_within_the_request_deadline() {
    let server = Scripted::start(vec![
        Reply::ok(answer(json!([]), "end_turn")).delay(Duration::from_secs(5)),
    ])
    .await;
    let mut request = simple_request("anthropic:claude-haiku-4-5");
    request.timeout_ms = Some(300);

    let started = Instant::now();
    let e = provider(&server).complete(&request).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e, LlmError::transient("anthropic: no answer within 300 ms"));
}
