"""The official Python `kubernetes` client against Skiff, with client-side validation on.

Run by tests/python_client.rs with KUBECONFIG pointing at a running `skiff apiserver`.
Prints 'python client: ok' on success; any failure raises.
"""
import os
import threading

from kubernetes import client, config, watch

config.load_kube_config(os.environ["KUBECONFIG"])
conf = client.Configuration.get_default_copy()
assert conf.client_side_validation, "the client validates models"
core = client.CoreV1Api()
NS = "py-" + str(os.getpid())

print("version:", client.VersionApi().get_code().git_version)
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
names = [n.metadata.name for n in core.list_namespace().items]
assert NS in names, names


def pod(name, label):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": label}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="busybox:1.36", command=["sleep", "60"])]
        ),
    )


events = []


# The watch starts from this list's resourceVersion, so it sees every change after it
# however late the thread gets going.
start_rv = core.list_namespaced_pod(NS).metadata.resource_version


def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, NS, resource_version=start_rv, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED" and ev["object"].metadata.name == "b":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
core.create_namespaced_pod(NS, pod("a", "web"))
core.create_namespaced_pod(NS, pod("b", "db"))
pods = core.list_namespaced_pod(NS)
assert sorted(p.metadata.name for p in pods.items) == ["a", "b"], pods
assert [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector="app=web").items] == ["a"]

patched = core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"patched": "yes"}}})
assert patched.metadata.labels["patched"] == "yes", patched.metadata.labels
assert patched.metadata.labels["app"] == "web"

core.delete_namespaced_pod("a", NS)
core.delete_namespaced_pod("b", NS)
t.join(15)
assert ("ADDED", "a") in events and ("ADDED", "b") in events, events
assert ("MODIFIED", "a") in events, events
assert ("DELETED", "b") in events, events
try:
    core.read_namespaced_pod("a", NS)
    raise AssertionError("pod a should be gone")
except client.exceptions.ApiException as e:
    assert e.status == 404, e
# replace_namespaced_* with a body that names no namespace: the URL's is used.
cm = core.create_namespaced_config_map(NS, {"metadata": {"name": "r1"}, "data": {"a": "1"}})
body = {"metadata": {"name": "r1", "resourceVersion": cm.metadata.resource_version}, "data": {"a": "2"}}
replaced = core.replace_namespaced_config_map("r1", NS, body)
assert replaced.metadata.namespace == NS and replaced.data == {"a": "2"}, replaced
# Another namespace in the body: 400, nothing written.
try:
    core.replace_namespaced_config_map("r1", NS, {"metadata": {"name": "r1", "namespace": "kube-system"}, "data": {"a": "3"}})
    raise AssertionError("a mismatched namespace must be refused")
except client.exceptions.ApiException as e:
    assert e.status == 400, e
# A uid in the body is a precondition: 409 when it is another object's.
try:
    core.replace_namespaced_config_map("r1", NS, {"metadata": {"name": "r1", "uid": "00000000-0000-0000-0000-000000000001"}, "data": {"a": "4"}})
    raise AssertionError("a stale uid must be refused")
except client.exceptions.ApiException as e:
    assert e.status == 409 and "Precondition failed: UID in precondition" in e.body, e
assert core.read_namespaced_config_map("r1", NS).data == {"a": "2"}
# A Secret's stringData is merged into data and never stored.
secret = core.create_namespaced_secret(NS, {"metadata": {"name": "s1"}, "stringData": {"user": "admin"}, "data": {"old": "eA=="}})
assert secret.data == {"old": "eA==", "user": "YWRtaW4="}, secret.data
assert secret.string_data is None, secret.string_data
core.delete_namespaced_config_map("r1", NS)
core.delete_namespaced_secret("s1", NS)
# deletecollection: by label, dry run first (deletes nothing), then for real.
for i in range(3):
    core.create_namespaced_config_map(NS, {"metadata": {"name": f"dc{i}", "labels": {"batch": "x" if i < 2 else "y"}}})
core.delete_collection_namespaced_config_map(NS, label_selector="batch=x", dry_run="All")
assert len(core.list_namespaced_config_map(NS, label_selector="batch").items) == 3
core.delete_collection_namespaced_config_map(NS, label_selector="batch=x")
left = [c.metadata.name for c in core.list_namespaced_config_map(NS, label_selector="batch").items]
assert left == ["dc2"], left
# A YAML body, and a YAML answer, as kube-apiserver takes and gives them (the client's raw
# call: its typed methods send JSON).
api = client.ApiClient()
cfg = api.configuration
url = f"{cfg.host}/api/v1/namespaces/{NS}/configmaps"
token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
headers = {"Content-Type": "application/yaml", "Accept": "application/yaml"}
if token:
    headers["Authorization"] = token
resp = api.call_api("POST", url, header_params=headers,
                    body="apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  greeting: hello\n")
resp.read()
assert resp.status == 201, (resp.status, resp.data)
assert resp.headers["Content-Type"].startswith("application/yaml"), resp.headers
text = resp.data.decode()
assert "greeting: hello" in text and "name: from-yaml" in text, text
assert core.read_namespaced_config_map("from-yaml", NS).data == {"greeting": "hello"}
resp = api.call_api("POST", url, header_params=headers, body="data: [unclosed\n")
resp.read()
assert resp.status == 400, (resp.status, resp.data)
print("python client: ok")
