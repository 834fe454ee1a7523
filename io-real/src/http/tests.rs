//! Tests of `http.rs`, kept beside it so the module itself stays one concern.

use super::*;
use axum::body::Body;
use http_body_util::BodyExt;
use raftkv_core::client::RejectReason;
use tower::ServiceExt;

const LIMIT: usize = 1024;

/// A router whose node is a task answering every client request with `answer`; the ops it
/// was asked are sent back on the returned channel.
fn api(
    answer: impl Fn(&ClientOp) -> ClientResult + Send + 'static,
) -> (
    Router,
    mpsc::UnboundedReceiver<(ClientOp, Option<RequestId>)>,
) {
    let (inputs, mut rx) = mpsc::channel(8);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            if let Input::Client {
                op,
                request_id,
                reply,
            } = input
            {
                let _ = reply.send(answer(&op));
                let _ = seen_tx.send((op, request_id));
            }
        }
    });
    (router(test_api(inputs), LIMIT), seen)
}

fn test_api(inputs: mpsc::Sender<Input>) -> Api {
    Api {
        inputs,
        wait: Duration::from_secs(30),
        // A recorder that is not installed: its handle renders, and no global is touched.
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
    }
}

async fn send(app: &Router, req: Request) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn req(method: &str, uri: &str, body: &'static str) -> Request {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap()
}

fn written() -> ClientResult {
    Ok(ClientReply::Written(WriteResult::Put { existed: false }))
}

#[tokio::test]
async fn kv_routes_map_to_client_ops() {
    let (app, mut seen) = api(|op| match op {
        ClientOp::Get { .. } | ClientOp::GetLocal { .. } => {
            Ok(ClientReply::Value(Some(b"v1".to_vec())))
        }
        _ => written(),
    });
    let (code, _, _) = send(&app, req("PUT", "/v1/kv/a/b", "v1")).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::Put {
            key: b"a/b".to_vec(),
            value: b"v1".to_vec()
        }
    );
    let (code, _, body) = send(&app, req("GET", "/v1/kv/a", "")).await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "v1"));
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::Get { key: b"a".to_vec() }
    );
    send(&app, req("GET", "/k?consistency=local", "")).await;
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::GetLocal { key: b"k".to_vec() }
    );
    send(&app, req("DELETE", "/v1/kv/k", "")).await;
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::Delete { key: b"k".to_vec() }
    );
    // raftexample's POST /{id} adds a member; its body is the peer URL.
    let (app, mut seen) = api(|_| {
        Ok(ClientReply::Members(
            [(1, "http://127.0.0.1:1".to_string())].into(),
        ))
    });
    let (code, _, body) = send(&app, req("POST", "/4", "http://127.0.0.1:4")).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body, r#"[{"id":1,"peer_url":"http://127.0.0.1:1"}]"#);
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::AddNode {
            id: 4,
            addr: "http://127.0.0.1:4".into()
        }
    );
    let (_, _, _) = send(
        &app,
        req(
            "POST",
            "/v1/members",
            r#"{"id": 5, "peer_url": "http://h:5", "learner": true}"#,
        ),
    )
    .await;
    assert_eq!(
        seen.recv().await.unwrap().0,
        ClientOp::AddLearner {
            id: 5,
            addr: "http://h:5".into(),
            auto_promote: true
        }
    );
}

#[tokio::test]
async fn request_ids_come_from_both_headers_or_neither() {
    let (app, mut seen) = api(|_| written());
    let with = |headers: &[(&'static str, &'static str)]| {
        let mut b = Request::builder().method("PUT").uri("/v1/kv/k");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from("v")).unwrap()
    };
    let both = [("x-raftkv-client-id", "7"), ("x-raftkv-request-seq", "9")];
    assert_eq!(send(&app, with(&both)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        seen.recv().await.unwrap().1,
        Some(RequestId { client: 7, seq: 9 })
    );
    let (code, _, body) = send(&app, with(&both[..1])).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("go together"), "{body}");
    let (code, _, _) = send(&app, with(&[("x-raftkv-client-id", "x"), both[1]])).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // Refused before the node: only the first request reached it.
    drop(app);
    assert!(seen.recv().await.is_none());
}

#[tokio::test]
async fn refusals_before_the_node() {
    let (app, mut seen) = api(|_| written());
    for (method, uri) in [
        ("GET", "/v1/kv/"),
        ("GET", "/v1/kv"),
        ("PUT", "/"),
        ("GET", "/k?consistency=eventual"),
        ("POST", "/0"),
        ("POST", "/x"),
        ("DELETE", "/v1/members/0"),
    ] {
        let (code, _, body) = send(&app, req(method, uri, "")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{method} {uri}: {body}");
    }
    let (code, _, body) = send(&app, req("POST", "/3", "127.0.0.1:3")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("must start with http://"), "{body}");
    let long = format!("/v1/kv/{}", "k".repeat(MAX_KEY_BYTES + 1));
    let r = Request::builder().uri(long).body(Body::empty()).unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::BAD_REQUEST);
    // A declared length over the limit: 413 at once, and the connection is to be closed
    // (its unread body would be taken for the next request).
    let r = Request::builder()
        .method("PUT")
        .uri("/v1/kv/k")
        .header(header::CONTENT_LENGTH, LIMIT + 1)
        .body(Body::from(vec![b'x'; LIMIT + 1]))
        .unwrap();
    let (code, headers, body) = send(&app, r).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers[header::CONNECTION], "close");
    assert!(body.contains("--max-body-bytes"), "{body}");
    // At the limit: accepted.
    let r = Request::builder()
        .method("PUT")
        .uri("/v1/kv/k")
        .body(Body::from(vec![b'x'; LIMIT]))
        .unwrap();
    assert_eq!(send(&app, r).await.0, StatusCode::NO_CONTENT);
    drop(app);
    let (op, _) = seen.recv().await.unwrap();
    assert!(matches!(op, ClientOp::Put { value, .. } if value.len() == LIMIT));
    assert!(seen.recv().await.is_none(), "nothing else reached the node");
}

#[tokio::test]
async fn node_answers_map_to_status_codes() {
    let cases: Vec<(ClientResult, StatusCode, bool)> = vec![
        (
            Err(ClientError::NoLeader { waited_ticks: 20 }),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::NotLeader { leader: Some(2) }),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::Busy),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::TooManyRequests {
                log_bytes: 3 << 20,
                limit_bytes: 2 << 20,
            }),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::LeaderUnreachable { leader: 2 }),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::Stopped),
            StatusCode::SERVICE_UNAVAILABLE,
            true,
        ),
        (
            Err(ClientError::Rejected(RejectReason::StaleRequest)),
            StatusCode::CONFLICT,
            false,
        ),
        (
            Err(ClientError::Timeout),
            StatusCode::GATEWAY_TIMEOUT,
            false,
        ),
        (
            Err(ClientError::LeaderChanged { leader: None }),
            StatusCode::GATEWAY_TIMEOUT,
            false,
        ),
        (
            Err(ClientError::StoppedWhilePending),
            StatusCode::GATEWAY_TIMEOUT,
            false,
        ),
        (
            Ok(ClientReply::Written(WriteResult::Delete { existed: false })),
            StatusCode::NOT_FOUND,
            false,
        ),
        (
            Ok(ClientReply::Written(WriteResult::Delete { existed: true })),
            StatusCode::NO_CONTENT,
            false,
        ),
    ];
    for (answer, want, retry_after) in cases {
        let shown = format!("{answer:?}");
        let (app, _seen) = api(move |_| answer.clone());
        let (code, headers, body) = send(&app, req("DELETE", "/v1/kv/k", "")).await;
        assert_eq!(code, want, "{shown}: {body}");
        assert_eq!(
            headers.get("retry-after").map(|v| v.to_str().unwrap()),
            retry_after.then_some("1"),
            "{shown}"
        );
        if code == StatusCode::CONFLICT {
            assert_eq!(
                body,
                "rejected: request id older than this client's last write\n"
            );
        }
        if code == StatusCode::GATEWAY_TIMEOUT {
            assert!(body.contains("retry with the same request id"), "{body}");
        }
    }
    let (app, _seen) = api(|_| Ok(ClientReply::Value(None)));
    assert_eq!(
        send(&app, req("GET", "/v1/kv/k", "")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_full_queue_or_a_gone_node_is_503_not_applied() {
    // Nobody reads the queue: the first request fills it, the second is refused at once.
    let (inputs, rx) = mpsc::channel(1);
    let app = router(test_api(inputs.clone()), LIMIT);
    let (reply, _keep) = oneshot::channel();
    inputs
        .try_send(Input::Client {
            op: ClientOp::Get { key: b"x".to_vec() },
            request_id: None,
            reply,
        })
        .unwrap();
    let (code, headers, body) = send(&app, req("PUT", "/v1/kv/k", "v")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body, "server queue full\n");
    // The event loop is gone (its receiver dropped): 503 too, never a hang.
    drop(rx);
    let (code, _, _) = send(&app, req("GET", "/v1/kv/k", "")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
}
