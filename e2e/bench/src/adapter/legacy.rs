//! The legacy Django Channels protocol adapter (the peer in `e2e/peers/legacy/`).
//!
//! Browsers speak the same protocol as to Herald: `/ws/notifications/?token=<HS256 JWT>`
//! with a `user_id` claim, `{"type", "data"}` envelopes, `subscribe` answered by
//! `subscription_success`. The consumer joins its groups on connect, so the `subscribe` the
//! bench sends only proves the session is live. Publishing goes through the peer's
//! `POST /api/push/` (header `X-Api-Key`), one `channel_layer.group_send` per publication:
//! to `user_<id>` for personal messages and to `alerts` for broadcasts.
//!
//! Tokens of users named `<prefix><index>` also carry a `group` claim, `index / 10`: the
//! consumer joins `group_<n>`, so every ten consecutive users share a group, the shape of the
//! legacy per-department groups. [`Legacy::group_call`] publishes to one.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{HttpCall, Inbound, Publication, Stream, Target, TargetSpec, WsTarget};
use crate::payload::Payload;

/// Users per shared group.
pub const GROUP_SIZE: u64 = 10;
/// Largest publish batch the bench sends in one request.
const MAX_BATCH: usize = 500;
/// The peer's publish endpoint.
const PUSH_PATH: &str = "/api/push/";

/// Legacy adapter state: endpoints and credentials.
pub struct Legacy {
    ws_base: String,
    key: EncodingKey,
    api_key: String,
    token_ttl_secs: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    user_id: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<u64>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// One push as the peer's endpoint takes it: `user` or `group` names the recipients.
#[derive(Serialize)]
struct Push<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Cow<'a, str>>,
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a Payload<'a>,
}

#[derive(Deserialize)]
struct PushReply {
    sent: usize,
}

/// The shared group of `user`: its trailing decimal index divided by [`GROUP_SIZE`], or
/// `None` when the name does not end in digits.
pub fn group_of(user: &str) -> Option<u64> {
    let digits = user.len() - user.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    user[user.len() - digits..]
        .parse::<u64>()
        .ok()
        .map(|index| index / GROUP_SIZE)
}

impl Legacy {
    /// Builds the adapter from a spec.
    pub fn new(spec: &TargetSpec) -> Result<Self> {
        if spec.jwt_secret.is_empty() {
            bail!("legacy: a JWT secret is required (--jwt-secret / HERALD_JWT_SECRET)");
        }
        Ok(Self {
            ws_base: format!("ws://{}/ws/notifications/", spec.ws_addr),
            key: EncodingKey::from_secret(spec.jwt_secret.as_bytes()),
            api_key: spec.api_key.clone(),
            token_ttl_secs: spec.token_ttl_secs,
        })
    }

    fn token(&self, user: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            user_id: user,
            exp: now + self.token_ttl_secs,
            group: group_of(user),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("signing client token")
    }

    /// The publish request delivering `payloads`, in order, as `order_update`s to every member
    /// of shared group `group` (see [`group_of`]).
    pub fn group_call(&self, group: u64, payloads: &[Payload<'_>]) -> Result<HttpCall> {
        let name = format!("group_{group}");
        let pushes: Vec<Push<'_>> = payloads
            .iter()
            .map(|data| Push {
                user: None,
                group: Some(Cow::Borrowed(name.as_str())),
                kind: "order_update",
                data,
            })
            .collect();
        self.call(&pushes)
    }

    fn call(&self, pushes: &[Push<'_>]) -> Result<HttpCall> {
        let body = match pushes {
            [] => bail!("empty publish batch"),
            [one] => serde_json::to_vec(one)?,
            many => serde_json::to_vec(many)?,
        };
        Ok(HttpCall {
            method: http::Method::POST,
            path: PUSH_PATH.to_owned(),
            headers: vec![
                ("x-api-key".to_owned(), self.api_key.clone()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ],
            body: body.into(),
        })
    }
}

impl Target for Legacy {
    fn name(&self) -> &'static str {
        "legacy"
    }

    fn ws_target(&self, user: &str) -> Result<WsTarget> {
        // JWTs are URL-safe base64 segments joined by dots: no escaping needed.
        Ok(WsTarget {
            url: format!("{}?token={}", self.ws_base, self.token(user)?),
            headers: Vec::new(),
        })
    }

    fn handshake(&self, stream: Stream, _index: usize, _user: &str) -> Result<Vec<String>> {
        let channel = match stream {
            Stream::Broadcast => "alerts",
            Stream::Personal => "notifications",
        };
        Ok(vec![
            serde_json::json!({"type": "subscribe", "channels": [channel]}).to_string(),
        ])
    }

    fn classify<'a>(&self, text: &'a str) -> Inbound<'a> {
        let Ok(frame) = serde_json::from_str::<Frame<'a>>(text) else {
            return Inbound::Other;
        };
        match frame.kind.as_ref() {
            "subscription_success" => Inbound::Ack,
            "error" => Inbound::Error(
                frame
                    .message
                    .map_or_else(|| text.to_owned(), Cow::into_owned),
            ),
            _ => match frame.data.and_then(|d| Payload::parse(d.get())) {
                Some(p) => Inbound::Delivery(p),
                None => Inbound::Other,
            },
        }
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn publish_call(&self, batch: &[Publication<'_>]) -> Result<HttpCall> {
        let pushes = batch
            .iter()
            .map(|p| match (p.stream, p.user) {
                (Stream::Broadcast, _) => Ok(Push {
                    user: None,
                    group: Some(Cow::Borrowed("alerts")),
                    kind: "alert",
                    data: &p.payload,
                }),
                (Stream::Personal, Some(user)) => Ok(Push {
                    user: Some(user),
                    group: None,
                    kind: "notification",
                    data: &p.payload,
                }),
                (Stream::Personal, None) => Err(anyhow!("a personal publication needs a user")),
            })
            .collect::<Result<Vec<_>>>()?;
        self.call(&pushes)
    }

    fn accepted(&self, status: u16, body: &[u8], sent: usize) -> Result<usize> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if !(200..300).contains(&status) {
            bail!("publish HTTP {status}: {}", snippet());
        }
        let reply: PushReply = serde_json::from_slice(body)
            .map_err(|_| anyhow!("publish reply lacks `sent`: {}", snippet()))?;
        Ok(reply.sent.min(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{payload, spec};
    use super::super::TargetKind;
    use super::*;

    fn legacy() -> Legacy {
        Legacy::new(&spec(TargetKind::Legacy)).unwrap()
    }

    #[test]
    fn ten_consecutive_users_share_a_group() {
        assert_eq!(group_of("bench-0"), Some(0));
        assert_eq!(group_of("bench-9"), Some(0));
        assert_eq!(group_of("bench-10"), Some(1));
        assert_eq!(group_of("bench-1234"), Some(123));
        assert_eq!(group_of("alice"), None);
        assert_eq!(group_of(""), None);
    }

    #[test]
    fn token_carries_user_and_group() {
        let url = legacy().ws_target("bench-42").unwrap().url;
        assert!(url.starts_with("ws://127.0.0.1:8000/ws/notifications/?token="));
        let token = url.split("token=").nth(1).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["exp".to_string()].into();
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["user_id"], "bench-42");
        assert_eq!(claims["group"], 4);
    }

    #[test]
    fn classifies_legacy_frames() {
        let h = legacy();
        match h.classify(r#"{"type":"alert","data":{"seq":5,"ts":10,"run":2}}"#) {
            Inbound::Delivery(p) => assert_eq!((p.run, p.seq, p.ts), (2, 5, 10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.classify(r#"{"type":"subscription_success","channels":["alerts"]}"#),
            Inbound::Ack
        );
        assert_eq!(
            h.classify(r#"{"type":"error","message":"Unknown message type: x"}"#),
            Inbound::Error("Unknown message type: x".into())
        );
        assert_eq!(
            h.classify(r#"{"type":"pong","timestamp":"2026-01-01T00:00:00+00:00"}"#),
            Inbound::Other
        );
        assert_eq!(h.classify("garbage"), Inbound::Other);
    }

    #[test]
    fn publishes_to_alerts_user_and_shared_groups() {
        let h = legacy();
        let broadcast = Publication {
            stream: Stream::Broadcast,
            user: None,
            payload: payload(1, None),
        };
        let one = h.publish_call(std::slice::from_ref(&broadcast)).unwrap();
        assert_eq!(one.path, "/api/push/");
        assert!(one.headers.contains(&("x-api-key".into(), "key".into())));
        let v: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"group": "alerts", "type": "alert",
                               "data": {"run": 1, "seq": 1, "ts": 9}})
        );

        let personal = |seq, user| Publication {
            stream: Stream::Personal,
            user: Some(user),
            payload: payload(seq, Some(user)),
        };
        let two = h
            .publish_call(&[personal(1, "bench-1"), personal(2, "bench-2")])
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&two.body).unwrap();
        assert_eq!(v[1]["user"], "bench-2");
        assert_eq!(v[1]["type"], "notification");
        assert!(v[1].get("group").is_none());

        let group = h.group_call(3, &[payload(7, None)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&group.body).unwrap();
        assert_eq!(v["group"], "group_3");
        assert_eq!(v["type"], "order_update");

        assert!(h.publish_call(&[]).is_err());
        let orphan = Publication {
            stream: Stream::Personal,
            user: None,
            payload: payload(1, None),
        };
        assert!(h.publish_call(&[orphan]).is_err());
    }

    #[test]
    fn counts_what_the_endpoint_sent() {
        let h = legacy();
        assert_eq!(h.accepted(200, br#"{"sent": 3}"#, 3).unwrap(), 3);
        assert!(h
            .accepted(401, br#"{"error": "invalid API key"}"#, 1)
            .is_err());
        assert!(h.accepted(200, b"<html>", 1).is_err());
    }
}
