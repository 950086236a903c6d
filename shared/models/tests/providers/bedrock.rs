//! Bedrock Converse through the official SDK, pointed at a scripted server that speaks
//! Converse's REST-JSON (`POST /model/{modelId}/converse`).

use crate::scripted::{Reply, Scripted, simple_request, tool_inputs, tool_loop_request};
use aos_kernel::llm::{LlmError, Model, StopReason};
use aos_kernel::model::Usage;
use aos_models::BedrockConverse;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_bedrockruntime::config::Credentials;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CLAUDE: &str = "bedrock:anthropic.claude-3-5-haiku-20241022-v1:0";

async fn sdk_config(server: &Scripted) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&server.url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDSCRIPTED",
            "scripted-secret",
            None,
            None,
            "scripted",
        ))
        .load()
        .await
}

async fn provider(server: &Scripted) -> BedrockConverse {
    BedrockConverse::new(&sdk_config(server).await)
}

fn answer(content: Value, stop_reason: &str) -> Value {
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 12, "outputTokens": 4, "totalTokens": 16},
        "metrics": {"latencyMs": 42},
    })
}

fn service_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::status(status, json!({"message": message})).header("x-amzn-errortype", code)
}

#[tokio::test]
async fn cache_points_close_the_system_and_the_transcript_and_the_context_follows() {
    let mut reply = answer(
        json!([
            {"text": "Checking two more cities."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Lyon"}}},
            {"toolUse": {"toolUseId": "tooluse_2", "name": "weather", "input": {}}},
        ]),
        "tool_use",
    );
    reply["usage"] = json!({
        "inputTokens": 40,
        "outputTokens": 60,
        "totalTokens": 1900,
        "cacheReadInputTokens": 1500,
        "cacheWriteInputTokens": 300,
    });
    let server = Scripted::start(vec![Reply::ok(reply)]).await;

    let response = provider(&server)
        .await
        .complete(&tool_loop_request(CLAUDE))
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    assert!(
        sent.header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDSCRIPTED/")),
        "the call is SigV4-signed: {:?}",
        sent.header("authorization")
    );
    assert_eq!(
        sent.body,
        json!({
            "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [{"text": "What is the weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Paris"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C, sunny"}], "status": "success"}},
                    {"cachePoint": {"type": "default"}},
                    {"text": "Memory: the user prefers Celsius."},
                ]},
            ],
            "inferenceConfig": {"maxTokens": 512},
            "toolConfig": {"tools": [{"toolSpec": {
                "name": "weather",
                "description": "Current weather for a city",
                "inputSchema": {"json": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                }},
            }}]},
        })
    );
    assert_eq!(response.stop, StopReason::ToolUse);
    assert_eq!(response.text(), "Checking two more cities.");
    assert_eq!(
        tool_inputs(&response.content),
        vec![
            (
                "tooluse_1".into(),
                "weather".into(),
                json!({"city": "Lyon"})
            ),
            ("tooluse_2".into(), "weather".into(), json!({})),
        ]
    );
    assert_eq!(response.model, CLAUDE);
    assert_eq!(
        response.usage,
        Usage {
            llm_calls: 1,
            input_tokens: 40,
            output_tokens: 60,
            cache_read_tokens: 1500,
            cache_write_tokens: 300,
            ..Usage::default()
        }
    );
}

#[tokio::test]
async fn models_without_prompt_caching_get_no_cache_points() {
    let server = Scripted::start(vec![Reply::ok(answer(
        json!([{"text": "Hello."}]),
        "end_turn",
    ))])
    .await;
    let mut request = simple_request("bedrock:meta.llama3-70b-instruct-v1:0");
    request.context = Some("Memory: none.".into());

    let response = provider(&server).await.complete(&request).await.unwrap();

    let body = server.only_request().body;
    assert_eq!(body["system"], json!([{"text": "You are terse."}]));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "Hi"}, {"text": "Memory: none."}]}])
    );
    assert!(body.get("toolConfig").is_none(), "{body}");
    assert_eq!(response.stop, StopReason::EndTurn);
    assert_eq!(response.text(), "Hello.");
}

#[tokio::test]
async fn max_tokens_and_guardrail_stops_are_reported() {
    let server = Scripted::start(vec![
        Reply::ok(answer(json!([{"text": "The answer is cu"}]), "max_tokens")),
        Reply::ok(answer(json!([{"text": "Sorry."}]), "guardrail_intervened")),
        Reply::ok(answer(json!([]), "content_filtered")),
    ])
    .await;
    let model = provider(&server).await;
    let request = simple_request(CLAUDE);

    let cut = model.complete(&request).await.unwrap();
    assert_eq!(cut.stop, StopReason::MaxTokens);
    assert_eq!(cut.text(), "The answer is cu");
    assert_eq!(
        model.complete(&request).await.unwrap().stop,
        StopReason::ContentFilter
    );
    assert_eq!(
        model.complete(&request).await.unwrap().stop,
        StopReason::ContentFilter
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient_and_not_retried_by_the_sdk() {
    let server = Scripted::start(vec![
        service_error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        )
        .header("retry-after", "7"),
        service_error(
            503,
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        service_error(500, "InternalServerException", "Internal failure"),
    ])
    .await;
    let model = provider(&server).await;
    let request = simple_request(CLAUDE);

    assert_eq!(
        model.complete(&request).await.unwrap_err(),
        LlmError::Transient {
            reason: "bedrock HTTP 429 (ThrottlingException): Too many requests, please wait before trying again.".into(),
            retry_after_ms: Some(7000),
        }
    );
    assert!(matches!(
        model.complete(&request).await.unwrap_err(),
        LlmError::Transient { reason, retry_after_ms: None } if reason.contains("ServiceUnavailableException")
    ));
    assert!(matches!(
        model.complete(&request).await.unwrap_err(),
        LlmError::Transient { reason, .. } if reason == "bedrock HTTP 500 (InternalServerException): Internal failure"
    ));
    // One request per call: the SDK did not retry behind the kernel's back.
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_rejected_request_is_permanent_and_readable() {
    let server = Scripted::start(vec![
        service_error(
            400,
            "ValidationException",
            "The model returned the following errors: max_tokens: must be at most 8192",
        ),
        service_error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
    ])
    .await;
    let model = provider(&server).await;
    let request = simple_request(CLAUDE);

    assert_eq!(
        model.complete(&request).await.unwrap_err(),
        LlmError::Permanent(
            "bedrock HTTP 400 (ValidationException): The model returned the following errors: max_tokens: must be at most 8192".into()
        )
    );
    let denied = model.complete(&request).await.unwrap_err();
    assert!(
        matches!(&denied, LlmError::Permanent(r) if r.starts_with("bedrock HTTP 403 (AccessDeniedException)")),
        "{denied:?}"
    );
    assert!(!format!("{denied:?}").contains("scripted-secret"));
}

#[tokio::test]
async fn a_slow_server_is_a_transient_failure_within_the_request_deadline() {
    let server = Scripted::start(vec![
        Reply::ok(answer(json!([]), "end_turn")).delay(Duration::from_secs(5)),
    ])
    .await;
    let model = provider(&server).await;
    let mut request = simple_request(CLAUDE);
    request.timeout_ms = Some(300);

    let started = Instant::now();
    let e = model.complete(&request).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e, LlmError::transient("bedrock: no answer within 300 ms"));
}
