//! Kubernetes protobuf request bodies, read into the JSON the rest of the server speaks.
//!
//! kubectl's typed generators (`kubectl create deployment|configmap|secret|namespace`) send
//! `application/vnd.kubernetes.protobuf`, and client-go does not fall back to JSON on a 415,
//! so the HTTP layer reads these bodies here. Answers stay JSON (kubectl accepts both).
//!
//! The envelope is the 4-byte magic `k8s\0` then a `runtime.Unknown`: its `typeMeta`
//! (apiVersion, kind) names the message, `raw` holds it. The message is decoded field by
//! field against the tables in `protobuf_schema` and written out as the object's JSON would
//! be: Go's protobuf encoder writes every non-pointer field, so empty strings are dropped as
//! `omitempty` would drop them, and a zero `Time` is no time at all. A zero integer or `false`
//! is dropped only for the plain `omitempty` fields listed in `protobuf_omitempty`: a pointer
//! field (`replicas`, `enableServiceLinks`) is on the wire only when set, so its explicit 0 or
//! `false` must survive, and the wire does not say which fields are pointers. A field or
//! message the tables do not know is refused with a clear error when it carries a value, so
//! nothing the client sent is lost silently.

use serde_json::{Map, Value};

use super::protobuf_omitempty::ZERO_OMITTED;
use super::protobuf_schema::MESSAGES;
use crate::apiserver::certs::base64;

/// One field of a message: its number on the wire, its JSON name, its type.
#[derive(Debug)]
pub(super) struct Field {
    /// The protobuf field number.
    pub num: u32,
    /// The JSON name.
    pub name: &'static str,
    /// How its value is encoded.
    pub ty: Ty,
    /// `repeated` (a JSON array).
    pub repeated: bool,
}

/// The value types that occur in the Kubernetes messages.
#[derive(Debug)]
pub(super) enum Ty {
    /// `string`.
    Str,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// Any varint integer (int32, int64, uint32, uint64).
    Int,
    /// `bool`.
    Bool,
    /// A nested message, by its full protobuf name.
    Msg(&'static str),
    /// A Go-embedded struct: a nested message on the wire whose fields JSON puts in the
    /// parent object.
    Inline(&'static str),
    /// `map<K, V>`: repeated entries with key 1 and value 2.
    Map(&'static Ty, &'static Ty),
    /// `meta.v1.Time` / `MicroTime`: seconds and nanos, RFC 3339 in JSON.
    Time,
    /// `resource.Quantity`: its string form.
    Quantity,
    /// `intstr.IntOrString`: type 0 → the int, 1 → the string.
    IntOrString,
    /// `runtime.RawExtension` / `meta.v1.FieldsV1`: raw JSON bytes.
    Raw,
}

/// Why a protobuf body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Not a Kubernetes protobuf envelope.
    #[error("the body does not start with the Kubernetes protobuf magic \"k8s\\0\"")]
    Magic,
    /// The bytes end inside a field.
    #[error("the protobuf body is truncated or malformed")]
    Truncated,
    /// A wire type that does not fit the field's type.
    #[error("field {field} of {message} has the wrong wire type {wire}")]
    WireType {
        /// The message.
        message: String,
        /// The field's JSON name.
        field: String,
        /// The wire type found.
        wire: u8,
    },
    /// A kind Skiff does not read from protobuf.
    #[error("protobuf bodies of {0} are not supported; send JSON")]
    Kind(String),
    /// A field the tables do not list.
    #[error("protobuf field {num} of {message} is not known to this server; send JSON")]
    UnknownField {
        /// The message.
        message: String,
        /// The field number.
        num: u32,
    },
    /// A nested message the tables do not list.
    #[error("protobuf message {0} is not supported; send JSON")]
    Message(String),
    /// A string that is not UTF-8, or raw JSON that is not JSON.
    #[error("field {0} is not valid: {1}")]
    Invalid(String, String),
    /// Deeper than any Kubernetes object.
    #[error("the protobuf body nests deeper than {MAX_DEPTH} messages")]
    TooDeep,
    /// An envelope with an encoding Skiff does not read.
    #[error("protobuf envelope with content encoding {0:?} is not supported")]
    Encoding(String),
}

/// Nesting bound (a Deployment is about 10 deep).
const MAX_DEPTH: usize = 64;
const MAGIC: &[u8] = b"k8s\0";

/// Reads a `application/vnd.kubernetes.protobuf` body into the object's JSON, `apiVersion`
/// and `kind` included.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
    let (mut api_version, mut kind, mut raw, mut encoding) = ("", "", &[][..], "");
    let mut r = Reader(envelope);
    while let Some((num, wire)) = r.key()? {
        match (num, wire) {
            (1, 2) => {
                let mut t = Reader(r.bytes()?);
                while let Some((n, w)) = t.key()? {
                    match (n, w) {
                        (1, 2) => api_version = utf8(t.bytes()?, "apiVersion")?,
                        (2, 2) => kind = utf8(t.bytes()?, "kind")?,
                        _ => t.skip(w)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (3, 2) => encoding = utf8(r.bytes()?, "contentEncoding")?,
            _ => r.skip(wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(ProtoError::Encoding(encoding.into()));
    }
    let package = match api_version.split_once('/') {
        None => format!("k8s.io.api.core.{api_version}"),
        Some((group, version)) => {
            // `rbac.authorization.k8s.io` is package `k8s.io.api.rbac`.
            let short = match group.strip_suffix(".k8s.io") {
                Some(g) => g.split('.').next().unwrap_or(g),
                None => group,
            };
            format!("k8s.io.api.{short}.{version}")
        }
    };
    let name = format!("{package}.{kind}");
    if kind.is_empty() || schema(&name).is_none() {
        return Err(ProtoError::Kind(format!("{api_version} {kind}")));
    }
    let mut object = message(&name, raw, 0)?;
    if let Value::Object(o) = &mut object {
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
    }
    Ok(object)
}

fn schema(name: &str) -> Option<&'static [Field]> {
    MESSAGES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn utf8<'a>(b: &'a [u8], field: &str) -> Result<&'a str, ProtoError> {
    std::str::from_utf8(b).map_err(|e| ProtoError::Invalid(field.into(), e.to_string()))
}

/// Decodes one message into a JSON object.
fn message(name: &str, bytes: &[u8], depth: usize) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep);
    }
    let fields = schema(name).ok_or_else(|| ProtoError::Message(name.into()))?;
    let mut out = Map::new();
    let mut r = Reader(bytes);
    while let Some((num, wire)) = r.key()? {
        let Some(field) = fields.iter().find(|f| f.num == num) else {
            // Go's encoder writes every non-pointer field, so a newer client sends fields this
            // table does not know yet, mostly empty: those are skipped, as Kubernetes skips
            // unknown fields. One with a value is refused, so nothing is dropped silently.
            let start = r.0;
            r.skip(wire)?;
            let raw = &start[..start.len() - r.0.len()];
            if !empty_value(wire, raw) {
                return Err(ProtoError::UnknownField {
                    message: name.into(),
                    num,
                });
            }
            continue;
        };
        let wrong = || ProtoError::WireType {
            message: name.into(),
            field: field.name.into(),
            wire,
        };
        if let Ty::Map(k, v) = &field.ty {
            if wire != 2 {
                return Err(wrong());
            }
            let (key, value) = map_entry(name, field, k, v, r.bytes()?, depth)?;
            let entry = out
                .entry(field.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(key, value);
            }
            continue;
        }
        if let Ty::Inline(inner) = &field.ty {
            if wire != 2 {
                return Err(wrong());
            }
            if let Value::Object(fields) = message(inner, r.bytes()?, depth + 1)? {
                out.extend(fields);
            }
            continue;
        }
        if field.repeated && wire == 2 && matches!(field.ty, Ty::Int | Ty::Bool) {
            // Packed scalars.
            let mut p = Reader(r.bytes()?);
            let list = array(&mut out, field.name);
            while !p.0.is_empty() {
                let v = p.varint()?;
                list.push(match field.ty {
                    Ty::Bool => Value::Bool(v != 0),
                    _ => Value::from(v as i64),
                });
            }
            continue;
        }
        let value = scalar(name, field, &field.ty, wire, &mut r, depth)?;
        if field.repeated {
            array(&mut out, field.name).push(value);
        } else if !omitted(&value) && !zero_omitted(name, field.name, &value) {
            out.insert(field.name.into(), value);
        }
    }
    Ok(Value::Object(out))
}

/// A zero of a plain Go field with `omitempty`, which JSON would not carry.
fn zero_omitted(message: &str, field: &str, v: &Value) -> bool {
    let zero = match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    };
    zero && ZERO_OMITTED.contains(&(message, field))
}

/// Whether a skipped field's bytes (after its key) carry nothing: a zero varint or fixed
/// value, or a zero length.
fn empty_value(wire: u8, raw: &[u8]) -> bool {
    match wire {
        0 | 2 => raw == [0],
        _ => raw.iter().all(|b| *b == 0),
    }
}

fn array<'a>(out: &'a mut Map<String, Value>, name: &str) -> &'a mut Vec<Value> {
    let entry = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("just made an array")
}

/// What is left out of the JSON (see the module docs for integers and booleans).
fn omitted(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn map_entry(
    message: &str,
    field: &Field,
    k: &Ty,
    v: &Ty,
    bytes: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtoError> {
    let mut r = Reader(bytes);
    let (mut key, mut value) = (None, None);
    while let Some((num, wire)) = r.key()? {
        match num {
            1 => key = Some(scalar(message, field, k, wire, &mut r, depth)?),
            2 => value = Some(scalar(message, field, v, wire, &mut r, depth)?),
            _ => r.skip(wire)?,
        }
    }
    let key = match key {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    // An entry's empty value is not written at all.
    let value = value.unwrap_or_else(|| match v {
        Ty::Msg(_) => Value::Object(Map::new()),
        Ty::Int => Value::from(0),
        Ty::Bool => Value::Bool(false),
        _ => Value::String(String::new()),
    });
    Ok((key, value))
}

/// Decodes one value of type `ty` (not a map) at the reader.
fn scalar(
    message: &str,
    field: &Field,
    ty: &Ty,
    wire: u8,
    r: &mut Reader,
    depth: usize,
) -> Result<Value, ProtoError> {
    let wrong = || ProtoError::WireType {
        message: message.into(),
        field: field.name.into(),
        wire,
    };
    Ok(match (ty, wire) {
        (Ty::Str, 2) => Value::String(utf8(r.bytes()?, field.name)?.into()),
        (Ty::Bytes, 2) => Value::String(base64(r.bytes()?)),
        (Ty::Int, 0) => Value::from(r.varint()? as i64),
        (Ty::Bool, 0) => Value::Bool(r.varint()? != 0),
        (Ty::Msg(name), 2) => self::message(name, r.bytes()?, depth + 1)?,
        (Ty::Time, 2) => time(r.bytes()?)?,
        (Ty::Quantity, 2) => {
            let mut q = Reader(r.bytes()?);
            let mut s = Value::String(String::new());
            while let Some((n, w)) = q.key()? {
                match (n, w) {
                    (1, 2) => s = Value::String(utf8(q.bytes()?, field.name)?.into()),
                    _ => q.skip(w)?,
                }
            }
            s
        }
        (Ty::IntOrString, 2) => {
            let mut q = Reader(r.bytes()?);
            let (mut kind, mut int, mut string) = (0, 0i64, String::new());
            while let Some((n, w)) = q.key()? {
                match (n, w) {
                    (1, 0) => kind = q.varint()?,
                    (2, 0) => int = q.varint()? as i32 as i64,
                    (3, 2) => string = utf8(q.bytes()?, field.name)?.into(),
                    _ => q.skip(w)?,
                }
            }
            if kind == 1 {
                Value::String(string)
            } else {
                Value::from(int)
            }
        }
        (Ty::Raw, 2) => {
            let mut q = Reader(r.bytes()?);
            let mut raw: &[u8] = &[];
            while let Some((n, w)) = q.key()? {
                match (n, w) {
                    (1, 2) => raw = q.bytes()?,
                    _ => q.skip(w)?,
                }
            }
            if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw)
                    .map_err(|e| ProtoError::Invalid(field.name.into(), e.to_string()))?
            }
        }
        _ => return Err(wrong()),
    })
}

/// `meta.v1.Time`: seconds 1, nanos 2; both zero is the zero time (JSON null).
fn time(bytes: &[u8]) -> Result<Value, ProtoError> {
    let mut r = Reader(bytes);
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while let Some((n, w)) = r.key()? {
        match (n, w) {
            (1, 0) => seconds = r.varint()? as i64,
            (2, 0) => nanos = r.varint()? as i32 as i64,
            _ => r.skip(w)?,
        }
    }
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let ts = jiff::Timestamp::new(seconds, nanos as i32)
        .map_err(|e| ProtoError::Invalid("time".into(), e.to_string()))?;
    let format = if nanos == 0 {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%S.%6fZ"
    };
    Ok(Value::String(ts.strftime(format).to_string()))
}

/// A bounds-checked cursor over protobuf bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first().ok_or(ProtoError::Truncated)?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Truncated)
    }

    /// The next field's number and wire type, or None at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, ProtoError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        let num = u32::try_from(k >> 3).map_err(|_| ProtoError::Truncated)?;
        if num == 0 {
            return Err(ProtoError::Truncated);
        }
        Ok(Some((num, (k & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
        self.take(n)
    }

    fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            _ => Err(ProtoError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal protobuf writer for the tests.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn varint(&mut self, mut v: u64) -> &mut Self {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(b);
                    return self;
                }
                self.0.push(b | 0x80);
            }
        }
        fn int(&mut self, num: u32, v: i64) -> &mut Self {
            self.varint(u64::from(num) << 3).varint(v as u64)
        }
        fn bytes(&mut self, num: u32, b: &[u8]) -> &mut Self {
            self.varint(u64::from(num) << 3 | 2).varint(b.len() as u64);
            self.0.extend_from_slice(b);
            self
        }
        fn str(&mut self, num: u32, s: &str) -> &mut Self {
            self.bytes(num, s.as_bytes())
        }
        fn msg(&mut self, num: u32, m: &W) -> &mut Self {
            self.bytes(num, &m.0)
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: &W) -> Vec<u8> {
        let mut tm = W::default();
        tm.str(1, api_version).str(2, kind);
        let mut u = W::default();
        u.msg(1, &tm).msg(2, raw);
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&u.0);
        body
    }

    fn entry(k: &str, v: &str) -> W {
        let mut e = W::default();
        e.str(1, k).str(2, v);
        e
    }

    #[test]
    fn a_configmap_reads_as_its_json() {
        let mut meta = W::default();
        meta.str(1, "c1")
            .str(3, "")
            .msg(8, &W::default())
            .msg(11, &entry("app", "web"));
        let mut cm = W::default();
        cm.msg(1, &meta)
            .msg(2, &entry("a", "b"))
            .msg(2, &entry("empty", ""));
        let got = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            got,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c1", "labels": {"app": "web"}},
                   "data": {"a": "b", "empty": ""}})
        );
    }

    #[test]
    fn a_deployment_keeps_an_explicit_zero_and_its_template() {
        let mut port = W::default();
        port.int(3, 8080).str(4, "TCP");
        let mut container = W::default();
        container
            .str(1, "web")
            .str(2, "nginx")
            .str(3, "sh")
            .str(3, "-c")
            .msg(6, &port)
            .msg(8, &W::default())
            .int(16, 0);
        let mut pod_spec = W::default();
        pod_spec.msg(2, &container);
        let mut labels = W::default();
        labels.msg(11, &entry("app", "web"));
        let mut template = W::default();
        template.msg(1, &labels).msg(2, &pod_spec);
        let mut selector = W::default();
        selector.msg(1, &entry("app", "web"));
        let mut spec = W::default();
        spec.int(1, 0)
            .msg(2, &selector)
            .msg(3, &template)
            .msg(4, &W::default());
        let mut meta = W::default();
        meta.str(1, "web");
        let mut d = W::default();
        d.msg(1, &meta).msg(2, &spec).msg(3, &W::default());
        let got = decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
        assert_eq!(got["spec"]["replicas"], json!(0));
        assert!(
            got["spec"]["template"]["spec"]["containers"][0]
                .get("stdin")
                .is_none(),
            "a plain omitempty false is not carried"
        );
        assert_eq!(
            got["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx", "command": ["sh", "-c"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {}}])
        );
        assert_eq!(got["apiVersion"], "apps/v1");
    }

    #[test]
    fn secret_bytes_are_base64_and_times_rfc3339() {
        let mut ts = W::default();
        ts.int(1, 1_700_000_000);
        let mut meta = W::default();
        meta.str(1, "s").msg(8, &ts);
        let mut e = W::default();
        e.str(1, "k").bytes(2, b"\x00\xffhi");
        let mut s = W::default();
        s.msg(1, &meta).msg(2, &e).str(3, "Opaque");
        let got = decode(&envelope("v1", "Secret", &s)).unwrap();
        assert_eq!(got["data"]["k"], json!(base64(b"\x00\xffhi")));
        assert_eq!(got["type"], "Opaque");
        assert_eq!(got["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn bad_bodies_are_refused_not_guessed() {
        assert_eq!(decode(b"{\"kind\":1}"), Err(ProtoError::Magic));
        let mut cm = W::default();
        cm.str(99, "x");
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", &cm)),
            Err(ProtoError::UnknownField { num: 99, .. })
        ));
        // An unknown field with nothing in it (a newer client's empty default) is skipped.
        let mut cm = W::default();
        cm.str(99, "").int(98, 0).msg(2, &entry("a", "b"));
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &cm)).unwrap()["data"],
            json!({"a": "b"})
        );
        assert!(matches!(
            decode(&envelope("v1", "Frobnicator", &W::default())),
            Err(ProtoError::Kind(_))
        ));
        let mut body = envelope("v1", "ConfigMap", &cm);
        body.truncate(body.len() - 1);
        assert!(decode(&body).is_err());
        // A length claiming gigabytes.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&huge), Err(ProtoError::Truncated));
        // Wrong wire type for a string.
        let mut cm = W::default();
        cm.int(1, 5);
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", &cm)),
            Err(ProtoError::WireType { .. })
        ));
    }

    #[test]
    fn embedded_structs_are_inlined() {
        let mut reference = W::default();
        reference.str(1, "settings");
        let mut selector = W::default();
        selector.msg(1, &reference).str(2, "mode");
        let mut source = W::default();
        source.msg(3, &selector);
        let mut env = W::default();
        env.str(1, "MODE").msg(3, &source);
        let mut container = W::default();
        container.str(1, "c").msg(7, &env);
        let mut spec = W::default();
        spec.msg(2, &container);
        let mut template = W::default();
        template.msg(2, &spec);
        let mut rs_spec = W::default();
        rs_spec.msg(3, &template);
        let mut rs = W::default();
        rs.msg(2, &rs_spec);
        let got = decode(&envelope("apps/v1", "ReplicaSet", &rs)).unwrap();
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"][0]["env"][0],
            json!({"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}})
        );
    }

    #[test]
    fn nesting_is_bounded() {
        assert_eq!(
            message("k8s.io.api.core.v1.ConfigMap", &[], MAX_DEPTH + 1),
            Err(ProtoError::TooDeep)
        );
    }
}
