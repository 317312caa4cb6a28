"""Loopback HTTP test doubles: a small server base and a fake of the transformer's v1 ``:predict``
endpoint, for client-side tests."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from typing import Callable, Mapping

#: ``answer(headers, image_bytes) -> (status, JSON document[, response headers])``
Answer = Callable[[Mapping[str, str], bytes], tuple]


class LoopbackServer(http.server.ThreadingHTTPServer):
    """A real HTTP server on a free loopback port, serving ``handler`` from a daemon thread from
    construction until :meth:`close` (set the subclass's own attributes before ``__init__`` here)."""

    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, doc,
              headers: Mapping[str, str] | None = None) -> None:
    """Answer ``handler``'s request with ``status`` and the JSON document ``doc`` (plus ``headers``)."""
    raw = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(raw)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(raw)


class FakeTransformer(LoopbackServer):
    """Serves ``POST /v1/models/<model>:predict`` on a free loopback port from ``answer``.

    ``requests`` records ``{"path", "headers", "body", "image"}`` of every request (in arrival order).
    """

    def __init__(self, answer: Answer):
        self.answer = answer
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        super().__init__(_Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        data = base64.b64decode(body["instances"][0]["image_bytes"]["b64"])
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server._lock:
            self.server.requests.append({"path": self.path, "headers": headers, "body": body, "image": data})
        status, doc, *extra = self.server.answer(headers, data)
        send_json(self, status, doc, extra[0] if extra else None)
