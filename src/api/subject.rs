//! NATS subjects: where requests go and how a caller's identity is written into them.
//!
//! Requests go to `skiff.req.<identity>.<verb>`, where identity is the caller's user name
//! escaped into a single subject token. The API server subscribes `skiff.req.>` in a queue
//! group and takes the identity from the subject (which NATS permissions enforce), checking it
//! against the token. Escaping keeps a user `system:node:n1.example` from ever matching a
//! permission for `system:node:n1`: every byte outside `[A-Za-z0-9_-]` becomes `%XX`.

/// Prefix of every request subject.
pub const REQUEST_PREFIX: &str = "skiff.req";
/// The subscription the API server takes.
pub const REQUEST_WILDCARD: &str = "skiff.req.>";
/// Queue group shared by API servers, so each request reaches exactly one of them.
pub const APISERVER_QUEUE: &str = "skiff-apiserver";

/// Header carrying the bearer token.
pub const HEADER_TOKEN: &str = "Authorization";
/// Header carrying the W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header carrying the caller's request id.
pub const HEADER_REQUEST_ID: &str = "Skiff-Request-Id";
/// Header marking the last message of a followed log stream.
pub const HEADER_END: &str = "Skiff-End";
/// Header of a kubelet's "still listening?" request to a followed log's inbox: nobody answers
/// it, but when nobody listens any more NATS says so (no responders) and the kubelet stops.
pub const HEADER_PING: &str = "Skiff-Ping";
/// Header carrying the HTTP-style status code of a reply.
pub const HEADER_CODE: &str = "Skiff-Code";

/// Escapes a user name into one subject token.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape`]; None for a token that is not a valid escape.
pub fn unescape(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The subject a caller sends `verb` requests to.
pub fn request(user: &str, verb: &str) -> String {
    format!("{REQUEST_PREFIX}.{}.{verb}", escape(user))
}

/// Splits a request subject into (user, verb).
pub fn parse_request(subject: &str) -> Option<(String, &str)> {
    let rest = subject.strip_prefix(REQUEST_PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let user = unescape(parts.next()?)?;
    let verb = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user, verb))
}

/// The subject the API server sends `verb` requests for a node's kubelet to (logs, later
/// exec): `skiff.node.<escaped node name>.<verb>`.
pub fn node(node: &str, verb: &str) -> String {
    format!("skiff.node.{}.{verb}", escape(node))
}

/// The API server's own inbox prefix (answers to its requests to kubelets, followed logs), so
/// NATS permissions can let kubelets publish there and nowhere else outside their own subjects.
pub const APISERVER_INBOX: &str = "_INBOX.skiff-apiserver";

/// The inbox prefix a caller's watch streams arrive on (`_INBOX.<identity>`), so NATS
/// permissions can let each component read only its own.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{}", escape(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_stay_one_token() {
        let s = request("system:node:n1.example", "get");
        assert_eq!(s, "skiff.req.system%3Anode%3An1%2Eexample.get");
        let (user, verb) = parse_request(&s).unwrap();
        assert_eq!(user, "system:node:n1.example");
        assert_eq!(verb, "get");
        assert!(!s.starts_with(&request("system:node:n1", "")[..]));
    }

    #[test]
    fn rejects_bad_subjects() {
        assert!(parse_request("skiff.req.a.b.c").is_none());
        assert!(parse_request("skiff.req.a").is_none());
        assert!(parse_request("other.a.get").is_none());
        assert!(unescape("%zz").is_none());
        assert!(unescape("%4").is_none());
    }
}
