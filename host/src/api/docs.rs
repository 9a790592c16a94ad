//! Routes that document themselves: each operation is registered with its handler and its
//! description together, so the router a service serves and the OpenAPI document at
//! `/openapi.json` come from the same calls and cannot drift apart.

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

/// What an operation's request body is.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// A JSON object (Keylime's clients do not always send `Content-Type`).
    Json,
    /// A JSON object described by a schema of `components/schemas`.
    JsonOf(&'static str),
    /// Raw bytes of one of these media types.
    Binary(&'static [&'static str]),
}

/// The shape of an operation's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Keylime's `{"code", "status", "results"}` on success and error.
    Envelope,
    /// JSON:API (push mode): `{"data": …}` on success, `{"errors": […]}` on error.
    JsonApi,
    /// Prometheus text on success, the envelope on error.
    Metrics,
    /// The OpenAPI document itself.
    OpenApi,
    /// An HTML page on success, the envelope on error.
    Html,
}

/// One operation: its method, handler and description.
pub struct Op<S> {
    method: &'static str,
    handler: MethodRouter<S>,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
    body: Body,
    ok: &'static [u16],
    reply: Reply,
    /// Needs an operator's client certificate (mTLS); otherwise open or
    /// token-authenticated. Enforced by a layer built from this declaration.
    admin: bool,
    /// Also callable with a tenant's client certificate, on that tenant's records only: the
    /// layer hands the handler a [`super::Scope`].
    tenants: bool,
    /// The largest request body this operation reads (the service's default otherwise).
    body_limit: Option<usize>,
}

macro_rules! op_constructor {
    ($name:ident, $method:literal) => {
        pub fn $name<H, T>(handler: H, summary: &'static str) -> Self
        where
            H: Handler<T, S>,
            T: 'static,
        {
            Self {
                method: $method,
                handler: axum::routing::$name(handler),
                summary,
                query: &[],
                body: Body::None,
                ok: &[200],
                reply: Reply::Envelope,
                admin: true,
                tenants: false,
                body_limit: None,
            }
        }
    };
}

impl<S: Clone + Send + Sync + 'static> Op<S> {
    op_constructor!(get, "get");
    op_constructor!(post, "post");
    op_constructor!(put, "put");
    op_constructor!(patch, "patch");
    op_constructor!(delete, "delete");

    /// Query parameters: (name, description).
    pub fn query(mut self, params: &'static [(&'static str, &'static str)]) -> Self {
        self.query = params;
        self
    }

    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// The success statuses (200 unless given).
    pub fn ok(mut self, statuses: &'static [u16]) -> Self {
        self.ok = statuses;
        self
    }

    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    /// Open to callers without the tenant certificate (agents, anyone).
    pub fn open(mut self) -> Self {
        self.admin = false;
        self
    }

    /// Callable by tenants too (see [`super::Scope`]), on their own records.
    pub fn tenants(mut self) -> Self {
        self.tenants = true;
        self
    }

    /// The largest request body this operation reads.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }
}

/// A router under construction with its OpenAPI paths.
pub struct Routes<S> {
    router: Router<S>,
    paths: BTreeMap<String, Map<String, Value>>,
    /// The API versions `{v}` stands for in this service's paths.
    versions: &'static [&'static str],
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new(versions: &'static [&'static str]) -> Self {
        Self {
            router: Router::new(),
            paths: BTreeMap::new(),
            versions,
        }
    }

    /// Serves `ops` at `path`, and at `path/` too when `trailing_slash` (Keylime tolerates one).
    pub fn route(mut self, path: &str, trailing_slash: bool, ops: Vec<Op<S>>) -> Self {
        let mut methods = MethodRouter::new();
        let entry = self.paths.entry(path.to_owned()).or_default();
        for op in ops {
            entry.insert(op.method.to_owned(), describe(path, &op, self.versions));
            let mut handler = op.handler;
            if let Some(limit) = op.body_limit {
                handler = handler.layer(axum::extract::DefaultBodyLimit::max(limit));
            }
            // What the operation declared is what is enforced, for every handler alike.
            if op.admin {
                let (reply, tenants) = (op.reply, op.tenants);
                // A `{v}` this service does not serve is not found, whoever asks (Keylime).
                let versions = path.starts_with("/{v}/").then_some(self.versions);
                handler = handler.route_layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        require_access(reply, versions, tenants, req, next)
                    },
                ));
            }
            methods = methods.merge(handler);
        }
        if trailing_slash {
            self.router = self.router.route(&format!("{path}/"), methods.clone());
        }
        self.router = self.router.route(path, methods);
        self
    }

    /// The service's router: every registered route, `GET /openapi.json` describing them,
    /// Keylime's envelope for unknown paths, wrong methods and bare errors, and a body limit.
    pub fn into_router(self, title: &str, description: &str, max_body: usize) -> Router<S> {
        let (router, document) = self.finish(title, description);
        let document = std::sync::Arc::new(document);
        router
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let document = document.clone();
                    async move { axum::Json((*document).clone()) }
                }),
            )
            .fallback(super::not_found_fallback)
            .method_not_allowed_fallback(super::method_not_allowed_fallback)
            .layer(axum::extract::DefaultBodyLimit::max(max_body))
            .layer(axum::middleware::map_response(super::envelope_for_bare_errors))
    }

    /// The router and the OpenAPI document of everything registered.
    pub fn finish(self, title: &str, description: &str) -> (Router<S>, Value) {
        let paths: Map<String, Value> = self
            .paths
            .into_iter()
            .map(|(path, ops)| (path, Value::Object(ops)))
            .collect();
        let document = json!({
            "openapi": "3.0.3",
            "info": {
                "title": title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": description,
            },
            "paths": paths,
            "components": {"schemas": schemas()},
        });
        (self.router, document)
    }
}

/// Lets the request through only from an operator's client certificate (or a tenant's,
/// where `tenants` allows: then with its [`super::Scope`] attached); otherwise answers in
/// the operation's own error shape.
async fn require_access(
    reply: Reply,
    versions: Option<&'static [&'static str]>,
    tenants: bool,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let segment = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    let refusal = if versions.is_some_and(|served| !served.contains(&segment)) {
        Err(super::ApiError::not_found(format!(
            "API version not supported: {}",
            segment.escape_debug()
        )))
    } else {
        let caller = req
            .extensions()
            .get::<super::Caller>()
            .cloned()
            .unwrap_or(super::Caller::Plain);
        if tenants {
            caller.scope()
        } else {
            caller.require_operator().map(|()| super::Scope::Operator)
        }
    };
    match (refusal, reply) {
        (Ok(scope), _) => {
            // A tenant's requests log under its name; the operator's name none.
            let span = match &scope {
                super::Scope::Tenant(tenant) => tracing::info_span!("request", %tenant),
                super::Scope::Operator => tracing::Span::none(),
            };
            req.extensions_mut().insert(scope);
            tracing::Instrument::instrument(next.run(req), span).await
        }
        (Err(e), Reply::JsonApi) => (
            e.code,
            axum::Json(json!({"errors": [{
                "status": e.code.as_u16().to_string(),
                "title": e.code.canonical_reason().unwrap_or(""),
                "detail": e.message,
            }]})),
        )
            .into_response(),
        (Err(e), _) => e.into_response(),
    }
}

fn describe<S>(path: &str, op: &Op<S>, versions: &[&str]) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    for segment in path.split('/') {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            continue;
        };
        let schema = match name {
            "v" => json!({"type": "string", "enum": versions}),
            "id" | "name" => json!({"type": "string", "minLength": 1, "maxLength": 255}),
            _ => json!({"type": "string", "minLength": 1}),
        };
        parameters.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
    }
    for (name, description) in op.query {
        parameters.push(json!({
            "name": name, "in": "query", "required": false, "description": description,
            "schema": {"type": "string"},
        }));
    }
    let error = match op.reply {
        Reply::JsonApi => json!({"$ref": "#/components/schemas/ErrorReply"}),
        _ => json!({"$ref": "#/components/schemas/Envelope"}),
    };
    let success = match op.reply {
        Reply::Envelope => json!({"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}),
        Reply::JsonApi => {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/JsonApiDocument"}}})
        }
        Reply::Metrics => json!({"text/plain": {"schema": {"type": "string"}}}),
        Reply::OpenApi => json!({"application/json": {"schema": {"type": "object"}}}),
        Reply::Html => json!({"text/html": {"schema": {"type": "string"}}}),
    };
    let mut responses = Map::new();
    for status in op.ok {
        let response = if *status == 204 {
            json!({"description": "done; no body"})
        } else if (300..400).contains(status) {
            json!({"description": "redirect; no body"})
        } else {
            json!({"description": "success", "content": success})
        };
        responses.insert(status.to_string(), response);
    }
    responses.insert(
        "default".into(),
        json!({"description": "error, with its message", "content": {"application/json": {"schema": error}}}),
    );
    let mut operation = Map::new();
    operation.insert("summary".into(), json!(op.summary));
    operation.insert("parameters".into(), Value::Array(parameters));
    operation.insert("responses".into(), Value::Object(responses));
    // Who may call it, for tools (zest's isolation tests walk every `tenant` operation).
    let access = match (op.admin, op.tenants) {
        (false, _) => "open",
        (true, true) => "tenant",
        (true, false) => "operator",
    };
    operation.insert("x-zest-access".into(), json!(access));
    if op.admin && op.tenants {
        operation.insert(
            "description".into(),
            json!("Requires an operator's client certificate (mTLS), which reaches every tenant's records (the `tenant` query parameter chooses one), or a tenant's, which reaches its own only: another tenant's record answers 404."),
        );
    } else if op.admin {
        operation.insert(
            "description".into(),
            json!("Requires an operator's client certificate (mTLS)."),
        );
    }
    match op.body {
        Body::None => {}
        Body::Json => {
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }),
            );
        }
        Body::JsonOf(name) => {
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
                }),
            );
        }
        Body::Binary(types) => {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| {
                    (
                        t.to_string(),
                        json!({"schema": {"type": "string", "format": "binary"}}),
                    )
                })
                .collect();
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
    }
    Value::Object(operation)
}

/// A string property; `nullable` where Keylime's clients send `null`.
fn text(nullable: bool) -> Value {
    json!({"type": "string", "nullable": nullable})
}

fn names() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn schemas() -> Value {
    let count = || json!({"type": "integer", "minimum": 0});
    json!({
        // A tenant's quotas (zest's own): any subset of the fields; the rest keep their value.
        "TenantQuota": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "agents": count(),
                "policies": count(),
                "components": count(),
                "component_bytes": count(),
                "document_bytes": count(),
                "instance_memory_bytes": count(),
                "evaluation_ms": count(),
            },
        },
        // What Keylime's tenant POSTs to enrol an agent (keylime-api.md §4.3).
        "Enrolment": {
            "type": "object",
            "required": [
                "tpm_policy", "runtime_policy", "mb_policy", "mb_policy_name",
                "ima_sign_verification_keys", "metadata", "revocation_key",
                "accept_tpm_hash_algs", "accept_tpm_encryption_algs", "accept_tpm_signing_algs",
                "ak_tpm",
            ],
            "properties": {
                "v": text(true),
                "cloudagent_ip": text(true),
                "cloudagent_port": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": true},
                "tpm_policy": text(false),
                "runtime_policy": text(true),
                "runtime_policy_name": text(true),
                "runtime_policy_key": text(true),
                "mb_policy": text(true),
                "mb_policy_name": text(true),
                "ima_sign_verification_keys": text(false),
                "metadata": text(false),
                "revocation_key": text(false),
                "accept_tpm_hash_algs": names(),
                "accept_tpm_encryption_algs": names(),
                "accept_tpm_signing_algs": names(),
                "ak_tpm": text(false),
                "mtls_cert": text(true),
                "supported_version": text(true),
            },
        },
        "RuntimePolicyUpload": {
            "type": "object",
            "required": ["runtime_policy"],
            "properties": {
                "runtime_policy": {"type": "string", "description": "base64 of the policy JSON or of a DSSE envelope of it"},
                "runtime_policy_key": {"type": "string", "nullable": true, "description": "base64 of the PEM public key or certificate that signed the envelope"},
                "module": text(true),
            },
        },
        "MbPolicyUpload": {
            "type": "object",
            "required": ["mb_policy"],
            "properties": {
                "mb_policy": {"type": "string", "description": "the reference state as JSON text"},
                "module": text(true),
            },
        },
        // What Keylime's agents send the registrar.
        "Registration": {
            "type": "object",
            "required": ["ek_tpm", "aik_tpm"],
            "properties": {
                "agent_id": text(false),
                "ek_tpm": text(false),
                "aik_tpm": text(false),
                "ekcert": text(true),
                "mtls_cert": text(true),
                "ip": text(true),
                "port": {"type": "integer", "nullable": true},
                "iak_cert": text(true),
                "idevid_cert": text(true),
            },
        },
        "Activation": {
            "type": "object",
            "required": ["auth_tag"],
            "properties": {"auth_tag": text(false)},
        },
        "Envelope": {
            "type": "object",
            "description": "Keylime's reply envelope; `status` carries the message of an error.",
            "required": ["code", "status", "results"],
            "properties": {
                "code": {"type": "integer"},
                "status": {"type": "string"},
                "results": {"type": "object"},
            },
        },
        "JsonApiDocument": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {}},
        },
        "JsonApiErrors": {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["status", "title"],
                        "properties": {
                            "status": {"type": "string"},
                            "title": {"type": "string"},
                            "detail": {"type": "string"},
                        },
                    },
                },
            },
        },
        // Push routes answer JSON:API errors; a request refused before it reaches them
        // (unknown path, wrong method) gets Keylime's envelope.
        "ErrorReply": {
            "anyOf": [
                {"$ref": "#/components/schemas/JsonApiErrors"},
                {"$ref": "#/components/schemas/Envelope"},
            ],
        },
    })
}
