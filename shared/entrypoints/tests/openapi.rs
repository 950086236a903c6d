//! The OpenAPI document and the router agree: every operation of the route table is
//! in the document and nothing else is; every documented operation is served (an
//! admin token gets an answer from its handler, never the "no such route" 404 or a
//! 405); no documented path answers a method it does not document; paths that are
//! not documented are the problem-document 404. And the document says what a client
//! needs: the bearer scheme, each operation's scope, every error as problem+json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_entrypoints::http::openapi;
use aos_entrypoints::http::routes::routes;
use axum::body::Body;
use common::{call, router, send, system, token};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const NO_ROUTE: &str = "no such route; the API is described at /v1/openapi.json";

/// `(method, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap().to_string());
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let doc = openapi();
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.as_str().to_lowercase(), r.path.to_string()))
        .collect();
    assert_eq!(
        routes().len(),
        table.len(),
        "no operation twice in the table"
    );
    assert_eq!(
        documented(doc),
        table,
        "the document lists exactly the router's operations"
    );

    // Every documented operation reaches its handler.
    let sys = system();
    let app = router(&sys);
    let admin = token("default", "admin");
    let task = call(
        &app,
        "POST",
        "/v1/tasks",
        &admin,
        r#"{"input": "What is 2 EUR in USD?"}"#,
    )
    .await;
    let task_id = task.json["id"].as_str().unwrap().to_string();
    // Finished, so its event stream ends at once.
    sys.drain().await;
    for (method, path) in documented(doc) {
        let uri = path.replace("{id}", &task_id).replace("{name}", "finance");
        let body = if method == "post" { "{}" } else { "" };
        let a = send(
            &app,
            &method.to_uppercase(),
            &uri,
            Some(&admin),
            body.to_string(),
            &[],
        )
        .await;
        assert_ne!(a.status, 405, "{method} {uri}: {}", a.text);
        assert_ne!(
            a.detail(),
            NO_ROUTE,
            "{method} {uri} is documented but not served"
        );
        let documented = &doc["paths"][&path][&method]["responses"];
        assert!(
            documented.get(a.status.as_str()).is_some(),
            "{method} {uri} answered {} which its operation does not document: {}",
            a.status,
            a.text
        );
    }

    // A documented path answers no method it does not document.
    let paths: BTreeSet<String> = table.iter().map(|(_, p)| p.clone()).collect();
    for path in &paths {
        let uri = path.replace("{id}", &task_id).replace("{name}", "finance");
        for m in METHODS {
            if table.contains(&(m.to_string(), path.clone())) {
                continue;
            }
            let a = send(
                &app,
                &m.to_uppercase(),
                &uri,
                Some(&admin),
                Body::empty(),
                &[],
            )
            .await;
            a.problem(405);
        }
    }

    // What is not documented is not served: the old unversioned routes included. (The
    // dashboard's page and files at `/` and `/assets/` are not API operations.)
    for uri in [
        "/v1",
        "/v2/tasks",
        "/health",
        "/tasks",
        "/agents",
        &format!("/tasks/{task_id}"),
        &format!("/v1/tasks/{task_id}/nothing"),
    ] {
        let a = call(&app, "GET", uri, &admin, Body::empty()).await;
        a.problem(404);
        assert_eq!(a.detail(), NO_ROUTE, "{uri}");
    }
}

#[tokio::test]
async fn the_document_states_auth_scopes_and_errors_and_is_served_without_a_token() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside the components"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    for r in routes() {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        match r.scope {
            Some(scope) => {
                assert_eq!(op["security"][0]["bearer"][0], scope.as_str(), "{r:?}");
                assert!(
                    op["description"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("Scope: `{scope}`")),
                    "{r:?}"
                );
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{r:?} documents {status}");
                }
            }
            None => assert_eq!(op["security"], serde_json::json!([]), "{r:?}"),
        }
        for (status, resp) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    resp["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{r:?} {status}"
                );
            }
        }
        if r.body.is_some() {
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{r:?} documents {status}");
            }
        }
    }

    let sys = system();
    let app = router(&sys);
    let served = send(&app, "GET", "/v1/openapi.json", None, Body::empty(), &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(&served.json, doc);
    let health = send(&app, "GET", "/v1/health", None, Body::empty(), &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
}
