"""
The server as a process: binding the port (one-line errors), uvicorn with a request timeout, a server in a
background thread (a notebook, a test), and serving until Ctrl-C, which stops at once and exits 0.
"""
import errno
import ipaddress
import os
import socket
import sys
import threading
from dataclasses import dataclass

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from configurator import UserError
from nanoprobs.server.app import create_app

SEND_BUFFER = 256 << 10  # bytes the kernel holds for a connection (instead of growing to megabytes)
MAX_CONNECTIONS = 200  # open connections and requests at once; more get a 503 (uvicorn's limit_concurrency)


def is_loopback(host):
    """Whether host names this machine's loopback interface only (127.0.0.1, ::1, localhost)."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host, port):
    """A listening socket on host:port (port 0: any free port; sock.getsockname() says which), or a
    UserError of one line naming the flag and the fix."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"--port={port!r} must be in [0, 65535] (0 = any free port)")
    fix = "use --host=127.0.0.1 (the default: this machine only) or --host=0.0.0.0 (every interface)"
    numeric = host.replace('.', '').isdigit()
    try:
        if numeric:  # dotted numbers that are no address (256.1.1.1): no DNS lookup for them
            ipaddress.ip_address(host)
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (ValueError, OSError, UnicodeError):
        raise UserError(f"--host={host!r} is not an address or a name of this machine: {fix}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != 'nt':  # lets a restarted server bind while old connections linger (not a second server)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port={port} is in use on {host} (another serve.py?): pick another port, "
                            f"e.g. --port={port + 1 if port < 65535 else 8000}, or --port=0 for any free one") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"--host={host!r} is not an address of this machine: {fix}") from None
        if e.errno == errno.EACCES:
            raise UserError(f"--port={port}: not allowed to listen there (ports below 1024 need "
                            "administrator rights); pick a port from 1024 on, e.g. --port=8000") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    sock.setblocking(False)
    return sock


def url_of(sock):
    host, port = sock.getsockname()[:2]
    if host in ('0.0.0.0', '::'):
        host = '127.0.0.1'
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a bounded send buffer and one more timeout: a connection that has
    not sent a whole request head within request_timeout seconds of opening (or of its last answer) is
    closed, so a slow or half-sent request does not hold a connection forever. (uvicorn closes idle
    keep-alive connections, and security.Guard times the body.)"""
    request_timeout = 10.0
    _head_timer = None

    def _arm(self):
        self._disarm()
        self._head_timer = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self):
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport):
        super().connection_made(transport)
        sock = transport.get_extra_info('socket')
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # a bounded send buffer: a client that stops reading blocks its answer soon; and no Nagle delay
            # (40 ms per answer, waiting on the client's delayed ACK of the head before sending the body)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def handle_events(self):
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived: its body is Guard's to time
            self._disarm()

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)


class Server(uvicorn.Server):
    """uvicorn's server; on_signal(sig) runs first when Ctrl-C (or SIGTERM) arrives."""
    on_signal = None

    def handle_exit(self, sig, frame):
        if self.on_signal is not None:
            self.on_signal(sig)
        super().handle_exit(sig, frame)


def make_server(engine, sock, access_log=False):
    """A uvicorn Server for engine's app on the listening socket sock."""
    local = is_loopback(sock.getsockname()[0])
    protocol = type('TimedH11', (TimedH11,), dict(request_timeout=engine.settings.timeout))
    if access_log:  # one line per request; uvicorn's own notes only when something is wrong
        log_config = {**LOGGING_CONFIG, 'loggers': {**LOGGING_CONFIG['loggers'],
                                                   'uvicorn.error': {'level': 'WARNING'}}}
        logs = dict(log_config=log_config, log_level=None, access_log=True)
    else:
        logs = dict(log_config=None, log_level='warning', access_log=False)
    config = uvicorn.Config(create_app(engine, local_only=local), http=protocol, ws='none', lifespan='off',
                            loop='asyncio', proxy_headers=False, server_header=False,
                            limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5, **logs)
    return Server(config)


@dataclass
class Running:
    """A server running in a background thread: url, and stop()."""
    url: str
    engine: object
    server: Server
    thread: threading.Thread

    @property
    def port(self):
        return int(self.url.rsplit(':', 1)[1])

    def stop(self, timeout=10.0):
        """End every job at its next token, close the connections and wait for the thread."""
        self.engine.stop()
        self.server.should_exit = self.server.force_exit = True
        self.thread.join(timeout)


def serve_in_thread(engine, host='127.0.0.1', port=0):
    """Serve engine (an engine.Engine) from a background thread: for a notebook or a test. Requests
    can be sent as soon as this returns (the socket listens already). Returns a Running."""
    sock = bind(host, port)
    server = make_server(engine, sock)
    thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), name='nanoprobs-server',
                              daemon=True)
    thread.start()
    return Running(url_of(sock), engine, server, thread)


def serve_forever(engine, sock, wait_s=10.0):
    """Serve engine on sock until Ctrl-C (or SIGTERM), then exit at once with status 0.

    A running generation ends at its next token (engine.stop), and the process leaves once it has
    released the model (at most wait_s later), through os._exit: with the model lock held no torch op
    runs, and the interpreter's teardown, which a thread inside a torch op or a client still connected
    could trip ('terminate called without an active exception'), is skipped."""
    server = make_server(engine, sock, access_log=True)

    def stop_now(sig):
        engine.stop()
        engine.lock.acquire(timeout=wait_s)
        print("stopped")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    server.on_signal = stop_now
    server.run(sockets=[sock])
