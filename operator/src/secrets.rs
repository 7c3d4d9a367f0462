//! The Secrets a PushCluster names (JWT secret or public keys, API key, Redis URL),
//! read with errors that say which Secret and which key is wrong, so the PushCluster's
//! status can tell a platform team exactly what to create.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::crd::{PushCluster, SecretKey};

/// Why a Secret key could not be read. Messages name the Secret and the key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    /// No Secret of that name in the cluster's namespace.
    #[error("Secret {secret:?} not found")]
    NotFound { secret: String },
    /// The Secret exists but lacks the key.
    #[error("Secret {secret:?} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    /// The value is not UTF-8 text.
    #[error("Secret {secret:?} key {key:?} is not UTF-8 text")]
    NotText { secret: String, key: String },
    /// The API server refused or failed the read (RBAC, network).
    #[error("Secret {secret:?} could not be read: {reason}")]
    Unreadable { secret: String, reason: String },
}

/// Every Secret key `cluster` refers to, with the spec field that names it.
pub fn references(cluster: &PushCluster) -> Vec<(&'static str, &SecretKey)> {
    let spec = &cluster.spec;
    let mut refs = Vec::new();
    if let Some(key) = &spec.auth.jwt_secret_ref {
        refs.push(("auth.jwtSecretRef", key));
    }
    if let Some(key) = &spec.auth.public_keys_secret_ref {
        refs.push(("auth.publicKeysSecretRef", key));
    }
    refs.push(("auth.apiKeySecretRef", &spec.auth.api_key_secret_ref));
    if let Some(key) = &spec.redis.url_secret_ref {
        refs.push(("redis.urlSecretRef", key));
    }
    refs
}

/// Reads one key as text.
pub async fn read(secrets: &Api<Secret>, key: &SecretKey) -> Result<String, SecretError> {
    let secret = match secrets.get_opt(&key.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(SecretError::NotFound {
                secret: key.name.clone(),
            })
        }
        Err(e) => {
            return Err(SecretError::Unreadable {
                secret: key.name.clone(),
                reason: readable(&e),
            })
        }
    };
    value(&secret, key)
}

/// The text under `key` in `secret`.
pub fn value(secret: &Secret, key: &SecretKey) -> Result<String, SecretError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            let text = secret.string_data.as_ref()?.get(&key.key)?;
            Some(text.clone().into_bytes())
        })
        .ok_or_else(|| SecretError::MissingKey {
            secret: key.name.clone(),
            key: key.key.clone(),
        })?;
    String::from_utf8(bytes).map_err(|_| SecretError::NotText {
        secret: key.name.clone(),
        key: key.key.clone(),
    })
}

/// Checks every key `cluster` refers to; the problems, each with the field naming it.
pub async fn missing(cluster: &PushCluster, secrets: &Api<Secret>) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, key) in references(cluster) {
        if let Err(e) = read(secrets, key).await {
            problems.push(format!("{field}: {e}"));
        }
    }
    problems
}

/// An API error as one readable sentence (the server's message, not a debug dump).
pub fn readable(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn key(name: &str, key: &str) -> SecretKey {
        SecretKey {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn errors_name_the_secret_and_the_key() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("jwt".to_owned(), ByteString(b"s3cr\"et\\".to_vec())),
                ("bin".to_owned(), ByteString(vec![0xff, 0xfe])),
            ])),
            ..Secret::default()
        };
        assert_eq!(value(&secret, &key("herald", "jwt")).unwrap(), "s3cr\"et\\");
        let missing = value(&secret, &key("herald", "api-key")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"Secret "herald" has no key "api-key""#
        );
        let binary = value(&secret, &key("herald", "bin")).unwrap_err();
        assert_eq!(
            binary.to_string(),
            r#"Secret "herald" key "bin" is not UTF-8 text"#
        );
        let absent = SecretError::NotFound {
            secret: "redis-url".into(),
        };
        assert_eq!(absent.to_string(), r#"Secret "redis-url" not found"#);
    }
}
