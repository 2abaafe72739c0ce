//! Why an object was not accepted.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObjectError {
    /// The document is not YAML, or a field has the wrong shape.
    #[error("{0}")]
    Yaml(String),
    #[error("kind: {0:?} is not supported (expected Namespace, Pod, Service, EndpointSlice, NetworkPolicy or CiliumNetworkPolicy)")]
    UnknownKind(String),
    /// A field failed validation; `path` is like `spec.ports[1].port`.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// Another Service already owns this frontend.
    #[error("{path}: {claim} is already used by {owner}")]
    Conflict {
        path: String,
        claim: String,
        owner: String,
    },
    #[error("already defined in {0}; the first definition is kept")]
    DefinedElsewhere(String),
    #[error("defined twice in this file; the first definition is kept")]
    DuplicateInFile,
}

impl ObjectError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ObjectError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
