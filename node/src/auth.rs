//! Who is connecting: JWT verification for WebSocket connections.
//!
//! The backend (typically Django REST SimpleJWT) issues the tokens; Herald only
//! verifies them. HS256 with a shared secret and RS256/ES256 with public keys are
//! accepted; `exp` is required, `nbf`, `iss` and `aud` are enforced when configured.
//! User ids are read as strings whatever their JSON type, so `42` and `"42"` name the
//! same user everywhere.

use std::collections::BTreeSet;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::UserId;

/// An authenticated (or, where allowed, anonymous) connection's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user; `None` for anonymous connections.
    pub user: Option<UserId>,
    /// Roles from the configured role claim.
    pub roles: Vec<String>,
    /// Claims that parameterized channels bind to.
    pub claims: Claims,
}

impl Identity {
    /// An identity with no user, allowed only on public channels.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            roles: Vec::new(),
            claims: Claims::default(),
        }
    }

    /// Whether the identity carries any of `wanted`.
    pub fn has_any_role(&self, wanted: &[String]) -> bool {
        self.roles.iter().any(|role| wanted.contains(role))
    }
}

/// Why a token was refused. The text goes back to the client in the 401 body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the query string or `Authorization` header.
    #[error("missing token: pass ?token=<JWT> or an Authorization: Bearer header")]
    Missing,
    /// The token has expired.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` lies in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Signature does not verify with any configured key.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's algorithm has no configured key.
    #[error("token algorithm {0:?} is not accepted by this server")]
    UnsupportedAlgorithm(String),
    /// `iss` does not match.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not match.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    /// The user-id claim is absent or not a string/number.
    #[error("token has no usable user id (claim {0:?} or \"sub\")")]
    NoUser(String),
    /// Not a JWT at all.
    #[error("token is malformed: {0}")]
    Malformed(String),
}

impl AuthError {
    /// A stable machine-readable code for the HTTP error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadSignature => "token_invalid_signature",
            AuthError::UnsupportedAlgorithm(_) => "token_unsupported_algorithm",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::MissingClaim(_) | AuthError::NoUser(_) => "token_missing_claim",
            AuthError::Malformed(_) => "token_malformed",
        }
    }
}

/// Problems in the verification settings, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Nothing to verify tokens with.
    #[error("no JWT verification key configured: set HERALD_JWT_SECRET (HS256) or HERALD_JWT_PUBLIC_KEY_FILE (RS256/ES256 PEM)")]
    NoKey,
    /// A PEM file is neither an RSA nor an EC public key.
    #[error("{path}: not an RSA or EC public key in PEM form")]
    BadPem {
        /// The file that failed to parse.
        path: String,
    },
}

/// Settings for [`Authenticator`].
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// HS256/384/512 shared secret.
    pub secret: Option<String>,
    /// RS*/PS*/ES* public keys in PEM form, with the file they came from.
    pub public_keys: Vec<(String, Vec<u8>)>,
    /// Accepted issuers (any when empty).
    pub issuers: Vec<String>,
    /// Accepted audiences (the claim is not checked when empty).
    pub audiences: Vec<String>,
    /// Seconds of clock skew tolerated on `exp`/`nbf`.
    pub leeway_secs: u64,
    /// Claim holding the user id; `sub` is the fallback.
    pub user_claim: String,
    /// Claim holding the roles (array of strings, or a space/comma separated string).
    pub role_claim: String,
}

/// Verifies tokens and extracts identities. Cheap to share.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Vec<(AlgorithmFamily, DecodingKey)>,
    validation: Validation,
    user_claim: String,
    role_claim: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.inner.keys.len())
            .field("user_claim", &self.inner.user_claim)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds an authenticator, failing when no usable key is configured.
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = settings.secret.as_deref().filter(|s| !s.is_empty()) {
            keys.push((
                AlgorithmFamily::Hmac,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        for (path, pem) in &settings.public_keys {
            if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                keys.push((AlgorithmFamily::Rsa, key));
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                keys.push((AlgorithmFamily::Ec, key));
            } else {
                return Err(KeyError::BadPem { path: path.clone() });
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms.clear();
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = !settings.audiences.is_empty();
        if !settings.audiences.is_empty() {
            validation.set_audience(&settings.audiences);
        }
        if !settings.issuers.is_empty() {
            validation.set_issuer(&settings.issuers);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                validation,
                user_claim: settings.user_claim.clone(),
                role_claim: settings.role_claim.clone(),
            }),
        })
    }

    /// Verifies `token` and returns the identity it carries, keeping none of its
    /// other claims.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_keeping(token, &BTreeSet::new())
    }

    /// Verifies `token` and returns the identity it carries, keeping the `bound`
    /// claims (those channel bindings name) for later subscriptions.
    pub fn verify_keeping(
        &self,
        token: &str,
        bound: &BTreeSet<String>,
    ) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let family = header.alg.family();
        let mut last_error = AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg));
        for (_, key) in self.inner.keys.iter().filter(|(f, _)| *f == family) {
            let mut validation = self.inner.validation.clone();
            validation.algorithms = vec![header.alg];
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return self.identity(&data.claims, bound),
                Err(e) => last_error = map_error(e.kind()),
            }
            // A bad signature may still verify under the next key of the same family.
            if last_error != AuthError::BadSignature {
                break;
            }
        }
        Err(last_error)
    }

    fn identity(
        &self,
        claims: &Map<String, Value>,
        bound: &BTreeSet<String>,
    ) -> Result<Identity, AuthError> {
        let user = claim_as_id(claims.get(&self.inner.user_claim))
            .or_else(|| claim_as_id(claims.get("sub")))
            .ok_or_else(|| AuthError::NoUser(self.inner.user_claim.clone()))?;
        let roles = match claims.get(&self.inner.role_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Identity {
            user: Some(user),
            roles,
            claims: Claims::from_token(claims, bound),
        })
    }
}

/// Reads a user id from a claim or a publish body: strings as they are, integers in
/// decimal. Anything else (floats, objects, empty strings) is not an id.
pub fn claim_as_id(value: Option<&Value>) -> Option<UserId> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(UserId::from(s.as_str())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(UserId::from(n.to_string())),
        _ => None,
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::UnsupportedAlgorithm("unsupported".into())
        }
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            secret: Some(secret.into()),
            leeway_secs: 5,
            user_claim: "user_id".into(),
            role_claim: "roles".into(),
            ..AuthSettings::default()
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn numeric_and_string_user_ids_are_the_same_user() {
        let auth = Authenticator::new(&settings("s3cret")).unwrap();
        let a = auth
            .verify(&token("s3cret", json!({"user_id": 42, "exp": now() + 60})))
            .unwrap();
        let b = auth
            .verify(&token(
                "s3cret",
                json!({"user_id": "42", "exp": now() + 60}),
            ))
            .unwrap();
        assert_eq!(a.user, b.user);
        assert_eq!(a.user.as_deref(), Some("42"));
    }

    #[test]
    fn falls_back_to_sub_and_reads_roles() {
        let auth = Authenticator::new(&settings("k")).unwrap();
        let id = auth
            .verify(&token(
                "k",
                json!({"sub": "alice", "roles": ["ops", "admin"], "exp": now() + 60}),
            ))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert!(id.has_any_role(&["admin".into()]));
        let id = auth
            .verify(&token(
                "k",
                json!({"sub": "bob", "roles": "ops staff", "exp": now() + 60}),
            ))
            .unwrap();
        assert_eq!(id.roles, vec!["ops", "staff"]);
    }

    #[test]
    fn refuses_bad_tokens_with_the_right_reason() {
        let auth = Authenticator::new(&settings("k")).unwrap();
        let expired = token("k", json!({"user_id": 1, "exp": now() - 3600}));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let future = token(
            "k",
            json!({"user_id": 1, "exp": now() + 7200, "nbf": now() + 3600}),
        );
        assert_eq!(auth.verify(&future), Err(AuthError::NotYetValid));
        let forged = token("other", json!({"user_id": 1, "exp": now() + 60}));
        assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature));
        let no_exp = token("k", json!({"user_id": 1}));
        assert_eq!(
            auth.verify(&no_exp),
            Err(AuthError::MissingClaim("exp".into()))
        );
        let no_user = token("k", json!({"user_id": 1.5, "exp": now() + 60}));
        assert_eq!(
            auth.verify(&no_user),
            Err(AuthError::NoUser("user_id".into()))
        );
        assert!(matches!(
            auth.verify("not-a-jwt"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn leeway_tolerates_small_clock_skew() {
        let auth = Authenticator::new(&settings("k")).unwrap();
        let just_expired = token("k", json!({"user_id": 1, "exp": now() - 2}));
        assert!(auth.verify(&just_expired).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let mut s = settings("k");
        s.issuers = vec!["crm".into()];
        s.audiences = vec!["push".into()];
        let auth = Authenticator::new(&s).unwrap();
        let good = token(
            "k",
            json!({"user_id": 1, "exp": now() + 60, "iss": "crm", "aud": "push"}),
        );
        assert!(auth.verify(&good).is_ok());
        let wrong_iss = token(
            "k",
            json!({"user_id": 1, "exp": now() + 60, "iss": "x", "aud": "push"}),
        );
        assert_eq!(auth.verify(&wrong_iss), Err(AuthError::WrongIssuer));
        let wrong_aud = token(
            "k",
            json!({"user_id": 1, "exp": now() + 60, "iss": "crm", "aud": "x"}),
        );
        assert_eq!(auth.verify(&wrong_aud), Err(AuthError::WrongAudience));
    }

    #[test]
    fn an_hmac_token_is_refused_when_only_public_keys_are_configured() {
        let pem = include_bytes!("../tests/fixtures/rsa_public.pem").to_vec();
        let auth = Authenticator::new(&AuthSettings {
            public_keys: vec![("rsa_public.pem".into(), pem)],
            user_claim: "user_id".into(),
            role_claim: "roles".into(),
            ..AuthSettings::default()
        })
        .unwrap();
        let hs = token("k", json!({"user_id": 1, "exp": now() + 60}));
        assert!(matches!(
            auth.verify(&hs),
            Err(AuthError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn refuses_to_start_without_keys() {
        assert!(matches!(
            Authenticator::new(&AuthSettings::default()),
            Err(KeyError::NoKey)
        ));
    }
}
