"""HTTP requests from a Python plugin, through the host's wasi:http.

A plugin call is synchronous and has the instance to itself, so `request`
sends one request and waits for the whole answer, with no event loop. The
host lets a request through only to the hosts its tenant lists in
`allowed_hosts`, and bounds its time and size.

Build a plugin that uses it against one of the kit's worlds that import
wasi:http: `synchost:plugin/source-plugin-http`, `destination-plugin-http`
or `transform-plugin-http` (the kit's wit/kit.wit); `synchost plugin new
--lang python` does for sources and destinations.

    from synchost_sdk import http

    answer = http.request("GET", "http://127.0.0.1:8080/api/people",
                          headers={"accept": "application/json"})
    if answer.status == 200:
        people = answer.json()["people"]

Any status is a `Response`. A request that got no complete answer raises
`TransientError` (worth trying again: a refused connection, a timeout), or
`ConfigError` when the host refused it or the URL is wrong.
"""

import json
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from componentize_py_types import Err

from . import ConfigError, TransientError

# The largest piece of a request body written at once; the host may take less.
_CHUNK = 4096


class Response:
    """An answer: its status, headers (lower-case names) and whole body."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


# Imported with the kit, not at the first request: componentize-py snapshots
# the interpreter after the app's imports, and a component has no files to
# import a module from later.
try:
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import wasi_http_types as _types
except ImportError:  # built against a world without wasi:http
    _handler = _types = None


def _bindings():
    if _handler is None:
        raise ConfigError(
            "this plugin was built without HTTP: build it against the kit's "
            "`synchost:plugin/<kind>-plugin-http` world"
        )
    return _handler, _types


def _failure(method: str, url: str, code: Any) -> Exception:
    """The kit's error for a wasi:http error code."""
    kind = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    detail = f"{kind}: {value}" if value is not None else kind
    message = f"{method} {url}: {detail}"
    if kind == "HttpRequestDenied":
        return ConfigError(
            f"{message} (the host refused it: its host and port must be on the plugin's allowed_hosts)"
        )
    if kind in ("HttpRequestUriInvalid", "HttpRequestMethodInvalid", "ConfigurationError"):
        return ConfigError(message)
    return TransientError(message)


def request(
    method: str, url: str, headers: Optional[Dict[str, str]] = None, body: Optional[bytes] = None
) -> Response:
    """Sends one request and returns the whole response."""
    handler, types = _bindings()
    parts = urlsplit(url)
    schemes = {"http": types.Scheme_Http(), "https": types.Scheme_Https()}
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"`{url}` is not an http:// or https:// URL")
    methods = {
        "GET": types.Method_Get(),
        "POST": types.Method_Post(),
        "PUT": types.Method_Put(),
        "PATCH": types.Method_Patch(),
        "DELETE": types.Method_Delete(),
    }
    if method.upper() not in methods:
        raise ConfigError(f"HTTP method `{method}` is not one of {', '.join(methods)}")
    entries = [(name.lower(), value.encode()) for name, value in (headers or {}).items()]
    if body is not None:
        entries.append(("content-length", str(len(body)).encode()))
    outgoing = types.OutgoingRequest(types.Fields.from_list(entries))
    outgoing.set_method(methods[method.upper()])
    outgoing.set_scheme(schemes[parts.scheme])
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    try:
        sending = outgoing.body() if body is not None else None
        future = handler.handle(outgoing, None)
        if sending is not None:
            # The stream must be dropped before the body is finished.
            with sending.write() as stream:
                for at in range(0, len(body), _CHUNK):
                    stream.blocking_write_and_flush(body[at : at + _CHUNK])
            types.OutgoingBody.finish(sending, None)
        with future.subscribe() as ready:
            ready.block()
        # option<result<result<incoming-response, error-code>>>: ready,
        # not taken before, and then the request's own outcome.
        answer = future.get()
        if answer is None or isinstance(answer, Err):
            raise TransientError(f"{method} {url}: no answer")
        if isinstance(answer.value, Err):
            raise answer.value
        response = answer.value.value
        status = response.status()
        got = {}
        for name, value in response.headers().entries():
            got[name.lower()] = value.decode("latin-1")
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(65536))
                except Err as end:
                    if type(end.value).__name__ == "StreamError_Closed":
                        break
                    raise TransientError(f"{method} {url}: the answer was cut off") from None
        return Response(status, got, b"".join(chunks))
    except Err as e:
        raise _failure(method, url, e.value) from None
