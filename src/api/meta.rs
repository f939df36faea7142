//! Reading and writing the common metadata of an object held as JSON, without a typed
//! round trip (which would drop fields Skiff does not know).

use serde_json::{Map, Value};

/// `metadata.name`, or "".
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "".
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid`, or "".
pub fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion`, or "".
pub fn resource_version(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.labels`.
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/labels").and_then(Value::as_object)
}

/// `metadata` as a mutable map, created (and replacing a non-object) if needed.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("object ensured above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("object ensured above")
}

/// Parses a resourceVersion string; "" and "0" mean "any" (None).
pub fn parse_revision(rv: &str) -> Result<Option<u64>, String> {
    match rv {
        "" | "0" => Ok(None),
        s => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("invalid resourceVersion {s:?}: must be a decimal number")),
    }
}

/// Now as RFC 3339 with second precision, as metav1.Time serialises.
pub fn now() -> String {
    let ts = jiff::Timestamp::now();
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now plus `seconds`, as RFC 3339.
pub fn now_plus(seconds: i64) -> String {
    let ts = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_creates_metadata() {
        let mut v = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}}});
        assert_eq!(name(&v), "a");
        assert_eq!(namespace(&v), "ns");
        assert_eq!(labels(&v).unwrap()["x"], "y");
        metadata_mut(&mut v).insert("uid".into(), json!("u"));
        assert_eq!(uid(&v), "u");
        let mut s = json!("not an object");
        metadata_mut(&mut s).insert("name".into(), json!("b"));
        assert_eq!(name(&s), "b");
        assert_eq!(parse_revision("0").unwrap(), None);
        assert_eq!(parse_revision("12").unwrap(), Some(12));
        assert!(parse_revision("x").is_err());
        assert!(now().ends_with('Z'));
    }
}
