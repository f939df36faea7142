//! Server-side validation of Kubernetes objects, the way kube-apiserver does it.
//!
//! This module owns the checks that turn a create or update request into a `422 Invalid`
//! Status, and the wording of their errors: the generic checks every object gets (its
//! `apiVersion`/`kind`, its metadata — names, namespaces, labels, annotations, owner
//! references, finalizers — and what metadata an update may not change), decoding into the
//! matching `k8s-openapi` type (a wrong JSON type is reported with its field path), and the
//! helpers kinds check their fields with (names, quantities, selectors, percentages). Each
//! kind's own semantic checks live with its strategy (`apiserver::kinds`), through the
//! [`Checked`] trait; pod specs and pod templates, shared by several kinds, live in
//! [`pod_spec`]. Every problem becomes a [`FieldError`], whose reason, field and message
//! follow Kubernetes' `field.Error` wording so that they can be put in `details.causes` as
//! they are. Nothing here panics, whatever JSON it is given.

pub mod pod_spec;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::{self, Write as _};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Reason of a value that is missing.
pub(crate) const REQUIRED: &str = "FieldValueRequired";
/// Reason of a malformed value.
pub(crate) const INVALID: &str = "FieldValueInvalid";
/// Reason of a value outside an enumeration.
pub(crate) const NOT_SUPPORTED: &str = "FieldValueNotSupported";
/// Reason of a value that must be unique and is not.
pub(crate) const DUPLICATE: &str = "FieldValueDuplicate";
/// Reason of a value that is well formed but not allowed here.
pub(crate) const FORBIDDEN: &str = "FieldValueForbidden";
/// Reason of a value that is too long.
pub(crate) const TOO_LONG: &str = "FieldValueTooLong";
/// Reason of a list or map with too many items.
pub(crate) const TOO_MANY: &str = "FieldValueTooMany";
/// Reason of a value whose JSON type is wrong.
pub(crate) const TYPE_INVALID: &str = "FieldValueTypeInvalid";
/// Reason of a reference to something that does not exist.
pub(crate) const NOT_FOUND: &str = "FieldValueNotFound";

/// Message detail of Kubernetes' immutable-field errors.
pub(crate) const IMMUTABLE: &str = "field is immutable";
/// Largest total size of an object's annotations, in bytes.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Largest total size of a ConfigMap's or Secret's data, in bytes.
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;
/// Placeholder printed instead of secret bytes.
pub(crate) const REDACTED: &str = "<secret contents redacted>";

pub(crate) const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
pub(crate) const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
pub(crate) const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
pub(crate) const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
pub(crate) const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
pub(crate) const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
pub(crate) const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
pub(crate) const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
pub(crate) const ENV_VAR_NAME_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
pub(crate) const ENV_VAR_NAME_ERR: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
pub(crate) const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
pub(crate) const CONFIG_MAP_KEY_ERR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
pub(crate) const PERCENT_FMT: &str = "[0-9]+%";
pub(crate) const PERCENT_ERR: &str =
    "a valid percent string must be a numeric string followed by an ending '%'";
pub(crate) const QUANTITY_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Map-valued fields: a key under one of them is printed as `field[key]`,
/// as Kubernetes' `field.Path.Key` does.
pub(crate) const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "matchLabels",
    "data",
    "stringData",
    "binaryData",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "overhead",
];

/// One invalid field, as Kubernetes' field.Error: becomes a StatusCause {reason, message, field}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// "FieldValueRequired" | "FieldValueInvalid" | "FieldValueNotSupported" | "FieldValueDuplicate" | "FieldValueForbidden" | "FieldValueTooLong" | "FieldValueTypeInvalid" (and "FieldValueNotFound" for a volume mount naming no volume)
    pub reason: &'static str,
    /// e.g. "metadata.name", "spec.containers[0].image"
    pub field: String,
    /// The part after the field, e.g. `Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of ...` or `Required value`.
    pub message: String,
}

impl FieldError {
    /// "field: message" as kubectl prints it (just the message when the field is empty).
    pub fn to_string_full(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }

    pub(crate) fn new(reason: &'static str, field: impl Into<String>, message: String) -> Self {
        FieldError {
            reason,
            field: field.into(),
            message,
        }
    }

    /// `Required value[: detail]`
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            REQUIRED,
            field,
            with_detail("Required value".into(), detail),
        )
    }

    /// `Invalid value: <value>[: detail]`; `value` is already rendered.
    pub(crate) fn invalid(field: impl Into<String>, value: String, detail: &str) -> Self {
        Self::new(
            INVALID,
            field,
            with_detail(format!("Invalid value: {value}"), detail),
        )
    }

    /// Like [`FieldError::invalid`], for a value of the wrong JSON type.
    pub(crate) fn type_invalid(field: impl Into<String>, value: String, detail: &str) -> Self {
        Self::new(
            TYPE_INVALID,
            field,
            with_detail(format!("Invalid value: {value}"), detail),
        )
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`
    pub(crate) fn not_supported(field: impl Into<String>, value: String, valid: &[&str]) -> Self {
        let quoted: Vec<String> = valid.iter().map(|v| q(v)).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            NOT_SUPPORTED,
            field,
            with_detail(format!("Unsupported value: {value}"), &detail),
        )
    }

    /// `Duplicate value: <value>[: detail]`
    pub(crate) fn duplicate(field: impl Into<String>, value: String, detail: &str) -> Self {
        Self::new(
            DUPLICATE,
            field,
            with_detail(format!("Duplicate value: {value}"), detail),
        )
    }

    /// `Forbidden: detail`
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(FORBIDDEN, field, with_detail("Forbidden".into(), detail))
    }

    /// `Too long: must have at most N bytes`
    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            TOO_LONG,
            field,
            format!("Too long: must have at most {max} bytes"),
        )
    }

    /// `Not found: <value>`
    pub(crate) fn not_found(field: impl Into<String>, value: String) -> Self {
        Self::new(NOT_FOUND, field, format!("Not found: {value}"))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_full())
    }
}

pub(crate) fn with_detail(mut head: String, detail: &str) -> String {
    if !detail.is_empty() {
        head.push_str(": ");
        head.push_str(detail);
    }
    head
}

pub(crate) type Errs = Vec<FieldError>;

// ---------------------------------------------------------------------------
// Rendering of values and field paths
// ---------------------------------------------------------------------------

/// Quotes a string the way Go's `%q` does.
pub(crate) fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders a raw JSON value for a message: strings quoted, scalars as they
/// are, structures as compact JSON cut to a readable length.
pub(crate) fn render_json(v: &Value) -> String {
    match v {
        Value::String(s) => q(s),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            let s = other.to_string();
            if s.len() > 256 {
                let mut end = 256;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}...", &s[..end])
            } else {
                s
            }
        }
    }
}

/// Renders any serializable value as compact JSON.
pub(crate) fn render_ser<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .map(|v| render_json(&v))
        .unwrap_or_else(|_| "null".into())
}

/// Renders a string map like Go's `%#v` of a `map[string]string`.
pub(crate) fn render_string_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}:{}", q(k), q(v)))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

// ---------------------------------------------------------------------------
// Format checks (apimachinery's util/validation)
// ---------------------------------------------------------------------------

pub(crate) fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

pub(crate) fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        let _ = write!(out, "'{ex}', ");
    }
    let _ = write!(out, "regex used for validation is '{fmt}')");
    out
}

pub(crate) fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without a length limit.
pub(crate) fn matches_dns_label_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => alnum(f) && alnum(l) && b.iter().all(|&c| alnum(c) || c == b'-'),
        _ => false,
    }
}

pub(crate) fn matches_dns_subdomain_pattern(s: &str) -> bool {
    s.split('.').all(matches_dns_label_pattern)
}

/// True when `s` is a DNS-1123 label: at most 63 characters of
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && matches_dns_label_pattern(s)
}

/// True when `s` is a DNS-1123 subdomain: at most 253 characters of
/// DNS-1123 labels joined by '.'.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && matches_dns_subdomain_pattern(s)
}

pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns_label_pattern(s) {
        if matches_dns_subdomain_pattern(s) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_dns_subdomain_pattern(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub(crate) fn path_segment_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s == "." || s == ".." {
        errs.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
pub(crate) fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                for msg in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

pub(crate) fn chdir_prefix_errors(value: &str) -> Vec<String> {
    if value == "." {
        vec!["must not be '.'".into()]
    } else if value == ".." {
        vec!["must not be '..'".into()]
    } else if value.starts_with("..") {
        vec!["must not start with '..'".into()]
    } else {
        Vec::new()
    }
}

pub(crate) fn env_var_name_errors(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let first_ok = |c: u8| c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_');
    let ok = match b.first() {
        Some(&f) => {
            first_ok(f)
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
        }
        None => false,
    };
    let mut errs = Vec::new();
    if !ok {
        errs.push(regex_error(
            ENV_VAR_NAME_ERR,
            ENV_VAR_NAME_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    errs.extend(chdir_prefix_errors(value));
    errs
}

pub(crate) fn config_map_key_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.push(regex_error(
            CONFIG_MAP_KEY_ERR,
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(chdir_prefix_errors(value));
    errs
}

pub(crate) fn port_name_errors(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty()
        || !port
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

pub(crate) fn is_valid_percent(s: &str) -> bool {
    match s.strip_suffix('%') {
        Some(digits) => !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------

/// An exact decimal: `digits × 10^exp`, negative when `negative`; `digits`
/// has neither leading nor trailing zeros (empty means zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quantity {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

impl Quantity {
    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    fn is_integer(&self) -> bool {
        self.is_zero() || self.exp >= 0
    }

    fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    fn cmp_magnitude(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let mag = |x: &Self| (x.digits.len() as i64).saturating_add(x.exp);
        mag(self)
            .cmp(&mag(other))
            .then_with(|| self.digits.cmp(&other.digits))
    }

    fn cmp_value(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.is_negative(), other.is_negative()) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

/// Parses a Kubernetes quantity: `[+-]` number (`1`, `1.5`, `1.`, `.5`) and
/// an optional suffix: binary SI (`Ki`..`Ei`), decimal SI (`n u m k M G T P
/// E`) or a decimal exponent (`e3`, `E-2`).
pub(crate) fn parse_quantity(s: &str) -> Option<Quantity> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if let Some(&c) = b.first() {
        if c == b'+' || c == b'-' {
            negative = c == b'-';
            i = 1;
        }
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &b[int_start..i];
    let mut frac_digits: &[u8] = &[];
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &b[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let suffix = &s[i..];
    let (dec_exp, bin_pow): (i64, u32) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        other => {
            let rest = other.strip_prefix(['e', 'E'])?;
            let (neg, digits) = match rest.as_bytes().first() {
                Some(b'+') => (false, &rest[1..]),
                Some(b'-') => (true, &rest[1..]),
                _ => (false, rest),
            };
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut e: i64 = 0;
            for c in digits.bytes() {
                e = e.saturating_mul(10).saturating_add(i64::from(c - b'0'));
            }
            e = e.min(1 << 40);
            (if neg { -e } else { e }, 0)
        }
    };
    // Little-endian decimal digits of the mantissa.
    let mut le: Vec<u8> = int_digits
        .iter()
        .chain(frac_digits.iter())
        .rev()
        .map(|c| c - b'0')
        .collect();
    for _ in 0..bin_pow {
        let mut carry: u32 = 0;
        for d in le.iter_mut() {
            let v = u32::from(*d) * 1024 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            le.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    let mut exp = dec_exp.saturating_sub(frac_digits.len() as i64);
    // Drop trailing zeros (the low end) into the exponent, leading zeros away.
    let low_zeros = le.iter().take_while(|&&d| d == 0).count();
    le.drain(..low_zeros);
    exp = exp.saturating_add(low_zeros as i64);
    while le.last() == Some(&0) {
        le.pop();
    }
    le.reverse();
    if le.is_empty() {
        exp = 0;
    }
    Some(Quantity {
        negative,
        digits: le,
        exp,
    })
}

/// A quantity as kube-apiserver stores it (`resource.Quantity`'s canonical form): the written
/// suffix's family kept (binary `Ki`…`Ei`, decimal SI, or a decimal exponent), the largest
/// suffix that leaves an integer mantissa, precision below a milli-unit rounded up, and
/// binary values under 1024 or with a fraction written in decimal SI (`1.5Gi` → `1536Mi`,
/// `1000m` → `1`, `0.5` → `500m`, `1e3` → `1e3`). None for what does not parse or is too
/// large to print exactly (it is then stored as written).
pub(crate) fn canonical_quantity(raw: &str) -> Option<String> {
    let q = parse_quantity(raw)?;
    if q.is_zero() {
        return Some("0".into());
    }
    let suffix = raw.trim_start_matches(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    let binary = suffix.ends_with('i');
    let exponent = suffix.starts_with(['e', 'E']);
    // The value in milli-units, rounded up away from zero, as an integer.
    let digits: u128 = {
        if q.digits.len() > 30 {
            return None;
        }
        let mut v: u128 = 0;
        for d in &q.digits {
            v = v * 10 + u128::from(*d);
        }
        v
    };
    let milli_exp = q.exp.checked_add(3)?;
    let milli: u128 = if milli_exp >= 0 {
        let scale = 10u128.checked_pow(u32::try_from(milli_exp).ok()?)?;
        digits.checked_mul(scale)?
    } else {
        let scale = 10u128.checked_pow(u32::try_from(-milli_exp).ok()?)?;
        digits.div_ceil(scale)
    };
    if milli > 9_223_372_036_854_775_807u128 * 1000 {
        return None;
    }
    let sign = if q.is_negative() { "-" } else { "" };
    if binary && milli.is_multiple_of(1000) && milli / 1000 >= 1024 {
        let mut v = milli / 1000;
        let mut n = 0;
        while n < 6 && v.is_multiple_of(1024) {
            v /= 1024;
            n += 1;
        }
        let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        return Some(format!("{sign}{v}{}", suffixes[n]));
    }
    let mut v = milli;
    let mut k = 0; // 0: milli, 1: units, 2: kilo ...
    while k < 7 && v.is_multiple_of(1000) {
        v /= 1000;
        k += 1;
    }
    let suffix = if exponent {
        match k {
            1 => String::new(),
            _ => format!("e{}", (k as i64 - 1) * 3),
        }
    } else {
        ["m", "", "k", "M", "G", "T", "P", "E"][k].to_string()
    };
    Some(format!("{sign}{v}{suffix}"))
}

// ---------------------------------------------------------------------------
// Base64 (Go's StdEncoding, as JSON []byte fields use it)
// ---------------------------------------------------------------------------

/// Decodes standard, padded base64, skipping CR and LF as Go does. The error
/// is the offset of the first illegal byte.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, usize> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let chars: Vec<(usize, u8)> = s
        .bytes()
        .enumerate()
        .filter(|&(_, c)| c != b'\r' && c != b'\n')
        .collect();
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let mut i = 0;
    while i < chars.len() {
        let mut quad = [0u8; 4];
        let mut n = 0;
        while n < 4 {
            let Some(&(pos, c)) = chars.get(i) else {
                // Input ended inside a quantum without padding.
                return Err(s.len());
            };
            if c == b'=' {
                if n < 2 {
                    return Err(pos);
                }
                if n == 2 {
                    match chars.get(i + 1) {
                        Some(&(_, b'=')) => i += 1,
                        Some(&(p, _)) => return Err(p),
                        None => return Err(s.len()),
                    }
                }
                if let Some(&(p, _)) = chars.get(i + 1) {
                    return Err(p);
                }
                break;
            }
            quad[n] = val(c).ok_or(pos)?;
            n += 1;
            i += 1;
        }
        out.push((quad[0] << 2) | (quad[1] >> 4));
        if n >= 3 {
            out.push((quad[1] << 4) | (quad[2] >> 2));
        }
        if n == 4 {
            out.push((quad[2] << 6) | quad[3]);
        } else {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Typed decoding with field paths
// ---------------------------------------------------------------------------

/// The OpenAPI type name behind a serde "expected ..." phrase.
pub(crate) fn schema_type(expected: &str) -> &'static str {
    let e = expected.trim();
    if e.contains("IntOrString") {
        "integer or string"
    } else if e.contains("i8")
        || e.contains("i16")
        || e.contains("i32")
        || e.contains("i64")
        || e.contains("u8")
        || e.contains("u16")
        || e.contains("u32")
        || e.contains("u64")
        || e.contains("integer")
    {
        "integer"
    } else if e.contains("f32") || e.contains("f64") {
        "number"
    } else if e.contains("a boolean") {
        "boolean"
    } else if e.contains("a sequence") {
        "array"
    } else if e.contains("string")
        || e.contains("Quantity")
        || e.contains("Time")
        || e.contains("char")
    {
        "string"
    } else {
        "object"
    }
}

/// Turns a decoding error into a field error located at its JSON path.
/// `root` is the value that was decoded and `prefix` its own path.
pub(crate) fn decode_error(
    root: &Value,
    prefix: &str,
    err: serde_path_to_error::Error<serde_json::Error>,
) -> FieldError {
    use serde_path_to_error::Segment;
    let mut field = prefix.to_string();
    let mut prev: Option<String> = prefix.rsplit('.').next().map(str::to_string);
    let mut cur: Option<&Value> = Some(root);
    for seg in err.path().iter() {
        match seg {
            Segment::Seq { index: i } => {
                field = index(&field, *i);
                cur = cur.and_then(|v| v.get(*i));
                prev = None;
            }
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                let in_map = prev.as_deref().is_some_and(|p| MAP_FIELDS.contains(&p));
                field = if in_map {
                    key(&field, k)
                } else {
                    child(&field, k)
                };
                cur = cur.and_then(|v| v.get(k.as_str()));
                prev = if in_map { None } else { Some(k.clone()) };
            }
            Segment::Unknown => {
                field = child(&field, "?");
                cur = None;
                prev = None;
            }
        }
    }
    let msg = err.inner().to_string();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return FieldError::required(child(&field, name), "");
    }
    let value = cur.map(render_json).unwrap_or_else(|| "null".into());
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((_, expected)) = rest.rsplit_once(", expected ") {
            let detail = format!("must be of type {}", schema_type(expected));
            return FieldError::type_invalid(field, value, &detail);
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((_, expected)) = rest.rsplit_once(", expected ") {
            let detail = match expected.trim() {
                "i32" | "a 32-bit integer" => "must be a 32-bit integer".to_string(),
                "i64" => "must be a 64-bit integer".to_string(),
                other => format!("expected {other}"),
            };
            return FieldError::type_invalid(field, value, &detail);
        }
    }
    FieldError::type_invalid(field, value, &msg)
}

pub(crate) fn decode<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| decode_error(value, prefix, e))
}

// ---------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------

/// How metadata.name of a kind is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 label (Namespace).
    Label,
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// Anything that fits in a URL path segment (Event).
    PathSegment,
}

/// The semantic checks of one kind, on its decoded `k8s-openapi` type: what kube's
/// `Validate<Kind>` and `Validate<Kind>Update` do after the generic metadata checks. Each
/// kind's strategy (`apiserver::kinds`) implements it next to the rest of its behaviour.
pub trait Checked: DeserializeOwned + k8s_openapi::Resource {
    /// Checks made on the raw JSON before decoding, whose errors stop decoding (base64 data
    /// that would otherwise be a decode error with a worse message).
    fn precheck(_obj: &Value, _errs: &mut Errs) {}

    /// The object's metadata, once decoded.
    fn object_meta(&self) -> &meta::ObjectMeta;

    /// Create checks. `obj` is the raw JSON, for the few checks that need to tell an absent
    /// field from a defaulted one.
    fn check(&self, obj: &Value, errs: &mut Errs);

    /// Update checks beyond the create ones: immutability against `old`.
    fn check_update(&self, _old: &Self, _errs: &mut Errs) {}
}

/// Validates a create (`old` None) or an update of a built-in kind `T`.
///
/// Checks `apiVersion`/`kind`, the metadata (name of the kind's form, namespace, labels,
/// annotations and their total size, owner references, finalizers), decodes the body into
/// `T` (a wrong JSON type is a `FieldValueTypeInvalid` at its path and stops further checks),
/// then runs `T`'s semantic checks. An update also checks what metadata may not change —
/// name, namespace, uid and creationTimestamp when given (left out, they are taken as
/// unchanged), no finalizer added once deleting — and `T`'s immutability rules.
pub fn validate<T: Checked>(
    rule: NameRule,
    namespaced: bool,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let typed = check_generic(
        rule,
        namespaced,
        obj,
        Some((T::API_VERSION, T::KIND)),
        &mut errs,
    )
    .and_then(|()| {
        let before = errs.len();
        T::precheck(obj, &mut errs);
        if errs.len() > before {
            return None;
        }
        match decode::<T>(obj, "") {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(e);
                None
            }
        }
    });
    if let Some(t) = &typed {
        t.check(obj, &mut errs);
    }
    let Some(old) = old else {
        return dedup(errs);
    };
    if errs.iter().any(|e| e.reason == TYPE_INVALID) {
        return dedup(errs);
    }
    let new_meta = match &typed {
        Some(t) => Some(t.object_meta().clone()),
        None => decode_metadata(obj).ok(),
    };
    if let (Some(new_meta), Ok(old_meta)) = (new_meta, decode_metadata(old)) {
        validate_meta_update(&old_meta, &new_meta, &mut errs);
    }
    if let (Some(new), Ok(old)) = (typed, decode::<T>(old, "")) {
        new.check_update(&old, &mut errs);
    }
    dedup(errs)
}

/// The checks every object gets whatever its kind: apiVersion/kind (against `type_meta` when
/// known) and metadata. `Some(())` when the body is fit to decode further.
pub fn check_generic(
    rule: NameRule,
    namespaced: bool,
    obj: &Value,
    type_meta: Option<(&str, &str)>,
    errs: &mut Errs,
) -> Option<()> {
    let Some(map) = obj.as_object() else {
        errs.push(FieldError::type_invalid(
            "",
            render_json(obj),
            "must be of type object",
        ));
        return None;
    };
    let (api_version, kind) = match type_meta {
        Some((v, k)) => (Some(v), Some(k)),
        None => (None, None),
    };
    let header_ok = check_type_meta(map, kind, api_version, errs);
    let object_meta = match decode_metadata(obj) {
        Ok(m) => m,
        Err(e) => {
            errs.push(e);
            return None;
        }
    };
    validate_object_meta(&object_meta, namespaced, rule, errs);
    header_ok.then_some(())
}

/// Drops repeated errors, keeping the first of each.
/// The metadata checks of an update (what may not change), for kinds validated without a
/// typed form (custom resources).
pub(crate) fn check_meta_update(old: &Value, new: &Value, errs: &mut Errs) {
    if let (Ok(new_meta), Ok(old_meta)) = (decode_metadata(new), decode_metadata(old)) {
        validate_meta_update(&old_meta, &new_meta, errs);
    }
}

fn dedup(errs: Errs) -> Errs {
    let mut seen = HashSet::new();
    errs.into_iter()
        .filter(|e| seen.insert((e.reason, e.field.clone(), e.message.clone())))
        .collect()
}

fn decode_metadata(obj: &Value) -> Result<meta::ObjectMeta, FieldError> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(meta::ObjectMeta::default()),
        Some(m) => decode(m, "metadata"),
    }
}

/// Checks `apiVersion` and `kind`; false when either is unusable.
pub(crate) fn check_type_meta(
    map: &serde_json::Map<String, Value>,
    kind: Option<&str>,
    api_version: Option<&str>,
    errs: &mut Errs,
) -> bool {
    let before = errs.len();
    for (field, expected) in [("apiVersion", api_version), ("kind", kind)] {
        match map.get(field) {
            None | Some(Value::Null) => errs.push(FieldError::required(field, "")),
            Some(Value::String(s)) if s.is_empty() => errs.push(FieldError::required(field, "")),
            Some(Value::String(s)) => {
                if let Some(expected) = expected {
                    if s != expected {
                        errs.push(FieldError::not_supported(field, q(s), &[expected]));
                    }
                }
            }
            Some(other) => errs.push(FieldError::type_invalid(
                field,
                render_json(other),
                "must be of type string",
            )),
        }
    }
    errs.len() == before
}

// ---------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------

pub(crate) fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Label => dns1123_label_errors(name),
        NameRule::Subdomain => dns1123_subdomain_errors(name),
        NameRule::PathSegment => path_segment_errors(name),
    }
}

pub(crate) fn validate_object_meta(
    m: &meta::ObjectMeta,
    namespaced: bool,
    rule: NameRule,
    errs: &mut Errs,
) {
    let name = m.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in name_errors(rule, name) {
            errs.push(FieldError::invalid("metadata.name", q(name), &msg));
        }
    }
    let namespace = m.namespace.as_deref().unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in dns1123_label_errors(namespace) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    q(namespace),
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = m.generation {
        if g < 0 {
            errs.push(FieldError::invalid(
                "metadata.generation",
                g.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_labels(m.labels.as_ref(), "metadata.labels", errs);
    validate_annotations(m.annotations.as_ref(), "metadata.annotations", errs);
    validate_owner_references(m.owner_references.as_deref().unwrap_or_default(), errs);
    validate_finalizers(
        m.finalizers.as_deref().unwrap_or_default(),
        "metadata.finalizers",
        errs,
    );
}

pub(crate) fn validate_labels(
    labels: Option<&BTreeMap<String, String>>,
    path: &str,
    errs: &mut Errs,
) {
    for (k, v) in labels.into_iter().flatten() {
        for msg in qualified_name_errors(k) {
            errs.push(FieldError::invalid(path, q(k), &msg));
        }
        for msg in label_value_errors(v) {
            errs.push(FieldError::invalid(path, q(v), &msg));
        }
    }
}

pub(crate) fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &str,
    errs: &mut Errs,
) {
    let mut total = 0usize;
    for (k, v) in annotations.into_iter().flatten() {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, q(k), &msg));
        }
        total = total.saturating_add(k.len()).saturating_add(v.len());
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

pub(crate) fn validate_owner_references(refs: &[meta::OwnerReference], errs: &mut Errs) {
    let mut first_controller: Option<String> = None;
    for (i, r) in refs.iter().enumerate() {
        let p = index("metadata.ownerReferences", i);
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(&p, "apiVersion"),
                q(&r.api_version),
                "version must not be empty",
            ));
        }
        for (field, value) in [("kind", &r.kind), ("name", &r.name), ("uid", &r.uid)] {
            if value.is_empty() {
                errs.push(FieldError::invalid(
                    child(&p, field),
                    q(value),
                    "must not be empty",
                ));
            }
        }
        if r.api_version == "v1" && r.kind == "Event" {
            errs.push(FieldError::invalid(
                p.clone(),
                render_ser(r),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.controller == Some(true) {
            let this = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    "metadata.ownerReferences",
                    render_ser(&refs),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"
                    ),
                )),
                None => first_controller = Some(this),
            }
        }
    }
}

/// What core kinds add to apimachinery's finalizer check (kube's `validateKubeFinalizerName`).
const KUBE_FINALIZER_ERR: &str =
    "name is neither a standard finalizer name nor is it fully qualified";

/// Drops the core kinds' finalizer rule from `errs`: CRDs and custom resources are checked with
/// apimachinery's metadata rules only, which take any qualified name (kube warns instead), so
/// `customresourcecleanup.apiextensions.k8s.io` or an operator's `foo.example.com` are valid.
pub(crate) fn apimachinery_finalizers(errs: &mut Errs) {
    errs.retain(|e| {
        !(e.field.starts_with("metadata.finalizers") && e.message.ends_with(KUBE_FINALIZER_ERR))
    });
}

pub(crate) fn validate_finalizers(finalizers: &[String], path: &str, errs: &mut Errs) {
    for (i, f) in finalizers.iter().enumerate() {
        let p = index(path, i);
        for msg in qualified_name_errors(f) {
            errs.push(FieldError::invalid(p.clone(), q(f), &msg));
        }
        if !f.contains('/') && !matches!(f.as_str(), "kubernetes" | "orphan" | "foregroundDeletion")
        {
            errs.push(FieldError::invalid(p, q(f), KUBE_FINALIZER_ERR));
        }
    }
    let has = |name: &str| finalizers.iter().any(|f| f == name);
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            render_ser(&finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

pub(crate) fn validate_meta_update(
    old: &meta::ObjectMeta,
    new: &meta::ObjectMeta,
    errs: &mut Errs,
) {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    for (field, o, n) in [
        ("metadata.name", s(&old.name), s(&new.name)),
        ("metadata.namespace", s(&old.namespace), s(&new.namespace)),
    ] {
        if o != n {
            errs.push(FieldError::invalid(field, q(&n), IMMUTABLE));
        }
    }
    let (old_uid, new_uid) = (s(&old.uid), s(&new.uid));
    if !new_uid.is_empty() && new_uid != old_uid {
        errs.push(FieldError::invalid("metadata.uid", q(&new_uid), IMMUTABLE));
    }
    if let (Some(o), Some(n)) = (&old.creation_timestamp, &new.creation_timestamp) {
        if o != n {
            errs.push(FieldError::invalid(
                "metadata.creationTimestamp",
                render_ser(n),
                IMMUTABLE,
            ));
        }
    }
    if old.deletion_timestamp.is_some() {
        let old_f: BTreeSet<&String> = old.finalizers.iter().flatten().collect();
        let added: BTreeSet<&String> = new
            .finalizers
            .iter()
            .flatten()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            let list: Vec<String> = added.iter().map(|f| q(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// ReplicaSets and Deployments
// ---------------------------------------------------------------------------

pub(crate) fn validate_nonnegative(value: Option<i32>, path: &str, errs: &mut Errs) {
    if let Some(v) = value.filter(|&v| v < 0) {
        errs.push(FieldError::invalid(
            path,
            v.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

pub(crate) fn validate_label_selector(
    sel: &meta::LabelSelector,
    path: &str,
    errs: &mut Errs,
) -> bool {
    let before = errs.len();
    let exprs_path = child(path, "matchExpressions");
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let p = index(&exprs_path, i);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                child(&p, "operator"),
                q(other),
                "not a valid selector operator",
            )),
        }
        for msg in qualified_name_errors(&req.key) {
            errs.push(FieldError::invalid(child(&p, "key"), q(&req.key), &msg));
        }
        for (j, v) in values.iter().enumerate() {
            for msg in label_value_errors(v) {
                errs.push(FieldError::invalid(
                    index(&child(&p, "values"), j),
                    q(v),
                    &msg,
                ));
            }
        }
    }
    validate_labels(sel.match_labels.as_ref(), &child(path, "matchLabels"), errs);
    errs.len() == before
}

/// Whether a (valid) label selector selects `labels`.
pub(crate) fn selector_matches(
    sel: &meta::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let current = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => current.is_some_and(|c| values.contains(c)),
                "NotIn" => current.is_none_or(|c| !values.contains(c)),
                "Exists" => current.is_some(),
                "DoesNotExist" => current.is_none(),
                _ => false,
            }
        })
}

pub(crate) fn selector_is_empty(sel: &meta::LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// The value of a maxSurge/maxUnavailable, or None when it is malformed.
pub(crate) fn int_or_percent_value(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::Int(i) => Some(i64::from(*i)),
        IntOrString::String(s) if is_valid_percent(s) => s[..s.len() - 1].parse().ok(),
        IntOrString::String(_) => None,
    }
}

pub(crate) fn validate_int_or_percent(v: &IntOrString, path: &str, errs: &mut Errs) {
    match v {
        IntOrString::Int(i) if *i < 0 => errs.push(FieldError::invalid(
            path,
            i.to_string(),
            "must be greater than or equal to 0",
        )),
        IntOrString::Int(_) => {}
        IntOrString::String(s) => {
            if !is_valid_percent(s) {
                errs.push(FieldError::invalid(
                    path,
                    q(s),
                    &regex_error(PERCENT_ERR, PERCENT_FMT, &["1%", "93%"]),
                ));
                errs.push(FieldError::invalid(
                    path,
                    q(s),
                    "must be an integer or percentage (e.g '5%')",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ConfigMaps and Secrets
// ---------------------------------------------------------------------------

/// Checks that every string under `obj[field]` is base64, before typed
/// decoding would stop at the first bad one.
pub(crate) fn precheck_base64(obj: &Value, field: &str, secret: bool, errs: &mut Errs) {
    let Some(map) = obj.get(field).and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        if let Value::String(s) = v {
            if let Err(at) = decode_base64(s) {
                let shown = if secret {
                    q(REDACTED)
                } else {
                    q("<binary data>")
                };
                errs.push(FieldError::invalid(
                    key(field, k),
                    shown,
                    &format!("illegal base64 data at input byte {at}"),
                ));
            }
        }
    }
}

pub(crate) fn validate_data_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    path: &str,
    errs: &mut Errs,
) {
    for k in keys {
        for msg in config_map_key_errors(k) {
            errs.push(FieldError::invalid(key(path, k), q(k), &msg));
        }
    }
}

pub(crate) fn immutable_flag_kept(new: Option<bool>, errs: &mut Errs) {
    if new != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
}

/// A label selector in comparable form: match labels, then (key, operator, values).
pub(crate) type NormalSelector = (BTreeMap<String, String>, Vec<(String, String, Vec<String>)>);

/// A selector with absent lists and maps made empty, for semantic comparison.
pub(crate) fn normalize_selector(sel: &meta::LabelSelector) -> NormalSelector {
    (
        sel.match_labels.clone().unwrap_or_default(),
        sel.match_expressions
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.key.clone(),
                    r.operator.clone(),
                    r.values.clone().unwrap_or_default(),
                )
            })
            .collect(),
    )
}

pub(crate) fn validate_selector_update(
    old: &meta::LabelSelector,
    new: &meta::LabelSelector,
    errs: &mut Errs,
) {
    if normalize_selector(old) != normalize_selector(new) {
        errs.push(FieldError::invalid(
            "spec.selector",
            render_ser(new),
            IMMUTABLE,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"cpu": 1, "memory": "0.5Gi"}
                    },
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}]
            }
        })
    }

    fn template() -> Value {
        json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
        })
    }

    fn replica_set() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template()
            }
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                "template": template()
            }
        })
    }

    /// The served resource of a kind, and its strategy.
    fn strategy_of(
        kind: &str,
    ) -> (
        &'static crate::api::resource::ResourceInfo,
        &'static dyn crate::apiserver::kinds::Strategy,
    ) {
        let info = crate::api::resource::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("a served kind");
        (info, crate::apiserver::kinds::of(info))
    }

    /// Validates a create as the kind's strategy does; `namespaced` must agree with the kind.
    fn validate_create(kind: &str, namespaced: bool, obj: &Value) -> Vec<FieldError> {
        let (info, s) = strategy_of(kind);
        assert_eq!(info.namespaced, namespaced, "{kind}");
        s.validate(info, obj, None)
    }

    /// Validates an update as the kind's strategy does.
    fn validate_update(kind: &str, namespaced: bool, old: &Value, new: &Value) -> Vec<FieldError> {
        let (info, s) = strategy_of(kind);
        assert_eq!(info.namespaced, namespaced, "{kind}");
        s.validate(info, new, Some(old))
    }

    fn create(kind: &str, namespaced: bool, obj: &Value) -> Vec<FieldError> {
        validate_create(kind, namespaced, obj)
    }

    /// Asserts an error with this field and reason exists and returns it.
    fn find<'a>(errs: &'a [FieldError], field: &str, reason: &str) -> &'a FieldError {
        errs.iter()
            .find(|e| e.field == field && e.reason == reason)
            .unwrap_or_else(|| panic!("no {reason} on {field} in {errs:#?}"))
    }

    #[test]
    fn dns_helpers() {
        assert!(is_dns1123_label("a"));
        assert!(is_dns1123_label("my-name-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(is_dns1123_subdomain("example.com"));
        assert!(is_dns1123_subdomain("a"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(".a"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
    }

    #[test]
    fn message_wording() {
        let e = FieldError::required("metadata.namespace", "");
        assert_eq!(e.to_string_full(), "metadata.namespace: Required value");
        let e = FieldError::not_supported("x", q("Foo"), &["A", "B"]);
        assert_eq!(
            e.message,
            r#"Unsupported value: "Foo": supported values: "A", "B""#
        );
        assert_eq!(q("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(
            dns1123_label_errors("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(
            env_var_name_errors("1A")[0],
            "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
        );
    }

    #[test]
    fn quantities() {
        let p = |s: &str| parse_quantity(s).unwrap_or_else(|| panic!("{s} should parse"));
        for ok in [
            "1", "1.5", "1.", ".5", "+1", "-1", "100m", "1Ki", "1e3", "1E-3", "5E", "0", "1.5Gi",
            "12n", "3u",
        ] {
            assert!(parse_quantity(ok).is_some(), "{ok}");
        }
        for bad in [
            "", ".", "abc", "1KiB", "1e", "1x", "1.2.3", "--1", "Ki", "1 Ki",
        ] {
            assert!(parse_quantity(bad).is_none(), "{bad}");
        }
        use std::cmp::Ordering::*;
        assert_eq!(p("1").cmp_value(&p("1000m")), Equal);
        assert_eq!(p("0.1").cmp_value(&p("100m")), Equal);
        assert_eq!(p("1Ki").cmp_value(&p("1024")), Equal);
        assert_eq!(p("1k").cmp_value(&p("1Ki")), Less);
        assert_eq!(p("1.5Gi").cmp_value(&p("1536Mi")), Equal);
        assert_eq!(p("2").cmp_value(&p("1e3")), Less);
        assert_eq!(p("1e-3").cmp_value(&p("1m")), Equal);
        assert_eq!(p("-1").cmp_value(&p("0")), Less);
        assert_eq!(p("0").cmp_value(&p("-0")), Equal);
        assert!(p("2000m").is_integer());
        assert!(!p("1500m").is_integer());
        assert!(p("-1").is_negative());
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbA==").as_deref(), Ok(&b"hell"[..]));
        assert_eq!(decode_base64("aGVs").as_deref(), Ok(&b"hel"[..]));
        assert_eq!(decode_base64("aGVs\nbG8=").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode_base64("").as_deref(), Ok(&b""[..]));
        assert_eq!(decode_base64("a!Vs"), Err(1));
        assert!(decode_base64("aGVsbG8").is_err());
        assert!(decode_base64("aGVsbG8=x").is_err());
        assert!(decode_base64("a===").is_err());
        assert!(decode_base64("aG=s").is_err());
    }

    // ----- Pod -----

    #[test]
    fn valid_pod_passes() {
        assert_eq!(create("Pod", true, &pod()), vec![]);
    }

    #[test]
    fn pod_bad_name() {
        let mut p = pod();
        p["metadata"]["name"] = json!("Bad_Name");
        let errs = create("Pod", true, &p);
        let e = find(&errs, "metadata.name", INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
        );
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn pod_missing_name_and_namespace() {
        let mut p = pod();
        p["metadata"] = json!({});
        let errs = create("Pod", true, &p);
        let e = find(&errs, "metadata.name", REQUIRED);
        assert_eq!(
            e.message,
            "Required value: name or generateName is required"
        );
        assert_eq!(
            find(&errs, "metadata.namespace", REQUIRED).message,
            "Required value"
        );
    }

    #[test]
    fn pod_missing_containers() {
        let mut p = pod();
        p["spec"]["containers"] = json!([]);
        p["spec"]["volumes"] = json!([]);
        let errs = create("Pod", true, &p);
        assert_eq!(
            find(&errs, "spec.containers", REQUIRED).message,
            "Required value"
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");

        let no_spec =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "n"}});
        find(&create("Pod", true, &no_spec), "spec.containers", REQUIRED);
    }

    #[test]
    fn pod_missing_image() {
        let mut p = pod();
        p["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        let errs = create("Pod", true, &p);
        let e = find(&errs, "spec.containers[0].image", REQUIRED);
        assert_eq!(
            e.to_string_full(),
            "spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn pod_wrong_types() {
        let mut p = pod();
        p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        let errs = create("Pod", true, &p);
        let e = find(
            &errs,
            "spec.containers[0].ports[0].containerPort",
            TYPE_INVALID,
        );
        assert_eq!(
            e.message,
            r#"Invalid value: "eighty": must be of type integer"#
        );

        let mut p = pod();
        p["metadata"] = json!("oops");
        let errs = create("Pod", true, &p);
        find(&errs, "metadata", TYPE_INVALID);

        let mut p = pod();
        p["metadata"]["labels"] = json!({"app": 5});
        let errs = create("Pod", true, &p);
        let e = find(&errs, "metadata.labels[app]", TYPE_INVALID);
        assert_eq!(e.message, "Invalid value: 5: must be of type string");

        let mut p = pod();
        p["spec"]["containers"] = json!({"name": "x"});
        find(&create("Pod", true, &p), "spec.containers", TYPE_INVALID);

        let errs = create("Pod", true, &json!("nope"));
        assert_eq!(errs[0].reason, TYPE_INVALID);
    }

    #[test]
    fn pod_container_checks() {
        let mut p = pod();
        p["spec"]["initContainers"] = json!([{"name": "nginx", "image": "busybox"}]);
        p["spec"]["containers"][0]["ports"] = json!([
            {"containerPort": 70000},
            {"protocol": "TCP"},
            {"containerPort": 81, "protocol": "HTTP"}
        ]);
        p["spec"]["containers"][0]["env"] = json!([{"name": "1BAD"}, {"name": ""}]);
        p["spec"]["restartPolicy"] = json!("Sometimes");
        p["spec"]["terminationGracePeriodSeconds"] = json!(-1);
        let errs = create("Pod", true, &p);
        find(&errs, "spec.initContainers[0].name", DUPLICATE);
        let e = find(&errs, "spec.containers[0].ports[0].containerPort", INVALID);
        assert_eq!(
            e.message,
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        find(&errs, "spec.containers[0].ports[1].containerPort", REQUIRED);
        let e = find(&errs, "spec.containers[0].ports[2].protocol", NOT_SUPPORTED);
        assert_eq!(
            e.message,
            r#"Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP""#
        );
        find(&errs, "spec.containers[0].env[0].name", INVALID);
        find(&errs, "spec.containers[0].env[1].name", REQUIRED);
        let e = find(&errs, "spec.restartPolicy", NOT_SUPPORTED);
        assert_eq!(
            e.message,
            r#"Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#
        );
        let e = find(&errs, "spec.terminationGracePeriodSeconds", INVALID);
        assert_eq!(
            e.message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn pod_container_name_must_be_label() {
        let mut p = pod();
        p["spec"]["containers"][0]["name"] = json!("Nginx");
        find(&create("Pod", true, &p), "spec.containers[0].name", INVALID);
    }

    #[test]
    fn pod_resources() {
        let mut p = pod();
        p["spec"]["containers"][0]["resources"] = json!({
            "requests": {"cpu": "2", "memory": "lots", "gpu": "1"},
            "limits": {"cpu": "1500m", "example.com/dongle": "0.5"}
        });
        let errs = create("Pod", true, &p);
        let e = find(&errs, "spec.containers[0].resources.requests[cpu]", INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: "2": must be less than or equal to cpu limit of 1500m"#
        );
        let e = find(
            &errs,
            "spec.containers[0].resources.requests[memory]",
            INVALID,
        );
        assert!(e.message.contains("quantities must match"), "{e:?}");
        let e = find(&errs, "spec.containers[0].resources.requests[gpu]", INVALID);
        assert!(e
            .message
            .ends_with("must be a standard resource for containers"));
        let e = find(
            &errs,
            "spec.containers[0].resources.limits[example.com/dongle]",
            INVALID,
        );
        assert!(e.message.ends_with("must be an integer"));

        let mut p = pod();
        p["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "1"}, "limits": {"cpu": "1000m"}});
        assert_eq!(create("Pod", true, &p), vec![]);
        p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "-1Gi"}});
        find(
            &create("Pod", true, &p),
            "spec.containers[0].resources.limits[memory]",
            INVALID,
        );
    }

    #[test]
    fn pod_volume_checks() {
        let mut p = pod();
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "missing", "mountPath": "/x"}]);
        p["spec"]["volumes"] = json!([
            {"name": "data", "emptyDir": {}},
            {"name": "data", "emptyDir": {}, "hostPath": {"path": "/tmp"}},
            {"name": "none"}
        ]);
        let errs = create("Pod", true, &p);
        find(&errs, "spec.containers[0].volumeMounts[0].name", NOT_FOUND);
        find(&errs, "spec.volumes[1].name", DUPLICATE);
        find(&errs, "spec.volumes[1].hostPath", FORBIDDEN);
        find(&errs, "spec.volumes[2]", REQUIRED);
    }

    #[test]
    fn pod_metadata_checks() {
        let mut p = pod();
        p["metadata"]["labels"] = json!({"bad key!": "v", "ok": "bad value!"});
        p["metadata"]["annotations"] = json!({"big": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT)});
        p["metadata"]["finalizers"] = json!(["custom"]);
        p["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "", "uid": "u"}]);
        let errs = create("Pod", true, &p);
        let labels: Vec<_> = errs
            .iter()
            .filter(|e| e.field == "metadata.labels")
            .collect();
        assert_eq!(labels.len(), 2, "{labels:#?}");
        let e = find(&errs, "metadata.annotations", TOO_LONG);
        assert_eq!(e.message, "Too long: must have at most 262144 bytes");
        find(&errs, "metadata.finalizers[0]", INVALID);
        find(&errs, "metadata.ownerReferences[0].name", INVALID);
    }

    #[test]
    fn wrong_api_version_or_kind() {
        let mut p = pod();
        p["apiVersion"] = json!("apps/v1");
        let errs = create("Pod", true, &p);
        let e = find(&errs, "apiVersion", NOT_SUPPORTED);
        assert_eq!(
            e.message,
            r#"Unsupported value: "apps/v1": supported values: "v1""#
        );
        let mut p = pod();
        p.as_object_mut().unwrap().remove("kind");
        find(&create("Pod", true, &p), "kind", REQUIRED);
    }

    // ----- ReplicaSet -----

    #[test]
    fn valid_replica_set_passes() {
        assert_eq!(create("ReplicaSet", true, &replica_set()), vec![]);
    }

    #[test]
    fn replica_set_bad_name() {
        let mut rs = replica_set();
        rs["metadata"]["name"] = json!("web_1");
        find(&create("ReplicaSet", true, &rs), "metadata.name", INVALID);
    }

    #[test]
    fn replica_set_wrong_type() {
        let mut rs = replica_set();
        rs["spec"]["replicas"] = json!("three");
        let errs = create("ReplicaSet", true, &rs);
        let e = find(&errs, "spec.replicas", TYPE_INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: "three": must be of type integer"#
        );
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn replica_set_selector_mismatch() {
        let mut rs = replica_set();
        rs["spec"]["selector"] = json!({"matchLabels": {"app": "db"}});
        let errs = create("ReplicaSet", true, &rs);
        let e = find(&errs, "spec.template.metadata.labels", INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: map[string]string{"app":"web", "tier":"front"}: `selector` does not match template `labels`"#
        );
    }

    #[test]
    fn replica_set_selector_expressions() {
        let with = |exprs: Value| {
            let mut rs = replica_set();
            rs["spec"]["selector"] = json!({"matchExpressions": exprs});
            create("ReplicaSet", true, &rs)
        };
        let matching = [
            json!([{"key": "app", "operator": "In", "values": ["web", "api"]}]),
            json!([{"key": "app", "operator": "NotIn", "values": ["db"]}]),
            json!([{"key": "tier", "operator": "Exists"}]),
            json!([{"key": "zone", "operator": "DoesNotExist"}]),
        ];
        for m in matching {
            assert_eq!(with(m.clone()), vec![], "{m}");
        }
        let failing = [
            json!([{"key": "app", "operator": "In", "values": ["db"]}]),
            json!([{"key": "app", "operator": "NotIn", "values": ["web"]}]),
            json!([{"key": "zone", "operator": "Exists"}]),
            json!([{"key": "app", "operator": "DoesNotExist"}]),
        ];
        for m in failing {
            find(&with(m), "spec.template.metadata.labels", INVALID);
        }
        let errs = with(json!([{"key": "app", "operator": "In"}]));
        find(&errs, "spec.selector.matchExpressions[0].values", REQUIRED);
        let errs = with(json!([{"key": "app", "operator": "Near", "values": ["x"]}]));
        find(&errs, "spec.selector.matchExpressions[0].operator", INVALID);
    }

    #[test]
    fn replica_set_selector_required_and_template_checked() {
        let mut rs = replica_set();
        rs["spec"].as_object_mut().unwrap().remove("selector");
        rs["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        rs["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        rs["spec"]["replicas"] = json!(-1);
        let errs = create("ReplicaSet", true, &rs);
        find(&errs, "spec.selector", REQUIRED);
        find(&errs, "spec.template.spec.containers[0].image", REQUIRED);
        find(&errs, "spec.template.spec.restartPolicy", NOT_SUPPORTED);
        find(&errs, "spec.replicas", INVALID);

        let mut rs = replica_set();
        rs["spec"]["selector"] = json!({});
        let e = find(&create("ReplicaSet", true, &rs), "spec.selector", INVALID).clone();
        assert!(e
            .message
            .ends_with("empty selector is invalid for deployment"));
    }

    #[test]
    fn replica_set_selector_immutable() {
        let old = replica_set();
        let mut new = replica_set();
        new["spec"]["replicas"] = json!(5);
        assert_eq!(validate_update("ReplicaSet", true, &old, &new), vec![]);
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "front"}});
        let errs = validate_update("ReplicaSet", true, &old, &new);
        let e = find(&errs, "spec.selector", INVALID);
        assert!(e.message.ends_with(": field is immutable"), "{e:?}");
    }

    // ----- Deployment -----

    #[test]
    fn valid_deployment_passes() {
        assert_eq!(create("Deployment", true, &deployment()), vec![]);
        let mut d = deployment();
        d["spec"].as_object_mut().unwrap().remove("strategy");
        assert_eq!(create("Deployment", true, &d), vec![]);
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        assert_eq!(create("Deployment", true, &d), vec![]);
    }

    #[test]
    fn deployment_bad_name_and_types() {
        let mut d = deployment();
        d["metadata"]["name"] = json!("Web");
        find(&create("Deployment", true, &d), "metadata.name", INVALID);
        let mut d = deployment();
        d["spec"]["replicas"] = json!("three");
        find(
            &create("Deployment", true, &d),
            "spec.replicas",
            TYPE_INVALID,
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!(7);
        find(
            &create("Deployment", true, &d),
            "spec.template.spec.containers[0].name",
            TYPE_INVALID,
        );
    }

    #[test]
    fn deployment_template_and_selector() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"] = json!([]);
        d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        let errs = create("Deployment", true, &d);
        find(&errs, "spec.template.spec.containers", REQUIRED);
        find(&errs, "spec.template.metadata.labels", INVALID);
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        find(
            &create("Deployment", true, &d),
            "spec.template.spec.containers[0].image",
            REQUIRED,
        );
    }

    #[test]
    fn deployment_strategy() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "BlueGreen"});
        let e = find(
            &create("Deployment", true, &d),
            "spec.strategy.type",
            NOT_SUPPORTED,
        )
        .clone();
        assert_eq!(
            e.message,
            r#"Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate""#
        );
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let errs = create("Deployment", true, &d);
        let e = find(&errs, "spec.strategy.rollingUpdate.maxUnavailable", INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: "0%": may not be 0 when `maxSurge` is 0"#
        );
        d["spec"]["strategy"] =
            json!({"rollingUpdate": {"maxSurge": "x", "maxUnavailable": "150%"}});
        let errs = create("Deployment", true, &d);
        find(&errs, "spec.strategy.rollingUpdate.maxSurge", INVALID);
        find(&errs, "spec.strategy.rollingUpdate.maxUnavailable", INVALID);
        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
        find(
            &create("Deployment", true, &d),
            "spec.strategy.rollingUpdate",
            FORBIDDEN,
        );
    }

    #[test]
    fn deployment_selector_immutable() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert_eq!(validate_update("Deployment", true, &old, &new), vec![]);
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web2"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web2"});
        let errs = validate_update("Deployment", true, &old, &new);
        find(&errs, "spec.selector", INVALID);
        assert_eq!(errs.len(), 1);
    }

    // ----- Pod updates -----

    #[test]
    fn pod_update_allowed_fields() {
        let old = pod();
        let mut new = pod();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        new["spec"]["activeDeadlineSeconds"] = json!(60);
        new["spec"]["terminationGracePeriodSeconds"] = json!(5);
        new["spec"]["tolerations"] = json!([
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
            {"key": "other", "operator": "Exists"}
        ]);
        new["spec"]["nodeName"] = json!("node-1");
        new["metadata"]["labels"] = json!({"app": "web", "extra": "yes"});
        assert_eq!(validate_update("Pod", true, &old, &new), vec![]);

        // A stored pod carries defaults that a re-sent manifest leaves out.
        let mut stored = pod();
        let spec = &mut stored["spec"];
        spec["dnsPolicy"] = json!("ClusterFirst");
        spec["schedulerName"] = json!("default-scheduler");
        spec["securityContext"] = json!({});
        spec["hostNetwork"] = json!(false);
        let c = &mut spec["containers"][0];
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["terminationMessagePolicy"] = json!("File");
        c["imagePullPolicy"] = json!("IfNotPresent");
        assert_eq!(validate_update("Pod", true, &stored, &pod()), vec![]);
        let mut changed = pod();
        changed["spec"]["dnsPolicy"] = json!("Default");
        let errs = validate_update("Pod", true, &stored, &changed);
        assert!(find(&errs, "spec", FORBIDDEN)
            .message
            .contains("`spec.dnsPolicy`"));
    }

    #[test]
    fn pod_update_forbidden_fields() {
        let old = pod();
        let mut new = pod();
        new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
        let errs = validate_update("Pod", true, &old, &new);
        let e = find(&errs, "spec", FORBIDDEN);
        assert!(e
            .message
            .starts_with("Forbidden: pod updates may not change fields other than"));
        assert!(
            e.message
                .contains("spec.containers[0].ports[0].containerPort"),
            "{e:?}"
        );

        let mut bound = pod();
        bound["spec"]["nodeName"] = json!("node-1");
        let mut moved = bound.clone();
        moved["spec"]["nodeName"] = json!("node-2");
        find(
            &validate_update("Pod", true, &bound, &moved),
            "spec",
            FORBIDDEN,
        );

        let mut removed = pod();
        removed["spec"]["tolerations"] = json!([]);
        find(
            &validate_update("Pod", true, &old, &removed),
            "spec.tolerations",
            FORBIDDEN,
        );

        let mut with_deadline = pod();
        with_deadline["spec"]["activeDeadlineSeconds"] = json!(60);
        let mut raised = pod();
        raised["spec"]["activeDeadlineSeconds"] = json!(120);
        find(
            &validate_update("Pod", true, &with_deadline, &raised),
            "spec.activeDeadlineSeconds",
            INVALID,
        );
    }

    #[test]
    fn metadata_immutable() {
        let mut old = pod();
        old["metadata"]["uid"] = json!("u-1");
        old["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        let mut new = old.clone();
        new["metadata"]["name"] = json!("web-2");
        new["metadata"]["namespace"] = json!("other");
        new["metadata"]["uid"] = json!("u-2");
        new["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        let errs = validate_update("Pod", true, &old, &new);
        let e = find(&errs, "metadata.name", INVALID);
        assert_eq!(e.message, r#"Invalid value: "web-2": field is immutable"#);
        find(&errs, "metadata.namespace", INVALID);
        find(&errs, "metadata.uid", INVALID);
        find(&errs, "metadata.creationTimestamp", INVALID);

        // Omitted uid and creationTimestamp are taken as unchanged.
        let mut new = old.clone();
        new["metadata"].as_object_mut().unwrap().remove("uid");
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("creationTimestamp");
        assert_eq!(validate_update("Pod", true, &old, &new), vec![]);
        // The same instant written differently is no change.
        let mut new = old.clone();
        new["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00.000Z");
        assert_eq!(validate_update("Pod", true, &old, &new), vec![]);
    }

    #[test]
    fn update_reports_type_errors_only() {
        let old = pod();
        let mut new = pod();
        new["metadata"]["name"] = json!("other");
        new["spec"]["containers"][0]["ports"] = json!("80");
        let errs = validate_update("Pod", true, &old, &new);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        find(&errs, "spec.containers[0].ports", TYPE_INVALID);
    }

    // ----- Namespace / Node / Event / Lease -----

    #[test]
    fn namespace() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
        assert_eq!(create("Namespace", false, &ns), vec![]);
        let bad = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}});
        let e = find(&create("Namespace", false, &bad), "metadata.name", INVALID).clone();
        assert_eq!(
            e.message,
            r#"Invalid value: "team.a": must not contain dots"#
        );
        let scoped = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "b"}});
        let e = find(
            &create("Namespace", false, &scoped),
            "metadata.namespace",
            FORBIDDEN,
        )
        .clone();
        assert_eq!(e.message, "Forbidden: not allowed on this type");
        let wrong = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}, "spec": {"finalizers": "x"}});
        find(
            &create("Namespace", false, &wrong),
            "spec.finalizers",
            TYPE_INVALID,
        );
        let mut renamed = ns.clone();
        renamed["metadata"]["name"] = json!("team-b");
        find(
            &validate_update("Namespace", false, &ns, &renamed),
            "metadata.name",
            INVALID,
        );
    }

    #[test]
    fn node() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1.example.com", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}
        });
        assert_eq!(create("Node", false, &node), vec![]);
        let mut bad = node.clone();
        bad["metadata"]["name"] = json!("Node_1");
        find(&create("Node", false, &bad), "metadata.name", INVALID);
        let mut bad = node.clone();
        bad["spec"]["taints"] = json!([{"key": "a", "effect": "Sometimes"}, {"key": "b", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]);
        let errs = create("Node", false, &bad);
        find(&errs, "spec.taints[0].effect", NOT_SUPPORTED);
        find(&errs, "spec.taints[2]", DUPLICATE);
        let mut bad = node.clone();
        bad["spec"]["unschedulable"] = json!("yes");
        find(
            &create("Node", false, &bad),
            "spec.unschedulable",
            TYPE_INVALID,
        );
        let mut moved = node.clone();
        moved["spec"]["podCIDR"] = json!("10.0.1.0/24");
        find(
            &validate_update("Node", false, &node, &moved),
            "spec.podCIDR",
            FORBIDDEN,
        );
        let mut cordoned = node.clone();
        cordoned["spec"]["unschedulable"] = json!(true);
        assert_eq!(validate_update("Node", false, &node, &cordoned), vec![]);
    }

    #[test]
    fn event() {
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.17a8b9c0d1e2f3a4", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal", "count": 1
        });
        assert_eq!(create("Event", true, &ev), vec![]);
        let mut missing = ev.clone();
        missing.as_object_mut().unwrap().remove("involvedObject");
        find(&create("Event", true, &missing), "involvedObject", REQUIRED);
        let mut other_ns = ev.clone();
        other_ns["involvedObject"]["namespace"] = json!("kube-system");
        find(
            &create("Event", true, &other_ns),
            "involvedObject.namespace",
            INVALID,
        );
        let mut bad = ev.clone();
        bad["metadata"]["name"] = json!("a/b");
        find(&create("Event", true, &bad), "metadata.name", INVALID);
        let mut bad = ev.clone();
        bad["count"] = json!("one");
        find(&create("Event", true, &bad), "count", TYPE_INVALID);
        let mut bumped = ev.clone();
        bumped["count"] = json!(2);
        assert_eq!(validate_update("Event", true, &ev, &bumped), vec![]);
    }

    #[test]
    fn lease() {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "sched-1", "leaseDurationSeconds": 15, "renewTime": "2024-01-01T00:00:00.000000Z"}
        });
        assert_eq!(create("Lease", true, &lease), vec![]);
        let mut bad = lease.clone();
        bad["spec"]["leaseDurationSeconds"] = json!(0);
        find(
            &create("Lease", true, &bad),
            "spec.leaseDurationSeconds",
            INVALID,
        );
        let mut bad = lease.clone();
        bad["metadata"]["name"] = json!("Kube_Scheduler");
        find(&create("Lease", true, &bad), "metadata.name", INVALID);
        let mut bad = lease.clone();
        bad["spec"]["leaseDurationSeconds"] = json!("15s");
        find(
            &create("Lease", true, &bad),
            "spec.leaseDurationSeconds",
            TYPE_INVALID,
        );
        let mut bad = lease.clone();
        bad["apiVersion"] = json!("v1");
        find(&create("Lease", true, &bad), "apiVersion", NOT_SUPPORTED);
    }

    // ----- ConfigMap / Secret -----

    fn config_map() -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"app.properties": "a=b", "LEVEL": "debug"},
            "binaryData": {"blob": "AAEC"}
        })
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default"},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"user": "admin"}
        })
    }

    #[test]
    fn config_map_checks() {
        assert_eq!(create("ConfigMap", true, &config_map()), vec![]);
        let mut cm = config_map();
        cm["data"]["bad key"] = json!("x");
        cm["data"]["blob"] = json!("dup");
        let errs = create("ConfigMap", true, &cm);
        let e = find(&errs, "data[bad key]", INVALID);
        assert!(e
            .message
            .starts_with(r#"Invalid value: "bad key": a valid config key must consist"#));
        let e = find(&errs, "data[blob]", INVALID);
        assert!(e
            .message
            .ends_with("duplicate of key present in binaryData"));
        let mut cm = config_map();
        cm["data"]["big"] = json!("x".repeat(MAX_DATA_SIZE));
        find(&create("ConfigMap", true, &cm), "data", TOO_LONG);
        let mut cm = config_map();
        cm["binaryData"]["blob"] = json!("not base64!");
        find(&create("ConfigMap", true, &cm), "binaryData[blob]", INVALID);
        let mut cm = config_map();
        cm["data"]["LEVEL"] = json!(3);
        find(&create("ConfigMap", true, &cm), "data[LEVEL]", TYPE_INVALID);
        let mut cm = config_map();
        cm["metadata"]["name"] = json!("Settings");
        find(&create("ConfigMap", true, &cm), "metadata.name", INVALID);
    }

    #[test]
    fn config_map_immutable() {
        let mut old = config_map();
        old["immutable"] = json!(true);
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(validate_update("ConfigMap", true, &old, &new), vec![]);
        new["data"]["LEVEL"] = json!("info");
        new["binaryData"] = json!({});
        new["immutable"] = json!(false);
        let errs = validate_update("ConfigMap", true, &old, &new);
        find(&errs, "data", FORBIDDEN);
        find(&errs, "binaryData", FORBIDDEN);
        find(&errs, "immutable", FORBIDDEN);
        // Without immutable, data may change.
        let mut mutable_new = config_map();
        mutable_new["data"]["LEVEL"] = json!("info");
        assert_eq!(
            validate_update("ConfigMap", true, &config_map(), &mutable_new),
            vec![]
        );
    }

    #[test]
    fn secret_checks() {
        assert_eq!(create("Secret", true, &secret()), vec![]);
        let mut s = secret();
        s["data"]["password"] = json!("hunter2!");
        let errs = create("Secret", true, &s);
        let e = find(&errs, "data[password]", INVALID);
        assert_eq!(
            e.message,
            r#"Invalid value: "<secret contents redacted>": illegal base64 data at input byte 7"#
        );
        let mut s = secret();
        s["stringData"]["bad/key"] = json!("v");
        find(&create("Secret", true, &s), "stringData[bad/key]", INVALID);
        let mut s = secret();
        s["type"] = json!("kubernetes.io/tls");
        let errs = create("Secret", true, &s);
        find(&errs, "data[tls.crt]", REQUIRED);
        find(&errs, "data[tls.key]", REQUIRED);
        let mut s = secret();
        s["stringData"]["huge"] = json!("x".repeat(MAX_DATA_SIZE));
        find(&create("Secret", true, &s), "data", TOO_LONG);
        let mut s = secret();
        s["metadata"]["name"] = json!("");
        find(&create("Secret", true, &s), "metadata.name", REQUIRED);
    }

    #[test]
    fn secret_immutable() {
        let mut old = secret();
        old["immutable"] = json!(true);
        old.as_object_mut().unwrap().remove("stringData");
        let mut same = old.clone();
        same["stringData"] = json!({"password": "hunter2"});
        assert_eq!(validate_update("Secret", true, &old, &same), vec![]);
        let mut changed = old.clone();
        changed["data"]["password"] = json!("c2VjcmV0");
        changed.as_object_mut().unwrap().remove("immutable");
        let errs = validate_update("Secret", true, &old, &changed);
        find(&errs, "data", FORBIDDEN);
        find(&errs, "immutable", FORBIDDEN);
        let mut retyped = secret();
        retyped["type"] = json!("kubernetes.io/basic-auth");
        retyped["stringData"] = json!({"username": "u"});
        let errs = validate_update("Secret", true, &secret(), &retyped);
        find(&errs, "type", INVALID);
    }

    // ----- Robustness -----

    #[test]
    fn arbitrary_json_never_panics() {
        let kinds = [
            ("Namespace", false),
            ("Node", false),
            ("Pod", true),
            ("ReplicaSet", true),
            ("Deployment", true),
            ("Event", true),
            ("Lease", true),
            ("ConfigMap", true),
            ("Secret", true),
        ];
        let weird = [
            json!(null),
            json!(1),
            json!("s"),
            json!([1, 2]),
            json!({}),
            json!({"metadata": "x"}),
            json!({"metadata": null, "spec": null}),
            json!({"metadata": {"name": 1, "labels": [1]}}),
            json!({"metadata": {"name": "a", "namespace": "b", "ownerReferences": [{}, {"controller": true}, {"controller": true}]}}),
            json!({"spec": "x"}),
            json!({"spec": {"containers": [null, {}, 1]}}),
            json!({"spec": {"containers": [{}], "volumes": [{}], "tolerations": [{}]}}),
            json!({"spec": {"selector": {"matchExpressions": [{}]}, "template": {"spec": {"containers": [{"resources": {"limits": {"": ""}}}]}}}}),
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": [], "maxUnavailable": {}}}}}),
            json!({"spec": {"replicas": 1e300, "template": 5}}),
            json!({"data": {"k": null, "": "", "..": "x"}, "binaryData": {"k": 1}, "stringData": "x"}),
            json!({"data": "x", "type": 5}),
            json!({"involvedObject": "x", "count": -1}),
            json!({"spec": {"taints": [{}, {}], "podCIDRs": [1]}}),
            json!({"apiVersion": 3, "kind": ["Pod"]}),
        ];
        for (kind, namespaced) in kinds {
            let api_version = strategy_of(kind).0.api_version();
            for w in &weird {
                let mut with_header = w.clone();
                if let Some(m) = with_header.as_object_mut() {
                    m.entry("apiVersion").or_insert(json!(api_version));
                    m.entry("kind").or_insert(json!(kind));
                }
                for obj in [w, &with_header] {
                    let _ = validate_create(kind, namespaced, obj);
                    let _ = validate_update(kind, namespaced, obj, &with_header);
                    let _ = validate_update(kind, namespaced, &with_header, obj);
                }
            }
        }
        for q in [
            "",
            "-",
            "+.",
            "1e999999999999999999",
            "9999999999999999999999999Ei",
            "1e-99999999",
            "\u{00e9}",
        ] {
            let _ = parse_quantity(q);
        }
        for s in [
            "=",
            "==",
            "===",
            "====",
            "A===",
            "\u{00e9}\u{00e9}\u{00e9}\u{00e9}",
            "\r\n",
        ] {
            let _ = decode_base64(s);
        }
    }

    #[test]
    fn quantities_are_stored_in_kubes_canonical_form() {
        for (written, stored) in [
            ("1.5Gi", "1536Mi"),
            ("1000m", "1"),
            ("0.5", "500m"),
            ("0.1", "100m"),
            ("1.5", "1500m"),
            ("100m", "100m"),
            ("1024Ki", "1Mi"),
            ("512Mi", "512Mi"),
            ("0.5Ki", "512"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("0", "0"),
            ("0.0001", "1m"),
            ("2Gi", "2Gi"),
            ("1G", "1G"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("123Mi", "123Mi"),
            ("-1.5Gi", "-1536Mi"),
        ] {
            assert_eq!(
                canonical_quantity(written).as_deref(),
                Some(stored),
                "{written}"
            );
        }
        assert_eq!(canonical_quantity("x"), None);
    }
}
