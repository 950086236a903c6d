//! The route table's type and the OpenAPI 3.1 document made from it. Each [`Route`]
//! carries its handler and everything the document says about it (scope, parameters,
//! request body, every response status), so the router [`super::app`] serves and the
//! document `/v1/openapi.json` describes are built from one list and cannot drift
//! apart. Schemas come from `schemars` derives on the types the handlers really
//! (de)serialize.

use super::AppState;
use super::auth::Scope;
use super::problem::{PROBLEM_JSON, Problem};
use axum::http::Method;
use axum::routing::MethodRouter;
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Makes the schema of one type in a generator (a `$ref` for named types).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a [`SchemaFn`].
pub fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
}

impl In {
    fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
        }
    }
}

/// One documented parameter.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub description: &'static str,
    pub schema: Value,
}

/// What a response carries.
#[derive(Clone, Copy, Debug)]
pub enum Content {
    /// `application/json` of this schema.
    Json(SchemaFn),
    /// `text/event-stream` whose events are each one of these `(event name, JSON data
    /// schema)`.
    EventStream(&'static [(&'static str, SchemaFn)]),
    /// No body.
    Empty,
}

/// One documented success response.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
    /// Response headers documented with it (`Location`).
    pub headers: &'static [(&'static str, &'static str)],
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub struct RequestBody {
    pub schema: SchemaFn,
    pub required: bool,
    pub description: &'static str,
}

/// One operation of the API: how it is served and how it is documented.
pub struct Route {
    pub method: Method,
    /// In axum and OpenAPI syntax alike (`/v1/tasks/{id}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// The scope a token needs; `None`: served without a token.
    pub scope: Option<Scope>,
    pub params: Vec<Param>,
    pub body: Option<RequestBody>,
    pub replies: Vec<Reply>,
    /// Problem statuses this route answers besides those every route of its shape
    /// does (see [`Route::error_statuses`]).
    pub errors: &'static [u16],
    pub(crate) handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl Route {
    pub(crate) fn new(
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        handler: MethodRouter<AppState>,
    ) -> Self {
        Self {
            method,
            path,
            operation_id,
            tag: "",
            summary: "",
            description: "",
            scope: None,
            params: Vec::new(),
            body: None,
            replies: Vec::new(),
            errors: &[],
            handler,
        }
    }
    pub(crate) fn doc(
        mut self,
        tag: &'static str,
        summary: &'static str,
        description: &'static str,
    ) -> Self {
        self.tag = tag;
        self.summary = summary;
        self.description = description;
        self
    }
    pub(crate) fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }
    pub(crate) fn param(
        mut self,
        name: &'static str,
        location: In,
        required: bool,
        description: &'static str,
        schema: Value,
    ) -> Self {
        self.params.push(Param {
            name,
            location,
            required: required || location == In::Path,
            description,
            schema,
        });
        self
    }
    pub(crate) fn body(
        mut self,
        schema: SchemaFn,
        required: bool,
        description: &'static str,
    ) -> Self {
        self.body = Some(RequestBody {
            schema,
            required,
            description,
        });
        self
    }
    pub(crate) fn reply(
        mut self,
        status: u16,
        description: &'static str,
        content: Content,
    ) -> Self {
        self.replies.push(Reply {
            status,
            description,
            content,
            headers: &[],
        });
        self
    }
    pub(crate) fn reply_with(
        mut self,
        status: u16,
        description: &'static str,
        content: Content,
        headers: &'static [(&'static str, &'static str)],
    ) -> Self {
        self.replies.push(Reply {
            status,
            description,
            content,
            headers,
        });
        self
    }
    pub(crate) fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }

    /// Every problem status this route can answer: those of its own, and those that
    /// come with its shape (a token: 401, 403; a path or query parameter: 400; a path
    /// parameter: 404; a body: 400, 413, 415; a write: 403, 415; the store: 500, 503).
    pub fn error_statuses(&self) -> Vec<u16> {
        let mut s: Vec<u16> = self.errors.to_vec();
        if self.scope.is_some() {
            s.extend([401, 403, 500, 503]);
        }
        if !self.params.is_empty() {
            s.push(400);
        }
        if self.params.iter().any(|p| p.location == In::Path) {
            s.push(404);
        }
        if self.body.is_some() {
            s.extend([400, 413, 415]);
        }
        // The cross-site guard answers any write (403, or 415 for a body that is not
        // JSON) before routing.
        if matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            s.extend([403, 415]);
        }
        s.sort_unstable();
        s.dedup();
        s
    }
}

fn problem_text(status: u16) -> &'static str {
    match status {
        400 => {
            "The request is malformed (a parameter, the query string or the body); `detail` says what to fix."
        }
        401 => {
            "No token, or a malformed, forged or expired one. Comes with `WWW-Authenticate: Bearer`."
        }
        403 => "The token lacks the scope this operation needs, or the request is cross-site.",
        404 => {
            "No such resource for the caller's tenant (another tenant's look the same as missing ones)."
        }
        409 => "The request conflicts with the resource's state.",
        413 => "The request body is over the limit.",
        415 => "A request body that is not `application/json`.",
        422 => "The request names something that does not exist (an unknown agent).",
        500 => "An internal error; the response says nothing about it.",
        501 => "This deployment does not offer this feature.",
        503 => "The backend is busy or unreachable; retry shortly.",
        _ => "An error.",
    }
}

/// The OpenAPI 3.1 document of `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .for_serialize()
        .into_generator();
    // Request bodies are read, not written: their own contract, inlined.
    let mut req_g = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .for_deserialize()
        .into_generator();
    let problem_ref = g.subschema_for::<Problem>().to_value();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut tags: Vec<&str> = Vec::new();
    for r in routes {
        if !r.tag.is_empty() && !tags.contains(&r.tag) {
            tags.push(r.tag);
        }
        let mut op = Map::new();
        op.insert("operationId".into(), json!(r.operation_id));
        op.insert("summary".into(), json!(r.summary));
        let scope_line = match r.scope {
            Some(s) => format!("Scope: `{s}`."),
            None => "No token needed.".to_string(),
        };
        let description = if r.description.is_empty() {
            scope_line
        } else {
            format!("{}\n\n{scope_line}", r.description)
        };
        op.insert("description".into(), json!(description));
        if !r.tag.is_empty() {
            op.insert("tags".into(), json!([r.tag]));
        }
        op.insert(
            "security".into(),
            match r.scope {
                Some(s) => json!([{ "bearer": [s.as_str()] }]),
                None => json!([]),
            },
        );
        if let Some(s) = r.scope {
            op.insert("x-required-scope".into(), json!(s.as_str()));
        }
        if !r.params.is_empty() {
            let params: Vec<Value> = r
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "in": p.location.as_str(),
                        "required": p.required,
                        "description": p.description,
                        "schema": p.schema,
                    })
                })
                .collect();
            op.insert("parameters".into(), json!(params));
        }
        if let Some(b) = &r.body {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": b.required,
                    "description": b.description,
                    "content": {"application/json": {"schema": (b.schema)(&mut req_g).to_value()}},
                }),
            );
        }
        let mut responses = Map::new();
        for reply in &r.replies {
            let mut resp = Map::new();
            resp.insert("description".into(), json!(reply.description));
            match reply.content {
                Content::Json(f) => {
                    resp.insert(
                        "content".into(),
                        json!({"application/json": {"schema": f(&mut g).to_value()}}),
                    );
                }
                Content::EventStream(events) => {
                    // Each event as OpenAPI 3.2's `itemSchema` describes it: the SSE
                    // fields, with `data` JSON of the event's own schema.
                    let variants: Vec<Value> = events
                        .iter()
                        .map(|(name, f)| {
                            json!({
                                "type": "object",
                                "required": ["event", "data"],
                                "properties": {
                                    "event": {"const": name},
                                    "id": {"type": "string"},
                                    "retry": {"type": "integer"},
                                    "data": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "contentSchema": f(&mut g).to_value(),
                                    },
                                },
                            })
                        })
                        .collect();
                    resp.insert(
                        "content".into(),
                        json!({"text/event-stream": {"itemSchema": {"oneOf": variants}}}),
                    );
                }
                Content::Empty => {}
            }
            if !reply.headers.is_empty() {
                let headers: Map<String, Value> = reply
                    .headers
                    .iter()
                    .map(|(name, desc)| {
                        (
                            name.to_string(),
                            json!({"description": desc, "schema": {"type": "string"}}),
                        )
                    })
                    .collect();
                resp.insert("headers".into(), Value::Object(headers));
            }
            responses.insert(reply.status.to_string(), Value::Object(resp));
        }
        for status in r.error_statuses() {
            let mut resp = json!({
                "description": problem_text(status),
                "content": {PROBLEM_JSON: {"schema": problem_ref}},
            });
            if status == 401 {
                resp["headers"] = json!({"WWW-Authenticate": {
                    "description": "`Bearer realm=\"aos\"`, with `error=\"invalid_token\"` when a token was sent.",
                    "schema": {"type": "string"}}});
            }
            responses.insert(status.to_string(), resp);
        }
        op.insert("responses".into(), Value::Object(responses));
        paths
            .entry(r.path)
            .or_default()
            .insert(r.method.as_str().to_lowercase(), Value::Object(op));
    }
    let schemas = g.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "AOS API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tasks, agents, approvals, schedules and dead letters of an AOS deployment. \
                Every error is `application/problem+json` (RFC 9457). Tokens are bearer JWTs whose \
                `tenant` claim scopes every read and write and whose `scope` claim (`read`, `write`, \
                `admin`; each includes the ones before it) decides what they may do.",
        },
        "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT with claims `sub`, `tenant`, `scope` (space-separated `read` `write` `admin`) and `exp`. Locally `aos token` mints one; on AWS the HTTP API's JWT authorizer checks it.",
                },
            },
        },
    })
}

/// The document of this API, built once.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| document(&super::routes::routes()))
}
