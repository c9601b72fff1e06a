"""Real viewers as test peers: Orthanc with DICOMweb, the OHIF build, headless Chromium.

* :class:`DicomWebOrthanc` - the Debian ``orthanc`` with its ``orthanc-dicomweb`` plugin,
  private storage, no authentication, on free ports of 127.0.0.1.
* :class:`OhifServer` - the OHIF Viewer build from npm (``make ohif`` puts it in
  ``.cache/ohif/``) served by a small HTTP server that also proxies ``/dicom-web/`` to
  Orthanc, so the viewer and its data are one origin (Orthanc sends no CORS headers),
  writes an ``app-config.js`` pointing at that root and answers OHIF's client-side routes
  (``/viewer?...``) with ``index.html``.
* :class:`Chromium` - headless Chromium driven through the DevTools protocol over
  ``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3 and 4), so no
  websocket client is needed; it records console messages and uncaught exceptions.

A missing peer raises (the test fails); nothing here skips.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onfh_dlr.broker import free_port

REPO = Path(__file__).resolve().parents[1]
OHIF_VERSION = "3.13.2"
OHIF_DIST = REPO / ".cache" / "ohif" / OHIF_VERSION / "package" / "dist"
_DICOMWEB_PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


class PageError(RuntimeError):
    """A page expression threw in the browser."""


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ohif_dist() -> Path:
    """The OHIF build's ``dist`` directory; raises when ``make ohif`` has not run."""
    if not (OHIF_DIST / "index.html").is_file():
        raise RuntimeError(f"the OHIF Viewer {OHIF_VERSION} build is missing: run `make ohif`")
    return OHIF_DIST


def dicomweb_plugin() -> Path:
    """Orthanc's DICOMweb plugin library (Debian ``orthanc-dicomweb``)."""
    for directory in _DICOMWEB_PLUGIN_DIRS:
        found = directory / "libOrthancDicomWeb.so"
        if found.is_file():
            return found
    raise RuntimeError("Orthanc's DICOMweb plugin (orthanc-dicomweb) is missing: make system-deps")


class DicomWebOrthanc:
    """A private Orthanc with the DICOMweb plugin at ``/dicom-web/``."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("Orthanc")
        if binary is None:
            raise RuntimeError("Orthanc (Debian package orthanc) is required: make system-deps")
        self.http_port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "ONFH_VIEWER_TEST",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.http_port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log_path = root / "orthanc.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=self._log, stderr=self._log
        )
        _wait(self._up, 60, "Orthanc's DICOMweb root")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/dicom-web/studies", timeout=5):
                return True
        except OSError:
            return False

    def upload(self, path: Path) -> None:
        """Store one DICOM file through the REST API."""
        request = urllib.request.Request(f"{self.url}/instances", data=path.read_bytes())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc refused {path}: {answer}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _app_config(dicomweb_root: str) -> str:
    """OHIF's ``window.config`` with one DICOMweb data source (Orthanc through the proxy)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (test)",
            "name": "orthanc",
            "wadoUriRoot": dicomweb_root,
            "qidoRoot": dicomweb_root,
            "wadoRoot": dicomweb_root,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        # A headless GPU-less browser renders on the CPU: no modal about it.
        "showCPUFallbackMessage": False,
        "showWarningMessageForCrossOrigin": False,
        "showLoadingIndicator": False,
        "strictZSpacingForVolumeViewport": True,
        "showErrorDetails": "always",
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class OhifServer:
    """The OHIF build plus a same-origin proxy to Orthanc's DICOMweb root."""

    def __init__(self, dist: Path, orthanc: DicomWebOrthanc) -> None:
        self.port = free_port()
        config = _app_config(f"http://127.0.0.1:{self.port}/dicom-web").encode()
        upstream_port = orthanc.http_port

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(dist), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request would drown the test's output

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith("/dicom-web/"):
                    self._proxy()
                elif path == "/app-config.js":
                    self._send(200, "application/javascript", config)
                elif (dist / path.lstrip("/")).is_file():
                    super().do_GET()
                else:
                    # A client-side route of the single-page app.
                    self._send(200, "text/html", (dist / "index.html").read_bytes())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self) -> None:
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")
                }
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() in ("content-type",):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                connection.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def viewer_url(self, study_uid: str) -> str:
        return f"http://127.0.0.1:{self.port}/viewer?StudyInstanceUIDs={study_uid}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class ConsoleEntry:
    """One console message or uncaught exception of the page."""

    level: str
    text: str


def _above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("headless Chromium is required (Debian package chromium): make system-deps")


class Chromium:
    """Headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, profile: Path, width: int = 1600, height: int = 1000) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        # Chromium reads commands from fd 3 and writes answers and events to fd 4.
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Above 4, so that moving them to 3 and 4 cannot overwrite one with the other.
        to_browser_r, from_browser_w = (_above_4(to_browser_r), _above_4(from_browser_w))
        self._log = (profile / "chromium.log").open("wb")
        # bash (dash takes one-digit fds only) moves the pipe ends to fds 3 and 4 for
        # Chromium and closes the originals.
        redirect = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        redirect += f" {to_browser_r}<&- {from_browser_w}>&-"
        self.process = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                redirect,
                chromium_binary(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--enable-unsafe-swiftshader",
                "--no-first-run",
                "--mute-audio",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._answers: dict[int, dict[str, Any]] = {}
        self._answered = threading.Condition(self._lock)
        self.console: list[ConsoleEntry] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=self.session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=self.session,
        )

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._answered.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                self._answers[int(message["id"])] = message
                self._answered.notify_all()
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
            )
            self.console.append(ConsoleEntry(params["type"], text))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(ConsoleEntry("exception", str(text)))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(ConsoleEntry(f"log-{entry['level']}", str(entry["text"])))

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result (raise on a protocol error)."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise RuntimeError(f"Chromium did not answer {method}")
                self._answered.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=self.session)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """The JSON value of a page expression (awaited when it is a promise)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise PageError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a page expression until it is truthy; return its value."""
        found: list[Any] = []

        def ready() -> bool:
            # Between a navigation and the new document's first parse the page has no
            # body yet, so an expression can throw; that is "not yet", not a failure.
            try:
                value = self.evaluate(expression)
            except PageError:
                return False
            if value:
                found.append(value)
            return bool(value)

        _wait(ready, timeout, what)
        return found[0]

    def double_click(self, element: str) -> None:
        """Double-click the centre of the element a page expression gives, as a user does."""
        box = self.evaluate(
            f"(() => {{ const r = ({element}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = float(box[0]), float(box[1])
        self.call(
            "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=self.session
        )
        for count in (1, 2):
            for kind in ("mousePressed", "mouseReleased"):
                self.call(
                    "Input.dispatchMouseEvent",
                    {"type": kind, "x": x, "y": y, "button": "left", "clickCount": count},
                    session=self.session,
                )

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=self.session)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


__all__ = [
    "OHIF_DIST",
    "OHIF_VERSION",
    "Chromium",
    "ConsoleEntry",
    "DicomWebOrthanc",
    "OhifServer",
    "chromium_binary",
    "dicomweb_plugin",
    "ohif_dist",
]
