//! Token parsing: the JWT a browser presents, verified with an HMAC secret and with
//! RSA/EC public keys, as the node's WebSocket handshake does.
//!
//! A fuzzer cannot forge signatures, so besides raw token strings the target signs
//! what it builds with the configured secret: arbitrary header and claims bytes reach
//! the header and claims decoding and validation behind the signature check, and
//! structured claims must come back as the identity they name.
//!
//! Input: a mode byte, then the rest. Mode 0: the rest is a token string. Mode 1: the
//! rest is `<header JSON> 0xFF <claims JSON>`, signed here. Mode 2: the rest seeds
//! structured claims.

#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald_node::fuzzing::{AuthError, AuthSettings, Authenticator};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const SECRET: &str = "fuzz-secret";

fn settings() -> AuthSettings {
    AuthSettings {
        leeway_secs: 5,
        user_claim: "user_id".into(),
        role_claim: "roles".into(),
        ..AuthSettings::default()
    }
}

/// HMAC only, public keys only, and both.
static AUTHENTICATORS: LazyLock<[Authenticator; 3]> = LazyLock::new(|| {
    let keys = vec![
        (
            "rsa_public.pem".to_owned(),
            include_bytes!("../../node/tests/fixtures/rsa_public.pem").to_vec(),
        ),
        (
            "ec_public.pem".to_owned(),
            include_bytes!("../../node/tests/fixtures/ec_public.pem").to_vec(),
        ),
    ];
    let hmac = AuthSettings {
        secret: Some(SECRET.into()),
        ..settings()
    };
    let public = AuthSettings {
        public_keys: keys.clone(),
        ..settings()
    };
    let both = AuthSettings {
        secret: Some(SECRET.into()),
        public_keys: keys,
        ..settings()
    };
    [hmac, public, both].map(|s| Authenticator::new(&s).expect("fuzz keys load"))
});

#[derive(Debug, Arbitrary)]
enum User {
    Text(String),
    Signed(i64),
    Unsigned(u64),
}

#[derive(Debug, Arbitrary)]
struct Claims {
    user: User,
    /// Put the user in `sub` instead of `user_id`.
    in_sub: bool,
    roles: Vec<String>,
    /// Send the roles as one space-separated string.
    joined: bool,
    alg: u8,
    extra: Vec<(String, String)>,
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(header: &[u8], claims: &[u8], alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
    format!("{message}.{signature}")
}

/// What the claims name as the user, read independently of the node.
fn expected_user(claims: &Map<String, Value>) -> Option<String> {
    let id = |v: Option<&Value>| match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    id(claims.get("user_id")).or_else(|| id(claims.get("sub")))
}

fn verify_everywhere(token: &str) -> Vec<Result<herald_node::fuzzing::Identity, AuthError>> {
    AUTHENTICATORS.iter().map(|a| a.verify(token)).collect()
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            for result in verify_everywhere(token) {
                match result {
                    Ok(identity) => assert!(identity.user.is_some_and(|u| !u.is_empty())),
                    Err(e) => assert!(!e.code().is_empty() && !e.to_string().is_empty()),
                }
            }
        }
        1 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0xFF) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b"{}"[..]),
            };
            // Sign with the HMAC algorithm the header names, so it verifies.
            let named = jsonwebtoken::decode_header(sign(header, b"{}", Algorithm::HS256))
                .ok()
                .map(|h| h.alg);
            let hmac = named.is_none_or(|alg| alg.family() == AlgorithmFamily::Hmac);
            let alg = named.filter(|_| hmac).unwrap_or(Algorithm::HS256);
            let token = sign(header, claims, alg);
            let results = verify_everywhere(&token);
            // Only the authenticators holding the secret can accept it.
            assert!(results[1].is_err());
            for result in [&results[0], &results[2]] {
                if let Ok(identity) = result {
                    let claims: Map<String, Value> =
                        serde_json::from_slice(claims).expect("accepted claims are a JSON object");
                    assert_eq!(identity.user.as_deref(), expected_user(&claims).as_deref());
                }
            }
            // Public keys play no part in verifying an HMAC token.
            if hmac {
                assert_eq!(results[0], results[2]);
            }
        }
        _ => {
            let Ok(meant) = Claims::arbitrary(&mut Unstructured::new(rest)) else {
                return;
            };
            let user = match &meant.user {
                User::Text(s) => json!(s),
                User::Signed(n) => json!(n),
                User::Unsigned(n) => json!(n),
            };
            let mut claims = Map::new();
            for (key, value) in &meant.extra {
                claims.insert(format!("x-{key}"), json!(value));
            }
            claims.insert(if meant.in_sub { "sub" } else { "user_id" }.into(), user);
            let roles: Vec<String> = if meant.joined {
                let roles: Vec<String> = meant
                    .roles
                    .iter()
                    .filter(|r| !r.is_empty() && !r.contains([' ', ',']))
                    .cloned()
                    .collect();
                claims.insert("roles".into(), json!(roles.join(" ")));
                roles
            } else {
                claims.insert("roles".into(), json!(meant.roles));
                meant.roles.clone()
            };
            claims.insert("exp".into(), json!(now() + 600));
            let alg =
                [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512][usize::from(meant.alg % 3)];
            let header = serde_json::to_vec(&Header::new(alg)).unwrap();
            let token = sign(&header, &serde_json::to_vec(&claims).unwrap(), alg);
            let result = AUTHENTICATORS[0].verify(&token);
            match expected_user(&claims) {
                Some(user) => {
                    let identity = result.unwrap_or_else(|e| panic!("{e}: {claims:?}"));
                    assert_eq!(identity.user.as_deref(), Some(user.as_str()));
                    assert_eq!(identity.roles, roles);
                }
                None => assert_eq!(result, Err(AuthError::NoUser("user_id".into()))),
            }
        }
    }
});
