//! `/openapi/v2` in its protobuf form: gnostic's `openapi.v2.Document`, which client-go's
//! `OpenAPISchema` asks for ([`MEDIA_TYPE_ASKED`]),
//! as kubectl ≤ 1.26, `kubectl explain --output plaintext-openapiv2` and tools built on older
//! client-go read it. It is the JSON Swagger document re-encoded, field by field, so both forms
//! say the same; values gnostic keeps as `Any` (defaults, enums, examples and every `x-`
//! extension) are carried as YAML text, as gnostic does.

use serde_json::{Map, Value};

/// The media type the answer carries (kube-openapi's, which Go's MIME parser accepts).
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The older spelling client-go still asks for; Go cannot parse it as a Content-Type.
pub const MEDIA_TYPE_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// One protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A proto3 string: omitted when empty.
    fn string(&mut self, field: u32, s: Option<&str>) {
        if let Some(s) = s.filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                self.bytes(field, s.as_bytes());
            }
        }
    }

    fn boolean(&mut self, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.tag(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
            self.tag(field, 0);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64).filter(|n| *n != 0.0) {
            self.tag(field, 1);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

/// gnostic's `Any`: the value as YAML text (field 2).
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    let yaml = serde_yaml_ng::to_string(v).unwrap_or_else(|_| v.to_string());
    m.bytes(2, yaml.as_bytes());
    m
}

/// The `x-` members of `o` as repeated `NamedAny` in `field`.
fn extensions(m: &mut Msg, field: u32, o: &Map<String, Value>) {
    for (k, v) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Msg::default();
        named.string(1, Some(k));
        named.message(2, any(v));
        m.message(field, named);
    }
}

fn text<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

/// The whole document.
pub fn document(doc: &Value) -> Vec<u8> {
    let empty = Map::new();
    let o = doc.as_object().unwrap_or(&empty);
    let mut m = Msg::default();
    m.string(1, text(o, "swagger"));
    if let Some(info) = o.get("info").and_then(Value::as_object) {
        let mut i = Msg::default();
        i.string(1, text(info, "title"));
        i.string(2, text(info, "version"));
        i.string(3, text(info, "description"));
        extensions(&mut i, 7, info);
        m.message(2, i);
    }
    m.string(3, text(o, "host"));
    m.string(4, text(o, "basePath"));
    m.strings(5, o.get("schemes"));
    m.strings(6, o.get("consumes"));
    m.strings(7, o.get("produces"));
    if let Some(paths) = o.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        extensions(&mut p, 1, paths);
        for (name, item) in paths.iter().filter(|(k, _)| !k.starts_with("x-")) {
            let mut named = Msg::default();
            named.string(1, Some(name));
            named.message(2, path_item(item));
            p.message(2, named);
        }
        m.message(8, p);
    }
    if let Some(defs) = o.get("definitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, s) in defs {
            d.message(1, named_schema(name, s));
        }
        m.message(9, d);
    }
    if let Some(sec) = o.get("security").and_then(Value::as_array) {
        for req in sec.iter().filter_map(Value::as_object) {
            let mut r = Msg::default();
            for (name, scopes) in req {
                let mut named = Msg::default();
                named.string(1, Some(name));
                let mut arr = Msg::default();
                arr.strings(1, Some(scopes));
                named.message(2, arr);
                r.message(1, named);
            }
            m.message(12, r);
        }
    }
    if let Some(defs) = o.get("securityDefinitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, def) in defs {
            let Some(def) = def.as_object() else { continue };
            // Kubernetes declares only API keys (the bearer token).
            let mut key = Msg::default();
            key.string(1, text(def, "type"));
            key.string(2, text(def, "name"));
            key.string(3, text(def, "in"));
            key.string(4, text(def, "description"));
            extensions(&mut key, 5, def);
            let mut item = Msg::default();
            item.message(2, key);
            let mut named = Msg::default();
            named.string(1, Some(name));
            named.message(2, item);
            d.message(1, named);
        }
        m.message(13, d);
    }
    extensions(&mut m, 16, o);
    m.0
}

fn path_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else { return m };
    m.string(1, text(o, "$ref"));
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = o.get(method).and_then(Value::as_object) {
            m.message(field, operation(op));
        }
    }
    for p in o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameters_item(p));
    }
    extensions(&mut m, 10, o);
    m
}

fn operation(o: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    m.strings(1, o.get("tags"));
    m.string(2, text(o, "summary"));
    m.string(3, text(o, "description"));
    m.string(5, text(o, "operationId"));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    for p in o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameters_item(p));
    }
    if let Some(responses) = o.get("responses").and_then(Value::as_object) {
        let mut r = Msg::default();
        for (code, resp) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
            let Some(resp) = resp.as_object() else {
                continue;
            };
            let mut value = Msg::default();
            if let Some(reference) = text(resp, "$ref") {
                let mut j = Msg::default();
                j.string(1, Some(reference));
                value.message(2, j);
            } else {
                let mut response = Msg::default();
                response.string(1, text(resp, "description"));
                if let Some(s) = resp.get("schema") {
                    let mut item = Msg::default();
                    item.message(1, schema(s));
                    response.message(2, item);
                }
                extensions(&mut response, 5, resp);
                value.message(1, response);
            }
            let mut named = Msg::default();
            named.string(1, Some(code));
            named.message(2, value);
            r.message(1, named);
        }
        extensions(&mut r, 2, responses);
        m.message(9, r);
    }
    m.strings(10, o.get("schemes"));
    m.boolean(11, o.get("deprecated"));
    extensions(&mut m, 13, o);
    m
}

/// A parameter: a `$ref`, a body parameter, or a header/formData/query/path one.
fn parameters_item(v: &Value) -> Msg {
    let mut item = Msg::default();
    let Some(o) = v.as_object() else { return item };
    if let Some(reference) = text(o, "$ref") {
        let mut j = Msg::default();
        j.string(1, Some(reference));
        j.string(2, text(o, "description"));
        item.message(2, j);
        return item;
    }
    let mut parameter = Msg::default();
    let place = text(o, "in").unwrap_or("");
    if place == "body" {
        let mut b = Msg::default();
        b.string(1, text(o, "description"));
        b.string(2, text(o, "name"));
        b.string(3, Some(place));
        b.boolean(4, o.get("required"));
        if let Some(s) = o.get("schema") {
            b.message(5, schema(s));
        }
        extensions(&mut b, 6, o);
        parameter.message(1, b);
    } else {
        // The four sub-schemas share their first fields; query and formData have
        // allowEmptyValue at 5, which shifts the rest by one.
        let (oneof, shifted) = match place {
            "header" => (1, false),
            "formData" => (2, true),
            "query" => (3, true),
            _ => (4, false),
        };
        let at = |n: u32| if shifted { n + 1 } else { n };
        let mut s = Msg::default();
        s.boolean(1, o.get("required"));
        s.string(2, Some(place));
        s.string(3, text(o, "description"));
        s.string(4, text(o, "name"));
        if shifted {
            s.boolean(5, o.get("allowEmptyValue"));
        }
        s.string(at(5), text(o, "type"));
        s.string(at(6), text(o, "format"));
        s.string(at(8), text(o, "collectionFormat"));
        if let Some(d) = o.get("default") {
            s.message(at(9), any(d));
        }
        s.boolean(at(19), o.get("uniqueItems"));
        for e in o
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            s.message(at(20), any(e));
        }
        extensions(&mut s, at(22), o);
        let mut non_body = Msg::default();
        non_body.message(oneof, s);
        parameter.message(2, non_body);
    }
    item.message(1, parameter);
    item
}

fn named_schema(name: &str, s: &Value) -> Msg {
    let mut named = Msg::default();
    named.string(1, Some(name));
    named.message(2, schema(s));
    named
}

fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else { return m };
    m.string(1, text(o, "$ref"));
    m.string(2, text(o, "format"));
    m.string(3, text(o, "title"));
    m.string(4, text(o, "description"));
    if let Some(d) = o.get("default") {
        m.message(5, any(d));
    }
    m.double(6, o.get("multipleOf"));
    m.double(7, o.get("maximum"));
    m.boolean(8, o.get("exclusiveMaximum"));
    m.double(9, o.get("minimum"));
    m.boolean(10, o.get("exclusiveMinimum"));
    m.int64(11, o.get("maxLength"));
    m.int64(12, o.get("minLength"));
    m.string(13, text(o, "pattern"));
    m.int64(14, o.get("maxItems"));
    m.int64(15, o.get("minItems"));
    m.boolean(16, o.get("uniqueItems"));
    m.int64(17, o.get("maxProperties"));
    m.int64(18, o.get("minProperties"));
    m.strings(19, o.get("required"));
    for e in o
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any(e));
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.tag(2, 0);
            a.varint(u64::from(*b));
            m.message(21, a);
        }
        Some(s @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(s));
            m.message(21, a);
        }
        _ => {}
    }
    match o.get("type") {
        Some(Value::String(t)) => {
            let mut t2 = Msg::default();
            t2.bytes(1, t.as_bytes());
            m.message(22, t2);
        }
        Some(ts @ Value::Array(_)) => {
            let mut t2 = Msg::default();
            t2.strings(1, Some(ts));
            m.message(22, t2);
        }
        _ => {}
    }
    match o.get("items") {
        Some(Value::Array(items)) => {
            let mut i = Msg::default();
            for s in items {
                i.message(1, schema(s));
            }
            m.message(23, i);
        }
        Some(s @ Value::Object(_)) => {
            let mut i = Msg::default();
            i.message(1, schema(s));
            m.message(23, i);
        }
        _ => {}
    }
    for s in o
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(s));
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, s) in props {
            p.message(1, named_schema(name, s));
        }
        m.message(25, p);
    }
    m.string(26, text(o, "discriminator"));
    m.boolean(27, o.get("readOnly"));
    if let Some(e) = o.get("example") {
        m.message(30, any(e));
    }
    extensions(&mut m, 31, o);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads one level of a message: (field, wire type, payload) for every field.
    fn fields(mut b: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
            let payload = match wire {
                0 => varint(&mut b).to_le_bytes().to_vec(),
                1 => {
                    let (h, t) = b.split_at(8);
                    b = t;
                    h.to_vec()
                }
                _ => {
                    let n = varint(&mut b) as usize;
                    let (h, t) = b.split_at(n);
                    b = t;
                    h.to_vec()
                }
            };
            out.push((field, wire, payload));
        }
        out
    }

    #[test]
    fn documents_encode_as_gnostic_lays_them_out() {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {"/api/v1/pods": {"get": {"operationId": "listPods",
                "parameters": [{"name": "limit", "in": "query", "type": "integer", "uniqueItems": true}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.api.core.v1.PodList"}}}}}},
            "definitions": {"io.k8s.api.core.v1.Pod": {"type": "object", "required": ["spec"],
                "properties": {"spec": {"type": "string", "maxLength": 5}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}]}}});
        let top = fields(&document(&doc));
        assert_eq!(top[0], (1, 2, b"2.0".to_vec()));
        let info = fields(&top[1].2);
        assert_eq!(info[0], (1, 2, b"Kubernetes".to_vec()));
        // definitions (9) → NamedSchema (1) → name, Schema
        let defs = top.iter().find(|f| f.0 == 9).unwrap();
        let named = fields(&fields(&defs.2)[0].2);
        assert_eq!(named[0].2, b"io.k8s.api.core.v1.Pod".to_vec());
        let schema = fields(&named[1].2);
        let required = schema.iter().find(|f| f.0 == 19).unwrap();
        assert_eq!(required.2, b"spec".to_vec());
        let ty = schema.iter().find(|f| f.0 == 22).unwrap();
        assert_eq!(fields(&ty.2)[0].2, b"object".to_vec());
        let ext = schema.iter().find(|f| f.0 == 31).unwrap();
        let ext = fields(&ext.2);
        assert_eq!(ext[0].2, b"x-kubernetes-group-version-kind".to_vec());
        let yaml = String::from_utf8(fields(&ext[1].2)[0].2.clone()).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, json!([{"group": "", "kind": "Pod", "version": "v1"}]));
        // paths (8) → NamedPathItem (2) → PathItem.get (2) → Operation.parameters (8)
        // → ParametersItem.parameter (1) → Parameter.non_body (2) → query (3): type at 6
        let paths = top.iter().find(|f| f.0 == 8).unwrap();
        let item = fields(&fields(&fields(&paths.2)[0].2)[1].2);
        let op = fields(&item[0].2);
        assert_eq!(op[0], (5, 2, b"listPods".to_vec()));
        let param = op.iter().find(|f| f.0 == 8).unwrap();
        let query = fields(&fields(&fields(&fields(&param.2)[0].2)[0].2)[0].2);
        assert!(query.contains(&(6, 2, b"integer".to_vec())), "{query:?}");
        assert!(
            query.contains(&(20, 0, 1u64.to_le_bytes().to_vec())),
            "{query:?}"
        );
    }
}
