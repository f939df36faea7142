//! The MessagePack codec used on the NATS bus. This module owns every byte that
//! crosses the bus: it encodes our own types with named fields (the compact
//! array form breaks k8s-openapi types), and it decodes untrusted bytes only
//! after a non-recursive structural guard ([`check`]) has proved they hold
//! exactly one complete value whose length prefixes are plausible and whose
//! nesting is bounded, so a hostile peer can make neither the decoder allocate
//! gigabytes nor overflow the stack. It also provides [`MapWriter`], which
//! assembles reply maps around already-encoded objects without re-decoding them.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why bytes from the bus could not be decoded; shown to the caller in a 400 BadRequest Status.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes end before the value does.
    #[error("truncated MessagePack: {0}")]
    Truncated(String),
    /// Nesting deeper than the bound.
    #[error("MessagePack nested deeper than {0} levels")]
    TooDeep(usize),
    /// A length prefix claims more bytes/elements than remain.
    ///
    /// For str/bin/ext, `claimed` is the payload length in bytes; for arrays and
    /// maps it is the least number of bytes the claimed elements need (one per
    /// array element, two per map pair), and `remaining` excludes bytes already
    /// owed to enclosing containers.
    #[error("MessagePack length {claimed} exceeds the {remaining} bytes that remain")]
    BadLength {
        /// Bytes (or minimum bytes, for containers) the length prefix claims.
        claimed: u64,
        /// Bytes actually available for it.
        remaining: usize,
    },
    /// Bytes left after the value.
    #[error("{0} trailing bytes after the MessagePack value")]
    Trailing(usize),
    /// Well-formed MessagePack that does not fit the expected shape (wrong types, missing fields).
    #[error("malformed request: {0}")]
    Shape(String),
    /// Encoding failed (should not happen for our own types).
    #[error("encode: {0}")]
    Encode(String),
}

/// Default bound on nesting for untrusted input (Kubernetes objects are rarely deeper than ~20).
pub const MAX_DEPTH: usize = 100;

/// Validates that `bytes` hold exactly one well-formed MessagePack value.
///
/// Walks the bytes without allocating per element and without recursion (an
/// explicit stack of per-container counters, at most `max_depth` long),
/// checking: exactly one complete value, every length prefix (str/bin/ext
/// lengths, array/map element counts) plausible against the remaining bytes
/// (an array of N elements needs at least N bytes, a map of N pairs at least
/// 2N), nesting depth <= `max_depth` (a top-level scalar has depth 0, a
/// top-level array or map depth 1), no trailing bytes. Reserved byte 0xc1 is an
/// error.
pub fn check(bytes: &[u8], max_depth: usize) -> Result<(), CodecError> {
    walk(bytes, max_depth, true)
}

/// Decodes one value of type `T` from untrusted bytes: [`check`] with
/// [`MAX_DEPTH`], then `rmp_serde::from_slice`, mapping its errors to
/// [`CodecError::Shape`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    check(bytes, MAX_DEPTH)?;
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Shape(e.to_string()))
}

/// Encodes `value` with `rmp_serde::to_vec_named` (named fields: the compact
/// array form breaks k8s-openapi types).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes a JSON value as MessagePack (maps keep their string keys).
pub fn value_to_msgpack(v: &serde_json::Value) -> Result<Vec<u8>, CodecError> {
    encode(v)
}

/// Decodes untrusted MessagePack into a JSON value, behind the same guard as
/// [`decode`]. MessagePack bin and ext values, and map keys that are not
/// strings, have no JSON form and yield [`CodecError::Shape`].
pub fn msgpack_to_value(bytes: &[u8]) -> Result<serde_json::Value, CodecError> {
    walk(bytes, MAX_DEPTH, false)?;
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Shape(e.to_string()))
}

/// What a MessagePack marker byte announces.
enum Item {
    /// A value of fixed total size: the marker plus this many bytes.
    Fixed(usize),
    /// A str/bin/ext: a big-endian length of `len_bytes` bytes follows the
    /// marker, then `extra` bytes (the ext type), then the payload.
    Sized {
        len_bytes: usize,
        extra: usize,
        binary: bool,
    },
    /// A fixext: an ext type byte then `payload` bytes.
    FixExt(usize),
    /// A fixarray/fixmap with its count in the marker.
    FixContainer { count: u64, map: bool },
    /// An array/map whose count is a big-endian integer of `len_bytes` bytes.
    Container { len_bytes: usize, map: bool },
    /// The reserved byte 0xc1.
    Reserved,
}

fn classify(marker: u8) -> Item {
    match marker {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Item::Fixed(0),
        0x80..=0x8f => Item::FixContainer {
            count: u64::from(marker & 0x0f),
            map: true,
        },
        0x90..=0x9f => Item::FixContainer {
            count: u64::from(marker & 0x0f),
            map: false,
        },
        // fixstr: the length is in the marker, so it is a fixed-size item.
        0xa0..=0xbf => Item::Fixed(usize::from(marker & 0x1f)),
        0xc1 => Item::Reserved,
        0xc4 => sized(1, 0, true),
        0xc5 => sized(2, 0, true),
        0xc6 => sized(4, 0, true),
        0xc7 => sized(1, 1, true),
        0xc8 => sized(2, 1, true),
        0xc9 => sized(4, 1, true),
        0xca => Item::Fixed(4),
        0xcb => Item::Fixed(8),
        0xcc | 0xd0 => Item::Fixed(1),
        0xcd | 0xd1 => Item::Fixed(2),
        0xce | 0xd2 => Item::Fixed(4),
        0xcf | 0xd3 => Item::Fixed(8),
        0xd4 => Item::FixExt(1),
        0xd5 => Item::FixExt(2),
        0xd6 => Item::FixExt(4),
        0xd7 => Item::FixExt(8),
        0xd8 => Item::FixExt(16),
        0xd9 => sized(1, 0, false),
        0xda => sized(2, 0, false),
        0xdb => sized(4, 0, false),
        0xdc => Item::Container {
            len_bytes: 2,
            map: false,
        },
        0xdd => Item::Container {
            len_bytes: 4,
            map: false,
        },
        0xde => Item::Container {
            len_bytes: 2,
            map: true,
        },
        0xdf => Item::Container {
            len_bytes: 4,
            map: true,
        },
    }
}

fn sized(len_bytes: usize, extra: usize, binary: bool) -> Item {
    Item::Sized {
        len_bytes,
        extra,
        binary,
    }
}

/// Takes `n` bytes at `*pos`, or reports truncation.
fn take<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    n: usize,
    what: &str,
) -> Result<&'a [u8], CodecError> {
    let start = *pos;
    let remaining = bytes.len().saturating_sub(start);
    if n > remaining {
        return Err(CodecError::Truncated(format!(
            "{what} at offset {start} needs {n} bytes, only {remaining} remain"
        )));
    }
    *pos = start + n;
    Ok(bytes.get(start..start + n).unwrap_or_default())
}

/// Reads a big-endian unsigned length of 1, 2 or 4 bytes.
fn read_len(bytes: &[u8], pos: &mut usize, len_bytes: usize) -> Result<u64, CodecError> {
    let raw = take(bytes, pos, len_bytes, "length prefix")?;
    Ok(raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Skips a payload of `len` bytes after checking it fits in what remains.
fn skip_payload(bytes: &[u8], pos: &mut usize, len: u64) -> Result<(), CodecError> {
    let remaining = bytes.len().saturating_sub(*pos);
    match usize::try_from(len) {
        Ok(n) if n <= remaining => {
            *pos += n;
            Ok(())
        }
        _ => Err(CodecError::BadLength {
            claimed: len,
            remaining,
        }),
    }
}

/// The guard behind [`check`]; with `allow_binary == false` bin and ext values
/// are rejected as [`CodecError::Shape`] (they have no JSON form).
fn walk(bytes: &[u8], max_depth: usize, allow_binary: bool) -> Result<(), CodecError> {
    let binary_error = || CodecError::Shape("MessagePack bin/ext values have no JSON form".into());
    // Values still to read in each open container, innermost last. Its length
    // is the current depth, so it never exceeds `max_depth`.
    let mut open: Vec<u64> = Vec::new();
    // Values still to read in total (top level plus every open container);
    // each needs at least one byte, so this never exceeds the bytes remaining.
    let mut owed: u64 = 1;
    let mut pos = 0usize;

    while owed > 0 {
        while open.last() == Some(&0) {
            open.pop();
        }
        owed -= 1;
        if let Some(left) = open.last_mut() {
            *left -= 1;
        }
        let marker_at = pos;
        let marker = *take(bytes, &mut pos, 1, "marker")?
            .first()
            .ok_or_else(|| CodecError::Truncated("empty marker".into()))?;
        let (count, map) = match classify(marker) {
            Item::Reserved => {
                return Err(CodecError::Shape(format!(
                    "reserved MessagePack byte 0xc1 at offset {marker_at}"
                )))
            }
            Item::Fixed(n) => {
                take(bytes, &mut pos, n, "value")?;
                continue;
            }
            Item::FixExt(n) => {
                if !allow_binary {
                    return Err(binary_error());
                }
                take(bytes, &mut pos, 1 + n, "fixext")?;
                continue;
            }
            Item::Sized {
                len_bytes,
                extra,
                binary,
            } => {
                if binary && !allow_binary {
                    return Err(binary_error());
                }
                let len = read_len(bytes, &mut pos, len_bytes)?;
                take(bytes, &mut pos, extra, "ext type")?;
                skip_payload(bytes, &mut pos, len)?;
                continue;
            }
            Item::FixContainer { count, map } => (count, map),
            Item::Container { len_bytes, map } => (read_len(bytes, &mut pos, len_bytes)?, map),
        };
        if open.len() >= max_depth {
            return Err(CodecError::TooDeep(max_depth));
        }
        let values = if map { count * 2 } else { count };
        let remaining = bytes.len().saturating_sub(pos);
        let available = remaining.saturating_sub(usize::try_from(owed).unwrap_or(usize::MAX));
        if usize::try_from(values).map_or(true, |v| v > available) {
            return Err(CodecError::BadLength {
                claimed: values,
                remaining: available,
            });
        }
        if values > 0 {
            owed += values;
            open.push(values);
        }
    }

    match bytes.len().saturating_sub(pos) {
        0 => Ok(()),
        n => Err(CodecError::Trailing(n)),
    }
}

/// Builds a MessagePack map by hand, splicing in pre-encoded values (e.g. objects stored as MessagePack).
///
/// The caller writes exactly the number of pairs given to [`MapWriter::new`];
/// after [`MapWriter::array`] it writes exactly `n` items with
/// [`MapWriter::raw_item`]. Spliced bytes are trusted to be one complete value.
#[derive(Debug, Clone)]
pub struct MapWriter {
    buf: Vec<u8>,
}

impl MapWriter {
    /// `len` = number of pairs that will be written.
    pub fn new(len: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        write_header(&mut buf, len, 0x80, 0xde, 0xdf);
        MapWriter { buf }
    }

    /// Writes a string-valued pair.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(&mut self.buf, key);
        write_str(&mut self.buf, value);
        self
    }

    /// Writes an unsigned-integer-valued pair, in the smallest encoding.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        write_str(&mut self.buf, key);
        write_u64(&mut self.buf, value);
        self
    }

    /// Splices pre-encoded MessagePack bytes as the value.
    pub fn raw(&mut self, key: &str, encoded: &[u8]) -> &mut Self {
        write_str(&mut self.buf, key);
        self.buf.extend_from_slice(encoded);
        self
    }

    /// Writes key then an array header of `n`; follow with `raw_item` n times.
    pub fn array(&mut self, key: &str, n: u32) -> &mut Self {
        write_str(&mut self.buf, key);
        write_header(&mut self.buf, n, 0x90, 0xdc, 0xdd);
        self
    }

    /// Splices one pre-encoded MessagePack value as the next array item.
    pub fn raw_item(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self
    }

    /// Returns the encoded map.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Writes an array or map header: fix form for < 16, else the 16- or 32-bit form.
fn write_header(buf: &mut Vec<u8>, len: u32, fix: u8, m16: u8, m32: u8) {
    if len < 16 {
        buf.push(fix | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        buf.push(m16);
        buf.extend_from_slice(&n.to_be_bytes());
    } else {
        buf.push(m32);
        buf.extend_from_slice(&len.to_be_bytes());
    }
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        buf.push(0xa0 | len as u8);
    } else if let Ok(n) = u8::try_from(len) {
        buf.push(0xd9);
        buf.push(n);
    } else if let Ok(n) = u16::try_from(len) {
        buf.push(0xda);
        buf.extend_from_slice(&n.to_be_bytes());
    } else {
        // Strings over 4 GiB cannot be encoded; they never occur on the bus,
        // and truncating the length keeps this infallible.
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        buf.push(0xdb);
        buf.extend_from_slice(&n.to_be_bytes());
        buf.extend_from_slice(s.as_bytes().get(..n as usize).unwrap_or_default());
        return;
    }
    buf.extend_from_slice(s.as_bytes());
}

fn write_u64(buf: &mut Vec<u8>, v: u64) {
    if v < 128 {
        buf.push(v as u8);
    } else if let Ok(n) = u8::try_from(v) {
        buf.push(0xcc);
        buf.push(n);
    } else if let Ok(n) = u16::try_from(v) {
        buf.push(0xcd);
        buf.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(v) {
        buf.push(0xce);
        buf.extend_from_slice(&n.to_be_bytes());
    } else {
        buf.push(0xcf);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "namespace": "default",
                "uid": "3f1c9a2e-0000-4000-8000-000000000001",
                "resourceVersion": "42",
                "generation": 3,
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}
                ],
                "deletionTimestamp": null
            },
            "spec": {
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                    "args": []
                }],
                "terminationGracePeriodSeconds": 30,
                "priority": -5,
                "big": u64::MAX,
                "ratio": 0.75,
                "hostNetwork": false
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Meta {
        name: String,
        generation: u64,
    }

    #[test]
    fn round_trips_a_k8s_like_object() {
        let v = pod();
        let bytes = value_to_msgpack(&v).expect("encode");
        check(&bytes, MAX_DEPTH).expect("check");
        assert_eq!(msgpack_to_value(&bytes).expect("decode"), v);
        let back: serde_json::Value = decode(&bytes).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn round_trips_a_struct_with_named_fields() {
        let m = Meta {
            name: "web".into(),
            generation: 7,
        };
        let bytes = encode(&m).expect("encode");
        // Named: the field names are on the wire.
        assert_eq!(
            msgpack_to_value(&bytes).expect("value"),
            json!({"name": "web", "generation": 7})
        );
        assert_eq!(decode::<Meta>(&bytes).expect("decode"), m);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = value_to_msgpack(&pod()).expect("encode");
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            assert!(
                check(prefix, MAX_DEPTH).is_err(),
                "prefix {cut} passed check"
            );
            assert!(msgpack_to_value(prefix).is_err(), "prefix {cut} decoded");
            assert!(decode::<serde_json::Value>(prefix).is_err());
        }
        assert!(matches!(
            check(&[], MAX_DEPTH),
            Err(CodecError::Truncated(_))
        ));
        // A str8 whose length byte is missing is truncated, not a bad length.
        assert!(matches!(
            check(&[0xd9], MAX_DEPTH),
            Err(CodecError::Truncated(_))
        ));
    }

    #[test]
    fn deep_arrays_are_too_deep_without_overflow() {
        let mut bytes = vec![0x91u8; 10_000];
        bytes.push(0xc0);
        assert!(matches!(
            check(&bytes, MAX_DEPTH),
            Err(CodecError::TooDeep(MAX_DEPTH))
        ));
        assert!(matches!(
            msgpack_to_value(&bytes),
            Err(CodecError::TooDeep(_))
        ));
        assert!(matches!(
            decode::<serde_json::Value>(&bytes),
            Err(CodecError::TooDeep(_))
        ));
        // A generous bound lets the walker itself go 10,000 deep without recursion.
        check(&bytes, 20_000).expect("deep but bounded");
        assert!(matches!(
            check(&bytes, 9_999),
            Err(CodecError::TooDeep(9_999))
        ));
    }

    #[test]
    fn deep_maps_are_too_deep_without_overflow() {
        let mut bytes = Vec::new();
        for _ in 0..10_000 {
            bytes.extend_from_slice(&[0x81, 0xa1, b'a']);
        }
        bytes.push(0x01);
        assert!(matches!(
            check(&bytes, MAX_DEPTH),
            Err(CodecError::TooDeep(MAX_DEPTH))
        ));
        assert!(matches!(
            msgpack_to_value(&bytes),
            Err(CodecError::TooDeep(_))
        ));
        check(&bytes, 10_000).expect("exactly at the bound");
    }

    #[test]
    fn depth_bound_is_inclusive() {
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0x01);
        check(&ok, MAX_DEPTH).expect("100 levels are allowed");
        msgpack_to_value(&ok).expect("and decode");
        let mut deep = vec![0x91u8; MAX_DEPTH];
        deep.push(0x90); // an empty array still nests one level deeper
        assert!(matches!(
            check(&deep, MAX_DEPTH),
            Err(CodecError::TooDeep(_))
        ));
        check(&[0x01], 0).expect("a scalar has depth 0");
        assert!(matches!(check(&[0x90], 0), Err(CodecError::TooDeep(0))));
    }

    #[test]
    fn huge_length_prefixes_fail_fast() {
        let cases: [&[u8]; 6] = [
            &[0xdb, 0xff, 0xff, 0xff, 0xf0, b'a', b'b'],
            &[0xc6, 0xff, 0xff, 0xff, 0xf0, 0x00],
            &[0xc9, 0xff, 0xff, 0xff, 0xf0, 0x01, 0x00],
            &[0xdd, 0xff, 0xff, 0xff, 0xf0, 0x01, 0x02],
            &[0xdf, 0xff, 0xff, 0xff, 0xf0, 0x01, 0x02],
            &[0xdf, 0x80, 0x00, 0x00, 0x00, 0x01, 0x02],
        ];
        let start = Instant::now();
        for bytes in cases {
            let err = check(bytes, MAX_DEPTH).expect_err("must fail");
            match err {
                CodecError::BadLength { claimed, remaining } => {
                    assert!(claimed >= 0xffff_fff0, "{claimed}");
                    assert!(remaining <= 2);
                }
                other => panic!("expected BadLength, got {other:?}"),
            }
            assert!(matches!(
                decode::<serde_json::Value>(bytes),
                Err(CodecError::BadLength { .. })
            ));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn lengths_count_bytes_owed_to_enclosing_containers() {
        // [ [x, x], 1 ]: the inner array claims 2 elements while 3 bytes remain,
        // but one of them is owed to the outer array's second element.
        let bytes = [0x92, 0x92, 0x01, 0x02];
        assert!(check(&bytes, MAX_DEPTH).is_err());
        // A map of 2 pairs needs 4 bytes; 3 are not enough.
        assert!(matches!(
            check(&[0x82, 0x01, 0x02, 0x03], MAX_DEPTH),
            Err(CodecError::BadLength {
                claimed: 4,
                remaining: 3
            })
        ));
        check(&[0x82, 0x01, 0x02, 0x03, 0x04], MAX_DEPTH).expect("exact fit");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = value_to_msgpack(&pod()).expect("encode");
        bytes.extend_from_slice(&[0xc0, 0xc0, 0x01]);
        assert!(matches!(
            check(&bytes, MAX_DEPTH),
            Err(CodecError::Trailing(3))
        ));
        assert!(matches!(
            msgpack_to_value(&bytes),
            Err(CodecError::Trailing(3))
        ));
        assert!(matches!(
            decode::<Meta>(&[0x01, 0x02]),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn reserved_byte_is_rejected() {
        assert!(check(&[0xc1], MAX_DEPTH).is_err());
        assert!(check(&[0x91, 0xc1], MAX_DEPTH).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = value_to_msgpack(&pod()).expect("encode");
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                // Mutate a valid encoding: hits deeper paths than pure noise.
                let mut b = template.clone();
                for _ in 0..(1 + next() % 4) {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b
            };
            let _ = check(&bytes, MAX_DEPTH);
            let _ = msgpack_to_value(&bytes);
            let _ = decode::<serde_json::Value>(&bytes);
            let _ = decode::<Meta>(&bytes);
        }
    }

    #[test]
    fn wrong_types_are_shape_errors() {
        let bytes =
            value_to_msgpack(&json!({"name": "web", "generation": "seven"})).expect("encode");
        match decode::<Meta>(&bytes) {
            Err(CodecError::Shape(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected Shape, got {other:?}"),
        }
        let missing = value_to_msgpack(&json!({"name": "web"})).expect("encode");
        assert!(matches!(
            decode::<Meta>(&missing),
            Err(CodecError::Shape(_))
        ));
        let not_a_map = value_to_msgpack(&json!("web")).expect("encode");
        assert!(matches!(
            decode::<Meta>(&not_a_map),
            Err(CodecError::Shape(_))
        ));
        // Invalid UTF-8 in a str is well-formed MessagePack but the wrong shape.
        assert!(matches!(
            decode::<String>(&[0xa2, 0xff, 0xfe]),
            Err(CodecError::Shape(_))
        ));
    }

    #[test]
    fn map_writer_output_decodes() {
        let item_a = value_to_msgpack(&json!({"metadata": {"name": "a"}})).expect("encode");
        let item_b = encode(&Meta {
            name: "b".into(),
            generation: 2,
        })
        .expect("encode");
        let long = "x".repeat(300);
        let mut w = MapWriter::new(6);
        w.str("kind", "PodList")
            .u64("small", 5)
            .u64("resourceVersion", 70_000)
            .u64("huge", u64::MAX)
            .raw(
                "metadata",
                &value_to_msgpack(&json!({"continue": long})).expect("encode"),
            )
            .array("items", 2)
            .raw_item(&item_a)
            .raw_item(&item_b);
        let bytes = w.finish();
        check(&bytes, MAX_DEPTH).expect("well-formed");
        assert_eq!(
            msgpack_to_value(&bytes).expect("decode"),
            json!({
                "kind": "PodList",
                "small": 5,
                "resourceVersion": 70_000,
                "huge": u64::MAX,
                "metadata": {"continue": "x".repeat(300)},
                "items": [{"metadata": {"name": "a"}}, {"name": "b", "generation": 2}]
            })
        );
    }

    #[test]
    fn map_writer_large_headers() {
        let mut w = MapWriter::new(20);
        for i in 0..20u64 {
            w.u64(&format!("k{i}"), i * 1_000_000_000);
        }
        let v = msgpack_to_value(&w.finish()).expect("decode");
        assert_eq!(v["k19"], json!(19_000_000_000u64));
        let mut w = MapWriter::new(1);
        w.array("items", 70_000);
        for _ in 0..70_000 {
            w.raw_item(&[0xc3]);
        }
        let v = msgpack_to_value(&w.finish()).expect("decode");
        assert_eq!(v["items"].as_array().map(Vec::len), Some(70_000));
        assert_eq!(MapWriter::new(0).finish(), vec![0x80]);
    }

    #[test]
    fn msgpack_scalars_and_nesting_to_json() {
        // {"a": [1, -1, -200, 1.5 (f32), 2.25 (f64), true, false, nil], "b": {"c": {}}}
        let mut bytes = vec![0x82, 0xa1, b'a', 0x98, 0x01, 0xff, 0xd1, 0xff, 0x38];
        bytes.push(0xca);
        bytes.extend_from_slice(&1.5f32.to_be_bytes());
        bytes.push(0xcb);
        bytes.extend_from_slice(&2.25f64.to_be_bytes());
        bytes.extend_from_slice(&[0xc3, 0xc2, 0xc0, 0xa1, b'b', 0x81, 0xa1, b'c', 0x80]);
        assert_eq!(
            msgpack_to_value(&bytes).expect("decode"),
            json!({"a": [1, -1, -200, 1.5, 2.25, true, false, null], "b": {"c": {}}})
        );
    }

    #[test]
    fn bin_and_ext_have_no_json_form() {
        let cases: [&[u8]; 4] = [
            &[0xc4, 0x02, 0x01, 0x02],
            &[0xd4, 0x01, 0x00],
            &[0xc7, 0x01, 0x05, 0x00],
            &[0x81, 0xa1, b'k', 0xc4, 0x00],
        ];
        for bytes in cases {
            check(bytes, MAX_DEPTH).expect("well-formed");
            assert!(
                matches!(msgpack_to_value(bytes), Err(CodecError::Shape(_))),
                "{bytes:?}"
            );
        }
        // Non-string map keys have no JSON form either.
        assert!(matches!(
            msgpack_to_value(&[0x81, 0x01, 0x02]),
            Err(CodecError::Shape(_))
        ));
    }
}
