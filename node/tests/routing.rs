//! The HTTP API's routing: wrong methods, unknown paths, the API key in front of every
//! backend endpoint, and the order a node stops in.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestNode, API_KEY, SECRET};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 exchange: status, headers (lower-cased names) and JSON body.
async fn exchange(
    node: &TestNode,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Vec<(String, String)>, Value) {
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: 0\r\n",
        node.addr
    );
    if let Some(value) = authorization {
        request.push_str(&format!("authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("a reply within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete reply");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn allowed(headers: &[(String, String)]) -> Vec<String> {
    let mut methods: Vec<String> = header(headers, "allow")
        .unwrap_or_else(|| panic!("no Allow header in {headers:?}"))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect();
    methods.sort();
    methods
}

#[tokio::test]
async fn a_wrong_method_is_a_405_naming_the_allowed_ones() {
    let node = TestNode::start(&[]);
    let bearer = format!("Bearer {API_KEY}");
    let cases = [
        ("GET", "/api/v1/publish", &["POST"][..]),
        ("PUT", "/api/v1/publish", &["POST"]),
        ("POST", "/api/v1/channels", &["GET", "HEAD"]),
        ("DELETE", "/api/v1/nodes", &["GET", "HEAD"]),
        (
            "POST",
            "/api/developer/websocket-sessions/",
            &["GET", "HEAD"],
        ),
        (
            "PATCH",
            "/api/developer/websocket-sessions",
            &["GET", "HEAD"],
        ),
        (
            "POST",
            "/api/developer/websocket-messages/",
            &["GET", "HEAD"],
        ),
        ("POST", "/healthz", &["GET", "HEAD"]),
        ("DELETE", "/readyz", &["GET", "HEAD"]),
        ("POST", "/metrics", &["GET", "HEAD"]),
        ("POST", "/", &["GET", "HEAD"]),
    ];
    for (method, path, allow) in cases {
        for key in [Some(bearer.as_str()), None] {
            let (status, headers, body) = exchange(&node, method, path, key).await;
            assert_eq!(status, 405, "{method} {path} ({key:?}): {body}");
            assert_eq!(allowed(&headers), allow, "{method} {path}");
            assert_eq!(
                body["error"]["code"], "method_not_allowed",
                "{method} {path}"
            );
            assert_eq!(header(&headers, "content-type"), Some("application/json"));
        }
    }
    // The right method still answers, and HEAD is a GET without a body.
    let (status, _, body) = exchange(&node, "GET", "/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = exchange(&node, "HEAD", "/healthz", None).await;
    assert_eq!((status, body), (200, Value::String(String::new())));
}

#[tokio::test]
async fn unknown_paths_are_a_json_404_whatever_the_method() {
    let node = TestNode::start(&[]);
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/api/v1/publish/extra"),
        ("GET", "/api/v1/publishx"),
        ("DELETE", "/api/v1"),
        ("GET", "/%22CORP%5Calice%22%F0%9F%A6%80"),
        ("GET", &format!("/{}", "x".repeat(4000))),
    ] {
        let (status, _, body) = exchange(&node, method, path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{method} {path}");
    }
}

/// One protected request per route family, with a method that is allowed there.
const PROTECTED: [(&str, &str); 6] = [
    ("POST", "/api/v1/publish"),
    ("GET", "/api/v1/channels"),
    ("GET", "/api/v1/nodes"),
    (
        "GET",
        "/api/developer/websocket-sessions/?user=CORP%5Calice",
    ),
    ("GET", "/api/developer/websocket-sessions"),
    ("GET", "/api/developer/websocket-messages/?channel=alerts"),
];

#[tokio::test]
async fn every_backend_endpoint_refuses_a_missing_or_wrong_key() {
    // A key full of characters that need care: quotes, a backslash, spaces, long.
    let key = format!(r#"CORP\alice "quoted" 'single' {}"#, "k".repeat(300));
    let mut command = Command::new(common::binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--api-key", &key])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let node = TestNode::spawn(command);
    let last_changed = format!("{}K", &key[..key.len() - 1]);
    let wrong = [
        None,
        Some(String::new()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {key}")),
        Some(format!("Bearer {}", &key[..key.len() - 1])),
        Some(format!("Bearer {key}x")),
        Some(format!("Bearer {last_changed}")),
        Some(format!("Bearer {API_KEY}")),
        Some(format!("Bearer{key}")),
    ];
    for (method, path) in PROTECTED {
        for authorization in &wrong {
            let (status, headers, body) =
                exchange(&node, method, path, authorization.as_deref()).await;
            assert_eq!(
                status, 401,
                "{method} {path} with {authorization:?}: {body}"
            );
            assert_eq!(body["error"]["code"], "unauthorized");
            assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
        }
        let right = format!("bearer  {key}");
        let (status, _, body) = exchange(&node, method, path, Some(&right)).await;
        // Past the key: publish complains about the (empty) body, the rest answer.
        let expected = if method == "POST" { 400 } else { 200 };
        assert_eq!(status, expected, "{method} {path}: {body}");
    }
    // The open endpoints need no key.
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        let (status, _, body) = exchange(&node, "GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_http_server_then_background_tasks_then_exits() {
    let dir = std::env::temp_dir().join(format!("herald-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let channels = dir.join("channels.json");
    let write_channels = |name: &str| {
        let file =
            json!({"channels": [{"name": name, "access": "public", "allowed_types": ["alert"]}]});
        std::fs::write(&channels, file.to_string()).unwrap();
    };
    write_channels("alerts");
    let log = dir.join("stderr.log");
    let mut command = Command::new(common::binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
        .args(["--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--api-key", API_KEY, "--drain-window", "1s"])
        .args(["--channels", channels.to_str().unwrap()])
        .args(["--channels-reload", "50ms"])
        .env("RUST_LOG", "herald_node=debug,herald_node::session=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut node = TestNode::spawn(command);
    let mut client = node.connect("CORP\\alice").await;
    client.assert_alive().await;

    node.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While draining, the API serves and channel reloads still apply.
    let renamed = "renamed.while-draining@2";
    write_channels(renamed);
    let mut published = false;
    for _ in 0..40 {
        let (status, _) = node
            .publish(
                &json!({"channel": renamed, "type": "alert", "data": {"by": "CORP\\alice \"🦀\""}}),
            )
            .await;
        if status == 200 {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        published,
        "the reloaded channel was never accepted while draining"
    );

    let status = node
        .wait_exit(Duration::from_secs(8))
        .expect("node exits after draining");
    assert!(status.success(), "{status:?}");
    drop(client);
    let text = std::fs::read_to_string(&log).unwrap();
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged:\n{text}"))
    };
    let order = [
        position("SIGTERM received"),
        position("drained"),
        position("HTTP server stopped"),
        position("background task stopped"),
        position("background tasks stopped"),
        position("herald-node stopped"),
    ];
    assert!(order.is_sorted(), "{order:?}:\n{text}");
    assert!(text.contains("channel reload"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
