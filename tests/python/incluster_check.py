# Run inside a pod: the official `kubernetes` client configured from what the pod was given
# (the projected token, the CA, the namespace, KUBERNETES_SERVICE_HOST/PORT) lists the pods of
# its namespace, and is refused what its ServiceAccount may not do.
import os
import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException

# The process runtime shows each mount under $SKIFF_CONTAINER_ROOT; a container has it at
# the path itself.
root = os.environ.get("SKIFF_CONTAINER_ROOT", "")
sa = root + "/var/run/secrets/kubernetes.io/serviceaccount"
if root:
    config.incluster_config.InClusterConfigLoader(
        token_filename=sa + "/token", cert_filename=sa + "/ca.crt"
    ).load_and_set()
else:
    config.load_incluster_config()
namespace = open(sa + "/namespace").read()
v1 = client.CoreV1Api()
names = sorted(p.metadata.name for p in v1.list_namespaced_pod(namespace).items)
print("pods:", " ".join(names), flush=True)
for what, call in [
    ("secrets", lambda: v1.list_namespaced_secret(namespace)),
    ("other-namespace", lambda: v1.list_namespaced_pod("default")),
]:
    try:
        call()
        print(what + ": allowed", flush=True)
    except ApiException as e:
        print(what + ":", e.status, flush=True)
sys.stdout.flush()
