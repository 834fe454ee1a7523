//! The HTTP API: raftexample's routes, the namespaced `/v1` routes, health and metrics.
//!
//! Handlers only translate HTTP to `ClientOp`s and results back; every decision is the node's.
//! Writes answer after commit and apply; GET is linearizable unless `?consistency=local`.
//! A follower forwards writes and linearizable reads to the leader over the peer connection,
//! so any node can be asked.

// Handlers return early with a ready `Response` as the error; it is large, and boxing it would
// only add noise to every handler.
#![allow(clippy::result_large_err)]

use crate::server::{ClientResult, Input, StatusView};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use raftkv_core::command::RequestId;
use raftkv_core::health::{Check, Readiness};
use raftkv_core::kv::WriteResult;
use raftkv_core::node::{ClientError, ClientOp, ClientReply};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

#[derive(Clone)]
pub struct Api {
    pub inputs: mpsc::Sender<Input>,
    /// How long a handler waits for the node (a little over the node's own deadline).
    pub wait: Duration,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The `op` label of a request's latency.
fn op_label(op: &ClientOp) -> &'static str {
    match op {
        ClientOp::Put { .. } => "put",
        ClientOp::Delete { .. } => "delete",
        ClientOp::Get { .. } => "get",
        ClientOp::GetLocal { .. } => "get_local",
        ClientOp::AddNode { .. }
        | ClientOp::RemoveNode { .. }
        | ClientOp::AddLearner { .. }
        | ClientOp::PromoteNode { .. }
        | ClientOp::UpdateNode { .. } => "member",
    }
}

pub fn router(api: Api, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/members", get(list_members).post(add_member_json))
        .route("/v1/members/{id}", delete(remove_member).put(update_member))
        .route("/v1/members/{id}/promote", post(promote_member))
        .route("/v1/kv", any(empty_key))
        .route("/v1/kv/", any(empty_key))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/", any(empty_key))
        .route(
            "/{key}",
            get(get_key)
                .put(put_key)
                .post(add_member_legacy)
                .delete(remove_member),
        )
        // The declared length is checked before the body is read (a client is told at once,
        // before it uploads, or before it waits for `100 Continue`); the limit on the body read
        // covers bodies sent without a length (chunked).
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            refuse_declared_oversize,
        ))
        .with_state(api)
}

/// 413 for a request whose `Content-Length` is over the limit, without reading its body.
async fn refuse_declared_oversize(
    State(limit): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => {
            let mut r = text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body of {len} bytes is over the limit of {limit} (--max-body-bytes)"),
            );
            // The unread body would otherwise be taken for the next request on the connection.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        _ => next.run(req).await,
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (code, body).into_response()
}

async fn empty_key() -> Response {
    text(
        StatusCode::BAD_REQUEST,
        "empty key: use /{key} or /v1/kv/{key}",
    )
}

impl Api {
    async fn call(
        &self,
        op: ClientOp,
        request_id: Option<RequestId>,
    ) -> Result<ClientResult, Response> {
        let started = Instant::now();
        let op_name = op_label(&op);
        let r = self.call_node(op, request_id).await;
        let result = match &r {
            Ok(Ok(_)) => "ok",
            Ok(Err(e)) if e.outcome_unknown() => "unknown",
            Err(resp) if resp.status() == StatusCode::GATEWAY_TIMEOUT => "unknown",
            Ok(Err(_)) | Err(_) => "not_applied",
        };
        metrics::histogram!(crate::metrics::REQUEST_SECONDS, "op" => op_name, "result" => result)
            .record(started.elapsed());
        r
    }

    async fn call_node(
        &self,
        op: ClientOp,
        request_id: Option<RequestId>,
    ) -> Result<ClientResult, Response> {
        let (tx, rx) = oneshot::channel();
        if self
            .inputs
            .try_send(Input::Client {
                op,
                request_id,
                reply: tx,
            })
            .is_err()
        {
            return Err(busy("server queue full"));
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(r)) => Ok(r),
            // The node answers every request it took, even when it stops or shuts down: only
            // one still queued before the event loop (never seen by the node) gets here.
            Ok(Err(_)) => Err(busy("node is shutting down; the request was not applied")),
            // The node answers everything by its own deadline; this is the shell's backstop
            // (an event loop stalled on something), and the request may have been proposed.
            Err(_) => Err(text(
                StatusCode::GATEWAY_TIMEOUT,
                "timed out; the outcome is unknown",
            )),
        }
    }

    async fn status(&self) -> Result<StatusView, Response> {
        let (tx, rx) = oneshot::channel();
        if self.inputs.try_send(Input::Status(tx)).is_err() {
            return Err(busy("server queue full"));
        }
        rx.await
            .map_err(|_| text(StatusCode::SERVICE_UNAVAILABLE, "node is shutting down"))
    }
}

fn busy(msg: &str) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// The node decided the answer (definite or outcome unknown); this only maps it to a status:
/// 503 with `Retry-After` for a definite failure that may pass (the request was not applied),
/// 409 for a refusal, 504 when the outcome is unknown.
fn error_response(e: ClientError) -> Response {
    match e {
        ClientError::Rejected(why) => text(StatusCode::CONFLICT, format!("rejected: {why}")),
        e if e.outcome_unknown() => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{e}; retry with the same request id to be safe"),
        ),
        e => busy(&format!("{e}; retry")),
    }
}

fn check_key(key: &str) -> Result<Vec<u8>, Response> {
    if key.is_empty() {
        return Err(text(StatusCode::BAD_REQUEST, "empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("key longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(key.as_bytes().to_vec())
}

/// Optional idempotency headers: `x-raftkv-client-id` and `x-raftkv-request-seq` (both u64).
fn request_id(h: &HeaderMap) -> Result<Option<RequestId>, Response> {
    let get = |name: &str| -> Result<Option<u64>, Response> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| {
                    text(
                        StatusCode::BAD_REQUEST,
                        format!("header {name} must be an unsigned integer"),
                    )
                }),
        }
    };
    match (get("x-raftkv-client-id")?, get("x-raftkv-request-seq")?) {
        (Some(client), Some(seq)) => Ok(Some(RequestId { client, seq })),
        (None, None) => Ok(None),
        _ => Err(text(
            StatusCode::BAD_REQUEST,
            "x-raftkv-client-id and x-raftkv-request-seq go together",
        )),
    }
}

#[derive(Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

async fn get_key(
    State(api): State<Api>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Response {
    let key = match check_key(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let op = match q.consistency.as_deref() {
        None | Some("linearizable") => ClientOp::Get { key },
        Some("local") => ClientOp::GetLocal { key },
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("consistency must be 'linearizable' or 'local', not {other:?}"),
            )
        }
    };
    match api.call(op, None).await {
        Ok(Ok(ClientReply::Value(Some(v)))) => (StatusCode::OK, v).into_response(),
        Ok(Ok(ClientReply::Value(None))) => text(StatusCode::NOT_FOUND, "key not found"),
        Ok(Ok(other)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected reply {other:?}"),
        ),
        Ok(Err(e)) => error_response(e),
        Err(r) => r,
    }
}

async fn write(api: &Api, op: ClientOp, headers: &HeaderMap) -> Response {
    let rid = match request_id(headers) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match api.call(op, rid).await {
        Ok(Ok(ClientReply::Written(WriteResult::Delete { existed: false }))) => {
            text(StatusCode::NOT_FOUND, "key not found")
        }
        Ok(Ok(ClientReply::Written(_))) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(other)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected reply {other:?}"),
        ),
        Ok(Err(e)) => error_response(e),
        Err(r) => r,
    }
}

async fn put_key(
    State(api): State<Api>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match check_key(&key) {
        Ok(key) => {
            write(
                &api,
                ClientOp::Put {
                    key,
                    value: body.to_vec(),
                },
                &headers,
            )
            .await
        }
        Err(r) => r,
    }
}

async fn delete_key(
    State(api): State<Api>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    match check_key(&key) {
        Ok(key) => write(&api, ClientOp::Delete { key }, &headers).await,
        Err(r) => r,
    }
}

fn parse_id(s: &str) -> Result<u64, Response> {
    match s.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(text(
            StatusCode::BAD_REQUEST,
            format!("bad node id {s:?}: must be a positive integer"),
        )),
    }
}

fn check_peer_url(url: &str) -> Result<String, Response> {
    let url = url.trim();
    crate::cli::peer_socket_addr(url).map_err(|e| text(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(url.to_string())
}

async fn member_op(api: &Api, op: ClientOp, ok: StatusCode) -> Response {
    match api.call(op, None).await {
        Ok(Ok(ClientReply::Members(m))) => (ok, Json(members_json(&m))).into_response(),
        Ok(Ok(other)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected reply {other:?}"),
        ),
        Ok(Err(e)) => error_response(e),
        Err(r) => r,
    }
}

fn members_json(m: &std::collections::BTreeMap<u64, String>) -> serde_json::Value {
    serde_json::Value::Array(
        m.iter()
            .map(|(id, addr)| serde_json::json!({"id": id, "peer_url": addr}))
            .collect(),
    )
}

/// raftexample: `POST /{id}` with the new node's peer URL as the body.
async fn add_member_legacy(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Ok(url) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "peer URL must be UTF-8");
    };
    match check_peer_url(url) {
        Ok(addr) => member_op(&api, ClientOp::AddNode { id, addr }, StatusCode::CREATED).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct AddMember {
    id: u64,
    peer_url: String,
    /// Join as a non-voting learner (the safe way to add a member: it counts toward no quorum
    /// until it has caught up).
    #[serde(default)]
    learner: bool,
    /// For a learner: promoted by the leader once caught up (default), or only by
    /// `POST /v1/members/{id}/promote`.
    #[serde(default = "yes")]
    auto_promote: bool,
}

fn yes() -> bool {
    true
}

async fn add_member_json(State(api): State<Api>, body: Bytes) -> Response {
    let m: AddMember = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"id\": N, \"peer_url\": \"http://host:port\"}}: {e}"),
            )
        }
    };
    if m.id == 0 {
        return text(StatusCode::BAD_REQUEST, "node id must be positive");
    }
    match check_peer_url(&m.peer_url) {
        Ok(addr) => {
            let op = if m.learner {
                ClientOp::AddLearner {
                    id: m.id,
                    addr,
                    auto_promote: m.auto_promote,
                }
            } else {
                ClientOp::AddNode { id: m.id, addr }
            };
            member_op(&api, op, StatusCode::CREATED).await
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct UpdateMember {
    peer_url: String,
}

/// `PUT /v1/members/{id}` with `{"peer_url": "http://host:port"}`: a member's new peer URL,
/// through the log. Restart the member with the new URL afterwards.
async fn update_member(State(api): State<Api>, Path(id): Path<String>, body: Bytes) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let m: UpdateMember = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"peer_url\": \"http://host:port\"}}: {e}"),
            )
        }
    };
    match check_peer_url(&m.peer_url) {
        Ok(addr) => member_op(&api, ClientOp::UpdateNode { id, addr }, StatusCode::OK).await,
        Err(r) => r,
    }
}

/// `POST /v1/members/{id}/promote`: a learner becomes a voter (409 while it is behind).
async fn promote_member(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match parse_id(&id) {
        Ok(id) => member_op(&api, ClientOp::PromoteNode { id }, StatusCode::OK).await,
        Err(r) => r,
    }
}

async fn remove_member(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match parse_id(&id) {
        Ok(id) => member_op(&api, ClientOp::RemoveNode { id }, StatusCode::OK).await,
        Err(r) => r,
    }
}

async fn list_members(State(api): State<Api>) -> Response {
    match api.status().await {
        Ok(v) => {
            let s = &v.status;
            let list = s
                .members
                .iter()
                .map(|(id, addr)| {
                    let incarnation = s.incarnations.get(id).map(|i| format!("{i:#x}"));
                    let role = if s.learners.contains(id) {
                        "learner"
                    } else {
                        "voter"
                    };
                    serde_json::json!({"id": id, "peer_url": addr, "role": role, "incarnation": incarnation})
                })
                .collect();
            Json(serde_json::Value::Array(list)).into_response()
        }
        Err(r) => r,
    }
}

async fn status(State(api): State<Api>) -> Response {
    match api.status().await {
        Ok(v) => {
            let s = &v.status;
            Json(serde_json::json!({
                "id": s.id,
                "role": format!("{:?}", s.role),
                "leader": s.leader_id,
                "cluster_id": format!("{:#x}", s.cluster_id),
                "incarnation": format!("{:#x}", s.incarnation),
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "snapshot_index": s.snapshot_index,
                "first_index": s.first_index,
                "last_index": s.last_index,
                "log_entries_in_memory": s.log_entries_in_memory,
                "log_bytes_in_memory": s.log_bytes_in_memory,
                "state_bytes": s.state_bytes,
                "members": members_json(&s.members),
                "snapshot_sends": s.snapshot_sends,
                "snapshot_receiving": s.snapshot_receiving.map(|(index, received, total)| {
                    serde_json::json!({"index": index, "received_bytes": received, "file_bytes": total})
                }),
            }))
            .into_response()
        }
        Err(r) => r,
    }
}

/// How long `/livez` waits for the event loop before calling the process stuck.
const LIVEZ_WAIT: Duration = Duration::from_secs(2);

/// etcd's probe format: a `[+]name ok` or `[-]name failed: why` line per check, then a verdict.
fn probe(checks: &[(&str, Result<(), String>)], what: &str) -> Response {
    let mut body = String::new();
    for (name, r) in checks {
        match r {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(why) => body.push_str(&format!("[-]{name} failed: {why}\n")),
        }
    }
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    if ok {
        body.push_str("ok");
        text(StatusCode::OK, body)
    } else {
        body.push_str(&format!("{what} check failed"));
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn readiness_checks(r: &Readiness) -> Vec<(&'static str, Result<(), String>)> {
    r.checks
        .iter()
        .map(|(c, res)| (c.name(), res.clone().map_err(|e| e.to_string())))
        .collect()
}

/// `/livez`: the process serves (its event loop answers and the node has not stopped), whatever
/// the cluster is doing. A failing liveness probe means: restart this process.
async fn livez(State(api): State<Api>) -> Response {
    let serving = match tokio::time::timeout(LIVEZ_WAIT, api.status()).await {
        Ok(Ok(v)) => v
            .readiness
            .checks
            .iter()
            .find(|(c, _)| *c == Check::Running)
            .map_or(Ok(()), |(_, r)| r.clone().map_err(|e| e.to_string())),
        Ok(Err(_)) => Err("the event loop is not taking requests".to_string()),
        Err(_) => Err(format!(
            "the event loop did not answer within {LIVEZ_WAIT:?}"
        )),
    };
    probe(&[("serving", serving)], "livez")
}

/// `/readyz`: send this node clients (it runs, knows a leader, is caught up, and is a member of
/// the configuration it knows). Every check is listed; the failed ones say why.
async fn readyz(State(api): State<Api>) -> Response {
    match api.status().await {
        Ok(v) => probe(&readiness_checks(&v.readiness), "readyz"),
        Err(r) => r,
    }
}

/// `/health`, etcd's shape: `{"health": "true"|"false", "reason": ...}`, 200 only when ready.
async fn health(State(api): State<Api>) -> Response {
    match api.status().await {
        Ok(v) => {
            let (code, reason) = match v.readiness.failure() {
                None => (StatusCode::OK, String::new()),
                Some((check, why)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{}: {why}", check.name()),
                ),
            };
            let health = if code == StatusCode::OK {
                "true"
            } else {
                "false"
            };
            (
                code,
                Json(serde_json::json!({"health": health, "reason": reason})),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    match api.status().await {
        Ok(v) => crate::metrics::update(&v),
        Err(r) => return r,
    }
    let mut r = (StatusCode::OK, api.metrics.render()).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[cfg(test)]
mod tests;
