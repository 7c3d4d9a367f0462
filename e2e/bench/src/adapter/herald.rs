//! The Herald protocol adapter.
//!
//! Clients connect to `/ws/notifications/?token=<HS256 JWT>` and are subscribed to the
//! default channels by the server; the bench still sends an explicit `subscribe` for the
//! channel it measures and waits for `subscription_success`, which proves the session is
//! live before any publish. Publishing is `POST /api/v1/publish` with a bearer API key;
//! batches are JSON arrays.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{HttpCall, Inbound, Publication, Stream, TagFilter, Target, TargetSpec, WsTarget};
use crate::payload::Payload;

/// Channel used for broadcast measurements.
pub const BROADCAST_CHANNEL: &str = "alerts";
/// Channel used for personal measurements.
pub const PERSONAL_CHANNEL: &str = "notifications";
/// Largest publish batch the bench sends in one request.
const MAX_BATCH: usize = 500;

/// Herald adapter state: endpoints and credentials.
pub struct Herald {
    ws_base: String,
    key: EncodingKey,
    bearer: String,
    token_ttl_secs: u64,
    tag_filter: Option<TagFilter>,
}

#[derive(Serialize)]
struct Claims<'a> {
    user_id: &'a str,
    exp: u64,
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

#[derive(Serialize)]
struct PublishBody<'a> {
    channel: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a Payload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Half>,
}

/// A tag-filtered broadcast's one tag.
#[derive(Serialize)]
struct Half {
    half: &'static str,
}

impl Herald {
    /// Builds the adapter from a spec.
    pub fn new(spec: &TargetSpec) -> Result<Self> {
        if spec.jwt_secret.is_empty() {
            bail!("herald: a JWT secret is required (--jwt-secret / HERALD_JWT_SECRET)");
        }
        Ok(Self {
            ws_base: format!("ws://{}/ws/notifications/", spec.ws_addr),
            key: EncodingKey::from_secret(spec.jwt_secret.as_bytes()),
            bearer: format!("Bearer {}", spec.api_key),
            token_ttl_secs: spec.token_ttl_secs,
            tag_filter: TagFilter::from_every(spec.tag_filter_every),
        })
    }

    fn token(&self, user: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            user_id: user,
            exp: now + self.token_ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("signing client token")
    }
}

fn channel_of(stream: Stream) -> (&'static str, &'static str) {
    match stream {
        Stream::Broadcast => (BROADCAST_CHANNEL, "alert"),
        Stream::Personal => (PERSONAL_CHANNEL, "notification"),
    }
}

impl Target for Herald {
    fn name(&self) -> &'static str {
        "herald"
    }

    fn ws_target(&self, user: &str) -> Result<WsTarget> {
        // JWTs are URL-safe base64 segments joined by dots: no escaping needed.
        Ok(WsTarget {
            url: format!("{}?token={}", self.ws_base, self.token(user)?),
            headers: Vec::new(),
        })
    }

    fn handshake(&self, stream: Stream, index: usize, _user: &str) -> Result<Vec<String>> {
        let (channel, _) = channel_of(stream);
        let mut subscribe = serde_json::json!({"type": "subscribe", "channels": [channel]});
        if self.tag_filter.is_some_and(|f| f.filters(index)) {
            subscribe["filter"] = serde_json::json!({"tags": {"half": {"eq": "even"}}});
        }
        Ok(vec![subscribe.to_string()])
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
        let bodies: Vec<PublishBody<'_>> = batch
            .iter()
            .map(|p| {
                let (channel, kind) = channel_of(p.stream);
                PublishBody {
                    channel,
                    kind,
                    data: &p.payload,
                    users: p.user.map(|u| [u]),
                    tags: self.tag_filter.map(|_| Half {
                        half: TagFilter::half(p.payload.seq),
                    }),
                }
            })
            .collect();
        let body = match bodies.as_slice() {
            [one] => serde_json::to_vec(one)?,
            [] => bail!("empty publish batch"),
            many => serde_json::to_vec(many)?,
        };
        Ok(HttpCall {
            method: http::Method::POST,
            path: "/api/v1/publish".to_owned(),
            headers: vec![
                ("authorization".to_owned(), self.bearer.clone()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ],
            body: body.into(),
        })
    }

    fn accepted(&self, status: u16, body: &[u8], sent: usize) -> Result<usize> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if !(200..300).contains(&status) {
            bail!("publish HTTP {status}: {}", snippet());
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| anyhow!("publish reply not JSON: {}", snippet()))?;
        let ok = |item: &serde_json::Value| item.get("id").is_some() && item.get("error").is_none();
        if sent == 1 && v.get("results").is_none() {
            return Ok(usize::from(ok(&v)));
        }
        let results = v
            .get("results")
            .and_then(|r| r.as_array())
            .ok_or_else(|| anyhow!("batch publish reply lacks results: {}", snippet()))?;
        Ok(results.iter().filter(|r| ok(r)).count().min(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::spec;
    use super::super::TargetKind;
    use super::*;

    fn herald() -> Herald {
        Herald::new(&spec(TargetKind::Herald)).unwrap()
    }

    #[test]
    fn token_is_hs256_with_user_and_exp() {
        let h = herald();
        let url = h.ws_target("bench-1").unwrap().url;
        let token = url.split("token=").nth(1).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims = ["exp".to_string()].into();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["user_id"], "bench-1");
        assert!(url.starts_with("ws://127.0.0.1:8000/ws/notifications/?token="));
    }

    #[test]
    fn classifies_frames() {
        let h = herald();
        let alert =
            r#"{"type":"alert","data":{"seq":5,"ts":10,"run":2},"channel":"alerts","id":"x"}"#;
        match h.classify(alert) {
            Inbound::Delivery(p) => assert_eq!((p.run, p.seq, p.ts), (2, 5, 10)),
            other => panic!("{other:?}"),
        }
        let note = r#"{"type":"notification","data":{"seq":1,"ts":2,"run":1,"user":"bench-3"}}"#;
        match h.classify(note) {
            Inbound::Delivery(p) => assert_eq!(p.user.as_deref(), Some("bench-3")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.classify(r#"{"type":"subscription_success","channels":["alerts"]}"#),
            Inbound::Ack
        );
        assert_eq!(
            h.classify(r#"{"type":"error","message":"nope"}"#),
            Inbound::Error("nope".into())
        );
        assert_eq!(
            h.classify(r#"{"type":"pong","timestamp":"t"}"#),
            Inbound::Other
        );
        assert_eq!(
            h.classify(r#"{"type":"alert","data":{"text":"hi"}}"#),
            Inbound::Other
        );
        assert_eq!(h.classify("garbage"), Inbound::Other);
    }

    #[test]
    fn publish_bodies() {
        let h = herald();
        let p = |seq, user: Option<&'static str>| Publication {
            stream: if user.is_some() {
                Stream::Personal
            } else {
                Stream::Broadcast
            },
            user,
            payload: Payload {
                run: 1,
                seq,
                ts: 9,
                user: user.map(Into::into),
            },
        };
        let one = h.publish_call(&[p(1, None)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
        assert_eq!(v["channel"], "alerts");
        assert_eq!(v["type"], "alert");
        assert_eq!(v["data"]["seq"], 1);
        assert!(v.get("users").is_none());
        assert!(one
            .headers
            .contains(&("authorization".into(), "Bearer key".into())));

        let two = h
            .publish_call(&[p(1, Some("u1")), p(2, Some("u2"))])
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&two.body).unwrap();
        assert_eq!(v[1]["channel"], "notifications");
        assert_eq!(v[1]["users"][0], "u2");
        assert_eq!(v[1]["data"]["user"], "u2");
        assert!(h.publish_call(&[]).is_err());
        assert!(v[1].get("tags").is_none());
    }

    #[test]
    fn a_tag_filtered_broadcast_tags_by_parity_and_filters_every_kth_client() {
        let plain = herald();
        let frame: serde_json::Value =
            serde_json::from_str(&plain.handshake(Stream::Broadcast, 0, "bench-0").unwrap()[0])
                .unwrap();
        assert!(frame.get("filter").is_none());
        let h = Herald::new(&TargetSpec {
            tag_filter_every: 3,
            ..spec(TargetKind::Herald)
        })
        .unwrap();
        let filtered: Vec<bool> = (0..7)
            .map(|i| {
                let frames = h.handshake(Stream::Broadcast, i, "bench-x").unwrap();
                let v: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
                match v.get("filter") {
                    None => false,
                    Some(f) => {
                        assert_eq!(f, &serde_json::json!({"tags": {"half": {"eq": "even"}}}));
                        true
                    }
                }
            })
            .collect();
        assert_eq!(filtered, [true, false, false, true, false, false, true]);
        let publication = |seq| Publication {
            stream: Stream::Broadcast,
            user: None,
            payload: Payload {
                run: 1,
                seq,
                ts: 9,
                user: None,
            },
        };
        let call = h.publish_call(&[publication(4), publication(7)]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(v[0]["tags"], serde_json::json!({"half": "even"}));
        assert_eq!(v[1]["tags"], serde_json::json!({"half": "odd"}));
        // 7 clients, 3 of them filtered; 5 messages, 3 of them even (0, 2, 4).
        let filter = TagFilter::from_every(3).unwrap();
        assert_eq!(filter.expected(5, 7, 7), 5 * 4 + 3 * 3);
        assert_eq!(TagFilter::from_every(0), None);
    }

    #[test]
    fn counts_accepted() {
        let h = herald();
        assert_eq!(
            h.accepted(200, br#"{"id":"a","delivered_locally":3}"#, 1)
                .unwrap(),
            1
        );
        let batch = br#"{"results":[{"id":"a"},{"error":"bad"},{"id":"c"}]}"#;
        assert_eq!(h.accepted(200, batch, 3).unwrap(), 2);
        assert!(h.accepted(401, b"unauthorized", 1).is_err());
        assert!(h.accepted(200, b"<html>", 1).is_err());
    }
}
