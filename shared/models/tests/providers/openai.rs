//! OpenAI-compatible Chat Completions against a scripted server.

use crate::scripted::{KEY, Reply, Scripted, simple_request, tool_inputs, tool_loop_request};
use aos_kernel::llm::{Content, LlmError, Model, StopReason};
use aos_kernel::model::Usage;
use aos_models::OpenAiChat;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn provider(server: &Scripted) -> OpenAiChat {
    OpenAiChat::new(Some(KEY.into()), Some(format!("{}/v1", server.url))).unwrap()
}

fn answer(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    })
}

fn text_answer(text: &str, finish_reason: &str) -> Value {
    answer(json!({"role": "assistant", "content": text}), finish_reason)
}

#[tokio::test]
async fn the_transcript_goes_out_as_chat_messages_with_the_context_last() {
    let mut reply = text_answer("18C and sunny in Paris.", "stop");
    reply["usage"] = json!({
        "prompt_tokens": 1200,
        "completion_tokens": 30,
        "total_tokens": 1230,
        "prompt_tokens_details": {"cached_tokens": 1024},
    });
    let server = Scripted::start(vec![Reply::ok(reply)]).await;

    let response = provider(&server)
        .complete(&tool_loop_request("openai:gpt-4o-mini"))
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        sent.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                }]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
                // The transcript ended on tool answers, so the context is a user turn of
                // its own after them.
                {"role": "user", "content": "Memory: the user prefers Celsius."},
            ],
            "max_completion_tokens": 512,
            "tools": [{"type": "function", "function": {
                "name": "weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }}],
            "prompt_cache_key": "session-42",
        })
    );
    assert_eq!(response.text(), "18C and sunny in Paris.");
    assert_eq!(response.stop, StopReason::EndTurn);
    assert_eq!(response.model, "openai:gpt-4o-mini-2024-07-18");
    assert_eq!(
        response.usage,
        Usage {
            llm_calls: 1,
            input_tokens: 176,
            cache_read_tokens: 1024,
            output_tokens: 30,
            ..Usage::default()
        }
    );
}

#[tokio::test]
async fn the_context_is_the_last_part_of_a_trailing_user_message() {
    let server = Scripted::start(vec![Reply::ok(text_answer("Hello.", "stop"))]).await;
    let mut request = simple_request("openai:llama3.1:8b");
    request.context = Some("Memory: the user is called Ada.".into());

    provider(&server).complete(&request).await.unwrap();

    let body = server.only_request().body;
    assert_eq!(body["model"], "llama3.1:8b");
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": [
            {"type": "text", "text": "Hi"},
            {"type": "text", "text": "Memory: the user is called Ada."},
        ]})
    );
    assert!(
        body.get("tools").is_none(),
        "no tools, no tools field: {body}"
    );
    assert!(body.get("prompt_cache_key").is_none(), "{body}");
}

#[tokio::test]
async fn several_tool_calls_come_back_and_bad_arguments_do_not_fail_the_call() {
    let message = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function",
             "function": {"name": "clock", "arguments": ""}},
            {"id": "call_c", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Par"}},
        ],
    });
    let server = Scripted::start(vec![Reply::ok(answer(message, "tool_calls"))]).await;

    let response = provider(&server)
        .complete(&tool_loop_request("openai:gpt-4o-mini"))
        .await
        .unwrap();

    assert_eq!(response.stop, StopReason::ToolUse);
    assert_eq!(
        tool_inputs(&response.content),
        vec![
            ("call_a".into(), "weather".into(), json!({"city": "Paris"})),
            ("call_b".into(), "clock".into(), json!({})),
            // Kept verbatim, so the kernel's schema check can show the model its mistake.
            ("call_c".into(), "weather".into(), json!("{\"city\": \"Par")),
        ]
    );
    assert_eq!(response.text(), "");
}

#[tokio::test]
async fn stops_other_than_an_answer_are_reported() {
    let refusal = answer(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        "stop",
    );
    let server = Scripted::start(vec![
        Reply::ok(text_answer("The answer is cut", "length")),
        Reply::ok(text_answer("", "content_filter")),
        Reply::ok(refusal),
    ])
    .await;
    let model = provider(&server);
    let request = simple_request("openai:gpt-4o-mini");

    let cut = model.complete(&request).await.unwrap();
    assert_eq!(cut.stop, StopReason::MaxTokens);
    assert_eq!(cut.text(), "The answer is cut");
    assert_eq!(
        model.complete(&request).await.unwrap().stop,
        StopReason::ContentFilter
    );
    let refused = model.complete(&request).await.unwrap();
    assert_eq!(refused.stop, StopReason::Refusal);
    assert_eq!(
        refused.content,
        vec![Content::Text {
            text: "I can't help with that.".into()
        }]
    );
}

#[tokio::test]
async fn throttling_is_transient_with_the_servers_retry_advice() {
    let server = Scripted::start(vec![
        Reply::status(
            429,
            json!({"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "code": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "7"),
    ])
    .await;

    let e = provider(&server)
        .complete(&simple_request("openai:gpt-4o-mini"))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        LlmError::Transient {
            reason: "openai HTTP 429 (rate_limit_exceeded): Rate limit reached for gpt-4o-mini"
                .into(),
            retry_after_ms: Some(7000),
        }
    );
}

#[tokio::test]
async fn an_exhausted_quota_is_permanent() {
    let server = Scripted::start(vec![Reply::status(
        429,
        json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    )])
    .await;

    let e = provider(&server)
        .complete(&simple_request("openai:gpt-4o-mini"))
        .await
        .unwrap_err();

    let LlmError::Permanent(reason) = e else {
        panic!("expected permanent, got {e:?}")
    };
    assert!(
        reason.starts_with("openai HTTP 429 (insufficient_quota): You exceeded"),
        "{reason}"
    );
}

#[tokio::test]
async fn server_errors_are_transient() {
    let server = Scripted::start(vec![Reply::status(
        500,
        json!({"error": {"message": "The server had an error while processing your request."}}),
    )])
    .await;

    let e = provider(&server)
        .complete(&simple_request("openai:gpt-4o-mini"))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        LlmError::Transient {
            reason: "openai HTTP 500: The server had an error while processing your request."
                .into(),
            retry_after_ms: None,
        }
    );
}

#[tokio::test]
async fn a_bad_request_is_permanent_readable_and_never_shows_the_key() {
    // Servers do echo keys back (OpenAI's 401 names the key it got).
    let server = Scripted::start(vec![Reply::status(
        400,
        json!({"error": {"message": format!("Invalid 'messages': bad request made with key {KEY}"), "type": "invalid_request_error", "code": null}}),
    )])
    .await;

    let e = provider(&server)
        .complete(&simple_request("openai:gpt-4o-mini"))
        .await
        .unwrap_err();

    let LlmError::Permanent(reason) = e else {
        panic!("expected permanent, got {e:?}")
    };
    assert_eq!(
        reason,
        "openai HTTP 400 (invalid_request_error): Invalid 'messages': bad request made with key [redacted]"
    );
    assert!(!reason.contains(KEY));
}

#[tokio::test]
async fn a_slow_server_is_a_transient_failure_within_the_request_deadline() {
    let server = Scripted::start(vec![
        Reply::ok(text_answer("too late", "stop")).delay(Duration::from_secs(5)),
    ])
    .await;
    let mut request = simple_request("openai:gpt-4o-mini");
    request.timeout_ms = Some(300);

    let started = Instant::now();
    let e = provider(&server).complete(&request).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e, LlmError::transient("openai: no answer within 300 ms"));
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);

    let e = OpenAiChat::new(None, Some(url))
        .unwrap()
        .complete(&simple_request("openai:gpt-4o-mini"))
        .await
        .unwrap_err();

    let LlmError::Transient { reason, .. } = e else {
        panic!("expected transient, got {e:?}")
    };
    assert!(reason.starts_with("openai: cannot connect"), "{reason}");
}

#[tokio::test]
async fn local_servers_get_no_authorization_header() {
    let server = Scripted::start(vec![Reply::ok(text_answer("Hello.", "stop"))]).await;

    OpenAiChat::new(None, Some(format!("{}/v1/", server.url)))
        .unwrap()
        .complete(&simple_request("openai:qwen2.5"))
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn a_route_for_another_provider_is_refused_without_a_call() {
    let server = Scripted::start(vec![]).await;

    let e = provider(&server)
        .complete(&simple_request("anthropic:claude-sonnet-4-5"))
        .await
        .unwrap_err();

    assert!(matches!(e, LlmError::Permanent(_)), "{e:?}");
    assert!(server.requests().is_empty());
}
