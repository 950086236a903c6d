//! `get_weather` against a scripted Open-Meteo: an axum server on 127.0.0.1 port 0 that
//! speaks the geocoding and forecast APIs' JSON, reached through `reference_tools` as a
//! wake would reach it. The live values here differ from the bundled samples, so each
//! test can tell which source an answer came from.

#![allow(clippy::unwrap_used)]

use aos_agents::{ToolsConfig, reference_tools};
use aos_kernel::tools::{ToolContext, ToolError};
use aos_kernel::{AgentName, SessionId, TaskId};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request's path and query parameters.
type Request = (String, HashMap<String, String>);

/// How the scripted server misbehaves, per API.
#[derive(Clone, Copy, Default)]
enum Mode {
    #[default]
    Ok,
    Status(u16),
    Garbage,
    Slow,
}

#[derive(Clone, Default)]
struct Script {
    geocoding: Mode,
    forecast: Mode,
    /// Every request, in arrival order.
    seen: Arc<Mutex<Vec<Request>>>,
}

async fn misbehave(mode: Mode) -> Option<Response> {
    match mode {
        Mode::Ok => None,
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            let body = json!({"error": true, "reason": "scripted failure"});
            Some((status, Json(body)).into_response())
        }
        Mode::Garbage => Some("<html>not json</html>".into_response()),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            None
        }
    }
}

async fn search(State(s): State<Script>, Query(q): Query<HashMap<String, String>>) -> Response {
    s.seen
        .lock()
        .unwrap()
        .push(("/v1/search".into(), q.clone()));
    if let Some(r) = misbehave(s.geocoding).await {
        return r;
    }
    let paris_fr = json!({"id": 2988507, "name": "Paris", "latitude": 48.85341, "longitude": 2.3488,
        "elevation": 42.0, "feature_code": "PPLC", "country_code": "FR", "admin1": "Île-de-France",
        "timezone": "Europe/Paris", "population": 2138551, "country": "France"});
    let paris_tx = json!({"id": 4717560, "name": "Paris", "latitude": 33.66094, "longitude": -95.55551,
        "country_code": "US", "admin1": "Texas", "timezone": "America/Chicago", "country": "United States"});
    let count: usize = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(10);
    let body = match q.get("name").map(String::as_str) {
        Some("Paris") => {
            let all = [paris_fr, paris_tx];
            json!({"results": all.into_iter().take(count).collect::<Vec<_>>(), "generationtime_ms": 0.9})
        }
        // Open-Meteo leaves `results` out when nothing matches.
        _ => json!({"generationtime_ms": 0.4}),
    };
    Json(body).into_response()
}

async fn forecast(State(s): State<Script>, Query(q): Query<HashMap<String, String>>) -> Response {
    s.seen
        .lock()
        .unwrap()
        .push(("/v1/forecast".into(), q.clone()));
    if let Some(r) = misbehave(s.forecast).await {
        return r;
    }
    let (Some(lat), Some(lon)) = (q.get("latitude"), q.get("longitude")) else {
        let body = json!({"error": true, "reason": "Parameter 'latitude' and 'longitude' must have the same number of elements"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let texas = lat.starts_with("33.");
    let body = json!({
        "latitude": lat.parse::<f64>().unwrap(),
        "longitude": lon.parse::<f64>().unwrap(),
        "generationtime_ms": 0.05,
        "utc_offset_seconds": if texas { -21600 } else { 3600 },
        "timezone": if texas { "America/Chicago" } else { "Europe/Paris" },
        "timezone_abbreviation": if texas { "GMT-6" } else { "GMT+1" },
        "elevation": 43.0,
        "current_units": {"time": "iso8601", "interval": "seconds", "temperature_2m": "°C",
            "relative_humidity_2m": "%", "weather_code": "wmo code", "wind_speed_10m": "km/h"},
        "current": {"time": if texas { "2026-11-21T08:45" } else { "2026-11-21T15:45" }, "interval": 900,
            "temperature_2m": if texas { 18.0 } else { 7.3 },
            "relative_humidity_2m": 93, "weather_code": if texas { 0 } else { 63 }, "wind_speed_10m": 22.44}
    });
    Json(body).into_response()
}

/// Serves `script` on a fresh local port and returns its base URL.
async fn serve(script: Script) -> String {
    let app = Router::new()
        .route("/v1/search", get(search))
        .route("/v1/forecast", get(forecast))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(base: &str) -> ToolsConfig {
    ToolsConfig {
        open_meteo_base: base.into(),
        // A trailing slash must not matter.
        geocoding_base: format!("{base}/"),
        offline: false,
        timeout: Duration::from_millis(1500),
        http_allow: Vec::new(),
    }
}

async fn get_weather(cfg: &ToolsConfig, city: &str) -> Result<String, ToolError> {
    let ctx = ToolContext {
        agent: AgentName::new("weather").unwrap(),
        session: SessionId::new("s-1").unwrap(),
        task: TaskId::new(0),
        now_ms: 0,
    };
    let tools = reference_tools(cfg);
    let tool = tools.get("get_weather").unwrap();
    tool.call(json!({ "city": city }), &ctx).await
}

const SAMPLE_LABEL: &str = "bundled sample data — not live)";

#[tokio::test]
async fn reads_live_conditions_in_open_meteos_shape() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let line = get_weather(&config(&base), "Paris").await.unwrap();
    assert_eq!(
        line,
        "Paris, France: 7.3 °C, moderate rain, humidity 93%, wind 22.4 km/h \
         (Open-Meteo, 2026-11-21T15:45 local)"
    );
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (path, q) = &seen[0];
    assert_eq!(path, "/v1/search");
    for (k, v) in [
        ("name", "Paris"),
        ("count", "1"),
        ("language", "en"),
        ("format", "json"),
    ] {
        assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
    }
    let (path, q) = &seen[1];
    assert_eq!(path, "/v1/forecast");
    for (k, v) in [
        ("latitude", "48.85341"),
        ("longitude", "2.3488"),
        (
            "current",
            "temperature_2m,relative_humidity_2m,weather_code,wind_speed_10m",
        ),
        ("timezone", "auto"),
    ] {
        assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[tokio::test]
async fn a_country_or_region_after_a_comma_picks_the_place() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let line = get_weather(&config(&base), "Paris, Texas").await.unwrap();
    assert_eq!(
        line,
        "Paris, United States: 18.0 °C, clear sky, humidity 93%, wind 22.4 km/h \
         (Open-Meteo, 2026-11-21T08:45 local)"
    );
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1.get("count").map(String::as_str), Some("10"));
    assert_eq!(
        seen[1].1.get("latitude").map(String::as_str),
        Some("33.66094")
    );

    let err = get_weather(&config(&base), "Paris, Narnia")
        .await
        .unwrap_err();
    assert!(err.0.contains("only outside \"Narnia\""), "{}", err.0);
}

#[tokio::test]
async fn an_unknown_city_is_an_error_not_a_sample() {
    let base = serve(Script::default()).await;
    let err = get_weather(&config(&base), "Atlantis").await.unwrap_err();
    assert_eq!(
        err.0,
        "Open-Meteo's geocoding found no place called \"Atlantis\"; check the spelling, \
         or name the nearest large city"
    );
    // Known to the samples, unknown to the live service: still an error.
    let err = get_weather(&config(&base), "Tokyo").await.unwrap_err();
    assert!(err.0.contains("no place called \"Tokyo\""), "{}", err.0);
}

#[tokio::test]
async fn a_server_error_falls_back_to_labelled_samples() {
    for (geocoding, forecast) in [(Mode::Status(500), Mode::Ok), (Mode::Ok, Mode::Status(503))] {
        let script = Script {
            geocoding,
            forecast,
            ..Script::default()
        };
        let base = serve(script).await;
        let line = get_weather(&config(&base), "Paris").await.unwrap();
        let code = if matches!(geocoding, Mode::Status(_)) {
            500
        } else {
            503
        };
        assert_eq!(
            line,
            format!(
                "Paris, France: 11.4 °C, overcast, humidity 81%, wind 14.0 km/h \
                 (offline: Open-Meteo returned HTTP {code}, {SAMPLE_LABEL}"
            )
        );
    }
}

#[tokio::test]
async fn an_unreadable_answer_falls_back_too() {
    let script = Script {
        forecast: Mode::Garbage,
        ..Script::default()
    };
    let base = serve(script).await;
    let line = get_weather(&config(&base), "Paris").await.unwrap();
    assert!(
        line.ends_with(&format!(
            "(offline: Open-Meteo sent an unreadable response, {SAMPLE_LABEL}"
        )),
        "{line}"
    );
}

#[tokio::test]
async fn a_client_error_is_reported_not_hidden() {
    let script = Script {
        forecast: Mode::Status(400),
        ..Script::default()
    };
    let base = serve(script).await;
    let err = get_weather(&config(&base), "Paris").await.unwrap_err();
    assert_eq!(
        err.0,
        "Open-Meteo rejected the request (HTTP 400): scripted failure"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_into_the_samples() {
    let script = Script {
        geocoding: Mode::Slow,
        ..Script::default()
    };
    let base = serve(script).await;
    let cfg = ToolsConfig {
        timeout: Duration::from_millis(200),
        ..config(&base)
    };
    let started = std::time::Instant::now();
    let line = get_weather(&cfg, "Paris").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        line.ends_with(&format!("(offline: Open-Meteo timed out, {SAMPLE_LABEL}")),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_service_falls_back_to_labelled_samples() {
    let cfg = config("http://127.0.0.1:1");
    let line = get_weather(&cfg, "tokyo").await.unwrap();
    assert_eq!(
        line,
        format!(
            "Tokyo, Japan: 14.2 °C, mainly clear, humidity 58%, wind 9.7 km/h \
             (offline: Open-Meteo unreachable, {SAMPLE_LABEL}"
        )
    );
    let err = get_weather(&cfg, "Reykjavik").await.unwrap_err();
    assert!(
        err.0.starts_with(
            "no live weather: Open-Meteo unreachable, and \"Reykjavik\" is not among the \
             bundled offline samples, which cover only Paris, Tokyo, London"
        ),
        "{}",
        err.0
    );
}

#[tokio::test]
async fn offline_mode_never_touches_the_network() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let cfg = ToolsConfig {
        offline: true,
        ..config(&base)
    };
    let line = get_weather(&cfg, "Berlin").await.unwrap();
    assert!(line.starts_with("Berlin, Germany: 5.3 °C, fog"), "{line}");
    assert!(line.ends_with(SAMPLE_LABEL), "{line}");
    assert!(script.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_input_is_explained() {
    let cfg = ToolsConfig {
        offline: true,
        ..ToolsConfig::default()
    };
    let ctx = ToolContext {
        agent: AgentName::new("weather").unwrap(),
        session: SessionId::new("s-1").unwrap(),
        task: TaskId::new(0),
        now_ms: 0,
    };
    let tools = reference_tools(&cfg);
    let tool = tools.get("get_weather").unwrap();
    let err = tool.call(json!({"town": "Paris"}), &ctx).await.unwrap_err();
    assert!(err.0.contains("missing field `city`"), "{}", err.0);
    let err = get_weather(&cfg, "  ").await.unwrap_err();
    assert!(err.0.starts_with("no city given"), "{}", err.0);
}
