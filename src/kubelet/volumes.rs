//! A pod's volumes as files on the node, which the runtimes then mount: `configMap`,
//! `secret`, `downwardAPI`, `projected` (those three plus `serviceAccountToken`), `emptyDir`
//! and `hostPath`. Each volume the kubelet fills is a directory
//! `<volume root>/<pod uid>/<volume name>/`; its files are replaced one by one (written
//! beside, then renamed), so a reader sees a file's old or new content, never half of one.
//!
//! What the files hold is read through the API server as the node (the node authorizer lets
//! a kubelet read only what its pods use) and written again every [`RESYNC`], so an edited
//! ConfigMap or Secret reaches the pod; a service account token is requested bound to the
//! pod (TokenRequest) and renewed once 80% of its life has passed, as the kubelet does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::runtime::Mount;
use crate::client::ApiClient;

/// How often filled volumes are written again from the objects they show.
pub const RESYNC: Duration = Duration::from_secs(60);

/// After a failed fill, when it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// `defaultMode` when a volume gives none (0644).
const DEFAULT_MODE: u32 = 0o644;

/// Files of one volume: relative path → (content, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Why a volume could not be filled: kube's `FailedMount` message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {why}")]
pub struct MountError {
    /// The volume.
    pub volume: String,
    /// What failed.
    pub why: String,
}

/// The volumes of one pod.
pub struct PodVolumes {
    /// `<volume root>/<pod uid>`.
    dir: PathBuf,
    client: ApiClient,
    /// When the volumes are next written (now, until the first fill succeeds).
    next_fill: Option<Instant>,
    /// Why the last fill failed, until one succeeds: what a check before the next is due
    /// answers.
    failure: Option<MountError>,
    /// Tokens by (volume, path): the token and when to renew it.
    tokens: HashMap<(String, String), (String, Instant)>,
    /// Files written last time, per volume (those no longer shown are removed).
    written: HashMap<String, BTreeSet<String>>,
    /// The pod's address and its node's, for downward-API fields.
    pod_ip: String,
    host_ip: String,
}

impl PodVolumes {
    /// The volumes of the pod with `uid`, kept under `root`.
    pub fn new(root: &Path, uid: &str, client: ApiClient, pod_ip: &str, host_ip: &str) -> Self {
        PodVolumes {
            dir: root.join(uid),
            client,
            next_fill: None,
            failure: None,
            tokens: HashMap::new(),
            written: HashMap::new(),
            pod_ip: pod_ip.into(),
            host_ip: host_ip.into(),
        }
    }

    /// Fills every volume of `pod` when due (first, then every [`RESYNC`], sooner when a token
    /// is to be renewed). Ok once all are in place; a failure is retried after [`RETRY`].
    pub async fn fill(&mut self, pod: &Value) -> Result<(), MountError> {
        let now = Instant::now();
        let token_due = self.tokens.values().any(|(_, renew)| *renew <= now);
        if self.next_fill.is_some_and(|at| at > now) && !token_due {
            return match &self.failure {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
        let result = self.fill_all(pod).await;
        self.next_fill = Some(now + if result.is_ok() { RESYNC } else { RETRY });
        self.failure = result.as_ref().err().cloned();
        result
    }

    async fn fill_all(&mut self, pod: &Value) -> Result<(), MountError> {
        // The pod's directory is the node's alone (tokens and Secrets are in it).
        crate::files::private_dir(&self.dir).map_err(|e| MountError {
            volume: String::new(),
            why: format!("creating {}: {e}", self.dir.display()),
        })?;
        for volume in items(&pod["spec"]["volumes"]) {
            let name = volume["name"].as_str().unwrap_or("").to_string();
            if !safe_name(&name) {
                return Err(MountError {
                    volume: name,
                    why: "invalid volume name".into(),
                });
            }
            let failed = |why: String| MountError {
                volume: name.clone(),
                why,
            };
            let dir = self.dir.join(&name);
            if volume.get("emptyDir").is_some() {
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
                continue;
            }
            if let Some(host) = volume.get("hostPath") {
                if host["type"] == "DirectoryOrCreate" {
                    let path = host["path"].as_str().unwrap_or("");
                    std::fs::create_dir_all(path).map_err(|e| failed(format!("{path}: {e}")))?;
                }
                continue;
            }
            let files = self.render(pod, &name, volume).await.map_err(failed)?;
            let Some(files) = files else { continue };
            self.write(&name, &dir, files)
                .map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// The files of a volume the kubelet fills; None for a kind it does not know.
    async fn render(
        &mut self,
        pod: &Value,
        volume_name: &str,
        volume: &Value,
    ) -> Result<Option<Files>, String> {
        let mut files = Files::new();
        let projected = &volume["projected"];
        let mode_of = |v: &Value| v["defaultMode"].as_u64().map_or(DEFAULT_MODE, |m| m as u32);
        if projected.is_object() {
            let mode = mode_of(projected);
            for source in items(&projected["sources"]) {
                if source["configMap"].is_object() {
                    self.object_files(
                        pod,
                        "configmaps",
                        &source["configMap"],
                        "name",
                        mode,
                        &mut files,
                    )
                    .await?;
                } else if source["secret"].is_object() {
                    self.object_files(pod, "secrets", &source["secret"], "name", mode, &mut files)
                        .await?;
                } else if source["downwardAPI"].is_object() {
                    self.downward_files(pod, &source["downwardAPI"], mode, &mut files);
                } else if let Some(token) = source.get("serviceAccountToken") {
                    let path = token["path"].as_str().unwrap_or("token").to_string();
                    let t = self.token(pod, volume_name, &path, token).await?;
                    files.insert(path, (t.into_bytes(), mode));
                }
            }
        } else if volume["configMap"].is_object() {
            let mode = mode_of(&volume["configMap"]);
            self.object_files(
                pod,
                "configmaps",
                &volume["configMap"],
                "name",
                mode,
                &mut files,
            )
            .await?;
        } else if volume["secret"].is_object() {
            let mode = mode_of(&volume["secret"]);
            self.object_files(
                pod,
                "secrets",
                &volume["secret"],
                "secretName",
                mode,
                &mut files,
            )
            .await?;
        } else if volume["downwardAPI"].is_object() {
            let mode = mode_of(&volume["downwardAPI"]);
            self.downward_files(pod, &volume["downwardAPI"], mode, &mut files);
        } else {
            return Ok(None);
        }
        Ok(Some(files))
    }

    /// A ConfigMap's or Secret's keys (all, or the `items` named) as files; a missing object
    /// or key fails unless `optional`.
    async fn object_files(
        &self,
        pod: &Value,
        plural: &str,
        source: &Value,
        name_key: &str,
        mode: u32,
        files: &mut Files,
    ) -> Result<(), String> {
        let name = source[name_key].as_str().unwrap_or("");
        let optional = source["optional"] == true;
        let singular = &plural[..plural.len() - 1];
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let obj = match self.client.api("", plural, Some(namespace)).get(name).await {
            Ok(obj) => obj,
            Err(e) if e.code == 404 && optional => return Ok(()),
            Err(e) if e.code == 404 => return Err(format!("{singular} \"{name}\" not found")),
            Err(e) => return Err(format!("getting {singular} \"{name}\": {}", e.message)),
        };
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let b64 = base64::engine::general_purpose::STANDARD;
        if let Some(map) = obj["data"].as_object() {
            for (k, v) in map {
                let v = v.as_str().unwrap_or("");
                let bytes = if plural == "secrets" {
                    b64.decode(v)
                        .map_err(|e| format!("{singular} \"{name}\" key {k}: {e}"))?
                } else {
                    v.as_bytes().to_vec()
                };
                data.insert(k.clone(), bytes);
            }
        }
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            let bytes = b64
                .decode(v.as_str().unwrap_or(""))
                .map_err(|e| format!("{singular} \"{name}\" key {k}: {e}"))?;
            data.insert(k.clone(), bytes);
        }
        match source["items"].as_array().filter(|a| !a.is_empty()) {
            None => {
                for (k, v) in data {
                    files.insert(k, (v, mode));
                }
            }
            Some(list) => {
                for item in list {
                    let key = item["key"].as_str().unwrap_or("");
                    let path = item["path"].as_str().unwrap_or(key).to_string();
                    let item_mode = item["mode"].as_u64().map_or(mode, |m| m as u32);
                    match data.get(key) {
                        Some(v) => {
                            files.insert(path, (v.clone(), item_mode));
                        }
                        None if optional => {}
                        None => {
                            return Err(format!(
                                "configmap references non-existent config key: {key}"
                            )
                            .replace("configmap", singular))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Downward-API items as files.
    fn downward_files(&self, pod: &Value, source: &Value, mode: u32, files: &mut Files) {
        for item in items(&source["items"]) {
            let Some(path) = item["path"].as_str() else {
                continue;
            };
            let value = match item["fieldRef"]["fieldPath"].as_str() {
                Some(field) => super::pod::field_ref(pod, field, &self.pod_ip, &self.host_ip),
                None => String::new(),
            };
            let item_mode = item["mode"].as_u64().map_or(mode, |m| m as u32);
            files.insert(path.to_string(), (value.into_bytes(), item_mode));
        }
    }

    /// The pod's service account token for (`volume`, `path`): the one held until 80% of its
    /// life has passed, then a new one (TokenRequest bound to the pod).
    async fn token(
        &mut self,
        pod: &Value,
        volume: &str,
        path: &str,
        source: &Value,
    ) -> Result<String, String> {
        let key = (volume.to_string(), path.to_string());
        if let Some((token, renew)) = self.tokens.get(&key) {
            if *renew > Instant::now() {
                return Ok(token.clone());
            }
        }
        let md = &pod["metadata"];
        let namespace = md["namespace"].as_str().unwrap_or("");
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let seconds = source["expirationSeconds"].as_i64().unwrap_or(3600);
        let mut spec = json!({
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": md["name"], "uid": md["uid"]},
        });
        if let Some(aud) = source["audience"].as_str().filter(|a| !a.is_empty()) {
            spec["audiences"] = json!([aud]);
        }
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": spec});
        let answer = self
            .client
            .api("", "serviceaccounts", Some(namespace))
            .create_subresource(account, "token", &request)
            .await
            .map_err(|e| {
                format!(
                    "failed to fetch token for service account {namespace}/{account}: {}",
                    e.message
                )
            })?;
        let token = answer["status"]["token"]
            .as_str()
            .ok_or("the TokenRequest answer holds no token")?
            .to_string();
        let granted = answer["spec"]["expirationSeconds"]
            .as_u64()
            .unwrap_or(seconds.max(0) as u64);
        let renew = Instant::now() + Duration::from_secs(granted * 8 / 10);
        self.tokens.insert(key, (token.clone(), renew));
        Ok(token)
    }

    /// Writes `files` into `dir`, each replaced whole, and removes those written last time
    /// that are gone.
    fn write(&mut self, volume: &str, dir: &Path, files: Files) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut now_written = BTreeSet::new();
        for (rel, (content, mode)) in &files {
            let Some(target) = inside(dir, rel) else {
                return Err(std::io::Error::other(format!("invalid path {rel:?}")));
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::read(&target).is_ok_and(|old| &old == content)
                && std::fs::metadata(&target)
                    .is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
            {
                now_written.insert(rel.clone());
                continue;
            }
            let temp = target.with_file_name(format!(
                ".{}.tmp",
                target.file_name().and_then(|n| n.to_str()).unwrap_or("f")
            ));
            {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode_private()
                    .open(&temp)?;
                // No fsync: the kubelet writes every volume again after a restart, and this
                // runs on the pod worker's thread.
                f.write_all(content)?;
            }
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(*mode))?;
            std::fs::rename(&temp, &target)?;
            now_written.insert(rel.clone());
        }
        if let Some(before) = self.written.get(volume) {
            for gone in before.difference(&now_written) {
                if let Some(path) = inside(dir, gone) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        self.written.insert(volume.to_string(), now_written);
        Ok(())
    }

    /// The mounts of `container` (its `volumeMounts`) that name a volume of `pod`.
    pub fn mounts(&self, pod: &Value, container: &Value) -> Vec<Mount> {
        let volumes = items(&pod["spec"]["volumes"]);
        items(&container["volumeMounts"])
            .iter()
            .filter_map(|m| {
                let name = m["name"].as_str()?;
                let path = m["mountPath"].as_str()?.to_string();
                let volume = volumes.iter().find(|v| v["name"] == name)?;
                let mut source = match volume["hostPath"]["path"].as_str() {
                    Some(host) => PathBuf::from(host),
                    None => self.dir.join(name),
                };
                if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                    source = inside(&source, sub)?;
                }
                Some(Mount {
                    source,
                    path,
                    read_only: m["readOnly"] == true,
                })
            })
            .collect()
    }

    /// Removes every file of the pod's volumes (the pod is gone).
    fn remove(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "removing pod volumes");
            }
        }
    }
}

/// A pod's worker ends when the pod is gone: so do its files.
impl Drop for PodVolumes {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A JSON array's items (none when it is not one).
fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A volume name that stays one path component.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// `base/rel` when `rel` is relative and never climbs out (no `..`, no root).
fn inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && !rel.as_os_str().is_empty() && !rel.to_string_lossy().contains('\0'))
        .then(|| base.join(rel))
}

/// New files start private; their mode is set before they are renamed into place.
trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_volume() {
        let base = Path::new("/v");
        assert_eq!(inside(base, "a/b"), Some(PathBuf::from("/v/a/b")));
        assert_eq!(inside(base, "../x"), None);
        assert_eq!(inside(base, "/etc/passwd"), None);
        assert_eq!(inside(base, "a/../../x"), None);
        assert_eq!(inside(base, ""), None);
        assert!(!safe_name(".."));
        assert!(!safe_name("a/b"));
    }
}
