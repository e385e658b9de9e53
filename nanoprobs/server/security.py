"""
What the server refuses before any route sees a request, and the headers every answer carries.

- Host: exactly one, parsed as host[:port] (400 otherwise); on a loopback bind only 127.0.0.1, localhost
  or [::1] are served (403): a web page reaching the app through DNS rebinding names its own host.
- Origin: when a request has one, it must be the server's own, http://<Host> (403): a page of another
  site cannot make the model work for it, not even with a request a browser sends without a preflight.
- A request body: Content-Type exactly application/json (charset=utf-8 at most; 415), so a cross-site
  form or text/plain post is refused; at most max_body bytes (413), all of them within timeout seconds
  (408), so a half-sent body does not hold a connection forever.
- Every answer: the page's Content-Security-Policy, no framing, nosniff, no referrer, no caching.
Errors are JSON: {"error": "message"} on /api and the page, OpenAI's {"error": {"message", ...}} on /v1.
"""
import asyncio
import json
import re

HOST = re.compile(r'(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?')
LOOPBACK_NAMES = ('127.0.0.1', 'localhost', '::1')
BODY_METHODS = (b'POST', b'PUT', b'PATCH', b'DELETE')


def error_payload(path, status, message):
    """The JSON of an error answer: OpenAI's shape under /v1, {"error": message} elsewhere."""
    if path.startswith('/v1/') or path == '/v1':
        kind = 'invalid_request_error' if status < 500 else 'server_error'
        return dict(error=dict(message=message, type=kind, param=None, code=None))
    return dict(error=message)


def parse_host(value):
    """(name, port or None) of a Host header, or None when it is not host[:port]."""
    m = HOST.fullmatch(value)
    if not m:
        return None
    port = m.group('port')
    if port is not None and not 0 < int(port) < 65536:
        return None
    return (m.group('v6') or m.group('name')).lower(), port


def json_content_type(value):
    """Whether a Content-Type header says exactly JSON: application/json, optionally ; charset=utf-8."""
    media, *params = [p.strip().lower() for p in value.split(';')]
    return media == 'application/json' and all(p.replace(' ', '') in ('charset=utf-8', 'charset="utf-8"')
                                               for p in params)


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class Guard:
    """ASGI middleware: the checks above, then the app with the body read (a replay of it)."""

    def __init__(self, app, local_only=True, policy="default-src 'none'", max_body=1 << 20, timeout=10.0):
        self.app, self.local_only, self.max_body, self.timeout = app, local_only, max_body, timeout
        self.headers = [(b'content-security-policy', (policy + "; frame-ancestors 'none'").encode()),
                        (b'x-content-type-options', b'nosniff'), (b'referrer-policy', b'no-referrer'),
                        (b'cache-control', b'no-store')]

    def check_head(self, scope):
        """The request's Host (the header's text) once its head passes; else raises Refused."""
        hs = [(k, v) for k, v in scope['headers']]
        hosts = [v.decode('latin-1') for k, v in hs if k == b'host']
        if len(hosts) != 1:
            raise Refused(400, f"send exactly one Host header (this request has {len(hosts)})")
        host = hosts[0]
        parsed = parse_host(host)
        if parsed is None:
            raise Refused(400, f"the Host header {host[:80]!r} is not host[:port]")
        if self.local_only and parsed[0] not in LOOPBACK_NAMES:
            raise Refused(403, f"Host {parsed[0][:60]!r} is not this machine: open the app at http://127.0.0.1")
        origins = [v.decode('latin-1') for k, v in hs if k == b'origin']
        own = f"{scope.get('scheme', 'http')}://{host}".lower()
        if any(o.lower() != own for o in origins):
            raise Refused(403, f"requests from {origins[0][:80]!r} are refused: only this server's own page "
                               f"({own}) may use the API from a browser")
        return host

    async def read_body(self, scope, receive):
        """The whole request body, checked: JSON, within max_body bytes and timeout seconds."""
        hs = dict(scope['headers'])
        if not json_content_type(hs.get(b'content-type', b'').decode('latin-1')):
            raise Refused(415, "send the request body as JSON with Content-Type: application/json")
        length = hs.get(b'content-length')
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise Refused(413, f"the request body has {int(length)} bytes; at most {self.max_body}")
        chunks, n = [], 0

        async def read():
            nonlocal n
            while True:
                m = await receive()
                if m['type'] == 'http.disconnect':
                    raise Refused(499, "the client went away")
                chunks.append(m.get('body', b''))
                n += len(chunks[-1])
                if n > self.max_body:
                    raise Refused(413, f"the request body has more than {self.max_body} bytes")
                if not m.get('more_body', False):
                    return
        try:
            await asyncio.wait_for(read(), self.timeout)
        except asyncio.TimeoutError:
            raise Refused(408, f"the request body did not arrive within {self.timeout:g} s") from None
        return b''.join(chunks)

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)

        async def send_secured(message):
            if message['type'] == 'http.response.start':
                names = {k.lower() for k, _ in message.get('headers', [])}
                message = dict(message, headers=list(message.get('headers', []))
                               + [(k, v) for k, v in self.headers if k not in names])
            await send(message)

        try:
            self.check_head(scope)
            body = None
            if scope['method'].encode() in BODY_METHODS:
                body = await self.read_body(scope, receive)
        except Refused as e:
            if e.status == 499:
                return
            data = json.dumps(error_payload(scope['path'], e.status, e.message), ensure_ascii=False,
                              separators=(',', ':')).encode()
            await send_secured({'type': 'http.response.start', 'status': e.status,
                                'headers': [(b'content-type', b'application/json'),
                                            (b'content-length', str(len(data)).encode()),
                                            (b'connection', b'close')]})
            await send_secured({'type': 'http.response.body', 'body': data, 'more_body': False})
            return
        if body is None:
            return await self.app(scope, receive, send_secured)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {'type': 'http.request', 'body': body, 'more_body': False}
            return await receive()  # then the ASGI server's: http.disconnect when the client goes
        await self.app(scope, replay, send_secured)
