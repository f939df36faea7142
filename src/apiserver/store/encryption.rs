//! Encryption at rest: kube-apiserver's `EncryptionConfiguration`
//! (`--encryption-provider-config`) over any backend. Values of the configured resources are
//! encrypted before they reach the disk and decrypted as they are loaded; the Store's
//! memory holds them in the clear, as kube-apiserver's watch cache does.
//!
//! Providers: `aesgcm` (AES-GCM with a 16-, 24- or 32-byte key, a random 96-bit nonce per
//! write, the store key as additional data so a value cannot be moved to another key; values
//! are stored as `k8s:enc:aesgcm:v1:<key name>:<nonce><ciphertext+tag>`, as kube stores them)
//! and `identity` (plain). The first provider of a resource encrypts new writes; every
//! provider's keys decrypt what is read, so keys rotate by putting a new key first, restarting,
//! rewriting the objects (`kubectl get secrets -A -o json | kubectl replace -f -`), then
//! removing the old key.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use super::backend::{Backend, BackendError, Change, Loaded};

/// The prefix of every value the `aesgcm` provider wrote.
const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not an EncryptionConfiguration Skiff can use.
    #[error("encryption provider config: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Debug, Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    #[serde(default)]
    aesgcm: Option<KeysConfig>,
    #[serde(default)]
    identity: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    aescbc: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    secretbox: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    kms: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Debug, Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

/// One provider: its keys by name (the keys themselves are in [`Encryption::keys`]).
#[derive(Clone)]
enum Provider {
    Identity,
    AesGcm(Vec<String>),
}

/// Which store prefixes are encrypted, and with what.
pub struct Encryption {
    /// (store prefix, providers in order): the first prefix that matches a key rules it.
    rules: Vec<(String, Vec<Provider>)>,
    /// Every aesgcm key by name, for reads.
    keys: HashMap<String, LessSafeKey>,
    rng: SystemRandom,
}

/// The store prefix of a configured resource name (`secrets`, `configmaps`,
/// `leases.coordination.k8s.io`, `*.*` for everything).
fn prefix_of(resource: &str) -> Result<String, ConfigError> {
    if resource == "*.*" {
        return Ok("/registry/".into());
    }
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    crate::api::resource::lookup(group, plural)
        .filter(|r| r.plural == plural)
        .map(|r| r.prefix())
        .ok_or_else(|| ConfigError::Invalid(format!("unknown resource {resource:?}")))
}

impl Encryption {
    /// Reads an `apiserver.config.k8s.io/v1` EncryptionConfiguration.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses an EncryptionConfiguration.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::Invalid(why);
        let config: FileConfig = serde_yaml_ng::from_str(text).map_err(|e| bad(e.to_string()))?;
        if config.kind != "EncryptionConfiguration" {
            return Err(bad(format!(
                "kind {:?} is not EncryptionConfiguration",
                config.kind
            )));
        }
        let mut rules = Vec::new();
        let mut keys = HashMap::new();
        for rc in &config.resources {
            let mut providers = Vec::new();
            for p in &rc.providers {
                if p.aescbc.is_some() || p.secretbox.is_some() || p.kms.is_some() {
                    return Err(bad(
                        "only the aesgcm and identity providers are supported".into()
                    ));
                }
                match (&p.aesgcm, &p.identity) {
                    (Some(k), None) => {
                        let mut named = Vec::new();
                        for key in &k.keys {
                            let raw = base64::engine::general_purpose::STANDARD
                                .decode(key.secret.trim())
                                .map_err(|e| bad(format!("key {:?}: {e}", key.name)))?;
                            let alg = match raw.len() {
                                16 => &AES_128_GCM,
                                32 => &AES_256_GCM,
                                n => {
                                    return Err(bad(format!(
                                        "key {:?} is {n} bytes; aesgcm takes 16 or 32",
                                        key.name
                                    )))
                                }
                            };
                            if key.name.is_empty() || key.name.contains(':') {
                                return Err(bad(format!("bad key name {:?}", key.name)));
                            }
                            let k = UnboundKey::new(alg, &raw)
                                .map(LessSafeKey::new)
                                .map_err(|_| bad(format!("key {:?}", key.name)))?;
                            if keys.insert(key.name.clone(), k).is_some() {
                                return Err(bad(format!("key name {:?} is used twice", key.name)));
                            }
                            named.push(key.name.clone());
                        }
                        if named.is_empty() {
                            return Err(bad("aesgcm needs at least one key".into()));
                        }
                        providers.push(Provider::AesGcm(named));
                    }
                    (None, Some(_)) => providers.push(Provider::Identity),
                    _ => return Err(bad("each provider names exactly one kind".into())),
                }
            }
            if providers.is_empty() {
                return Err(bad("a resource list needs at least one provider".into()));
            }
            for r in &rc.resources {
                rules.push((prefix_of(r)?, providers.clone()));
            }
        }
        Ok(Encryption {
            rules,
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The value to store for `key`.
    pub(super) fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, BackendError> {
        let Some((_, providers)) = self.rules.iter().find(|(p, _)| key.starts_with(p.as_str()))
        else {
            return Ok(value.to_vec());
        };
        match providers.first() {
            Some(Provider::AesGcm(names)) => {
                let name = &names[0];
                let k = &self.keys[name];
                let mut nonce = [0u8; NONCE_LEN];
                self.rng
                    .fill(&mut nonce)
                    .map_err(|_| BackendError("no randomness for a nonce".into()))?;
                let mut sealed = value.to_vec();
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut sealed,
                )
                .map_err(|_| BackendError(format!("encrypting {key}")))?;
                let mut out = format!("{AESGCM_PREFIX}{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            _ => Ok(value.to_vec()),
        }
    }

    /// The plain value of what was stored for `key`.
    pub(super) fn open(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, BackendError> {
        let Some(rest) = stored.strip_prefix(AESGCM_PREFIX.as_bytes()) else {
            return Ok(stored.to_vec());
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| BackendError(format!("{key}: malformed encrypted value")))?;
        let name = String::from_utf8_lossy(&rest[..colon]).to_string();
        let k = self.keys.get(&name).ok_or_else(|| {
            BackendError(format!(
                "{key} is encrypted with key {name:?}, which the encryption config does not have"
            ))
        })?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(BackendError(format!("{key}: truncated encrypted value")));
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| BackendError(format!("{key}: bad nonce")))?;
        let mut buf = sealed.to_vec();
        let plain = k
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf)
            .map_err(|_| BackendError(format!("{key}: cannot decrypt with key {name:?}")))?;
        Ok(plain.to_vec())
    }
}

/// A backend whose values are encrypted on their way to `inner` and decrypted on their way
/// back.
pub struct Encrypted {
    inner: Box<dyn Backend>,
    config: Encryption,
}

impl Encrypted {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Backend>, config: Encryption) -> Self {
        Encrypted { inner, config }
    }
}

impl Backend for Encrypted {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        let mut loaded = self.inner.load()?;
        for kv in &mut loaded.kvs {
            kv.value = self.config.open(&kv.key, &kv.value)?.into();
        }
        Ok(loaded)
    }

    fn persist(&mut self, changes: &[Change], revision: u64) -> Result<(), BackendError> {
        let sealed: Vec<Change> = changes
            .iter()
            .map(|c| match c {
                Change::Put(kv) => {
                    let mut kv = kv.clone();
                    kv.value = self.config.seal(&kv.key, &kv.value)?.into();
                    Ok(Change::Put(kv))
                }
                Change::Delete(k) => Ok(Change::Delete(k.clone())),
            })
            .collect::<Result<_, BackendError>>()?;
        self.inner.persist(&sealed, revision)
    }
}

/// An EncryptionConfiguration that encrypts Secrets with a fresh 32-byte aesgcm key: what
/// the API server writes into its data dir on first start when none is given.
pub fn generated_config() -> Result<String, BackendError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| BackendError("no randomness for a key".into()))?;
    Ok(format!(
        "# Written by Skiff on first start: Secrets are encrypted at rest with this key.\n\
         # To rotate: add a new key first under aesgcm.keys, restart, rewrite every Secret\n\
         # (kubectl get secrets -A -o json | kubectl replace -f -), then remove the old key.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         - resources: [secrets]\n  \
           providers:\n  \
           - aesgcm:\n      \
               keys:\n      \
               - name: key1\n        \
                 secret: {}\n  \
           - identity: {{}}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> Encryption {
        Encryption::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    const K1: &str = "    - aesgcm:\n        keys:\n        - name: k1\n          secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";
    const K2: &str = "    - aesgcm:\n        keys:\n        - name: k2\n          secret: ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=\n";
    const ID: &str = "    - identity: {}\n";

    #[test]
    fn secrets_are_sealed_bound_to_their_key_and_others_left_alone() {
        let e = config(&format!("{K1}{ID}"));
        let key = "/registry/secrets/default/s";
        let sealed = e.seal(key, b"top secret").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(10).any(|w| w == b"top secret"));
        assert_eq!(e.open(key, &sealed).unwrap(), b"top secret");
        // Two writes of the same value differ (fresh nonces).
        assert_ne!(sealed, e.seal(key, b"top secret").unwrap());
        // Moved under another key, it does not open.
        assert!(e.open("/registry/secrets/default/t", &sealed).is_err());
        // A flipped byte does not open.
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(e.open(key, &bad).is_err());
        // Other resources stay plain; plain values still read (written before encryption).
        assert_eq!(
            e.seal("/registry/configmaps/default/c", b"x").unwrap(),
            b"x"
        );
        assert_eq!(e.open(key, b"plain").unwrap(), b"plain");
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_with_the_first() {
        let old = config(&format!("{K1}{ID}"));
        let key = "/registry/secrets/default/s";
        let by_k1 = old.seal(key, b"v").unwrap();
        let rotated = config(&format!("{K2}{K1}{ID}"));
        assert_eq!(rotated.open(key, &by_k1).unwrap(), b"v");
        assert!(rotated
            .seal(key, b"v")
            .unwrap()
            .starts_with(b"k8s:enc:aesgcm:v1:k2:"));
        // Identity first: writes are plain, encrypted values still read.
        let off = config(&format!("{ID}{K1}"));
        assert_eq!(off.seal(key, b"v").unwrap(), b"v");
        assert_eq!(off.open(key, &by_k1).unwrap(), b"v");
        // A key that is gone is a clear error, not garbage.
        let e = config(&format!("{K2}{ID}")).open(key, &by_k1).unwrap_err();
        assert!(e.0.contains("\"k1\""), "{e}");
    }

    #[test]
    fn bad_configs_are_refused_and_the_generated_one_works() {
        for bad in [
            "kind: Other\n",
            "kind: EncryptionConfiguration\nresources:\n- resources: [widgets]\n  providers:\n  - identity: {}\n",
            "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys: []\n",
            "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: a\n        secret: c2hvcnQ=\n",
        ] {
            assert!(Encryption::parse(bad).is_err(), "{bad}");
        }
        let e = Encryption::parse(&generated_config().unwrap()).unwrap();
        let sealed = e.seal("/registry/secrets/a/b", b"v").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    }
}
