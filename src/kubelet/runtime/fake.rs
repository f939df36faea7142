//! The fake runtime: containers "run" without any process, so that one Skiff process can
//! simulate thousands of nodes. This file owns only an in-memory table of container states
//! (a few timestamps per container); it starts no process, writes no file and opens no
//! socket, and like every runtime it leaves the pod lifecycle to the kubelet.
//!
//! A container is Running as soon as it is started and stays so until it is stopped, which
//! is instant and always reported as a clean exit (exit code 0, reason "Completed", no
//! signal), as if the container had honoured SIGTERM. Any spec is accepted, an empty command
//! too (it stands for the image's default). Logs are one fixed line; `exec` succeeds with no
//! output while the container runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::{ContainerId, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError};

/// A runtime whose containers have no processes. A cheap-to-clone handle: clones share the
/// same containers.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    pod_ip: String,
    containers: Mutex<HashMap<ContainerId, Fake>>,
}

/// One container: its latest instance.
struct Fake {
    /// How many instances were started (restarts + 1).
    instances: u32,
    started_at: SystemTime,
    /// Set when stopped.
    finished_at: Option<SystemTime>,
}

impl FakeRuntime {
    /// A fake runtime reporting `pod_ip` as every pod's IP.
    pub fn new(pod_ip: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                pod_ip,
                containers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ContainerId, Fake>> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log line every fake container has.
fn log_line(id: &ContainerId) -> String {
    format!("fake runtime: {} has no output\n", id.container)
}

fn not_found(id: &ContainerId) -> RuntimeError {
    RuntimeError::Other(format!(
        "container {}/{}/{} not found",
        id.namespace, id.pod, id.container
    ))
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    fn version(&self) -> String {
        format!("skiff-fake://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn start(&self, id: &ContainerId, _spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let now = SystemTime::now();
        let mut containers = self.lock();
        match containers.get_mut(id) {
            Some(fake) if fake.finished_at.is_none() => Err(RuntimeError::Start {
                container: format!("{}/{}/{}", id.namespace, id.pod, id.container),
                why: "it is already running".to_string(),
            }),
            Some(fake) => {
                fake.instances = fake.instances.saturating_add(1);
                fake.started_at = now;
                fake.finished_at = None;
                Ok(())
            }
            None => {
                containers.insert(
                    id.clone(),
                    Fake {
                        instances: 1,
                        started_at: now,
                        finished_at: None,
                    },
                );
                Ok(())
            }
        }
    }

    async fn stop(&self, id: &ContainerId, _grace: Duration) -> Result<(), RuntimeError> {
        if let Some(fake) = self.lock().get_mut(id) {
            fake.finished_at.get_or_insert_with(SystemTime::now);
        }
        Ok(())
    }

    async fn state(&self, id: &ContainerId) -> ContainerState {
        match self.lock().get(id) {
            None => ContainerState::Unknown,
            Some(fake) => match fake.finished_at {
                None => ContainerState::Running {
                    started_at: fake.started_at,
                    pid: None,
                },
                Some(finished_at) => ContainerState::Exited {
                    exit_code: 0,
                    signal: None,
                    started_at: fake.started_at,
                    finished_at,
                    reason: "Completed".to_string(),
                },
            },
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        _command: &[String],
    ) -> Result<(i32, String), RuntimeError> {
        match self.lock().get(id) {
            Some(fake) if fake.finished_at.is_none() => Ok((0, String::new())),
            _ => Err(RuntimeError::Other(format!(
                "container {}/{}/{} is not running",
                id.namespace, id.pod, id.container
            ))),
        }
    }

    async fn logs(
        &self,
        id: &ContainerId,
        tail: Option<usize>,
        previous: bool,
    ) -> Result<String, RuntimeError> {
        let instances = self.lock().get(id).map(|fake| fake.instances);
        match instances {
            None => Err(not_found(id)),
            Some(n) if previous && n < 2 => Err(RuntimeError::Other(format!(
                "no log for previous terminated container {}/{}/{}",
                id.namespace, id.pod, id.container
            ))),
            Some(_) if tail == Some(0) => Ok(String::new()),
            Some(_) => Ok(log_line(id)),
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.lock().remove(id);
        Ok(())
    }

    fn pod_ip(&self) -> String {
        self.inner.pod_ip.clone()
    }

    fn root(&self) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(container: &str) -> ContainerId {
        ContainerId {
            namespace: "default".to_string(),
            pod: "web".to_string(),
            uid: "uid-1".to_string(),
            container: container.to_string(),
        }
    }

    #[tokio::test]
    async fn start_state_stop_logs_remove() {
        let rt = FakeRuntime::new("10.1.2.3".to_string());
        let c = id("app");
        assert_eq!(rt.state(&c).await, ContainerState::Unknown);
        assert!(rt.logs(&c, None, false).await.is_err());
        assert!(rt.exec(&c, &[]).await.is_err());

        rt.start(&c, &ContainerSpec::default()).await.unwrap();
        let started = match rt.state(&c).await {
            ContainerState::Running { started_at, pid } => {
                assert_eq!(pid, None);
                started_at
            }
            other => panic!("{other:?}"),
        };
        assert!(rt.start(&c, &ContainerSpec::default()).await.is_err());
        assert_eq!(
            rt.exec(&c, &["true".to_string()]).await.unwrap(),
            (0, String::new())
        );
        assert_eq!(
            rt.logs(&c, None, false).await.unwrap(),
            "fake runtime: app has no output\n"
        );
        assert_eq!(rt.logs(&c, Some(0), false).await.unwrap(), "");
        assert!(
            rt.logs(&c, None, true).await.is_err(),
            "no previous instance"
        );

        rt.stop(&c, Duration::from_secs(30)).await.unwrap();
        match rt.state(&c).await {
            ContainerState::Exited {
                exit_code,
                signal,
                started_at,
                finished_at,
                reason,
            } => {
                assert_eq!((exit_code, signal, reason.as_str()), (0, None, "Completed"));
                assert_eq!(started_at, started);
                assert!(finished_at >= started_at);
            }
            other => panic!("{other:?}"),
        }
        assert!(rt.exec(&c, &[]).await.is_err());

        rt.clone()
            .start(&c, &ContainerSpec::default())
            .await
            .unwrap();
        assert!(matches!(rt.state(&c).await, ContainerState::Running { .. }));
        assert_eq!(
            rt.logs(&c, Some(5), true).await.unwrap(),
            "fake runtime: app has no output\n"
        );
        rt.stop(&c, Duration::ZERO).await.unwrap();
        rt.remove(&c).await.unwrap();
        assert_eq!(rt.state(&c).await, ContainerState::Unknown);
        rt.stop(&c, Duration::ZERO).await.unwrap();

        assert_eq!(rt.pod_ip(), "10.1.2.3");
        assert_eq!(rt.root(), None);
        assert!(rt.version().starts_with("skiff-fake://"));
    }

    #[tokio::test]
    async fn many_containers() {
        let rt = FakeRuntime::new("10.1.2.3".to_string());
        for i in 0..10_000 {
            rt.start(&id(&format!("c{i}")), &ContainerSpec::default())
                .await
                .unwrap();
        }
        assert!(matches!(
            rt.state(&id("c9999")).await,
            ContainerState::Running { .. }
        ));
    }
}
