"""A stand-in Kubernetes API server for the PyTorchJob custom resource, on 127.0.0.1.

No cluster is reachable here, so the in-pipeline launcher is driven through the real
``kubernetes`` client (``CustomObjectsApi`` on an ``ApiClient`` pointed at this server): the URLs,
JSON bodies, ``V1DeleteOptions`` and the ``ApiException``s the launcher handles are the client's
own. Only what the launcher calls is served: create, get and delete of ``pytorchjobs`` in one API
group, answering like the API server does (201/200 with the object, 404 NotFound and 409
AlreadyExists as ``Status`` objects). Each job follows a script of status conditions, one step per
GET, as the Training Operator would write them; a deleted job lingers for ``linger`` GETs with a
``deletionTimestamp``, as Kubernetes' asynchronous deletion does.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Callable
from typing import Any

PATH = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs(?:/(?P<name>[^/?]+))?")


def condition(kind: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": kind, "message": message}


RUNNING = [condition("Created"), condition("Running")]


def status(kind: str, message: str = "") -> dict[str, Any]:
    """The ``status`` block of a job in state ``kind`` (Created, Running, Succeeded, Failed)."""
    if kind == "Created":
        return {"conditions": [condition("Created")]}
    if kind == "Running":
        return {"conditions": list(RUNNING)}
    return {"conditions": [*RUNNING[:1], {**RUNNING[1], "status": "False"}, condition(kind, message)]}


class FakeApiServer:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.scripts: dict[str, list[str]] = {}  # per job name: the states its GETs step through
        self.calls: list[tuple[str, str]] = []
        self.refuse_create: int | None = None  # e.g. 403: the service account lacks RBAC
        self.linger = 1  # GETs a deleted job still answers (with deletionTimestamp)
        self.on_state: Callable[[str, str], None] = lambda name, state: None
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                size = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(size) or b"{}")

            def do_POST(self) -> None:
                with outer.lock:
                    self._send(*outer.create(self._route(), self._body()))

            def do_GET(self) -> None:
                with outer.lock:
                    self._send(*outer.get(self._route()))

            def do_DELETE(self) -> None:
                with outer.lock:
                    self._send(*outer.delete(self._route(), self._body()))

            def _route(self) -> tuple[str, str | None]:
                m = PATH.match(self.path)
                assert m, f"unexpected API path {self.path}"
                return m["ns"], m["name"]

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def api(self) -> Any:
        """A real ``kubernetes.client.CustomObjectsApi`` talking to this server."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.CustomObjectsApi(client.ApiClient(cfg))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the API ------------------------------------------------------------------------------

    @staticmethod
    def problem(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def put(self, name: str, state: str, script: list[str] | None = None) -> None:
        """A job that already exists (left by an earlier attempt of the task)."""
        self.jobs[name] = {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": "ns"},
            "status": status(state),
        }
        self.scripts[name] = list(script or [state])

    def create(self, route: tuple[str, str | None], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if self.refuse_create:
            return self.problem(self.refuse_create, "Forbidden", "pytorchjobs.kubeflow.org is forbidden")
        if name in self.jobs:
            return self.problem(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists')
        job = {
            **body,
            "metadata": {**body["metadata"], "namespace": route[0], "uid": f"uid-{len(self.calls)}"},
        }
        job["status"] = {}
        self.jobs[name] = job
        self.scripts.setdefault(name, ["Running", "Succeeded"])
        return 201, job

    def get(self, route: tuple[str, str | None]) -> tuple[int, dict[str, Any]]:
        name = route[1] or ""
        self.calls.append(("get", name))
        job = self.jobs.get(name)
        if job is None:
            return self.problem(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            meta["lingering"] -= 1
            if meta["lingering"] < 0:
                del self.jobs[name]
                self.scripts.pop(name, None)
                return self.problem(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            return 200, job
        script = self.scripts[name]
        state = script.pop(0) if len(script) > 1 else script[0]
        if job["status"] != status(state):
            job["status"] = status(state, "OOMKilled" if state == "Failed" else "")
            self.on_state(name, state)
        return 200, job

    def delete(self, route: tuple[str, str | None], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = route[1] or ""
        self.calls.append(("delete", name))
        job = self.jobs.get(name)
        if job is None:
            return self.problem(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        assert body.get("propagationPolicy") == "Background", body
        job["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
        job["metadata"]["lingering"] = self.linger
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
