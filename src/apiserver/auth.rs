//! Authentication: who is calling. A token file in kube-apiserver's `--token-auth-file`
//! format (`token,user,uid,"group1,group2"`) maps bearer tokens to users.

use std::collections::HashMap;
use std::path::Path;

use crate::api::Status;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `admin` or `system:node:n1`.
    pub name: String,
    /// Stable id from the token file.
    pub uid: String,
    /// Groups, e.g. `system:masters`.
    pub groups: Vec<String>,
}

/// Why the token file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading token file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `token,user,uid[,"groups"]`.
    #[error("token file line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Maps tokens to users.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// token -> user.
    tokens: HashMap<String, UserInfo>,
}

/// Splits one CSV line, honouring double quotes ("" inside quotes is a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true
            }
            (',', false) => fields.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    fields.push(cur.trim().to_string());
    Ok(fields)
}

impl Authenticator {
    /// Parses token-file text.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| TokenFileError::Line { line: i + 1, why };
            let f = csv_fields(line).map_err(bad)?;
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(bad("want token,user,uid[,\"group1,group2\"]".into()));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                f[0].clone(),
                UserInfo {
                    name: f[1].clone(),
                    uid: f[2].clone(),
                    groups,
                },
            );
        }
        Ok(Authenticator { tokens })
    }

    /// Reads a token file.
    pub fn from_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Who holds this token: 401 for no token or an unknown one.
    pub fn authenticate(&self, token: Option<&str>) -> Result<&UserInfo, Status> {
        let token = token.map(bearer_token);
        match token {
            Some(t) if !t.is_empty() => self.tokens.get(t).ok_or_else(Status::unauthorized),
            _ => Err(Status::unauthorized()),
        }
    }

    /// A token of a member of `group` (the kubeconfig written on start uses an admin's). A
    /// person's user comes before a component's (`system:…`, which may share the group), so
    /// kubectl is not taken for the scheduler; ties go by name, then token.
    pub fn token_for_group(&self, group: &str) -> Option<(&str, &UserInfo)> {
        let mut found: Vec<_> = self
            .tokens
            .iter()
            .filter(|(_, u)| u.groups.iter().any(|g| g == group))
            .collect();
        found.sort_by_key(|(t, u)| (u.name.starts_with("system:"), u.name.clone(), t.to_string()));
        found.first().map(|(t, u)| (t.as_str(), *u))
    }

    /// Number of known tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// No tokens at all.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// The token of a credential: an `Authorization` value `Bearer <token>` (the scheme in any
/// case, as kube-apiserver reads it: the Python client sends `bearer`), or a bare token.
pub fn bearer_token(credential: &str) -> &str {
    let c = credential.trim();
    match c.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => c[7..].trim(),
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kube_token_file() {
        let a = Authenticator::parse(
            "# comment\nt1,admin,u1,\"system:masters,ops\"\nt2,system:node:n1,u2\n",
        )
        .unwrap();
        let u = a.authenticate(Some("Bearer t1")).unwrap();
        // The scheme in any case (the Python client writes `bearer`).
        assert_eq!(a.authenticate(Some("bearer t1")).unwrap().name, u.name);
        assert_eq!(bearer_token("BEARER  t1 "), "t1");
        assert_eq!(u.name, "admin");
        assert_eq!(u.groups, vec!["system:masters", "ops"]);
        assert_eq!(a.authenticate(Some("t2")).unwrap().groups.len(), 0);
        assert_eq!(a.authenticate(Some("nope")).unwrap_err().code, 401);
        assert_eq!(a.authenticate(None).unwrap_err().code, 401);
        assert!(Authenticator::parse("onlytoken").is_err());
        assert!(Authenticator::parse("t,u,i,\"unterminated").is_err());
    }
}
