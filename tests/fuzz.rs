//! Every decoder fed arbitrary input, as property tests with shrinking (stable Rust: no
//! nightly toolchain for cargo-fuzz here): the MessagePack checker and the NATS request
//! envelope, JSON values through MessagePack and back, Kubernetes protobuf bodies, every
//! patch type (merge, JSON patch, strategic merge), label and field selectors, quantities, NATS subject escaping, and
//! object validation. None may panic; where a decoder accepts, what it built must mean the
//! same when written out again. The write-ahead log's recovery from arbitrary bytes is in
//! the store's own tests (`store::embedded`).
//!
//! Bounded in the test suite (`PROPTEST_CASES`, default 256 a property). For an hour:
//! `scripts/fuzz 3600` (docs/BENCHMARKS.md has the last long run).

use proptest::prelude::*;
use serde_json::{json, Value};

use skiff::api::codec;
use skiff::api::selector::{FieldSelector, LabelSelector};
use skiff::api::wire::Request;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// Arbitrary JSON: scalars, strings of any characters, nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON shaped like the objects the API serves, with arbitrary values where fields go.
fn object_like() -> impl Strategy<Value = Value> {
    // Literal names (`select`, not regexes: `$patch` is no anchor here).
    let field = proptest::sample::select(vec![
        "metadata",
        "spec",
        "status",
        "containers",
        "name",
        "image",
        "labels",
        "replicas",
        "selector",
        "matchLabels",
        "template",
        "ports",
        "containerPort",
        "env",
        "value",
        "nodeName",
        "resources",
        "requests",
        "limits",
        "cpu",
        "memory",
        "taints",
        "key",
        "effect",
        "data",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$deleteFromPrimitiveList/finalizers",
        "finalizers",
        "ownerReferences",
        "uid",
    ])
    .prop_map(String::from);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(|n| json!(n)),
        proptest::sample::select(vec![
            "",
            "a",
            "web",
            "delete",
            "replace",
            "merge",
            "retainKeys",
            "1Gi",
            "100m",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 96, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(field.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Bytes off the bus: the guarded MessagePack checker, then the request envelope.
    #[test]
    fn arbitrary_bytes_never_crash_the_envelope_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let checked = codec::check(&bytes, 100);
        let decoded = codec::decode::<Request>(&bytes);
        if checked.is_err() {
            prop_assert!(decoded.is_err(), "what the checker refuses is never decoded");
        }
        let _ = codec::msgpack_to_value(&bytes);
    }

    /// MessagePack that looks almost right: a valid encoding with bytes changed.
    #[test]
    fn corrupted_envelopes_never_crash(v in json_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = codec::value_to_msgpack(&json!({"resource": "pods", "body": v})).unwrap();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let _ = codec::check(&bytes, 100);
        let _ = codec::decode::<Request>(&bytes);
    }

    /// JSON through MessagePack and back is the same JSON.
    #[test]
    fn json_round_trips_through_messagepack(v in json_value()) {
        let bytes = codec::value_to_msgpack(&v).unwrap();
        codec::check(&bytes, 100).unwrap();
        prop_assert_eq!(codec::msgpack_to_value(&bytes).unwrap(), v);
    }

    /// Kubernetes protobuf bodies: arbitrary bytes, and the envelope's magic followed by any.
    #[test]
    fn protobuf_bodies_never_crash(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = skiff::apiserver::http::protobuf::decode(&bytes);
        let mut enveloped = b"k8s\0".to_vec();
        enveloped.extend_from_slice(&bytes);
        let _ = skiff::apiserver::http::protobuf::decode(&enveloped);
    }

    /// The strategic merge patch, on arbitrary object-shaped documents for every kind: never
    /// panics, and leaves the original untouched when it refuses.
    #[test]
    fn strategic_merge_never_crashes(original in object_like(), patch in object_like(),
            kind in proptest::sample::select(every_patch_root())) {
        let mut doc = original.clone();
        if skiff::apiserver::patch::strategic_merge(kind, &mut doc, &patch).is_err() {
            prop_assert_eq!(doc, original);
        }
    }

    /// Every patch type (merge, JSON patch, strategic merge) on arbitrary documents, with
    /// arbitrary patches and JSON-patch operation lists made of real operations and paths:
    /// never a panic, and a refused patch leaves the object as it was.
    #[test]
    fn every_patch_type_never_crashes(original in object_like(), patch in object_like(),
            ops in proptest::collection::vec((
                proptest::sample::select(vec!["add", "remove", "replace", "move", "copy", "test", "bogus"]),
                proptest::sample::select(vec!["", "/", "/metadata", "/metadata/labels", "/metadata/labels/a",
                    "/spec/containers/0", "/spec/containers/-", "/spec/containers/99", "/a~1b", "/~2", "/data/v"]),
                proptest::sample::select(vec!["/metadata", "/spec", "/status", "/metadata/labels", "/nope"]),
                object_like()), 0..8),
            kind in proptest::sample::select(every_patch_root())) {
        use skiff::api::wire::PatchType;
        let json_ops = Value::Array(ops.into_iter().map(|(op, path, from, value)|
            json!({"op": op, "path": path, "from": from, "value": value})).collect());
        for (ptype, p) in [
            (PatchType::Merge, &patch),
            (PatchType::Strategic, &patch),
            (PatchType::Json, &json_ops),
            (PatchType::Json, &patch),
        ] {
            let mut doc = original.clone();
            if skiff::apiserver::patch::apply(kind, &mut doc, ptype, p).is_err() {
                prop_assert_eq!(&doc, &original, "{:?} refused but changed the object", ptype);
            }
        }
    }

    /// Label selectors: any string parses or is refused; what parses prints as a selector
    /// that parses back to the same one.
    #[test]
    fn label_selectors_round_trip(s in ".{0,40}", t in "[a-z!=(), ]{0,30}") {
        for input in [s, t] {
            if let Ok(sel) = LabelSelector::parse(&input) {
                let printed = sel.to_string();
                let again = LabelSelector::parse(&printed);
                prop_assert!(again.is_ok(), "{input:?} printed as {printed:?}, which does not parse");
                prop_assert_eq!(again.unwrap().to_string(), printed);
            }
        }
    }

    /// Field selectors likewise, with escapes.
    #[test]
    fn field_selectors_round_trip(s in ".{0,40}", t in r"[a-z.=!,\\ ]{0,30}") {
        for input in [s, t] {
            if let Ok(sel) = FieldSelector::parse(&input) {
                let printed = sel.to_string();
                let again = FieldSelector::parse(&printed);
                prop_assert!(again.is_ok(), "{input:?} printed as {printed:?}, which does not parse");
                prop_assert_eq!(again.unwrap(), sel);
            }
        }
    }

    /// Quantities: any string parses or is refused, never a panic or an overflow.
    #[test]
    fn quantities_never_crash(s in ".{0,24}", t in "[0-9.eEkKMGTPimnu+-]{0,24}") {
        for input in [s, t] {
            let _ = skiff::scheduler::algorithm::parse_quantity(&input, true);
            let _ = skiff::scheduler::algorithm::parse_quantity(&input, false);
        }
    }

    /// NATS subject tokens: every user name escapes to one token that unescapes to itself.
    #[test]
    fn identities_escape_to_one_subject_token(name in ".{0,30}", junk in ".{0,30}") {
        let token = skiff::api::subject::escape(&name);
        prop_assert!(!token.contains('.') && !token.contains('*') && !token.contains('>') && !token.contains(' '));
        prop_assert_eq!(skiff::api::subject::unescape(&token), Some(name));
        let _ = skiff::api::subject::unescape(&junk);
        let _ = skiff::api::subject::parse_request(&junk);
    }

    /// Field management on arbitrary objects and arbitrary (even malformed) managedFields:
    /// recording an update, applying (forced or not), and reading the entries back never
    /// panic, and a refused apply is a 409 (or a 400 for a configuration that is no object).
    #[test]
    fn field_management_never_crashes(old in object_like(), new in object_like(), config in object_like(),
            entries in object_like(), force in proptest::bool::ANY,
            root in proptest::sample::select(every_patch_root())) {
        use skiff::apiserver::managed;
        let w = managed::Writer {
            manager: "fuzz",
            subresource: "",
            has_status: true,
            api_version: "v1".into(),
            schema: skiff::apiserver::patch::Schema::of(root),
        };
        let mut old = old;
        if let Some(m) = old.as_object_mut() {
            m.insert("metadata".into(), json!({"managedFields": [
                {"manager": "x", "operation": "Update", "fieldsV1": entries.clone()},
                {"manager": "y", "operation": "Apply", "fieldsV1": entries}]}));
        }
        let mut updated = new.clone();
        managed::record_update(Some(&old), &mut updated, &w);
        let _ = managed::entries(&updated);
        match managed::apply(Some(&old), &config, &w, force) {
            Ok(obj) => { let _ = managed::entries(&obj); }
            Err(s) => prop_assert!(s.code == 409 || (s.code == 400 && !(config.is_object() && old.is_object())), "{s:?}"),
        }
        let _ = managed::apply(None, &config, &w, force);
    }

    /// Every served kind's strategy — normalisation, defaults, admission, initial status,
    /// validation of creates and updates, update preparation and Table cells — on arbitrary
    /// object-shaped bodies never panics.
    #[test]
    fn strategies_never_crash(obj in object_like(), old in object_like(),
            info in proptest::sample::select(skiff::api::resource::RESOURCES.to_vec()),
            sub in proptest::sample::select(vec![None, Some("status"), Some("finalize"), Some("scale")])) {
        let s = skiff::apiserver::kinds::of(&info);
        // The hooks that change an object are given objects (the registry refuses anything
        // else before); validation and the read-only hooks take any JSON.
        let obj = if obj.is_object() { obj } else { json!({"spec": obj}) };
        let mut new = obj.clone();
        let _ = s.normalise(&mut new);
        s.defaults(&mut new);
        let _ = s.admit_create(&mut new, &skiff::apiserver::kinds::Admission::default());
        s.initial_status(&mut new);
        let _ = s.validate(&info, &new, None);
        let _ = s.validate(&info, &obj, Some(&old));
        let mut updated = obj.clone();
        let _ = s.prepare_for_update(&info, sub, &old, &mut updated);
        let _ = s.cells(&obj);
        let _ = s.delete_pending(&obj);
    }
}

/// Every patch metadata root a strategy can name.
fn every_patch_root() -> Vec<skiff::apiserver::patch::RootKind> {
    use skiff::apiserver::patch::RootKind;
    vec![
        RootKind::Pod,
        RootKind::Node,
        RootKind::Namespace,
        RootKind::Workload,
        RootKind::PodTemplate,
        RootKind::Other,
    ]
}
