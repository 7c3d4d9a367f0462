//! The operator's reconcile error: one type shared by the reconcilers (which return
//! it) and the metrics (which label failures by it), so neither depends on the other.

/// Reconcile failures; every one is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource lacks a namespace (cannot happen for namespaced kinds).
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    /// The condition reason for this failure (CamelCase, as Kubernetes reasons are).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => "Invalid",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(_)) => "ApiRefused",
            Error::Kube(_) => "ApiUnreachable",
            Error::NoNamespace => "NoNamespace",
        }
    }

    /// One readable sentence: the API server's own message rather than a debug dump.
    pub fn readable(&self) -> String {
        match self {
            Error::Kube(e) => crate::secrets::readable(e),
            Error::NoNamespace => self.to_string(),
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::NoNamespace => "no_namespace",
        }
    }
}
