//! Multi-document YAML text → validated objects and per-object rejections.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::CompileConfig;
use crate::error::ObjectError;
use crate::model::{Kind, Object, ObjectRef};
use crate::{policy, validate};

/// An object that was not accepted, with enough context to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub file: String,
    /// `Service default/web`, or `document 3` when the name is unknown.
    pub object: String,
    /// Set when kind and name were readable; the store uses it for the
    /// last-good-version rule.
    pub object_ref: Option<ObjectRef>,
    #[serde(serialize_with = "serialize_display")]
    pub error: ObjectError,
}

fn serialize_display<S: serde::Serializer>(e: &ObjectError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.object, self.error)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ParseOutcome {
    pub objects: Vec<(Object, ObjectRef)>,
    pub rejections: Vec<Rejection>,
}

/// Parses with the default [`CompileConfig`].
pub fn parse_documents(file_name: &str, text: &str) -> ParseOutcome {
    parse_documents_with(file_name, text, &CompileConfig::default())
}

/// Parses every document independently, so one broken document (even a YAML
/// syntax error) does not hide the others.
pub fn parse_documents_with(file_name: &str, text: &str, cfg: &CompileConfig) -> ParseOutcome {
    let mut out = ParseOutcome::default();
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        let number = index + 1;
        match parse_one(doc, cfg).map_err(|e| *e) {
            Ok(None) => {}
            Ok(Some(obj)) => {
                let r = obj.object_ref();
                out.objects.push((obj, r));
            }
            Err((object_ref, error)) => out.rejections.push(Rejection {
                file: file_name.to_string(),
                object: object_ref
                    .as_ref()
                    .map_or_else(|| format!("document {number}"), ToString::to_string),
                object_ref,
                error,
            }),
        }
    }
    out
}

/// Splits on `---` lines (and drops `...` end markers) without parsing, so
/// that a syntax error is confined to its own document. Documents that hold
/// only comments or whitespace are dropped so numbering matches what a
/// reader counts.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let is_sep = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_sep || line == "..." {
            docs.push(std::mem::take(&mut cur));
            // `--- {inline}` carries content on the separator line.
            if let Some(rest) = line.strip_prefix("---") {
                cur.push_str(rest.trim_start());
                cur.push('\n');
            }
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push(cur);
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Boxed: the error path is rare and the pair is large.
type DocError = Box<(Option<ObjectRef>, ObjectError)>;

fn parse_one(doc: String, cfg: &CompileConfig) -> Result<Option<Object>, DocError> {
    let value: serde_norway::Value = serde_norway::from_str(&doc)
        .map_err(|e| Box::new((None, ObjectError::Yaml(e.to_string()))))?;
    if value.is_null() {
        return Ok(None);
    }
    let kind_str = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| Box::new((None, ObjectError::invalid("kind", "is required"))))?;
    let kind = Kind::parse(kind_str);
    let object_ref = kind.and_then(|kind| name_of(&value, kind));
    let kind =
        kind.ok_or_else(|| Box::new((None, ObjectError::UnknownKind(kind_str.to_string()))))?;
    let fail = |e: ObjectError| Box::new((object_ref.clone(), e));
    check_api_version(&value, kind).map_err(fail)?;
    let obj = match kind {
        Kind::Namespace => {
            Object::Namespace(validate::namespace(decode(value).map_err(fail)?).map_err(fail)?)
        }
        Kind::Pod => Object::Pod(validate::pod(decode(value).map_err(fail)?).map_err(fail)?),
        Kind::Service => {
            Object::Service(validate::service(decode(value).map_err(fail)?, cfg).map_err(fail)?)
        }
        Kind::EndpointSlice => Object::EndpointSlice(
            validate::endpoint_slice(decode(value).map_err(fail)?).map_err(fail)?,
        ),
        Kind::NetworkPolicy => Object::NetworkPolicy(
            policy::network_policy(decode_strict(value).map_err(fail)?).map_err(fail)?,
        ),
        Kind::CiliumNetworkPolicy => Object::CiliumNetworkPolicy(
            policy::cilium_network_policy(decode_strict(value).map_err(fail)?).map_err(fail)?,
        ),
    };
    Ok(Some(obj))
}

/// Policy kinds share their names with other API groups' kinds (Calico's
/// `NetworkPolicy`); a document that says it is one of those is refused
/// rather than enforced with our semantics. A missing apiVersion is
/// accepted, as for the other kinds.
fn check_api_version(value: &serde_norway::Value, kind: Kind) -> Result<(), ObjectError> {
    let (Some(expected), Some(got)) = (kind.api_version(), value.get("apiVersion")) else {
        return Ok(());
    };
    match got.as_str() {
        Some(v) if v == expected => Ok(()),
        Some(v) => Err(ObjectError::invalid(
            "apiVersion",
            format!("{v:?} is not supported for {kind} (expected {expected})"),
        )),
        None => Err(ObjectError::invalid("apiVersion", "must be a string")),
    }
}

fn decode<T: DeserializeOwned>(value: serde_norway::Value) -> Result<T, ObjectError> {
    serde_norway::from_value(value).map_err(|e| ObjectError::Yaml(e.to_string()))
}

/// Like [`decode`], but reports where in the document decoding failed
/// (`spec.ingress[0]: unknown field ...`), which matters for the policy
/// kinds since they reject unknown fields.
fn decode_strict<T: DeserializeOwned>(value: serde_norway::Value) -> Result<T, ObjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if path == "." {
            ObjectError::Yaml(message)
        } else {
            ObjectError::invalid(path, message)
        }
    })
}

/// Best-effort identity for error messages, read before full decoding.
fn name_of(value: &serde_norway::Value, kind: Kind) -> Option<ObjectRef> {
    let meta = value.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = match kind {
        Kind::Namespace => String::new(),
        _ => meta
            .get("namespace")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string(),
    };
    Some(ObjectRef {
        kind,
        namespace,
        name,
    })
}
