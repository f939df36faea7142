//! Label and field selectors. This module owns the `labelSelector` and
//! `fieldSelector` query-string syntaxes and the `metav1.LabelSelector` JSON
//! form: parsing them (with Kubernetes' validation rules and error texts),
//! rendering them back to a canonical string, and evaluating them against
//! objects held as `serde_json::Value`. The semantics follow
//! `k8s.io/apimachinery/pkg/labels` and `k8s.io/apimachinery/pkg/fields`:
//! requirements are ANDed, `!=` / `notin` / `!key` match objects that lack
//! the label, `=` / `in` / `key` need it present, and a field that is missing
//! from an object compares as the empty string.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Error for a selector string that does not parse; the message is shown to
/// users in a 400 BadRequest Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

// ---------------------------------------------------------------------------
// Validation of label keys and values (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

/// Maximum length of the name part of a qualified name (label key).
const QUALIFIED_NAME_MAX_LEN: usize = 63;
/// Maximum length of a label value.
const LABEL_VALUE_MAX_LEN: usize = 63;
/// Maximum length of a DNS-1123 subdomain (label key prefix).
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

const QUALIFIED_NAME_FMT_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  \
     or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LABEL_VALUE_FMT_MSG: &str = "a valid label must be an empty string or consist of \
     alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
     character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

const DNS1123_SUBDOMAIN_FMT_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower \
     case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
     character (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: the name part of a label key
/// and (when non-empty) a label value.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`: one dot-separated part of a DNS-1123 subdomain.
fn is_dns1123_label_part(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && b.iter().all(|c| lower_alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// Problems with `s` as a DNS-1123 subdomain (empty when valid).
fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX_LEN} characters"
        ));
    }
    if !s.split('.').all(is_dns1123_label_part) {
        errs.push(DNS1123_SUBDOMAIN_FMT_MSG.to_owned());
    }
    errs
}

/// Problems with `value` as a qualified name, i.e. a label key (empty when valid).
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_FMT_MSG} with an optional DNS subdomain \
                 prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX_LEN} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_FMT_MSG}"));
    }
    errs
}

/// Validates a label key, producing Kubernetes' `key: Invalid value: ...` text.
fn validate_label_key(key: &str) -> Result<(), String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("key: Invalid value: {key:?}: {}", errs.join("; ")))
    }
}

/// Validates the `index`-th value of a requirement.
fn validate_label_value(value: &str, index: usize) -> Result<(), String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(format!(
            "must be no more than {LABEL_VALUE_MAX_LEN} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(LABEL_VALUE_FMT_MSG.to_owned());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "values[{index}]: Invalid value: {value:?}: {}",
            errs.join("; ")
        ))
    }
}

/// Renders a list of values the way Go's `%#v` renders a `[]string`.
fn go_string_slice(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

/// Folds several validation messages into one error, like `utilerrors.NewAggregate`.
fn aggregate(errs: Vec<String>) -> Result<(), SelectorError> {
    let mut unique: Vec<String> = Vec::with_capacity(errs.len());
    for e in errs {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    match unique.len() {
        0 => Ok(()),
        1 => Err(SelectorError(unique.concat())),
        _ => Err(SelectorError(format!("[{}]", unique.join(", ")))),
    }
}

/// The string form of a label value held in JSON: strings as-is, numbers and
/// booleans by their text, other shapes by their compact JSON; `null` counts
/// as an absent label.
fn label_value(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// A short name for the JSON type of `v`, for error messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------
// Label requirements and selectors
// ---------------------------------------------------------------------------

/// How a [`LabelRequirement`] compares an object's label with its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// `key in (v1,v2)`: the label is present with one of the values.
    In,
    /// `key notin (v1,v2)`: the label is absent or has none of the values.
    NotIn,
    /// `key=v` or `key==v`: the label is present with exactly this value.
    Equals,
    /// `key!=v`: the label is absent or has a different value.
    NotEquals,
    /// `key`: the label is present (with any value).
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is present, is an integer, and is greater than `n`.
    GreaterThan,
    /// `key<n`: the label is present, is an integer, and is less than `n`.
    LessThan,
}

/// One clause of a [`LabelSelector`]: a key, an operator and (depending on
/// the operator) a sorted, de-duplicated set of values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    key: String,
    operator: LabelOperator,
    values: Vec<String>,
}

impl LabelRequirement {
    /// Builds a requirement, validating it like Kubernetes' `labels.NewRequirement`:
    /// the key must be a qualified name, every value a valid label value,
    /// `In`/`NotIn` need at least one value, `Equals`/`NotEquals` exactly one,
    /// `Exists`/`DoesNotExist` none, and `GreaterThan`/`LessThan` one integer.
    pub fn new<K, I, V>(key: K, operator: LabelOperator, values: I) -> Result<Self, SelectorError>
    where
        K: Into<String>,
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        let key = key.into();
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        let mut errs = Vec::new();
        if let Err(e) = validate_label_key(&key) {
            errs.push(e);
        }
        let invalid_values = |detail: &str| {
            format!(
                "values: Invalid value: {}: {detail}",
                go_string_slice(&values)
            )
        };
        match operator {
            LabelOperator::In | LabelOperator::NotIn => {
                if values.is_empty() {
                    errs.push(invalid_values(
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            LabelOperator::Equals | LabelOperator::NotEquals => {
                if values.len() != 1 {
                    errs.push(invalid_values(
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(invalid_values(
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid_values(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, \
                             the value must be an integer"
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            if let Err(e) = validate_label_value(v, i) {
                errs.push(e);
            }
        }
        aggregate(errs)?;
        let values: Vec<String> = values
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Self {
            key,
            operator,
            values,
        })
    }

    /// The label key this requirement looks at.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The comparison this requirement makes.
    pub fn operator(&self) -> LabelOperator {
        self.operator
    }

    /// The values compared against, sorted and de-duplicated (empty for
    /// `Exists` / `DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values
            .binary_search_by(|candidate| candidate.as_str().cmp(v))
            .is_ok()
    }

    /// Whether a label set (an object's `metadata.labels`, `None` when
    /// absent) satisfies this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|m| m.get(&self.key)).and_then(label_value);
        match self.operator {
            LabelOperator::In | LabelOperator::Equals => value.is_some_and(|v| self.has_value(&v)),
            LabelOperator::NotIn | LabelOperator::NotEquals => {
                value.is_none_or(|v| !self.has_value(&v))
            }
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let actual = value.and_then(|v| v.parse::<i64>().ok());
                let bound = match self.values.as_slice() {
                    [only] => only.parse::<i64>().ok(),
                    _ => None,
                };
                match (actual, bound) {
                    (Some(actual), Some(bound)) => {
                        if self.operator == LabelOperator::GreaterThan {
                            actual > bound
                        } else {
                            actual < bound
                        }
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Renders the requirement in query-string form (`a=b`, `a in (x,y)`, `!a`, ...).
impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let single = self.values.first().map_or("", String::as_str);
        match self.operator {
            LabelOperator::Exists => write!(f, "{key}"),
            LabelOperator::DoesNotExist => write!(f, "!{key}"),
            LabelOperator::Equals => write!(f, "{key}={single}"),
            LabelOperator::NotEquals => write!(f, "{key}!={single}"),
            LabelOperator::GreaterThan => write!(f, "{key}>{single}"),
            LabelOperator::LessThan => write!(f, "{key}<{single}"),
            LabelOperator::In => write!(f, "{key} in ({})", self.values.join(",")),
            LabelOperator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
        }
    }
}

/// A set of label requirements that must all hold (an empty selector matches
/// everything). Requirements are kept sorted by key, so equal selectors
/// compare equal and render identically whatever order they were written in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from already-validated requirements (sorted by key).
    pub fn from_requirements<I>(requirements: I) -> Self
    where
        I: IntoIterator<Item = LabelRequirement>,
    {
        let mut requirements: Vec<LabelRequirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// Parses the `labelSelector` query syntax: `a=b`, `a==b`, `a!=b`,
    /// `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, comma-separated (AND), with
    /// whitespace tolerated around tokens. Keys are an optional DNS-1123
    /// subdomain prefix plus `/` plus a name of at most 63 characters matching
    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`; values are at most 63
    /// characters of the same form, or empty — validated as Kubernetes does.
    ///
    /// As in Kubernetes, names and values must also end with an alphanumeric
    /// character, `in ()` means "the empty value", and `a>5` / `a<5` integer
    /// comparisons are accepted too. An empty or all-blank string yields the
    /// empty selector.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let parser = LabelParser {
            tokens: lex(s),
            pos: 0,
        };
        Ok(Self::from_requirements(parser.parse()?))
    }

    /// Builds from a `metav1.LabelSelector` JSON object:
    /// `{"matchLabels":{..},"matchExpressions":[{"key":..,"operator":"In|NotIn|Exists|DoesNotExist","values":[..]}]}`.
    /// `null` (or an object with neither field) matches everything; rejecting
    /// an empty selector where one is required (e.g. a Deployment) is the
    /// caller's validation, not this function's.
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(SelectorError(format!(
                    "invalid label selector: expected an object, got {}",
                    json_type(other)
                )))
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                requirements.extend(Self::from_match_labels(labels)?.requirements);
            }
            Some(other) => {
                return Err(SelectorError(format!(
                    "matchLabels: Invalid value: expected an object, got {}",
                    json_type(other)
                )))
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    requirements.push(expression_requirement(i, expr)?);
                }
            }
            Some(other) => {
                return Err(SelectorError(format!(
                    "matchExpressions: Invalid value: expected an array, got {}",
                    json_type(other)
                )))
            }
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Builds an equality-only selector from a plain label map, as used by
    /// `matchLabels` and by `Service.spec.selector` /
    /// `ReplicationController.spec.selector`. Every value must be a string.
    pub fn from_match_labels(labels: &Map<String, Value>) -> Result<Self, SelectorError> {
        let mut requirements = Vec::with_capacity(labels.len());
        for (key, value) in labels {
            let Value::String(value) = value else {
                return Err(SelectorError(format!(
                    "matchLabels[{key:?}]: Invalid value: expected a string, got {}",
                    json_type(value)
                )));
            };
            requirements.push(LabelRequirement::new(
                key.as_str(),
                LabelOperator::Equals,
                [value.as_str()],
            )?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether every requirement holds. `labels`: the object's
    /// `metadata.labels` map (`None` when absent).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Convenience: matches against `obj["metadata"]["labels"]` (an absent or
    /// non-object `labels` counts as no labels).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.matches(labels)
    }
}

/// Renders back to the query-string form (used for Scale.status.selector), deterministic order.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Converts the `index`-th entry of `matchExpressions`.
fn expression_requirement(index: usize, expr: &Value) -> Result<LabelRequirement, SelectorError> {
    let err = |msg: String| SelectorError(format!("matchExpressions[{index}].{msg}"));
    let Value::Object(expr) = expr else {
        return Err(SelectorError(format!(
            "matchExpressions[{index}]: Invalid value: expected an object, got {}",
            json_type(expr)
        )));
    };
    let key = match expr.get("key") {
        Some(Value::String(key)) => key.as_str(),
        None | Some(Value::Null) => return Err(err("key: Required value".to_owned())),
        Some(other) => {
            return Err(err(format!(
                "key: Invalid value: expected a string, got {}",
                json_type(other)
            )))
        }
    };
    let operator = match expr.get("operator") {
        Some(Value::String(op)) => match op.as_str() {
            "In" => LabelOperator::In,
            "NotIn" => LabelOperator::NotIn,
            "Exists" => LabelOperator::Exists,
            "DoesNotExist" => LabelOperator::DoesNotExist,
            other => {
                return Err(SelectorError(format!(
                    "{other:?} is not a valid label selector operator"
                )))
            }
        },
        None | Some(Value::Null) => return Err(err("operator: Required value".to_owned())),
        Some(other) => {
            return Err(err(format!(
                "operator: Invalid value: expected a string, got {}",
                json_type(other)
            )))
        }
    };
    let values: Vec<&str> = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => {
            let mut out = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                match v {
                    Value::String(s) => out.push(s.as_str()),
                    other => {
                        return Err(err(format!(
                            "values[{i}]: Invalid value: expected a string, got {}",
                            json_type(other)
                        )))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(err(format!(
                "values: Invalid value: expected an array, got {}",
                json_type(other)
            )))
        }
    };
    LabelRequirement::new(key, operator, values)
}

// ---------------------------------------------------------------------------
// Label selector lexer and parser (mirrors labels/selector.go)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    In,
    NotIn,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    Open,
    Close,
    Comma,
    End,
}

impl<'a> Token<'a> {
    /// The text of the token, for error messages (`""` at end of input).
    fn literal(self) -> &'a str {
        match self {
            Token::Ident(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }
}

fn is_selector_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a label selector into tokens, always ending with [`Token::End`].
/// Identifiers are maximal runs of anything but whitespace and operator
/// characters; `in` / `notin` are keywords. Every split point is an ASCII
/// byte, so slicing stays on character boundaries.
fn lex(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if is_selector_whitespace(c) {
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (token, len) = match c {
            b'=' if next == Some(b'=') => (Token::DoubleEquals, 2),
            b'=' => (Token::Equals, 1),
            b'!' if next == Some(b'=') => (Token::NotEquals, 2),
            b'!' => (Token::Not, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b',' => (Token::Comma, 1),
            b'>' => (Token::Greater, 1),
            b'<' => (Token::Less, 1),
            _ => {
                let rest = &bytes[i..];
                let len = rest
                    .iter()
                    .position(|&c| is_selector_whitespace(c) || is_special_symbol(c))
                    .unwrap_or(rest.len());
                let word = s.get(i..i + len).unwrap_or_default();
                let token = match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                };
                (token, len.max(1))
            }
        };
        tokens.push(token);
        i += len;
    }
    tokens.push(Token::End);
    tokens
}

/// Whether `in` / `notin` are read as keywords (operator position) or as
/// plain identifiers (everywhere else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct LabelParser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> LabelParser<'a> {
    fn lookahead(&self, ctx: Context) -> Token<'a> {
        let token = self.tokens.get(self.pos).copied().unwrap_or(Token::End);
        match (ctx, token) {
            (Context::Values, Token::In) => Token::Ident("in"),
            (Context::Values, Token::NotIn) => Token::Ident("notin"),
            _ => token,
        }
    }

    fn consume(&mut self, ctx: Context) -> Token<'a> {
        let token = self.lookahead(ctx);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn parse(mut self) -> Result<Vec<LabelRequirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.lookahead(Context::Values) {
                Token::Ident(_) | Token::Not => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {e}")))?;
                    requirements.push(r);
                    match self.consume(Context::Values) {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let next = self.lookahead(Context::Values);
                            if !matches!(next, Token::Ident(_) | Token::Not) {
                                return Err(SelectorError(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(SelectorError(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return LabelRequirement::new(key, operator, Vec::<String>::new()).map_err(|e| e.0);
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        LabelRequirement::new(key, operator, values).map_err(|e| e.0)
    }

    /// Reads `key` or `!key`; returns `Exists` / `DoesNotExist` when that is
    /// the whole requirement, `None` when an operator must follow.
    fn parse_key_and_infer_operator(&mut self) -> Result<(&'a str, Option<LabelOperator>), String> {
        let mut operator = None;
        let mut token = self.consume(Context::Values);
        if token == Token::Not {
            operator = Some(LabelOperator::DoesNotExist);
            token = self.consume(Context::Values);
        }
        let Token::Ident(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        validate_label_key(key)?;
        if operator.is_none()
            && matches!(self.lookahead(Context::Values), Token::End | Token::Comma)
        {
            operator = Some(LabelOperator::Exists);
        }
        Ok((key, operator))
    }

    fn parse_operator(&mut self) -> Result<LabelOperator, String> {
        match self.consume(Context::KeyAndOperator) {
            Token::In => Ok(LabelOperator::In),
            Token::NotIn => Ok(LabelOperator::NotIn),
            Token::Equals | Token::DoubleEquals => Ok(LabelOperator::Equals),
            Token::NotEquals => Ok(LabelOperator::NotEquals),
            Token::Greater => Ok(LabelOperator::GreaterThan),
            Token::Less => Ok(LabelOperator::LessThan),
            other => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                other.literal()
            )),
        }
    }

    /// Reads `(v1,v2,...)`; `()` and stray commas stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<&'a str>, String> {
        let open = self.consume(Context::Values);
        if open != Token::Open {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.lookahead(Context::Values) {
            Token::Ident(_) | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.consume(Context::Values);
                if close != Token::Close {
                    return Err(format!("found '{}', expected: ')'", close.literal()));
                }
                Ok(values.into_iter().collect())
            }
            Token::Close => {
                self.consume(Context::Values);
                Ok(vec![""])
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    /// Reads the inside of a value list, stopping before the `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let mut values = BTreeSet::new();
        loop {
            match self.consume(Context::Values) {
                Token::Ident(v) => {
                    values.insert(v);
                    match self.lookahead(Context::Values) {
                        Token::Comma => continue,
                        Token::Close => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ))
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(""); // "(,"
                    }
                    match self.lookahead(Context::Values) {
                        Token::Close => {
                            values.insert(""); // ",)"
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.insert(""); // ",,"
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ))
                }
            }
        }
    }

    /// Reads the single value after `=`, `==`, `!=`, `>` or `<` (possibly empty).
    fn parse_exact_value(&mut self) -> Result<Vec<&'a str>, String> {
        if matches!(self.lookahead(Context::Values), Token::End | Token::Comma) {
            return Ok(vec![""]);
        }
        match self.consume(Context::Values) {
            Token::Ident(v) => Ok(vec![v]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

// ---------------------------------------------------------------------------
// Field selectors (mirrors fields/selector.go)
// ---------------------------------------------------------------------------

/// How a [`FieldRequirement`] compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldOperator {
    /// `path=value` or `path==value`.
    Equals,
    /// `path!=value`.
    NotEquals,
}

/// One `path=value` / `path!=value` clause of a [`FieldSelector`]; the value
/// is stored unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    field: String,
    operator: FieldOperator,
    value: String,
}

impl FieldRequirement {
    /// Builds a requirement from a dotted field path and an unescaped value.
    pub fn new(
        field: impl Into<String>,
        operator: FieldOperator,
        value: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            operator,
            value: value.into(),
        }
    }

    /// The dotted field path, e.g. `spec.nodeName`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The comparison made.
    pub fn operator(&self) -> FieldOperator {
        self.operator
    }

    /// The (unescaped) value compared against.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a field whose string form is `actual` satisfies this requirement.
    pub fn matches_value(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

/// Renders `path=value` / `path!=value` with the value escaped.
impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A set of field requirements that must all hold (an empty selector
/// matches everything). Requirements are kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from requirements (sorted for a canonical form).
    pub fn from_requirements<I>(requirements: I) -> Self
    where
        I: IntoIterator<Item = FieldRequirement>,
    {
        let mut requirements: Vec<FieldRequirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| {
            (&a.field, a.operator, &a.value).cmp(&(&b.field, b.operator, &b.value))
        });
        Self { requirements }
    }

    /// Parses `fieldSelector`: comma-separated `path=value`, `path==value`
    /// and `path!=value` terms (ANDed); values may be empty and use backslash
    /// escapes for `,`, `=`, `!` and `\`, as in Kubernetes' fields package.
    ///
    /// As in Kubernetes, empty terms (`a=b,,c=d`) are skipped, the path is
    /// everything before the first operator and is taken literally (no
    /// trimming, no unescaping), and an unescaped `,` or `=` in a value is an
    /// error. `\!` is accepted as an escape for `!` in addition to
    /// Kubernetes' `\\`, `\,` and `\=`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_field_terms(s) {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_field_term(term) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let value = unescape_field_value(raw)?;
            requirements.push(FieldRequirement::new(field, operator, value));
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The requirements, in canonical order.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The field paths used, e.g. ["metadata.name", "spec.nodeName"].
    ///
    /// Each path appears once, in sorted order.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.requirements {
            if !out.contains(&r.field.as_str()) {
                out.push(&r.field);
            }
        }
        out
    }

    /// Err(SelectorError("field label not supported: X")) if a path is not in `allowed`.
    pub fn check_supported(&self, allowed: &[&str]) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !allowed.contains(&r.field.as_str()))
        {
            Some(r) => Err(SelectorError(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Evaluates against the object: each dotted path (e.g. `spec.nodeName`,
    /// `involvedObject.uid`, `status.phase`, `metadata.namespace`) is looked
    /// up in the JSON; a missing field or `null` compares as `""`, numbers and
    /// booleans compare by their string form.
    ///
    /// A numeric path segment indexes into an array; an object or array at
    /// the end of the path compares by its compact JSON text.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_value(&field_value(obj, &r.field)))
    }

    /// Evaluates with a caller-supplied field resolver (for fields that are
    /// computed or defaulted rather than read from the JSON); `value_of`
    /// receives each path and returns its string form ("" when unset).
    pub fn matches_with<F>(&self, mut value_of: F) -> bool
    where
        F: FnMut(&str) -> String,
    {
        self.requirements
            .iter()
            .all(|r| r.matches_value(&value_of(&r.field)))
    }

    /// If the selector pins `path` with `=` (or `==`), returns that value;
    /// used to narrow lists, e.g. by `metadata.name`.
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.operator == FieldOperator::Equals && r.field == path)
            .map(|r| r.value.as_str())
    }
}

/// Renders the canonical query-string form, values escaped; parsing the
/// output yields an equal selector.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Looks up a dotted path in a JSON object and returns its string form: ""
/// for a missing field or `null`, strings as-is, numbers and booleans by
/// their text, objects and arrays as compact JSON. A numeric segment indexes
/// into an array.
pub fn field_value<'a>(obj: &'a Value, path: &str) -> Cow<'a, str> {
    let mut current = obj;
    for segment in path.split('.') {
        let next = match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Cow::Borrowed(unset_field(path)),
        }
    }
    match current {
        Value::Null => Cow::Borrowed(unset_field(path)),
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// What an unset selectable field reads as: kube selects on Go struct fields, so an unset
/// bool is `false` (`spec.unschedulable=false` matches a node that never set it).
fn unset_field(path: &str) -> &'static str {
    match path {
        "spec.unschedulable" | "spec.hostNetwork" => "false",
        _ => "",
    }
}

/// Escapes `\`, `,` and `=` in a field selector value (Kubernetes' `fields.EscapeValue`).
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits on commas that are not backslash-escaped; empty terms are kept.
fn split_field_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, then `==`, then `=` at each
/// position) into the raw field, operator and raw (still escaped) value.
fn split_field_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        let (operator, len) = if rest.starts_with("!=") {
            (FieldOperator::NotEquals, 2)
        } else if rest.starts_with("==") {
            (FieldOperator::Equals, 2)
        } else if rest.starts_with('=') {
            (FieldOperator::Equals, 1)
        } else {
            continue;
        };
        return Some((&term[..i], operator, &rest[len..]));
    }
    None
}

/// Undoes [`escape_field_value`]; rejects unknown escapes, a trailing
/// backslash and unescaped `,` / `=`.
fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            in_slash = false;
            if matches!(c, '\\' | ',' | '=' | '!') {
                out.push(c);
                continue;
            }
            return Err(SelectorError(format!(
                "invalid field selector: invalid escape sequence: \\{c}"
            )));
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_owned(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn sel(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn sel_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} should not parse, got {sel:?}"),
            Err(e) => e.0,
        }
    }

    fn fsel(s: &str) -> FieldSelector {
        match FieldSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn fsel_err(s: &str) -> String {
        match FieldSelector::parse(s) {
            Ok(sel) => panic!("{s:?} should not parse, got {sel:?}"),
            Err(e) => e.0,
        }
    }

    // ----- label selector parsing -----

    #[test]
    fn empty_label_selector_matches_everything() {
        for s in ["", "   ", "\t\n\r "] {
            let sel = sel(s);
            assert!(sel.is_empty());
            assert_eq!(sel, LabelSelector::everything());
            assert!(sel.matches(None));
            assert!(sel.matches(Some(&labels(json!({"a": "b"})))));
            assert_eq!(sel.to_string(), "");
        }
    }

    #[test]
    fn parses_every_operator() {
        let cases: &[(&str, LabelOperator, &[&str])] = &[
            ("a=b", LabelOperator::Equals, &["b"]),
            ("a==b", LabelOperator::Equals, &["b"]),
            ("a!=b", LabelOperator::NotEquals, &["b"]),
            ("a in (x,y)", LabelOperator::In, &["x", "y"]),
            ("a notin (y,x)", LabelOperator::NotIn, &["x", "y"]),
            ("a", LabelOperator::Exists, &[]),
            ("!a", LabelOperator::DoesNotExist, &[]),
            ("a>5", LabelOperator::GreaterThan, &["5"]),
            ("a<5", LabelOperator::LessThan, &["5"]),
        ];
        for (s, op, values) in cases {
            let sel = sel(s);
            assert_eq!(sel.requirements().len(), 1, "{s}");
            let r = &sel.requirements()[0];
            assert_eq!(r.key(), "a", "{s}");
            assert_eq!(r.operator(), *op, "{s}");
            assert_eq!(r.values(), *values, "{s}");
        }
    }

    #[test]
    fn tolerates_whitespace() {
        let a = sel("  x = 1 ,  y  in  ( b , a )  , ! z , w  ,v!=2, u notin(c)");
        let b = sel("x=1,y in (a,b),!z,w,v!=2,u notin (c)");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "u notin (c),v!=2,w,x=1,y in (a,b),!z");
        assert_eq!(sel("a in(x)"), sel("a in (x)"));
        assert_eq!(sel("a\tnotin\n(x)"), sel("a notin (x)"));
    }

    #[test]
    fn keywords_are_plain_identifiers_outside_operator_position() {
        let s = sel("in=notin");
        assert_eq!(s.requirements()[0].key(), "in");
        assert_eq!(s.requirements()[0].values(), ["notin"]);
        let s = sel("a in (in,notin)");
        assert_eq!(s.requirements()[0].values(), ["in", "notin"]);
        let s = sel("notin");
        assert_eq!(s.requirements()[0].operator(), LabelOperator::Exists);
        let s = sel("!in");
        assert_eq!(s.requirements()[0].operator(), LabelOperator::DoesNotExist);
        assert_eq!(s.requirements()[0].key(), "in");
    }

    #[test]
    fn prefixed_keys() {
        let s = sel("example.com/app=web,app.kubernetes.io/name in (x),k8s.io/a_b.c-d");
        let keys: Vec<&str> = s.requirements().iter().map(|r| r.key()).collect();
        assert_eq!(
            keys,
            [
                "app.kubernetes.io/name",
                "example.com/app",
                "k8s.io/a_b.c-d"
            ]
        );
    }

    #[test]
    fn empty_values() {
        let s = sel("a=");
        assert_eq!(s.requirements()[0].values(), [""]);
        assert!(s.matches(Some(&labels(json!({"a": ""})))));
        assert!(!s.matches(Some(&labels(json!({"a": "x"})))));
        assert!(!s.matches(None));

        let s = sel("a!=,b=c");
        assert_eq!(s.requirements()[0].values(), [""]);
        assert!(s.matches(Some(&labels(json!({"b": "c"})))));
        assert!(!s.matches(Some(&labels(json!({"a": "", "b": "c"})))));

        assert_eq!(sel("a in ()").requirements()[0].values(), [""]);
        assert_eq!(sel("a in (,)").requirements()[0].values(), [""]);
        assert_eq!(sel("a in (,b)").requirements()[0].values(), ["", "b"]);
        assert_eq!(sel("a in (b,)").requirements()[0].values(), ["", "b"]);
        assert_eq!(
            sel("a in (b,,c)").requirements()[0].values(),
            ["", "b", "c"]
        );
        assert_eq!(sel("a in (b,b)").requirements()[0].values(), ["b"]);
    }

    #[test]
    fn requirements_sorted_stably_by_key() {
        let s = sel("b=1,a=2,b!=3");
        assert_eq!(s.to_string(), "a=2,b=1,b!=3");
        assert_eq!(sel("z,y,x"), sel("x,y,z"));
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            ("a=b,", "found '', expected: identifier after ','"),
            (
                ",a=b",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            ("a=b,,c=d", "found ',', expected: identifier after ','"),
            (
                "=b",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "a in",
                "unable to parse requirement: found '' expected: '('",
            ),
            (
                "a in x",
                "unable to parse requirement: found 'x' expected: '('",
            ),
            (
                "a in (",
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            ),
            (
                "a in (x",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (x y)",
                "unable to parse requirement: found 'y', expected: ',' or ')'",
            ),
            (
                "a in (x,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a (x)",
                "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a!b",
                "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "!!a",
                "unable to parse requirement: found '!', expected: identifier",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=b=c", "found '=', expected: ',' or 'end of string'"),
            (
                "a=(b)",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "(",
                "found '(', expected: !, identifier, or 'end of string'",
            ),
        ];
        for (input, want) in cases {
            let got = sel_err(input);
            assert_eq!(got, want, "input {input:?}");
        }
        // `a==` is not an error: the value is empty.
        assert_eq!(sel("a==").requirements()[0].values(), [""]);
    }

    #[test]
    fn key_validation() {
        let ok = [
            "a",
            "A",
            "0",
            "a.b_c-d",
            "example.com/a",
            "a.b-c.d/Name_x",
            &"k".repeat(63),
            &format!("{}/k", "p".repeat(253)),
        ];
        for k in ok {
            assert!(LabelSelector::parse(k).is_ok(), "{k} should be valid");
        }
        let bad = [
            "-a",
            "a-",
            "_a",
            "a.",
            "/a",
            "a/",
            "a/b/c",
            "A.com/a",
            "-x.com/a",
            "x..com/a",
            &"k".repeat(64),
            &format!("{}/k", "p".repeat(254)),
            "ü",
            "a\u{0}b",
        ];
        for k in bad {
            let e = sel_err(k);
            assert!(
                e.starts_with("unable to parse requirement: key: Invalid value: "),
                "{k}: {e}"
            );
        }
        assert_eq!(
            sel_err("/a"),
            "unable to parse requirement: key: Invalid value: \"/a\": prefix part must be non-empty"
        );
        assert!(sel_err(&"k".repeat(64)).contains("name part must be no more than 63 characters"));
        assert!(sel_err("A.com/a").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(sel_err("a/b/c").contains("a qualified name must consist of"));
        let e = sel_err("a/");
        assert!(
            e.contains("name part must be non-empty; name part must consist"),
            "{e}"
        );
    }

    #[test]
    fn value_validation() {
        for v in ["", "a", "A-b_c.d", "0", &"v".repeat(63)] {
            assert!(LabelSelector::parse(&format!("k={v}")).is_ok(), "{v:?}");
            assert!(
                LabelSelector::parse(&format!("k in ({v})")).is_ok(),
                "{v:?}"
            );
        }
        for v in ["-a", "a-", ".a", "a/b", "ü", &"v".repeat(64)] {
            let e = sel_err(&format!("k={v}"));
            assert!(
                e.starts_with("unable to parse requirement: values[0]: Invalid value: "),
                "{v}: {e}"
            );
        }
        assert!(sel_err(&format!("k={}", "v".repeat(64)))
            .contains("must be no more than 63 characters"));
        let e = sel_err("k in (ok,-bad)");
        assert!(e.contains("values[0]: Invalid value: \"-bad\""), "{e}");
    }

    #[test]
    fn gt_lt_need_integers() {
        assert!(sel("a>10").matches(Some(&labels(json!({"a": "11"})))));
        assert!(!sel("a>10").matches(Some(&labels(json!({"a": "10"})))));
        assert!(!sel("a>10").matches(Some(&labels(json!({"a": "x"})))));
        assert!(!sel("a>10").matches(None));
        assert!(sel("a<10").matches(Some(&labels(json!({"a": "9"})))));
        assert!(sel("a<10").matches(Some(&labels(json!({"a": 3})))));
        assert!(!sel("a<10").matches(Some(&labels(json!({"a": "10"})))));
        let e = sel_err("a>b");
        assert!(
            e.contains("for 'Gt', 'Lt' operators, the value must be an integer"),
            "{e}"
        );
        let e = sel_err("a<");
        assert!(e.contains("the value must be an integer"), "{e}");
        // A negative bound is an integer but not a valid label value.
        let e = sel_err("a>-1");
        assert!(e.contains("values[0]: Invalid value: \"-1\""), "{e}");
    }

    // ----- label matching -----

    #[test]
    fn matching_semantics() {
        let l = labels(json!({"app": "web", "tier": "front", "empty": ""}));
        let present = Some(&l);
        let cases = [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("missing!=x", true, true),
            ("app in (db,web)", true, false),
            ("app in (db)", false, false),
            ("missing in (x)", false, false),
            ("app notin (db)", true, true),
            ("app notin (web)", false, true),
            ("missing notin (x)", true, true),
            ("app", true, false),
            ("missing", false, false),
            ("!app", false, true),
            ("!missing", true, true),
            ("empty", true, false),
            ("empty=", true, false),
            ("empty in ()", true, false),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("app=web,!tier", false, false),
            ("app=web,app=db", false, false),
        ];
        for (s, with_labels, without_labels) in cases {
            let sel = sel(s);
            assert_eq!(sel.matches(present), with_labels, "{s} against labels");
            assert_eq!(sel.matches(None), without_labels, "{s} against no labels");
            assert_eq!(
                sel.matches(Some(&Map::new())),
                without_labels,
                "{s} against empty labels"
            );
        }
    }

    #[test]
    fn non_string_label_values() {
        let l = labels(json!({"n": 5, "b": true, "z": null}));
        assert!(sel("n=5").matches(Some(&l)));
        assert!(sel("b=true").matches(Some(&l)));
        // null counts as absent
        assert!(sel("!z").matches(Some(&l)));
        assert!(sel("z!=x").matches(Some(&l)));
        assert!(!sel("z").matches(Some(&l)));
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let s = sel("app=web");
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {"labels": {"app": "db"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
        assert!(!s.matches_object(&json!({})));
        assert!(!s.matches_object(&json!("not an object")));
        assert!(!s.matches_object(&json!({"metadata": {"labels": ["app"]}})));
        let neg = sel("app!=web");
        assert!(neg.matches_object(&json!({"metadata": {"name": "x"}})));
        assert!(neg.matches_object(&Value::Null));
        assert!(LabelSelector::default().matches_object(&Value::Null));
    }

    // ----- display -----

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases = [
            ("b=2,a=1", "a=1,b=2"),
            ("a==1", "a=1"),
            ("a!=1", "a!=1"),
            ("a in (z,y,x,y)", "a in (x,y,z)"),
            ("a notin (q)", "a notin (q)"),
            ("a in ()", "a in ()"),
            ("a in (,b)", "a in (,b)"),
            ("a=", "a="),
            ("!a", "!a"),
            ("a", "a"),
            ("a>3", "a>3"),
            ("a<3", "a<3"),
            ("x.io/k=v", "x.io/k=v"),
        ];
        for (input, want) in cases {
            let parsed = sel(input);
            let shown = parsed.to_string();
            assert_eq!(shown, want, "{input}");
            assert_eq!(sel(&shown), parsed, "round trip of {input}");
        }
    }

    // ----- from_json -----

    #[test]
    fn from_json_null_and_empty_match_everything() {
        for v in [
            Value::Null,
            json!({}),
            json!({"matchLabels": null, "matchExpressions": null}),
        ] {
            let s = LabelSelector::from_json(&v).expect("valid");
            assert!(s.is_empty());
            assert!(s.matches(None));
        }
        let s = LabelSelector::from_json(&json!({"matchLabels": {}, "matchExpressions": []}))
            .expect("valid");
        assert!(s.is_empty());
    }

    #[test]
    fn from_json_builds_requirements() {
        let v = json!({
            "matchLabels": {"app": "web", "env": "prod"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "owner", "operator": "Exists", "values": []}
            ]
        });
        let s = LabelSelector::from_json(&v).expect("valid");
        assert_eq!(
            s.to_string(),
            "app=web,!canary,env=prod,owner,tier in (back,front),zone notin (x)"
        );
        assert_eq!(sel(&s.to_string()), s);
        let matching = labels(json!({"app": "web", "env": "prod", "tier": "front", "owner": "me"}));
        assert!(s.matches(Some(&matching)));
        let mut canary = matching.clone();
        canary.insert("canary".into(), json!("yes"));
        assert!(!s.matches(Some(&canary)));
        let mut zoned = matching.clone();
        zoned.insert("zone".into(), json!("x"));
        assert!(!s.matches(Some(&zoned)));
        let mut no_owner = matching;
        no_owner.remove("owner");
        assert!(!s.matches(Some(&no_owner)));
    }

    #[test]
    fn from_json_scale_selector_string() {
        let v = json!({"matchLabels": {"app": "nginx"}});
        let s = LabelSelector::from_json(&v).expect("valid");
        assert_eq!(s.to_string(), "app=nginx");
        assert_eq!(s, sel("app=nginx"));
    }

    #[test]
    fn from_json_errors() {
        fn err(v: Value) -> String {
            match LabelSelector::from_json(&v) {
                Ok(s) => panic!("{v} should be rejected, got {s:?}"),
                Err(e) => e.0,
            }
        }
        fn expr(e: Value) -> String {
            err(json!({ "matchExpressions": [e] }))
        }
        assert_eq!(
            err(json!("app=web")),
            "invalid label selector: expected an object, got string"
        );
        assert_eq!(
            err(json!([])),
            "invalid label selector: expected an object, got array"
        );
        assert_eq!(
            err(json!({"matchLabels": []})),
            "matchLabels: Invalid value: expected an object, got array"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": 1}})),
            "matchLabels[\"a\"]: Invalid value: expected a string, got number"
        );
        assert_eq!(
            err(json!({"matchExpressions": {}})),
            "matchExpressions: Invalid value: expected an array, got object"
        );
        assert_eq!(
            expr(json!(1)),
            "matchExpressions[0]: Invalid value: expected an object, got number"
        );
        assert_eq!(
            expr(json!({"operator": "Exists"})),
            "matchExpressions[0].key: Required value"
        );
        assert_eq!(
            expr(json!({"key": "a"})),
            "matchExpressions[0].operator: Required value"
        );
        assert_eq!(
            expr(json!({"key": 1, "operator": "Exists"})),
            "matchExpressions[0].key: Invalid value: expected a string, got number"
        );
        assert_eq!(
            expr(json!({"key": "a", "operator": "Gt", "values": ["1"]})),
            "\"Gt\" is not a valid label selector operator"
        );
        assert_eq!(
            expr(json!({"key": "a", "operator": "in", "values": ["1"]})),
            "\"in\" is not a valid label selector operator"
        );
        assert_eq!(
            expr(json!({"key": "a", "operator": "In", "values": "x"})),
            "matchExpressions[0].values: Invalid value: expected an array, got string"
        );
        assert_eq!(
            expr(json!({"key": "a", "operator": "In", "values": [1]})),
            "matchExpressions[0].values[0]: Invalid value: expected a string, got number"
        );
        let empty_set = "values: Invalid value: []string{}: \
                         for 'in', 'notin' operators, values set can't be empty";
        assert_eq!(
            expr(json!({"key": "a", "operator": "In", "values": []})),
            empty_set
        );
        assert_eq!(expr(json!({"key": "a", "operator": "NotIn"})), empty_set);
        assert_eq!(
            expr(json!({"key": "a", "operator": "Exists", "values": ["x"]})),
            "values: Invalid value: []string{\"x\"}: \
             values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(json!({"matchLabels": {"bad key": "x"}})),
            format!("key: Invalid value: \"bad key\": name part {QUALIFIED_NAME_FMT_MSG}")
        );
        assert!(QUALIFIED_NAME_FMT_MSG.starts_with(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
             regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
        // Several problems are aggregated like Kubernetes does.
        let e =
            LabelSelector::from_json(&json!({"matchLabels": {"-k": "-v"}})).expect_err("invalid");
        assert!(e.0.starts_with("[key: Invalid value: \"-k\""), "{e}");
        assert!(e.0.contains(", values[0]: Invalid value: \"-v\""), "{e}");
    }

    #[test]
    fn from_match_labels_and_requirement_constructor() {
        let m = labels(json!({"b": "2", "a": "1"}));
        let s = LabelSelector::from_match_labels(&m).expect("valid");
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(s.matches(Some(&m)));

        let r = LabelRequirement::new("k", LabelOperator::In, ["b", "a", "b"]).expect("valid");
        assert_eq!(r.values(), ["a", "b"]);
        assert_eq!(r.to_string(), "k in (a,b)");
        assert!(LabelRequirement::new("k", LabelOperator::Equals, ["a", "b"]).is_err());
        assert!(
            LabelRequirement::new("k", LabelOperator::NotEquals, Vec::<String>::new()).is_err()
        );
        assert!(LabelRequirement::new("k", LabelOperator::GreaterThan, ["1", "2"]).is_err());
        let s = LabelSelector::from_requirements([
            LabelRequirement::new("z", LabelOperator::Exists, Vec::<String>::new()).expect("valid"),
            r,
        ]);
        assert_eq!(s.to_string(), "k in (a,b),z");
    }

    // ----- field selectors -----

    #[test]
    fn unset_bool_fields_select_as_false_as_in_kube() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(fsel("spec.unschedulable=false").matches(&node));
        assert!(!fsel("spec.unschedulable=true").matches(&node));
        let cordoned = json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}});
        assert!(fsel("spec.unschedulable=true").matches(&cordoned));
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        assert!(fsel("spec.hostNetwork=false").matches(&pod));
        assert!(fsel("spec.hostNetwork!=true").matches(&pod));
        // Other unset fields read as empty.
        assert!(fsel("spec.nodeName=").matches(&pod));
    }

    #[test]
    fn empty_field_selector() {
        for s in ["", ",", ",,,"] {
            let f = fsel(s);
            assert!(f.is_empty(), "{s:?}");
            assert!(f.fields().is_empty());
            assert!(f.matches(&json!({})));
            assert_eq!(f.exact("metadata.name"), None);
            assert_eq!(f.to_string(), "");
            assert!(f.check_supported(&[]).is_ok());
        }
        assert_eq!(fsel(""), FieldSelector::everything());
    }

    #[test]
    fn field_operators() {
        let f = fsel("metadata.name=a");
        assert_eq!(f.requirements()[0].operator(), FieldOperator::Equals);
        assert_eq!(f.requirements()[0].field(), "metadata.name");
        assert_eq!(f.requirements()[0].value(), "a");
        assert_eq!(fsel("metadata.name==a"), f);
        let f = fsel("metadata.name!=a");
        assert_eq!(f.requirements()[0].operator(), FieldOperator::NotEquals);
        let f = fsel("status.phase=");
        assert_eq!(f.requirements()[0].value(), "");
        let f = fsel("status.phase!=");
        assert_eq!(f.requirements()[0].value(), "");
        // The first operator found splits the term; the rest is the value.
        let f = fsel("a=!b");
        assert_eq!(f.requirements()[0].operator(), FieldOperator::Equals);
        assert_eq!(f.requirements()[0].value(), "!b");
        let f = fsel("a!b=c");
        assert_eq!(f.requirements()[0].field(), "a!b");
        // No trimming: whitespace belongs to the path / value.
        let f = fsel(" a = b ");
        assert_eq!(f.requirements()[0].field(), " a ");
        assert_eq!(f.requirements()[0].value(), " b ");
    }

    #[test]
    fn field_escapes() {
        let f = fsel(r"metadata.name=a\,b\=c\\d\!e");
        assert_eq!(f.requirements()[0].value(), r"a,b=c\d!e");
        assert_eq!(f.exact("metadata.name"), Some(r"a,b=c\d!e"));
        assert_eq!(f.to_string(), r"metadata.name=a\,b\=c\\d!e");
        assert_eq!(fsel(&f.to_string()), f);
        // An escaped comma does not split terms.
        let f = fsel(r"a=x\,y,b=z");
        assert_eq!(f.requirements().len(), 2);
        assert_eq!(f.exact("a"), Some("x,y"));
        assert_eq!(f.exact("b"), Some("z"));
    }

    #[test]
    fn field_syntax_errors() {
        let cases = [
            (
                "metadata.name",
                "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
            ),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            ("a!b", "invalid selector: 'a!b'; can't understand 'a!b'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: =",
            ),
            (
                "a!==b",
                "invalid field selector: unescaped character in value: =",
            ),
            (
                "a===b",
                "invalid field selector: unescaped character in value: =",
            ),
            (
                r"a=b\x",
                r"invalid field selector: invalid escape sequence: \x",
            ),
            (
                r"a=b\",
                r"invalid field selector: invalid escape sequence: \",
            ),
            (
                r"a=\ü",
                r"invalid field selector: invalid escape sequence: \ü",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(fsel_err(input), want, "{input}");
        }
    }

    #[test]
    fn field_fields_and_supported() {
        let f = fsel("spec.nodeName=n1,metadata.name!=x,metadata.name!=y");
        assert_eq!(f.fields(), ["metadata.name", "spec.nodeName"]);
        assert!(f
            .check_supported(&["metadata.name", "spec.nodeName"])
            .is_ok());
        assert_eq!(
            f.check_supported(&["metadata.name"]),
            Err(SelectorError(
                "field label not supported: spec.nodeName".into()
            ))
        );
        let f = fsel("=x");
        assert_eq!(f.fields(), [""]);
        assert_eq!(
            f.check_supported(&["metadata.name"])
                .map_err(|e| e.to_string()),
            Err("field label not supported: ".to_owned())
        );
    }

    #[test]
    fn field_exact() {
        let f = fsel("metadata.name!=a,metadata.namespace==ns,spec.x=1");
        assert_eq!(f.exact("metadata.name"), None);
        assert_eq!(f.exact("metadata.namespace"), Some("ns"));
        assert_eq!(f.exact("spec.x"), Some("1"));
        assert_eq!(f.exact("spec"), None);
        assert_eq!(fsel("metadata.name=").exact("metadata.name"), Some(""));
    }

    #[test]
    fn field_matching() {
        let pod = json!({
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "priority": 7, "nothing": null,
                     "containers": [{"name": "c0"}]},
            "status": {"phase": "Running"},
            "involvedObject": {"uid": "u-1"}
        });
        let cases = [
            ("metadata.name=p1", true),
            ("metadata.name==p1", true),
            ("metadata.name=p2", false),
            ("metadata.name!=p2", true),
            ("metadata.namespace=default,status.phase=Running", true),
            ("metadata.namespace=default,status.phase=Pending", false),
            ("spec.nodeName=n1", true),
            ("spec.nodeName!=", true),
            ("spec.hostNetwork=true", true),
            ("spec.hostNetwork!=false", true),
            ("spec.priority=7", true),
            ("spec.nothing=", true),
            ("spec.missing=", true),
            ("spec.missing!=", false),
            ("spec.missing!=x", true),
            ("spec.missing=x", false),
            ("spec.nodeName.deeper=", true),
            ("spec.containers.0.name=c0", true),
            ("spec.containers.1.name=", true),
            ("involvedObject.uid=u-1", true),
            ("spec=", false),
            ("=", true),
        ];
        for (s, want) in cases {
            assert_eq!(fsel(s).matches(&pod), want, "{s}");
        }
        assert!(fsel("metadata.name=").matches(&Value::Null));
        assert!(fsel("a=\"x\"").matches(&json!({"a": "\"x\""})));
        assert!(fsel("a=[1]").matches(&json!({"a": [1]})));
    }

    #[test]
    fn field_matches_with_resolver() {
        let f = fsel("spec.hostNetwork=false,metadata.name=p");
        let resolve = |path: &str| match path {
            "spec.hostNetwork" => "false".to_owned(),
            "metadata.name" => "p".to_owned(),
            _ => String::new(),
        };
        assert!(f.matches_with(resolve));
        assert!(!f.matches_with(|_| String::new()));
    }

    #[test]
    fn field_display_canonical() {
        let f = fsel("spec.b==2,metadata.name!=x,spec.a=1");
        assert_eq!(f.to_string(), "metadata.name!=x,spec.a=1,spec.b=2");
        assert_eq!(fsel(&f.to_string()), f);
        assert_eq!(fsel("b=1,a=2"), fsel("a=2,b=1"));
        assert_eq!(escape_field_value(r"a\b,c=d!"), r"a\\b\,c\=d!");
    }

    // ----- robustness -----

    /// Deterministic pseudo-random strings over a selector-ish alphabet: no
    /// parse may panic, and whatever parses must round-trip through Display.
    #[test]
    fn fuzz_no_panics_and_round_trip() {
        const ALPHABET: &[&str] = &[
            "a", "b", "k", "x.io/", "/", "=", "==", "!=", "!", ",", "(", ")", " ", "in", "notin",
            " in ", " notin ", ">", "<", "1", "-", "_", ".", "\\", "ü", "\t", "\u{0}", "é/",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed_labels = 0;
        let mut parsed_fields = 0;
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
            if let Ok(l) = LabelSelector::parse(&s) {
                parsed_labels += 1;
                let shown = l.to_string();
                assert_eq!(
                    LabelSelector::parse(&shown).as_ref(),
                    Ok(&l),
                    "{s:?} -> {shown:?}"
                );
                let _ = l.matches(None);
            }
            if let Ok(f) = FieldSelector::parse(&s) {
                parsed_fields += 1;
                let shown = f.to_string();
                assert_eq!(
                    FieldSelector::parse(&shown).as_ref(),
                    Ok(&f),
                    "{s:?} -> {shown:?}"
                );
                let _ = f.matches(&json!({"a": {"b": 1}}));
            }
        }
        assert!(
            parsed_labels > 100,
            "only {parsed_labels} label selectors parsed"
        );
        assert!(
            parsed_fields > 100,
            "only {parsed_fields} field selectors parsed"
        );
    }

    #[test]
    fn selector_error_displays_message() {
        let e = SelectorError("boom".into());
        assert_eq!(e.to_string(), "boom");
    }
}
