//! Certificates, like k3s makes them: on first start a CA, a serving certificate (SANs:
//! 127.0.0.1, localhost, the host name, extra names from config) and an admin client
//! certificate are written to `<data-dir>/pki/`; later starts reuse them. Also the kubeconfig
//! an operator points kubectl at.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The PEM files of a cluster's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// `pki/` in the data dir.
    pub dir: PathBuf,
    /// CA certificate (PEM).
    pub ca_cert: String,
    /// Serving certificate (PEM).
    pub server_cert: String,
    /// Serving key (PEM).
    pub server_key: String,
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.display().to_string(),
        source,
    };
    // Replaced whole, by rename: another replica sharing the directory reads the old file or
    // the new one, never half.
    crate::files::write_private(path, text.as_bytes()).map_err(io)?;
    #[cfg(unix)]
    if !secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    Ok(())
}

impl Pki {
    /// Loads the PKI from `<data_dir>/pki`, creating what is missing. `sans` are added to the
    /// serving certificate's names (it is re-issued when it lacks one of them: API servers
    /// sharing a directory that `skiff init` made with every replica's names keep it).
    /// The host name goes into a new certificate but does not make an existing one be
    /// re-issued: scaled replicas each have their own and would take turns replacing it.
    /// Everything happens under a lock on `pki/.lock`, so replicas (or nats-servers) that
    /// start together on one volume make one CA and one serving pair, not several halves.
    pub fn ensure(data_dir: &Path, sans: &[String]) -> Result<Pki, CertError> {
        let dir = data_dir.join("pki");
        crate::files::private_dir(&dir).map_err(|source| CertError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let lock_path = dir.join(".lock");
        let _lock = crate::files::lock(&lock_path).map_err(|source| CertError::Io {
            path: lock_path.display().to_string(),
            source,
        })?;
        let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !ca_cert_path.exists() || !ca_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "skiff-ca");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key)?;
            write(&ca_cert_path, &cert.pem(), false)?;
            write(&ca_key_path, &key.serialize_pem(), true)?;
        }
        let ca_cert = read(&ca_cert_path)?;
        let mut required = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for s in sans {
            if !required.contains(s) {
                required.push(s.clone());
            }
        }
        let mut names = required.clone();
        if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
            let h = h.trim().to_string();
            if !h.is_empty() && !names.contains(&h) {
                names.insert(2, h);
            }
        }
        let names_path = dir.join("server.names");
        let wanted = names.join(",");
        let (server_cert_path, server_key_path) = (dir.join("server.crt"), dir.join("server.key"));
        let current = std::fs::read_to_string(&names_path).unwrap_or_default();
        let covered = required.iter().all(|n| current.split(',').any(|c| c == n));
        if !server_cert_path.exists() || !server_key_path.exists() || !covered {
            let ca = CaSigner::load(&dir)?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.clone())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "skiff-apiserver");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
            let cert = params.signed_by(&key, &ca.issuer()?)?;
            write(&server_cert_path, &cert.pem(), false)?;
            write(&server_key_path, &key.serialize_pem(), true)?;
            write(&names_path, &wanted, false)?;
        }
        Ok(Pki {
            ca_cert,
            server_cert: read(&server_cert_path)?,
            server_key: read(&server_key_path)?,
            dir,
        })
    }

    /// Issues a client certificate (CN = user, O = groups) signed by this CA: (cert, key) PEM.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), CertError> {
        CaSigner::load(&self.dir)?.issue_client(user, groups)
    }
}

/// The CA's key and certificate, for signing.
pub struct CaSigner {
    cert_pem: String,
    key: KeyPair,
}

impl CaSigner {
    /// Loads `ca.crt` and `ca.key` from a pki dir.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        Ok(CaSigner {
            cert_pem: read(&dir.join("ca.crt"))?,
            key,
        })
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CertError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// A client certificate for `user` in `groups`: (cert, key) PEM.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Base64 (standard alphabet, padded) for kubeconfig `*-data` fields.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with a bearer token or a
/// client certificate (cert, key PEM).
pub fn kubeconfig(
    server: &str,
    ca_pem: &str,
    token: Option<&str>,
    client: Option<(&str, &str)>,
) -> String {
    let mut user = String::new();
    if let Some(t) = token {
        user.push_str(&format!("    token: {t}\n"));
    }
    if let Some((cert, key)) = client {
        user.push_str(&format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            base64(cert.as_bytes()),
            base64(key.as_bytes())
        ));
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff-admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: skiff-admin\n  user:\n{user}preferences: {{}}\n",
        base64(ca_pem.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_starting_together_share_one_ca_and_one_serving_pair() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["apiserver".to_string(), "kube".to_string()];
        let made: Vec<Pki> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Pki::ensure(dir.path(), &sans).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for p in &made[1..] {
            assert_eq!(p.ca_cert, made[0].ca_cert);
            assert_eq!(p.server_cert, made[0].server_cert);
            assert_eq!(p.server_key, made[0].server_key);
        }
        // A replica asking for fewer names keeps the certificate.
        let again = Pki::ensure(dir.path(), &["kube".to_string()]).unwrap();
        assert_eq!(again.server_cert, made[0].server_cert);
        // One asking for a name it lacks gets a new one, from the same CA.
        let more = Pki::ensure(dir.path(), &["apiserver-4".to_string()]).unwrap();
        assert_ne!(more.server_cert, made[0].server_cert);
        assert_eq!(more.ca_cert, made[0].ca_cert);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn pki_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::ensure(dir.path(), &[]).unwrap();
        let b = Pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_cert, b.ca_cert);
        assert_eq!(a.server_cert, b.server_cert);
        let c = Pki::ensure(dir.path(), &["skiff.example".into()]).unwrap();
        assert_eq!(a.ca_cert, c.ca_cert);
        assert_ne!(
            a.server_cert, c.server_cert,
            "new SANs re-issue the serving certificate"
        );
        let (cert, key) = c.issue_client("jane", &["devs"]).unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    }
}
