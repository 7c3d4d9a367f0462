//! The Centrifugo protocol adapter (the peer in `e2e/peers/centrifugo/`, JSON protocol).
//!
//! Clients connect to `/connection/websocket` and send a `connect` command carrying an HS256
//! JWT whose `sub` is the user, then one `subscribe` command per channel; every reply
//! echoes its command's `id`. Publications arrive as `{"push":{"channel", "pub":{"data"}}}`.
//! The server pings with an empty object `{}` and expects `{}` back. Centrifugo may write
//! several messages into one WebSocket frame, separated by newlines, so the adapter
//! classifies every line of a frame ([`Target::each_message`]).
//!
//! Channels (see [`crate::peers::centrifugo`] for the namespaces that allow them):
//! - broadcast: `alerts`, which every client subscribes to;
//! - personal: `personal:#<user>`, a user-limited channel only that user may join, plus the
//!   user's shared group `group:<n>` of ten consecutive users ([`group_of`]).
//!
//! Publishing is the server HTTP API with the `X-API-Key` header: `/api/publish` for one
//! publication, `/api/batch` (a list of `publish` commands) for several.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::legacy::group_of;
use super::{HttpCall, Inbound, Publication, Stream, Target, TargetSpec, WsTarget};
use crate::payload::Payload;

/// Channel every client subscribes to for broadcast measurements.
pub const BROADCAST_CHANNEL: &str = "alerts";
/// Namespace of the user-limited personal channels.
pub const PERSONAL_NAMESPACE: &str = "personal";
/// Namespace of the shared ten-user group channels.
pub const GROUP_NAMESPACE: &str = "group";
/// Largest publish batch the bench sends in one request.
const MAX_BATCH: usize = 500;
/// What the server sends as an application-level ping and the client sends back as pong.
const PING: &str = "{}";

/// Centrifugo adapter state: endpoints and credentials.
pub struct Centrifugo {
    ws_url: String,
    key: EncodingKey,
    api_key: String,
    token_ttl_secs: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// One line of a frame: a command reply (with `id`), or a push (without).
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: Option<u32>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
    #[serde(borrow, default)]
    push: Option<Push<'a>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(default)]
    code: u32,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(rename = "pub", borrow, default)]
    publication: Option<PubBody<'a>>,
    #[serde(borrow, default)]
    disconnect: Option<Disconnect<'a>>,
}

#[derive(Deserialize)]
struct PubBody<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Disconnect<'a> {
    #[serde(default)]
    code: u32,
    #[serde(borrow, default)]
    reason: Cow<'a, str>,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    channel: Cow<'a, str>,
    data: &'a Payload<'a>,
}

#[derive(Serialize)]
struct BatchCommand<'a> {
    publish: PublishBody<'a>,
}

#[derive(Serialize)]
struct Batch<'a> {
    commands: Vec<BatchCommand<'a>>,
}

/// The personal channel of `user`.
pub fn personal_channel(user: &str) -> String {
    format!("{PERSONAL_NAMESPACE}:#{user}")
}

/// The shared group channel of group `group` (see [`group_of`]).
pub fn group_channel(group: u64) -> String {
    format!("{GROUP_NAMESPACE}:{group}")
}

impl Centrifugo {
    /// Builds the adapter from a spec.
    pub fn new(spec: &TargetSpec) -> Result<Self> {
        if spec.jwt_secret.is_empty() {
            bail!("centrifugo: a JWT secret (the peer's HMAC token key) is required");
        }
        Ok(Self {
            ws_url: format!("ws://{}/connection/websocket", spec.ws_addr),
            key: EncodingKey::from_secret(spec.jwt_secret.as_bytes()),
            api_key: spec.api_key.clone(),
            token_ttl_secs: spec.token_ttl_secs,
        })
    }

    /// A connection token for `user`.
    pub fn token(&self, user: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user,
            exp: now + self.token_ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("signing client token")
    }

    /// The publish request delivering `payloads`, in order, to every member of shared
    /// group `group`.
    pub fn group_call(&self, group: u64, payloads: &[Payload<'_>]) -> Result<HttpCall> {
        let channel = group_channel(group);
        let bodies = payloads
            .iter()
            .map(|data| PublishBody {
                channel: Cow::Borrowed(channel.as_str()),
                data,
            })
            .collect();
        self.call(bodies)
    }

    fn call(&self, mut bodies: Vec<PublishBody<'_>>) -> Result<HttpCall> {
        let (path, body) = match bodies.len() {
            0 => bail!("empty publish batch"),
            1 => ("/api/publish", serde_json::to_vec(&bodies.remove(0))?),
            _ => {
                let commands = bodies
                    .into_iter()
                    .map(|publish| BatchCommand { publish })
                    .collect();
                ("/api/batch", serde_json::to_vec(&Batch { commands })?)
            }
        };
        Ok(HttpCall {
            method: http::Method::POST,
            path: path.to_owned(),
            headers: vec![
                ("x-api-key".to_owned(), self.api_key.clone()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ],
            body: body.into(),
        })
    }

    fn classify_line<'a>(line: &'a str) -> Inbound<'a> {
        if line == PING {
            return Inbound::Reply(PING.to_owned());
        }
        let Ok(parsed) = serde_json::from_str::<Line<'a>>(line) else {
            return Inbound::Other;
        };
        if let Some(e) = parsed.error {
            return Inbound::Error(format!("{} (code {})", e.message, e.code));
        }
        if parsed.id.is_some() {
            return Inbound::Ack;
        }
        match parsed.push {
            Some(Push {
                publication: Some(p),
                ..
            }) => Payload::parse(p.data.get()).map_or(Inbound::Other, Inbound::Delivery),
            Some(Push {
                disconnect: Some(d),
                ..
            }) => Inbound::Error(format!("disconnected: {} (code {})", d.reason, d.code)),
            _ => Inbound::Other,
        }
    }
}

impl Target for Centrifugo {
    fn name(&self) -> &'static str {
        "centrifugo"
    }

    fn ws_target(&self, _user: &str) -> Result<WsTarget> {
        Ok(WsTarget {
            url: self.ws_url.clone(),
            headers: Vec::new(),
        })
    }

    fn handshake(&self, stream: Stream, _index: usize, user: &str) -> Result<Vec<String>> {
        let mut channels = Vec::new();
        match stream {
            Stream::Broadcast => channels.push(BROADCAST_CHANNEL.to_owned()),
            Stream::Personal => {
                channels.push(personal_channel(user));
                channels.extend(group_of(user).map(group_channel));
            }
        }
        let mut frames = vec![serde_json::json!({
            "id": 1,
            "connect": {"token": self.token(user)?, "name": "herald-bench"}
        })
        .to_string()];
        frames.extend(channels.iter().zip(2u32..).map(|(channel, id)| {
            serde_json::json!({"id": id, "subscribe": {"channel": channel}}).to_string()
        }));
        Ok(frames)
    }

    fn classify<'a>(&self, text: &'a str) -> Inbound<'a> {
        Self::classify_line(text.trim_end_matches('\n'))
    }

    fn each_message<'a>(&self, text: &'a str, f: &mut dyn FnMut(Inbound<'a>)) {
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            f(Self::classify_line(line));
        }
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn publish_call(&self, batch: &[Publication<'_>]) -> Result<HttpCall> {
        let bodies = batch
            .iter()
            .map(|p| {
                let channel = match (p.stream, p.user) {
                    (Stream::Broadcast, _) => Cow::Borrowed(BROADCAST_CHANNEL),
                    (Stream::Personal, Some(user)) => Cow::Owned(personal_channel(user)),
                    (Stream::Personal, None) => bail!("a personal publication needs a user"),
                };
                Ok(PublishBody {
                    channel,
                    data: &p.payload,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.call(bodies)
    }

    fn accepted(&self, status: u16, body: &[u8], sent: usize) -> Result<usize> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if !(200..300).contains(&status) {
            bail!("publish HTTP {status}: {}", snippet());
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| anyhow!("publish reply not JSON: {}", snippet()))?;
        if let Some(replies) = v.get("replies").and_then(|r| r.as_array()) {
            let ok = replies
                .iter()
                .filter(|r| r.get("publish").is_some() && r.get("error").is_none())
                .count();
            return Ok(ok.min(sent));
        }
        if let Some(e) = v.get("error") {
            bail!("publish refused: {e}");
        }
        if v.get("result").is_some() {
            return Ok(1.min(sent));
        }
        bail!(
            "publish reply has neither result nor replies: {}",
            snippet()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{payload, spec};
    use super::super::TargetKind;
    use super::*;

    fn centrifugo() -> Centrifugo {
        Centrifugo::new(&spec(TargetKind::Centrifugo)).unwrap()
    }

    #[test]
    fn handshake_connects_with_a_sub_token_then_subscribes() {
        let c = centrifugo();
        assert_eq!(
            c.ws_target("bench-1").unwrap().url,
            "ws://127.0.0.1:8000/connection/websocket"
        );
        let frames = c.handshake(Stream::Personal, 42, "bench-42").unwrap();
        assert_eq!(frames.len(), 3);
        let connect: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(connect["id"], 1);
        let token = connect["connect"]["token"].as_str().unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["exp".to_string(), "sub".to_string()].into();
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "bench-42");
        let sub = |i: usize| serde_json::from_str::<serde_json::Value>(&frames[i]).unwrap();
        assert_eq!(sub(1)["subscribe"]["channel"], "personal:#bench-42");
        assert_eq!(sub(2)["subscribe"]["channel"], "group:4");
        assert_eq!(
            (sub(1)["id"].clone(), sub(2)["id"].clone()),
            (2.into(), 3.into())
        );

        let frames = c.handshake(Stream::Broadcast, 42, "bench-42").unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames[1].contains(r#""channel":"alerts""#));
    }

    #[test]
    fn classifies_replies_pushes_pings_and_errors() {
        let c = centrifugo();
        let push =
            r#"{"push":{"channel":"alerts","pub":{"data":{"run":2,"seq":5,"ts":10},"offset":3}}}"#;
        match c.classify(push) {
            Inbound::Delivery(p) => assert_eq!((p.run, p.seq, p.ts), (2, 5, 10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.classify(
                r#"{"id":1,"connect":{"client":"x","version":"6.9.1","ping":25,"pong":true}}"#
            ),
            Inbound::Ack
        );
        assert_eq!(c.classify(r#"{"id":2,"subscribe":{}}"#), Inbound::Ack);
        assert_eq!(c.classify("{}"), Inbound::Reply("{}".into()));
        assert_eq!(
            c.classify(r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#),
            Inbound::Error("permission denied (code 103)".into())
        );
        assert_eq!(
            c.classify(r#"{"push":{"disconnect":{"code":3005,"reason":"expired"}}}"#),
            Inbound::Error("disconnected: expired (code 3005)".into())
        );
        assert_eq!(
            c.classify(r#"{"push":{"channel":"alerts","pub":{"data":{"text":"hi"}}}}"#),
            Inbound::Other
        );
        assert_eq!(
            c.classify(r#"{"push":{"channel":"alerts","join":{"info":{}}}}"#),
            Inbound::Other
        );
        assert_eq!(c.classify("garbage"), Inbound::Other);
    }

    #[test]
    fn splits_frames_of_several_messages() {
        let c = centrifugo();
        let frame = concat!(
            r#"{"id":1,"connect":{"client":"x"}}"#,
            "\n",
            r#"{"id":2,"subscribe":{}}"#,
            "\n",
            r#"{"push":{"channel":"personal:#bench-1","pub":{"data":{"run":1,"seq":1,"ts":3,"user":"bench-1"}}}}"#,
            "\n{}\n"
        );
        let mut seen = Vec::new();
        c.each_message(frame, &mut |m| seen.push(m));
        assert_eq!(seen.len(), 4);
        assert_eq!((&seen[0], &seen[1]), (&Inbound::Ack, &Inbound::Ack));
        match &seen[2] {
            Inbound::Delivery(p) => assert_eq!(p.user.as_deref(), Some("bench-1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(seen[3], Inbound::Reply("{}".into()));
    }

    #[test]
    fn publishes_one_or_a_batch() {
        let c = centrifugo();
        let broadcast = Publication {
            stream: Stream::Broadcast,
            user: None,
            payload: payload(1, None),
        };
        let one = c.publish_call(std::slice::from_ref(&broadcast)).unwrap();
        assert_eq!(one.path, "/api/publish");
        assert!(one.headers.contains(&("x-api-key".into(), "key".into())));
        let v: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel": "alerts", "data": {"run": 1, "seq": 1, "ts": 9}})
        );

        let personal = |seq, user| Publication {
            stream: Stream::Personal,
            user: Some(user),
            payload: payload(seq, Some(user)),
        };
        let two = c
            .publish_call(&[personal(1, "bench-1"), personal(2, "bench-2")])
            .unwrap();
        assert_eq!(two.path, "/api/batch");
        let v: serde_json::Value = serde_json::from_slice(&two.body).unwrap();
        assert_eq!(v["commands"][1]["publish"]["channel"], "personal:#bench-2");
        assert_eq!(v["commands"][1]["publish"]["data"]["user"], "bench-2");

        let group = c.group_call(3, &[payload(7, None)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&group.body).unwrap();
        assert_eq!(v["channel"], "group:3");

        assert!(c.publish_call(&[]).is_err());
        let orphan = Publication {
            stream: Stream::Personal,
            user: None,
            payload: payload(1, None),
        };
        assert!(c.publish_call(&[orphan]).is_err());
    }

    #[test]
    fn counts_accepted_publications() {
        let c = centrifugo();
        assert_eq!(c.accepted(200, br#"{"result":{}}"#, 1).unwrap(), 1);
        let batch = br#"{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}},{"publish":{"offset":2}}]}"#;
        assert_eq!(c.accepted(200, batch, 3).unwrap(), 2);
        assert!(c
            .accepted(
                200,
                br#"{"error":{"code":102,"message":"unknown channel"}}"#,
                1
            )
            .is_err());
        assert!(c.accepted(401, b"Unauthorized", 1).is_err());
        assert!(c.accepted(200, b"<html>", 1).is_err());
    }
}
