"""The demo's webhook receiver: where the demo policy's approval notifications go.

A plain HTTP server on 127.0.0.1 in a thread of the demo process, doing what a real
receiver must: check `X-Authz-Signature` over the timestamp and the raw body with the
shared secret (`notify.signing.verify`, which also refuses a stale timestamp), answer 401
to anything that fails and 200 otherwise. Every delivery is kept with the outcome of that
check, so the tour prints each event at the step that caused it, and would print a forged
one as such. Receivers deduplicate on `event_id`; so does this one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz_server.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from authz_server.tools.stack import LOOPBACK

__all__ = ["DemoReceiver", "Notification"]

_MAX_BODY = 64 * 1024
SIGNED_HEADERS = (TIMESTAMP_HEADER, SIGNATURE_HEADER)


@dataclass(frozen=True)
class Notification:
    """One delivery: the event, and whether its signature checked out."""

    body: dict[str, Any]
    signature_ok: bool

    @property
    def type(self) -> str:
        return str(self.body.get("type", "?"))

    @property
    def approval_id(self) -> str:
        return str(self.body.get("approval_id", ""))

    def describe(self) -> str:
        """One line for the tour: what happened, to what, and the signature check."""
        body = self.body
        line = f"{self.type}: {body.get('method')} {body.get('host')}{body.get('path')}"
        line += f" by {body.get('requester')}"
        if body.get("decided_by"):
            line += f", decided by {body['decided_by']}"
        line += "; signature verified" if self.signature_ok else "; BAD SIGNATURE"
        if self.type == "pending" and body.get("console_url"):
            line += f"\n     link: {body['console_url']}"
        return line


class DemoReceiver:
    """Receives notifications on `url` until `stop()`; `wait_for` picks one out."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._received: list[Notification] = []
        self._seen: set[str] = set()
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/hook"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def wait_for(self, event: str, approval_id: str, timeout: float = 10.0) -> Notification | None:
        """The first delivery of `event` about `approval_id`, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for notification in self._received:
                    if (notification.type, notification.approval_id) == (event, approval_id):
                        return notification
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def _keep(self, body: dict[str, Any], signature_ok: bool) -> None:
        with self._changed:
            event_id = str(body.get("event_id"))
            if signature_ok and event_id in self._seen:
                return  # a retried delivery of an event already kept
            self._seen.add(event_id)
            self._received.append(Notification(body, signature_ok))
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the method name http.server dispatches to
                length_text = self.headers.get("Content-Length") or ""
                length = int(length_text) if length_text.isdigit() else 0
                if not 0 < length <= _MAX_BODY:
                    self.send_response(413 if length else 411)
                    self.end_headers()
                    return
                raw = self.rfile.read(length)
                # Message.get looks names up case-insensitively, as `verify` requires.
                signed = {name: self.headers.get(name, "") for name in SIGNED_HEADERS}
                ok = verify(receiver._secret, signed, raw, time.time())
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"type": "unreadable"}
                receiver._keep(body if isinstance(body, dict) else {}, ok)
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # the tour prints what matters

        return Handler
