//! Prometheus metrics. This module owns the process-global registry of metric families
//! (counters, gauges, histograms), the cheap clonable handles that update them, and the text
//! exposition format 0.0.4 in both directions: [`render`] produces what a `/metrics` endpoint
//! returns, and [`parse`] / [`sample_value`] read it back so tests can check an endpoint's
//! output without a Prometheus server.
//!
//! It is std only on purpose: every component links it, and the format is small enough that a
//! client library would cost more than it saves.
//!
//! # Usage
//! [`counter`], [`gauge`] and [`histogram`] register a family on first call and return the
//! same `&'static` family afterwards. Registering takes the registry lock, and resolving a
//! child takes the family's lock, so hot paths resolve once and keep the handle:
//!
//! ```ignore
//! static REQUESTS: LazyLock<&CounterVec> =
//!     LazyLock::new(|| metrics::counter("skiff_requests_total", "Requests served.", &["verb"]));
//! let get = REQUESTS.with(&["get"]); // cache this; `inc` is one relaxed atomic add
//! get.inc();
//! ```
//!
//! # Never panics
//! Nothing here panics on any input, because metrics must never take a component down:
//! - wrong label arity pads with `""` or drops the extra values;
//! - a name registered again with another type or other label names, an invalid metric or
//!   label name, a reserved label name (`__*`, or `le` on a histogram) or duplicate label
//!   names all yield a *detached* family: it works, but [`render`] never exports it, and
//!   nothing is logged (the caller is the bug, and a log line per call would be worse);
//! - non-finite histogram bucket bounds are dropped, the rest sorted and deduplicated;
//! - a poisoned lock is used anyway (the data are atomics and maps, always consistent);
//! - [`parse`] returns [`ParseError`] for any text it does not accept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Default histogram bounds for request and operation latencies in seconds, from 0.5 ms to
/// 10 s, so every latency histogram in Skiff is comparable and aggregatable.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// ---------------------------------------------------------------------------
// Shared plumbing
// ---------------------------------------------------------------------------

/// Locks, ignoring poisoning: everything behind these locks stays consistent even if a holder
/// panicked, and metrics must keep working regardless.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a family was registered with.
#[derive(Debug)]
struct Desc {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
}

/// A family's children, keyed by label values (always exactly one per label name).
type Children<T> = Mutex<HashMap<Vec<String>, Arc<T>>>;

/// The child for `labels`, created on first use; wrong arity is padded with `""` or truncated.
fn child<T>(
    children: &Children<T>,
    arity: usize,
    labels: &[&str],
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut key: Vec<String> = labels.iter().take(arity).map(|s| (*s).to_owned()).collect();
    key.resize(arity, String::new());
    let mut map = lock(children);
    Arc::clone(map.entry(key).or_insert_with(|| Arc::new(make())))
}

/// The children sorted by label values, copied out so rendering does not hold the lock.
fn snapshot<T>(children: &Children<T>) -> Vec<(Vec<String>, Arc<T>)> {
    let mut out: Vec<(Vec<String>, Arc<T>)> = lock(children)
        .iter()
        .map(|(k, c)| (k.clone(), Arc::clone(c)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Adds `v` to an `f64` stored as bits, with a CAS loop (there is no atomic float add).
fn add_f64(cell: &AtomicU64, v: f64) {
    // The closure always returns `Some`, so this cannot fail.
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + v).to_bits())
    });
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

/// A family of monotonically increasing counters, one per combination of label values; the
/// right type for anything that only goes up (requests, errors, retries).
#[derive(Debug)]
pub struct CounterVec {
    desc: Desc,
    children: Children<AtomicU64>,
}

/// One counter of a [`CounterVec`]: a cheap clonable handle, so hot paths resolve the labels
/// once and then pay a single atomic add per update.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl CounterVec {
    fn new(desc: Desc) -> Self {
        let v = CounterVec {
            desc,
            children: Mutex::new(HashMap::new()),
        };
        // A family without labels has exactly one series; export it as 0 from the start.
        if v.desc.label_names.is_empty() {
            v.with(&[]);
        }
        v
    }

    /// The counter for these label values (in label-name order), created at 0 on first use.
    /// Wrong arity is padded with `""` or truncated rather than rejected.
    pub fn with(&self, labels: &[&str]) -> Counter {
        Counter(child(
            &self.children,
            self.desc.label_names.len(),
            labels,
            || AtomicU64::new(0),
        ))
    }

    /// Increments the counter for these label values; for cold paths that do not keep the
    /// handle.
    pub fn inc(&self, labels: &[&str]) {
        self.with(labels).inc();
    }
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (wrapping at `u64::MAX`, which no real counter reaches).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value, for tests and for components that report their own counts.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// Gauges
// ---------------------------------------------------------------------------

/// A family of gauges, one per combination of label values; the right type for values that
/// go up and down (queue depth, in-flight requests, last-seen timestamps).
#[derive(Debug)]
pub struct GaugeVec {
    desc: Desc,
    children: Children<AtomicU64>,
}

/// One gauge of a [`GaugeVec`]: a cheap clonable handle holding an `f64` as atomic bits.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl GaugeVec {
    fn new(desc: Desc) -> Self {
        let v = GaugeVec {
            desc,
            children: Mutex::new(HashMap::new()),
        };
        if v.desc.label_names.is_empty() {
            v.with(&[]);
        }
        v
    }

    /// The gauge for these label values (in label-name order), created at 0 on first use.
    /// Wrong arity is padded with `""` or truncated rather than rejected.
    pub fn with(&self, labels: &[&str]) -> Gauge {
        Gauge(child(
            &self.children,
            self.desc.label_names.len(),
            labels,
            // 0.0 is all-zero bits.
            || AtomicU64::new(0),
        ))
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Adds `v` (negative to subtract) atomically with respect to other updates.
    pub fn add(&self, v: f64) {
        add_f64(&self.0, v);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

// ---------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------

/// A family of histograms, one per combination of label values; the right type for
/// latencies and sizes, where quantiles are computed server-side from the buckets.
#[derive(Debug)]
pub struct HistogramVec {
    desc: Desc,
    /// Finite upper bounds, ascending and distinct; `+Inf` is implicit.
    bounds: Arc<[f64]>,
    children: Children<HistogramCore>,
}

/// One histogram of a [`HistogramVec`]: a cheap clonable handle; an observation is two
/// relaxed atomic updates (the bucket and a CAS on the sum).
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCore>);

/// Per-bucket (non-cumulative) counts, the last one for `+Inf`, and the sum as `f64` bits.
/// There is no separate count: it is the total of the buckets, so an export always has
/// `_count` equal to the `+Inf` bucket even while observations race with it.
#[derive(Debug)]
struct HistogramCore {
    bounds: Arc<[f64]>,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl HistogramCore {
    fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        HistogramCore {
            bounds,
            buckets,
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        // First bound >= v; NaN (like Go's client) lands in +Inf.
        let i = if v.is_nan() {
            self.bounds.len()
        } else {
            self.bounds.partition_point(|&b| b < v)
        };
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        add_f64(&self.sum, v);
    }

    /// Cumulative bucket counts (the last is `+Inf`, i.e. the count) and the sum.
    fn read(&self) -> (Vec<u64>, f64) {
        let mut total = 0u64;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total = total.wrapping_add(b.load(Ordering::Relaxed));
                total
            })
            .collect();
        (cumulative, f64::from_bits(self.sum.load(Ordering::Relaxed)))
    }
}

impl HistogramVec {
    fn new(desc: Desc, buckets: &[f64]) -> Self {
        let mut bounds: Vec<f64> = buckets.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let v = HistogramVec {
            desc,
            bounds: bounds.into(),
            children: Mutex::new(HashMap::new()),
        };
        if v.desc.label_names.is_empty() {
            v.with(&[]);
        }
        v
    }

    /// The histogram for these label values (in label-name order), created empty on first
    /// use. Wrong arity is padded with `""` or truncated rather than rejected.
    pub fn with(&self, labels: &[&str]) -> Histogram {
        let bounds = Arc::clone(&self.bounds);
        Histogram(child(
            &self.children,
            self.desc.label_names.len(),
            labels,
            || HistogramCore::new(bounds),
        ))
    }

    /// Records `v` in the histogram for these label values; for cold paths that do not keep
    /// the handle.
    pub fn observe(&self, labels: &[&str], v: f64) {
        self.with(labels).observe(v);
    }
}

impl Histogram {
    /// Records one observation, by convention in seconds (or bytes for sizes).
    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

/// A registered family; families are leaked, so references are `'static` and copyable.
#[derive(Debug, Clone, Copy)]
enum Family {
    Counter(&'static CounterVec),
    Gauge(&'static GaugeVec),
    Histogram(&'static HistogramVec),
}

#[derive(Debug, Default)]
struct Registry {
    /// What [`render`] exports, in name order.
    exported: BTreeMap<&'static str, Family>,
    /// Families that could not be exported (clash or invalid names), kept so that calling
    /// the same bad registration in a loop reuses one family instead of leaking one per call.
    detached: Vec<Family>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    lock(REGISTRY.get_or_init(|| Mutex::new(Registry::default())))
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a family with these names can be exported as valid text.
fn exportable(name: &str, label_names: &[&str], histogram: bool) -> bool {
    let mut seen = HashSet::new();
    is_metric_name(name)
        && label_names.iter().all(|l| {
            is_label_name(l)
                && !l.starts_with("__")
                && !(histogram && *l == "le")
                && seen.insert(*l)
        })
}

/// Registers under `name`, or returns the existing family when `pick` accepts it; otherwise
/// returns (and remembers) a detached family. `pick` must accept only families of the
/// requested type with the requested label names.
fn register<T: 'static>(
    name: &'static str,
    exportable: bool,
    pick: impl Fn(&Family) -> Option<&'static T>,
    make: impl FnOnce() -> &'static T,
    wrap: impl Fn(&'static T) -> Family,
) -> &'static T {
    let mut reg = registry();
    if exportable {
        match reg.exported.get(name) {
            Some(existing) => {
                if let Some(found) = pick(existing) {
                    return found;
                }
            }
            None => {
                let family = make();
                reg.exported.insert(name, wrap(family));
                return family;
            }
        }
    }
    if let Some(found) = reg.detached.iter().find_map(&pick) {
        return found;
    }
    let family = make();
    reg.detached.push(wrap(family));
    family
}

/// The counter family `name`, registered on first call. Later calls with the same name and
/// label names return the same family. A clash (another type or other label names) or an
/// invalid name returns a detached family that works but is never exported.
pub fn counter(
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
) -> &'static CounterVec {
    register(
        name,
        exportable(name, label_names, false),
        |f| match f {
            Family::Counter(c) if c.desc.name == name && c.desc.label_names == label_names => {
                Some(*c)
            }
            _ => None,
        },
        || {
            Box::leak(Box::new(CounterVec::new(Desc {
                name,
                help,
                label_names,
            })))
        },
        Family::Counter,
    )
}

/// The gauge family `name`, registered on first call. Later calls with the same name and
/// label names return the same family. A clash (another type or other label names) or an
/// invalid name returns a detached family that works but is never exported.
pub fn gauge(
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
) -> &'static GaugeVec {
    register(
        name,
        exportable(name, label_names, false),
        |f| match f {
            Family::Gauge(g) if g.desc.name == name && g.desc.label_names == label_names => {
                Some(*g)
            }
            _ => None,
        },
        || {
            Box::leak(Box::new(GaugeVec::new(Desc {
                name,
                help,
                label_names,
            })))
        },
        Family::Gauge,
    )
}

/// The histogram family `name` with these upper bounds (`+Inf` is implicit; non-finite bounds
/// are dropped, the rest sorted and deduplicated), registered on first call. Later calls with
/// the same name and label names return the same family, keeping its original buckets. A
/// clash (another type or other label names), an invalid name or an `le` label returns a
/// detached family that works but is never exported.
pub fn histogram(
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    buckets: &'static [f64],
) -> &'static HistogramVec {
    register(
        name,
        exportable(name, label_names, true),
        |f| match f {
            Family::Histogram(h) if h.desc.name == name && h.desc.label_names == label_names => {
                Some(*h)
            }
            _ => None,
        },
        || {
            Box::leak(Box::new(HistogramVec::new(
                Desc {
                    name,
                    help,
                    label_names,
                },
                buckets,
            )))
        },
        Family::Histogram,
    )
}

// ---------------------------------------------------------------------------
// Rendering (text format 0.0.4)
// ---------------------------------------------------------------------------

/// The text exposition (format 0.0.4, `Content-Type: text/plain; version=0.0.4`) of every
/// exported family in name order, each with `# HELP` and `# TYPE` and its samples sorted by
/// label values: the body of a `/metrics` response.
pub fn render() -> String {
    let families: Vec<Family> = registry().exported.values().copied().collect();
    let mut out = String::new();
    for family in families {
        match family {
            Family::Counter(c) => {
                write_header(&mut out, &c.desc, "counter");
                for (values, cell) in snapshot(&c.children) {
                    let v = cell.load(Ordering::Relaxed).to_string();
                    write_sample(&mut out, &c.desc, "", &values, None, &v);
                }
            }
            Family::Gauge(g) => {
                write_header(&mut out, &g.desc, "gauge");
                for (values, cell) in snapshot(&g.children) {
                    let v = format_f64(f64::from_bits(cell.load(Ordering::Relaxed)));
                    write_sample(&mut out, &g.desc, "", &values, None, &v);
                }
            }
            Family::Histogram(h) => {
                write_header(&mut out, &h.desc, "histogram");
                for (values, core) in snapshot(&h.children) {
                    let (cumulative, sum) = core.read();
                    let les = core.bounds.iter().map(|b| format_f64(*b));
                    let les = les.chain(std::iter::once("+Inf".to_owned()));
                    for (le, n) in les.zip(&cumulative) {
                        let n = n.to_string();
                        write_sample(&mut out, &h.desc, "_bucket", &values, Some(&le), &n);
                    }
                    let count = cumulative.last().copied().unwrap_or(0).to_string();
                    write_sample(&mut out, &h.desc, "_sum", &values, None, &format_f64(sum));
                    write_sample(&mut out, &h.desc, "_count", &values, None, &count);
                }
            }
        }
    }
    out
}

fn write_header(out: &mut String, desc: &Desc, kind: &str) {
    let _ = write!(out, "# HELP {} ", desc.name);
    for c in desc.help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {} {kind}", desc.name);
}

fn write_sample(
    out: &mut String,
    desc: &Desc,
    suffix: &str,
    values: &[String],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(desc.name);
    out.push_str(suffix);
    let pairs = desc
        .label_names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (name, v) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A float as Prometheus (Go's `ParseFloat`) reads it: `+Inf`, `-Inf`, `NaN`, integers without
/// a decimal point or exponent, ordinary magnitudes in plain decimal, and extremes in
/// exponent form; always the shortest text that round-trips.
fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v == 0.0 || (1e-5..1e15).contains(&v.abs()) {
        // `Display` never uses an exponent and prints integral values without ".0".
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

// ---------------------------------------------------------------------------
// Parsing (for tests of endpoints)
// ---------------------------------------------------------------------------

/// One sample line of the text format, as tests want to look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full sample name, including any `_bucket` / `_sum` / `_count` suffix.
    pub name: String,
    /// Label names to unescaped values (`le` included for buckets).
    pub labels: BTreeMap<String, String>,
    /// The value; `+Inf`, `-Inf` and `NaN` are accepted.
    pub value: f64,
}

/// Why [`parse`] rejected a text: the 1-based line and what was wrong with it, so a failing
/// endpoint test points at the offending line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics text line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses the text exposition format 0.0.4 into its samples (timestamps are checked and
/// dropped), strictly enough to catch a broken endpoint: valid names, quoted and correctly
/// escaped label values without duplicates, a parseable value, well-formed `# HELP` / `# TYPE`
/// lines at most once per name, and nothing trailing. Other comments and blank lines are
/// ignored.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    let mut helped = HashSet::new();
    let mut typed = HashSet::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        let result = if line.trim_end_matches([' ', '\t']).is_empty() {
            Ok(())
        } else if let Some(comment) = line.strip_prefix('#') {
            parse_comment(comment, &mut helped, &mut typed)
        } else {
            parse_sample(line).map(|s| samples.push(s))
        };
        result.map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
    }
    Ok(samples)
}

/// The value of the samples called `name` whose labels include all of `labels`, summed
/// (so a test can ask for a total across other labels); `None` when no sample matches.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .fold(None, |acc, s| Some(acc.unwrap_or(0.0) + s.value))
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A `#` line after the `#`: `HELP name text`, `TYPE name type`, or any other comment.
fn parse_comment(
    rest: &str,
    helped: &mut HashSet<String>,
    typed: &mut HashSet<String>,
) -> Result<(), String> {
    let rest = rest.trim_start_matches(is_blank);
    let (keyword, rest) = rest.split_once(is_blank).unwrap_or((rest, ""));
    let rest = rest.trim_start_matches(is_blank);
    let (name, rest) = rest.split_once(is_blank).unwrap_or((rest, ""));
    match keyword {
        "HELP" => {
            if !is_metric_name(name) {
                return Err(format!("invalid metric name {name:?} in HELP"));
            }
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                    return Err("invalid escape sequence in HELP text".to_owned());
                }
            }
            if !helped.insert(name.to_owned()) {
                return Err(format!("second HELP line for {name}"));
            }
            Ok(())
        }
        "TYPE" => {
            if !is_metric_name(name) {
                return Err(format!("invalid metric name {name:?} in TYPE"));
            }
            let kind = rest.trim_matches(is_blank);
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(format!("unknown metric type {kind:?} for {name}"));
            }
            if !typed.insert(name.to_owned()) {
                return Err(format!("second TYPE line for {name}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `name[{label="value",...}] value [timestamp]`, leading blanks already removed.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if !is_metric_name(name) {
        return Err(format!("invalid metric name at {:?}", truncate(line)));
    }
    let mut labels = BTreeMap::new();
    // Go's parser allows blanks between the name and `{`.
    if let Some(after) = rest.trim_start_matches(is_blank).strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let trimmed = rest.trim_start_matches(is_blank);
    if trimmed.len() == rest.len() {
        return Err(format!("expected whitespace then a value after {name}"));
    }
    let mut fields = trimmed.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = match fields.next() {
        Some(v) => parse_value(v)?,
        None => return Err(format!("missing value for {name}")),
    };
    if let Some(ts) = fields.next() {
        if ts.parse::<i64>().is_err() {
            return Err(format!("invalid timestamp {:?}", truncate(ts)));
        }
    }
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected text {:?} after sample",
            truncate(extra)
        ));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The label list after `{`, up to and including `}`; returns what follows the `}`.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches(is_blank);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_end);
        if !is_label_name(name) {
            return Err(format!("invalid label name at {:?}", truncate(rest)));
        }
        let after = after.trim_start_matches(is_blank);
        let Some(after) = after.strip_prefix('=') else {
            return Err(format!("expected '=' after label {name}"));
        };
        let after = after.trim_start_matches(is_blank);
        let Some(after) = after.strip_prefix('"') else {
            return Err(format!("expected '\"' to open the value of label {name}"));
        };
        let (value, after) = parse_quoted(after)
            .ok_or_else(|| format!("bad escape or unterminated value for label {name}"))?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        let after = after.trim_start_matches(is_blank);
        if let Some(after) = after.strip_prefix(',') {
            rest = after;
        } else if let Some(after) = after.strip_prefix('}') {
            return Ok(after);
        } else {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

/// A label value after its opening quote: the unescaped value and what follows the closing
/// quote, or `None` for an unknown escape or a missing closing quote.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, s.get(i + 1..)?)),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// A sample value: a decimal or exponent float, or `+Inf` / `-Inf` / `NaN` (any case, as Go
/// accepts them).
fn parse_value(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("invalid value {:?}", truncate(s)))
}

/// At most 40 characters of `s`, for error messages about arbitrary input.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry is global and tests run in parallel: each test parses the whole render
    /// (which must always succeed) and looks only at its own uniquely named families.
    fn scrape() -> Vec<Sample> {
        let text = render();
        match parse(&text) {
            Ok(samples) => samples,
            Err(e) => panic!("render did not parse: {e}\n{text}"),
        }
    }

    #[test]
    fn counter_updates_and_renders() {
        let c = counter(
            "test_counter_basic_total",
            "Counts things.",
            &["verb", "code"],
        );
        c.with(&["get", "200"]).inc();
        c.with(&["get", "200"]).add(4);
        c.inc(&["put", "409"]);
        assert_eq!(c.with(&["get", "200"]).get(), 5);
        let text = render();
        assert!(text.contains("# HELP test_counter_basic_total Counts things.\n"));
        assert!(text.contains("# TYPE test_counter_basic_total counter\n"));
        assert!(text.contains("test_counter_basic_total{verb=\"get\",code=\"200\"} 5\n"));
        let s = scrape();
        let v = |labels: &[(&str, &str)]| sample_value(&s, "test_counter_basic_total", labels);
        assert_eq!(v(&[("verb", "get"), ("code", "200")]), Some(5.0));
        assert_eq!(v(&[("verb", "put")]), Some(1.0));
        assert_eq!(v(&[]), Some(6.0));
        assert_eq!(v(&[("verb", "delete")]), None);
    }

    #[test]
    fn unlabelled_families_export_zero_immediately() {
        counter("test_unlabelled_total", "h", &[]);
        gauge("test_unlabelled_gauge", "h", &[]);
        histogram("test_unlabelled_seconds", "h", &[], &[1.0]);
        let text = render();
        assert!(text.contains("\ntest_unlabelled_total 0\n"));
        assert!(text.contains("\ntest_unlabelled_gauge 0\n"));
        assert!(text.contains("\ntest_unlabelled_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("\ntest_unlabelled_seconds_count 0\n"));
    }

    #[test]
    fn gauge_updates_and_renders() {
        let g = gauge("test_gauge_basic", "A level.", &["queue"]);
        let a = g.with(&["a"]);
        a.set(10.0);
        a.inc();
        a.inc();
        a.dec();
        a.add(-0.5);
        assert_eq!(a.get(), 10.5);
        g.with(&["b"]).set(f64::INFINITY);
        g.with(&["c"]).set(f64::NAN);
        g.with(&["d"]).set(1e-9);
        g.with(&["e"]).set(-3e20);
        let text = render();
        assert!(text.contains("# TYPE test_gauge_basic gauge\n"));
        assert!(text.contains("test_gauge_basic{queue=\"a\"} 10.5\n"));
        assert!(text.contains("test_gauge_basic{queue=\"b\"} +Inf\n"));
        assert!(text.contains("test_gauge_basic{queue=\"c\"} NaN\n"));
        let s = scrape();
        let v = |q: &str| sample_value(&s, "test_gauge_basic", &[("queue", q)]);
        assert_eq!(v("a"), Some(10.5));
        assert_eq!(v("b"), Some(f64::INFINITY));
        assert!(v("c").is_some_and(f64::is_nan));
        assert_eq!(v("d"), Some(1e-9));
        assert_eq!(v("e"), Some(-3e20));
    }

    #[test]
    fn samples_are_sorted_by_label_values() {
        let g = gauge("test_sorted", "h", &["k"]);
        for k in ["c", "a", "b"] {
            g.with(&[k]).set(1.0);
        }
        let s = scrape();
        let order: Vec<&str> = s
            .iter()
            .filter(|s| s.name == "test_sorted")
            .filter_map(|s| s.labels.get("k").map(String::as_str))
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn families_render_in_name_order() {
        gauge("test_order_b", "h", &[]);
        gauge("test_order_a", "h", &[]);
        let text = render();
        let a = text.find("# HELP test_order_a ");
        let b = text.find("# HELP test_order_b ");
        assert!(a.is_some() && b.is_some() && a < b);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = histogram(
            "test_hist_seconds",
            "Latency.",
            &["op"],
            &[0.1, 1.0, 0.5, f64::NAN, 0.5, f64::INFINITY],
        );
        let obs = [0.05, 0.1, 0.3, 0.7, 0.9, 3.0, 100.0];
        let get = h.with(&["get"]);
        for v in obs {
            get.observe(v);
        }
        h.observe(&["list"], 0.2);
        let text = render();
        assert!(text.contains("# TYPE test_hist_seconds histogram\n"));
        assert!(text.contains("test_hist_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"));
        assert!(text.contains("test_hist_seconds_bucket{op=\"get\",le=\"1\"} 5\n"));
        let s = scrape();
        let bucket =
            |le: &str| sample_value(&s, "test_hist_seconds_bucket", &[("op", "get"), ("le", le)]);
        assert_eq!(bucket("0.1"), Some(2.0));
        assert_eq!(bucket("0.5"), Some(3.0));
        assert_eq!(bucket("1"), Some(5.0));
        assert_eq!(bucket("+Inf"), Some(7.0));
        let buckets: Vec<f64> = s
            .iter()
            .filter(|x| x.name == "test_hist_seconds_bucket" && x.labels["op"] == "get")
            .map(|x| x.value)
            .collect();
        assert_eq!(buckets, [2.0, 3.0, 5.0, 7.0]);
        let count = sample_value(&s, "test_hist_seconds_count", &[("op", "get")]);
        assert_eq!(count, Some(obs.len() as f64));
        let sum = sample_value(&s, "test_hist_seconds_sum", &[("op", "get")]).unwrap_or(0.0);
        assert!((sum - obs.iter().sum::<f64>()).abs() < 1e-9);
        assert_eq!(
            sample_value(&s, "test_hist_seconds_count", &[("op", "list")]),
            Some(1.0)
        );
    }

    #[test]
    fn latency_buckets_render_as_plain_decimals() {
        let h = histogram("test_latency_seconds", "h", &[], LATENCY_BUCKETS);
        h.with(&[]).observe(0.003);
        let text = render();
        for le in ["0.0005", "0.0025", "1", "2.5", "10", "+Inf"] {
            let line = format!("test_latency_seconds_bucket{{le=\"{le}\"}} ");
            assert!(text.contains(&line), "missing {line}");
        }
        let s = scrape();
        let b = |le| sample_value(&s, "test_latency_seconds_bucket", &[("le", le)]);
        assert_eq!(b("0.0025"), Some(0.0));
        assert_eq!(b("0.005"), Some(1.0));
    }

    #[test]
    fn render_parse_round_trip() {
        let c = counter("test_rt_total", "Round trip.", &["a", "b"]);
        let g = gauge("test_rt_gauge", "Round trip.", &["a"]);
        let mut expected = Vec::new();
        for i in 0..20u64 {
            let a = format!("x{i}");
            c.with(&[&a, "y"]).add(i * 3 + 1);
            let gv = (i as f64) * 0.37 - 2.0;
            g.with(&[&a]).set(gv);
            expected.push((a, i * 3 + 1, gv));
        }
        let s = scrape();
        for (a, cv, gv) in expected {
            let got = sample_value(&s, "test_rt_total", &[("a", &a), ("b", "y")]);
            assert_eq!(got, Some(cv as f64));
            assert_eq!(sample_value(&s, "test_rt_gauge", &[("a", &a)]), Some(gv));
        }
    }

    #[test]
    fn float_formatting_round_trips() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -7.0,
            0.1,
            2.5,
            1e-5,
            1e-7,
            123456.789,
            1e14,
            1e15,
            1e300,
            -1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            let s = format_f64(v);
            assert_eq!(s.parse::<f64>().ok(), Some(v), "{v} rendered as {s}");
        }
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(0.0005), "0.0005");
        assert_eq!(format_f64(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_f64(1e20), "1e20");
    }

    #[test]
    fn label_escaping_round_trips() {
        let tricky = "quote\" backslash\\ newline\n end \\n literal, {brace}=ünï";
        let c = counter("test_escape_total", "Help with \\ and\nnewline.", &["v"]);
        c.with(&[tricky]).add(3);
        let text = render();
        assert!(text.contains(
            "test_escape_total{v=\"quote\\\" backslash\\\\ newline\\n end \\\\n literal, \
             {brace}=ünï\"} 3\n"
        ));
        assert!(text.contains("# HELP test_escape_total Help with \\\\ and\\nnewline.\n"));
        let s = scrape();
        assert_eq!(
            sample_value(&s, "test_escape_total", &[("v", tricky)]),
            Some(3.0)
        );
    }

    #[test]
    fn wrong_label_arity_pads_or_truncates() {
        let c = counter("test_arity_total", "h", &["a", "b"]);
        c.inc(&["x"]);
        c.inc(&["x", "", "ignored"]);
        c.inc(&[]);
        let s = scrape();
        let v = |a| sample_value(&s, "test_arity_total", &[("a", a), ("b", "")]);
        assert_eq!(v("x"), Some(2.0));
        assert_eq!(v(""), Some(1.0));
        assert!(s
            .iter()
            .filter(|x| x.name == "test_arity_total")
            .all(|x| x.labels.len() == 2));
    }

    #[test]
    fn concurrent_increments_sum_exactly() {
        let c = counter("test_concurrent_total", "h", &["k"]);
        let g = gauge("test_concurrent_gauge", "h", &[]);
        let h = histogram("test_concurrent_seconds", "h", &[], LATENCY_BUCKETS);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let cached = c.with(&["cached"]);
                    let gauge = g.with(&[]);
                    let hist = h.with(&[]);
                    for i in 0..10_000 {
                        cached.inc();
                        c.inc(&["lookup"]);
                        gauge.inc();
                        hist.observe(f64::from((t * 10_000 + i) % 7) * 0.001);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(c.with(&["cached"]).get(), 80_000);
        assert_eq!(c.with(&["lookup"]).get(), 80_000);
        assert_eq!(g.with(&[]).get(), 80_000.0);
        let s = scrape();
        assert_eq!(
            sample_value(&s, "test_concurrent_seconds_count", &[]),
            Some(80_000.0)
        );
        assert_eq!(
            sample_value(&s, "test_concurrent_seconds_bucket", &[("le", "+Inf")]),
            Some(80_000.0)
        );
    }

    #[test]
    fn reregistering_returns_the_same_family() {
        let a = counter("test_rereg_total", "h", &["x"]);
        let b = counter("test_rereg_total", "other help", &["x"]);
        assert!(std::ptr::eq(a, b));
        let g1 = gauge("test_rereg_gauge", "h", &[]);
        let g2 = gauge("test_rereg_gauge", "h", &[]);
        assert!(std::ptr::eq(g1, g2));
        let h1 = histogram("test_rereg_seconds", "h", &[], LATENCY_BUCKETS);
        let h2 = histogram("test_rereg_seconds", "h", &[], &[1.0]);
        assert!(std::ptr::eq(h1, h2));
        b.inc(&["1"]);
        assert_eq!(a.with(&["1"]).get(), 1);
    }

    #[test]
    fn type_or_label_clash_is_detached_not_exported() {
        let real = counter("test_clash_total", "h", &["a"]);
        real.inc(&["v"]);
        let other_type = gauge("test_clash_total", "h", &["a"]);
        other_type.with(&["v"]).set(99.0);
        let other_labels = counter("test_clash_total", "h", &["b"]);
        other_labels.inc(&["w"]);
        assert!(!std::ptr::eq(real, other_labels));
        // The same bad registration again reuses its detached family.
        let again = counter("test_clash_total", "h", &["b"]);
        assert!(std::ptr::eq(other_labels, again));
        assert_eq!(again.with(&["w"]).get(), 1);
        let hist = histogram("test_clash_total", "h", &[], &[1.0]);
        hist.observe(&[], 1.0);
        let s = scrape();
        let samples: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name.starts_with("test_clash_total"))
            .collect();
        assert_eq!(samples.len(), 1);
        assert_eq!(
            sample_value(&s, "test_clash_total", &[("a", "v")]),
            Some(1.0)
        );
    }

    #[test]
    fn invalid_names_are_detached() {
        let bad = [
            counter("test bad name", "h", &[]),
            counter("", "h", &[]),
            counter("test_bad_label_total", "h", &["has-dash"]),
            counter("test_bad_reserved_total", "h", &["__x"]),
            counter("test_bad_dup_total", "h", &["a", "a"]),
        ];
        for c in bad {
            c.inc(&["x", "y"]);
        }
        histogram("test_bad_le_seconds", "h", &["le"], &[1.0]).observe(&["1"], 0.5);
        let s = scrape();
        assert!(!s.iter().any(|x| x.name.starts_with("test_bad")));
        assert!(!render().contains("test bad name"));
    }

    #[test]
    fn parses_a_reference_exposition() {
        let text = "# A free comment\n\
            # HELP http_requests_total The total number of HTTP requests.\n\
            # TYPE http_requests_total counter\n\
            http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
            http_requests_total{method=\"post\",code=\"400\",}    3 1395066363000\n\
            \n\
            msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",\
            error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\r\n\
            metric_without_timestamp_and_labels 12.47\n\
            something_weird{problem=\"division by zero\"} +Inf -3982045\n\
            neg_inf -Inf\n\
            not_a_number NaN\n\
            \t  spaced { a = \"b\" } 1\n";
        let s = match parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.len(), 8);
        assert_eq!(
            sample_value(&s, "http_requests_total", &[("code", "400")]),
            Some(3.0)
        );
        let path = &s[2].labels;
        assert_eq!(path["path"], "C:\\DIR\\FILE.TXT");
        assert_eq!(path["error"], "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(s[2].value, 1.458255915e9);
        assert_eq!(s[4].value, f64::INFINITY);
        assert_eq!(s[5].value, f64::NEG_INFINITY);
        assert!(s[6].value.is_nan());
        assert_eq!(sample_value(&s, "spaced", &[("a", "b")]), Some(1.0));
    }

    #[test]
    fn malformed_text_is_a_parse_error() {
        let bad = [
            "no_value",
            "no_value{a=\"b\"}",
            "1leading_digit 1",
            "bad-name 1",
            "m{a=\"b\" 1",
            "m{a=b} 1",
            "m{a=\"unterminated} 1",
            "m{a=\"bad escape \\t\"} 1",
            "m{a=\"b\",a=\"c\"} 1",
            "m{,} 1",
            "m{1a=\"b\"} 1",
            "m{a=\"b\"}1",
            "m{a=\"b\"\"c\"} 1",
            "m one",
            "m 1 notatimestamp",
            "m 1 2 3",
            "m 1 1.5",
            "# TYPE m",
            "# TYPE m countre",
            "# TYPE 1m counter",
            "# TYPE m counter\n# TYPE m counter",
            "# HELP m a\n# HELP m b",
            "# HELP m bad \\escape",
            "# HELP",
            "ok 1\n\u{e9}t\u{e9} 1",
            "m{a=\"\u{e9}\u{e9}",
        ];
        for text in bad {
            match parse(text) {
                Ok(s) => panic!("{text:?} parsed as {s:?}"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        let e = parse("ok 1\nok 2\nbroken").err();
        assert_eq!(e.map(|e| e.line), Some(3));
    }

    #[test]
    fn parse_never_panics_on_mangled_input() {
        let h = histogram("test_mangle_seconds", "Mangled \\ help\n.", &["a"], &[0.5]);
        h.observe(&["q\"\\\nü"], 0.25);
        let text: String = render()
            .lines()
            .filter(|l| l.contains("test_mangle_seconds"))
            .flat_map(|l| [l, "\n"])
            .collect();
        assert!(parse(&text).is_ok());
        for (i, _) in text.char_indices() {
            // Every prefix, and the text with one character dropped or doubled.
            let _ = parse(&text[..i]);
            let mut dropped = text.clone();
            dropped.remove(i);
            let _ = parse(&dropped);
            let mut doubled = text.clone();
            if let Some(c) = text[i..].chars().next() {
                doubled.insert(i, c);
            }
            let _ = parse(&doubled);
        }
    }
}
