"""
A live local app over one model: generate, score and branch text in the browser, every probability shown.

    python serve.py --init_from=gpt2                 # then open http://127.0.0.1:8000
    python serve.py --out_dir=out-children --port=8001

It loads the model once (sample.py's loading settings) and serves the page of html_report.py (the same
page as sample.py's report) and a small JSON API, usable from a notebook or a script too:
    POST /api/generate     {"prompt": "Once upon a time", "max_new_tokens": 50, "temperature": 0.8, ...}
    POST /api/score        {"prompt": "The capital of France is", "response": " Paris"}
    POST /api/temperatures {"ids": [464, 3139], "temperatures": [0.5, 1, 2]}
    POST /api/inspect      {"ids": [464, 3139, 286], "position": 2}    (logit lens and attention of a token)
    POST /api/attribute    {"ids": [464, 3139, 286], "position": 2, "method": "ig"}
    GET  /api/info
(request and response fields: docs/browser.md). Requests are served one at a time
on the model (a lock; the others wait, none is lost). The server reads and writes no files, binds
127.0.0.1 unless told otherwise, and answers bad input with a 400 and {"error": "..."}.
"""
import json
import os
import sys
import threading
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from nanoprobs import html_report, inspector
from nanoprobs import load
from configurator import configure, run_main
from nanoprobs.decoding import Sample, decode, score, under_temperatures
from nanoprobs.sampling import check_sampling, make_generator
from nanoprobs.formatting import format_prob, sampling_text

# -----------------------------------------------------------------------------
init_from: str = 'resume'  # 'resume' (from out_dir), a gpt2 variant ('gpt2-xl'), a Hugging Face folder, a .pt
out_dir: str = 'out'  # ignored if init_from is not 'resume'
device: str = 'auto'  # 'auto' (cuda, then mps, then cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype: str = 'auto'  # 'auto' (bfloat16 or float16 on CUDA, else float32), 'float32', 'bfloat16', 'float16'
compile: bool = False  # torch.compile the model (CUDA only)
seed: int = 1337  # the default seed of a request
host: str = '127.0.0.1'  # anything else lets other machines use the model (a warning is printed)
port: int = 8000  # 0 = any free port
start: str = 'Once upon a time'  # the prompt the page starts with
temperature: float = 0.8  # the page's default sampling settings (each request gives its own)
top_k: int | None = 200
top_p: float = 1.0
max_new_tokens: int = 50
top: int = 10  # candidates per token shown in the popover
max_prompt_chars: int = 20000  # longer prompts (or responses) are refused with a 400
max_tokens_limit: int = 1000  # the largest max_new_tokens a request may ask for
# -----------------------------------------------------------------------------

MAX_BODY = 1 << 20  # bytes of a request body
MAX_TOP = 50
MAX_TEMPERATURES = 12
LOOPBACK = ('127.0.0.1', 'localhost', '::1')


@dataclass(frozen=True)
class Settings:
    """What the page starts with, what a request that names nothing gets, and the limits of a request
    (serve.py's flags of the same names; settings() reads them)."""
    start: str
    temperature: float
    top_k: int | None
    top_p: float
    max_new_tokens: int
    seed: int
    top: int
    max_prompt_chars: int
    max_tokens_limit: int

    def check(self):
        """Refuse settings no request could use, as one line naming the flag."""
        check_sampling(self.temperature, self.top_k, self.top_p)
        if not 1 <= self.top <= MAX_TOP:
            raise ValueError(f"--top={self.top} must be in [1, {MAX_TOP}]")
        if self.max_tokens_limit < 1 or self.max_prompt_chars < 1:
            raise ValueError("--max_tokens_limit and --max_prompt_chars must be >= 1")
        if not 0 <= self.max_new_tokens <= self.max_tokens_limit:
            raise ValueError(f"--max_new_tokens={self.max_new_tokens} must be in [0, --max_tokens_limit="
                             f"{self.max_tokens_limit}]")
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"--seed={self.seed} must be in [0, 2**63)")
        return self

    @property
    def defaults(self):
        return dict(start=self.start, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens, seed=self.seed)

    @property
    def limits(self):
        return dict(max_prompt_chars=self.max_prompt_chars, max_new_tokens=self.max_tokens_limit)


def settings(**changes):
    """Settings from this script's flags (their defaults, or what configure() set), with changes."""
    return Settings(**{f.name: changes.get(f.name, globals()[f.name]) for f in fields(Settings)})


class BadRequest(ValueError):
    """Bad input from a client: answered with a 400 and {"error": message}."""


def stream_steps(model, ctx, prompt, n, temperature=1.0, top_k=None, top_p=None, k=10, stop_token=None,
                 generator=None):
    """Yield one decoding.Step per new token as it is drawn: decoding.generate()'s own loop (decode) for
    one row, so the page can show each token at once and the numbers are generate()'s."""
    device = model.lm_head.weight.device
    idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    with ctx:
        for _, (*_, steps) in decode(model, idx, n, temperature, top_k, top_p, stop_token, k, generator):
            yield steps[0]


def as_sample(prompt, steps, stopped=False):
    """A decoding.Sample from streamed Steps (float64 sums, as generate() returns them)."""
    lps = torch.tensor([s.chosen_logprob for s in steps], dtype=torch.float64)
    slps = torch.tensor([s.chosen_sample_logprob for s in steps], dtype=torch.float64)
    ranks = torch.tensor([s.chosen_rank for s in steps], dtype=torch.long)
    return Sample(prompt=list(prompt), tokens=[s.chosen for s in steps], logprobs=lps, sample_logprobs=slps,
                  ranks=ranks, steps=list(steps), stopped=stopped)


# -----------------------------------------------------------------------------
# reading requests

def field(body, name, kind, default, lo=None, hi=None, hint=''):
    """body[name] checked: of type kind (int/float/bool/list/str), within [lo, hi]; default when absent/null.
    hint: said after a value out of range (e.g. which serve.py setting raises the limit)."""
    v = body.get(name, default)
    if v is None:
        return default
    ok = (isinstance(v, bool) if kind is bool else
          isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
          isinstance(v, int) and not isinstance(v, bool) if kind is int else isinstance(v, kind))
    if not ok:
        raise BadRequest(f"{name} must be {kind.__name__ if kind is not float else 'a number'}, "
                         f"got {v!r:.60}")
    if kind in (int, float) and ((lo is not None and v < lo) or (hi is not None and v > hi) or v != v):
        raise BadRequest(f"{name}={v!r} is outside [{lo}, {hi}]{hint}")
    return v


class App:
    """The model and what the API does with it; one request at a time on the model (self.lock)."""

    def __init__(self, L, settings: Settings):
        self.L, self.lock = L, threading.Lock()
        self.top = settings.top
        self.defaults, self.limits = settings.defaults, settings.limits
        self.stopping = threading.Event()  # set on Ctrl-C: a running generation ends at its next token
        page = html_report.live_page(L.source, dict(device=L.device, dtype=L.dtype), self.defaults,
                                     self.limits, eot=L.tok.eot)
        self.page, self.policy = html_report.render(page, live=True)

    def ids(self, body, name, text_name, required=True):
        """Token ids from body[name] (a list of ids) or body[text_name] (text, encoded)."""
        V = self.L.model.config.vocab_size
        if body.get(name) is not None:
            ids = body[name]
            if not isinstance(ids, list) or any(isinstance(t, bool) or not isinstance(t, int)
                                                or not 0 <= t < V for t in ids):
                raise BadRequest(f"{name} must be a list of token ids in [0, {V})")
            if len(ids) > self.limits['max_prompt_chars']:
                raise BadRequest(f"{name} has {len(ids)} tokens; at most {self.limits['max_prompt_chars']}")
            return list(ids)
        text = body.get(text_name, '' if not required else None)
        if not isinstance(text, str):
            raise BadRequest(f"give {text_name} (text) or {name} (a list of token ids)")
        if len(text) > self.limits['max_prompt_chars']:
            raise BadRequest(f"{text_name} has {len(text)} characters; this server takes at most "
                             f"{self.limits['max_prompt_chars']} (serve.py --max_prompt_chars)")
        return self.L.tok.encode(text)

    def sampling(self, body):
        t = field(body, 'temperature', float, 1.0, 0, 1e6)
        k = field(body, 'top_k', int, None, 0)
        p = field(body, 'top_p', float, 1.0)
        try:
            check_sampling(t, k, p)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return t, k or None, p

    def generate(self, body):
        """Yield the messages of a generation: {"start": ...}, one {"token": ...} per token, {"done": ...}."""
        prompt = self.ids(body, 'prompt_ids', 'prompt')
        if not prompt:
            raise BadRequest("the prompt is empty: the model needs at least one token to continue")
        prefix = self.ids(body, 'prefix_ids', 'prefix', required=False)
        n = field(body, 'max_new_tokens', int, self.defaults['max_new_tokens'], 0,
                  self.limits['max_new_tokens'],
                  " (this server's limit; serve.py --max_tokens_limit raises it)")
        t, k, p = self.sampling(body)
        kk = field(body, 'top', int, self.top, 1, MAX_TOP)
        sd = field(body, 'seed', int, self.defaults['seed'], 0, 2 ** 63 - 1)
        eot = self.L.tok.eot if field(body, 'stop_at_eot', bool, False) else None
        m, tok, L = self.L.model, self.L.tok, self.L
        with self.lock:
            yield dict(start=dict(prompt=tok.decode(prompt), prompt_ids=prompt,
                                  prompt_pieces=html_report.pieces(tok, prompt), sampling=sampling_text(t, k, p)))
            steps = []
            if prefix:  # the response starts with these tokens (a branch): scored, then continued
                with L.ctx:
                    steps = score(m, [prompt], [prefix], t, k, p, details=kk)[0].steps
                for s in steps:
                    yield dict(token=html_report.token_entry(tok, s.chosen, s.chosen_logprob,
                                                             s.chosen_sample_logprob, s.chosen_rank, s))
            stopped = eot is not None and bool(prefix) and prefix[-1] == eot
            gen = make_generator(L.device, sd)
            for s in ([] if stopped else stream_steps(m, L.ctx, prompt + prefix, n, t, k, p, kk, eot, gen)):
                if self.stopping.is_set():  # the server is stopping: no new forward pass
                    break
                steps.append(s)
                stopped = s.chosen == eot
                yield dict(token=html_report.token_entry(tok, s.chosen, s.chosen_logprob,
                                                         s.chosen_sample_logprob, s.chosen_rank, s))
            smp = as_sample(prompt, steps, stopped)
            yield dict(done=dict(text=tok.decode(smp.tokens), tokens=smp.tokens, logprob=num(smp.logprob),
                                 sample_logprob=num(smp.sample_logprob),
                                 totals=html_report.sample_totals(smp, sampling_text(t, k, p)),
                                 **html_report.text_fields(tok, prompt, smp.tokens, smp.logprobs.tolist(),
                                                           smp.ranks.tolist())))

    def score(self, body):
        prompt = self.ids(body, 'prompt_ids', 'prompt')
        response = self.ids(body, 'response_ids', 'response')
        if not prompt or not response:
            raise BadRequest("give a non-empty prompt and a non-empty response to score")
        t, k, p = self.sampling(body)
        kk = field(body, 'top', int, self.top, 1, MAX_TOP)
        with self.lock, self.L.ctx:
            s = score(self.L.model, [prompt], [response], t, k, p, details=kk)[0]
        return dict(doc=html_report.sample_doc(s, self.L.tok, 'scored response',
                                               sampling_text(t, k, p), forced=True),
                    logprob=num(s.logprob))

    def temperatures(self, body):
        """The next-token distribution after ids under several temperatures (decoding.under_temperatures)."""
        ids = self.ids(body, 'ids', 'prompt')
        if not ids:
            raise BadRequest("ids is empty: give the context (token ids) whose next token is compared")
        temps = body.get('temperatures', [0, 0.5, 1, 1.5, 2])
        if not isinstance(temps, list) or not 0 < len(temps) <= MAX_TEMPERATURES:
            raise BadRequest(f"temperatures must be a list of 1 to {MAX_TEMPERATURES} numbers")
        temps = [field({'temperature': x}, 'temperature', float, None, 0, 1e6) for x in temps]
        _, k, p = self.sampling({**body, 'temperature': 1.0})
        kk = field(body, 'top', int, self.top, 1, MAX_TOP)
        with self.lock, self.L.ctx:
            order, lps, entropies = under_temperatures(self.L.model, ids, temps, k, p, kk)
        cols = []
        for tt, lp, h in zip(temps, lps, entropies):
            lp = lp.tolist()
            cols.append(dict(temperature=tt, name='greedy' if tt == 0 else f"T={tt:g}",
                             logprobs=[num(x) for x in lp], probs=[format_prob(x) for x in lp],
                             entropy=html_report.nats(h)))
        tok = self.L.tok
        title = (f"next token after \u201c…{tok.display(ids[-12:])}\u201d under each temperature"
                 f"{', ' + sampling_text(1, k, p).partition(', ')[2] if k or p < 1 else ''}")
        return dict(title=title, tokens=[dict(id=i, text=tok.token_text(i)) for i in order.tolist()], columns=cols)

    def panel(self, fn, body):
        """POST /api/inspect and /api/attribute: inspector.api_inspect / api_attribute on the model."""
        with self.lock, self.L.ctx:
            try:
                return fn(self.L.model, self.L.tok, body, self.limits['max_prompt_chars'])
            except ValueError as e:
                raise BadRequest(str(e)) from None

    def info(self):
        c = self.L.model.config
        return dict(model=self.L.source, vocab_size=c.vocab_size, block_size=c.block_size,
                    device=self.L.device, dtype=self.L.dtype, defaults=self.defaults, limits=self.limits)


def num(x):
    return html_report.num(x)


# -----------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    app = None  # set by make_server
    local_only = True  # bound to loopback: only requests naming it as Host are served
    server_version = 'nanoGPT-probs'
    sys_version = ''

    def log_message(self, fmt, *args):  # one short line per request
        print(f"{self.address_string()} {fmt % args}")

    def headers_out(self, code, ctype, length=None):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Security-Policy', self.app.policy + "; frame-ancestors 'none'")
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Referrer-Policy', 'no-referrer')
        self.send_header('Cache-Control', 'no-store')
        if length is not None:
            self.send_header('Content-Length', str(length))
        self.end_headers()

    def send_json(self, code, obj):
        data = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode('utf-8')
        self.headers_out(code, 'application/json; charset=utf-8', len(data))
        self.wfile.write(data)

    def foreign_host(self):
        """A request whose Host is not this machine's loopback name, to a server bound to loopback: a web page
        reaching the app through DNS rebinding. Answered with a 403."""
        if not self.local_only:
            return False
        host = self.headers.get('Host', '')
        name = host.split(']')[0] + ']' if host.startswith('[') else host.split(':')[0]
        if name in ('127.0.0.1', 'localhost', '[::1]'):
            return False
        self.send_json(403, dict(error=f"Host {name[:60]!r} is not this machine: "
                                       "open the app at http://127.0.0.1"))
        return True

    def do_GET(self):
        if self.foreign_host():
            return
        path = self.path.split('?', 1)[0]
        if path in ('/', '/index.html'):
            data = self.app.page.encode('utf-8')
            self.headers_out(200, 'text/html; charset=utf-8', len(data))
            self.wfile.write(data)
        elif path == '/api/info':
            self.send_json(200, self.app.info())
        else:
            self.send_json(404, dict(error=f"no such page: {path[:100]}; the app is at /"))

    def read_body(self):
        if 'application/json' not in self.headers.get('Content-Type', ''):
            raise BadRequest("send the request as JSON with Content-Type: application/json")
        try:
            n = int(self.headers.get('Content-Length', ''))
        except ValueError:
            raise BadRequest("the request needs a Content-Length") from None
        if not 0 <= n <= MAX_BODY:
            raise BadRequest(f"the request body has {n} bytes; at most {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(n).decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object, "
                             "e.g. {\"prompt\": \"Once upon a time\"}")
        return body

    def do_POST(self):
        if self.foreign_host():
            return
        path = self.path.split('?', 1)[0]
        routes = {'/api/generate': None, '/api/score': self.app.score,
                  '/api/temperatures': self.app.temperatures,
                  '/api/inspect': lambda b: self.app.panel(inspector.api_inspect, b),
                  '/api/attribute': lambda b: self.app.panel(inspector.api_attribute, b)}
        if path not in routes:
            return self.send_json(404, dict(error=f"no such API: {path[:100]} "
                                                  "(POST /api/generate, /api/score, /api/temperatures, "
                                                  "/api/inspect, /api/attribute)"))
        try:
            body = self.read_body()
            if path != '/api/generate':
                return self.send_json(200, routes[path](body))
            msgs = self.app.generate(body)
            if not field(body, 'stream', bool, False):
                return self.send_json(200, collect(msgs))
            first = next(msgs)  # input errors surface here, as a 400, before the 200 is sent
        except BadRequest as e:
            return self.send_json(400, dict(error=str(e)))
        # streaming: one JSON object per line (NDJSON), the connection closes at the end; a client that
        # goes away (the page's Stop button) ends the generation at its next token
        self.close_connection = True
        self.headers_out(200, 'application/x-ndjson; charset=utf-8')
        try:
            for m in [first]:
                self.wfile.write((json.dumps(m, ensure_ascii=False) + '\n').encode('utf-8'))
            self.wfile.flush()
            for m in msgs:
                self.wfile.write((json.dumps(m, ensure_ascii=False) + '\n').encode('utf-8'))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            msgs.close()  # releases the model lock


def collect(msgs):
    """The messages of a generation as one response: {"doc": the page's text, "text", "tokens", ...}."""
    doc, tokens = None, []
    for m in msgs:
        if 'start' in m:
            doc = dict(m['start'], title='generated', tokens=tokens)
        elif 'token' in m:
            tokens.append(m['token'])
        else:
            doc['totals'] = m['done']['totals']
            return dict(m['done'], doc=doc)


def make_server(app, host='127.0.0.1', port=8000):
    """A ThreadingHTTPServer for app (port 0: any free port; server.server_address says which)."""
    handler = type('AppHandler', (Handler,), dict(app=app, local_only=host in LOOPBACK))
    ThreadingHTTPServer.request_queue_size = 64
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    return srv


def serve_in_thread(app, host='127.0.0.1', port=0):
    """Start a server for app in a background thread (for a notebook or a test); returns it, with .url.
    Stop it with srv.shutdown(); srv.server_close()."""
    srv = make_server(app, host, port)
    srv.url = f"http://{srv.server_address[0]}:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    opts = settings().check()
    L = load.load_model(init_from, out_dir, device, dtype, compile, seed=seed)
    app = App(L, opts)
    srv = make_server(app, host, port)
    h, p = srv.server_address[:2]
    if host not in LOOPBACK:
        print(f"warning: --host={host} lets any machine that can reach this one use the model (there is no "
              "password); keep the default 127.0.0.1 unless you mean it")
    print(f"model: {L.source} on {L.device} ({L.dtype})\n"
          f"serving http://{'127.0.0.1' if h == '0.0.0.0' else h}:{p}/ "
          "(Ctrl-C stops)")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        stop(app, srv)
    srv.server_close()


def stop(app, srv, wait_s=10.0):
    """Ctrl-C: end a running generation at its next token, wait for it to release the model, and leave.
    Handler threads are daemons, so the interpreter would otherwise tear down while one is inside a torch
    op, and torch's thread pool then aborts the process ('terminate called without an active exception').
    With the model lock held no torch op runs; os._exit then leaves without the interpreter's teardown,
    which a client still connected (a daemon thread blocked in a socket) could otherwise trip too."""
    app.stopping.set()
    app.lock.acquire(timeout=wait_s)
    srv.server_close()
    print("stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    configure(globals())
    run_main(main)
