"""serve.py's server and JSON API: the numbers of generate()/score(), status codes, limits, cross-site refusals,
timeouts, one request at a time, clients that go away or stall, startup errors and Ctrl-C."""
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest
import torch

import sample
import serve
from conftest import ROOT, tiny_model, write_ckpt
from nanoprobs.decoding import generate, score
from nanoprobs.formatting import format_prob
from nanoprobs.sampling import make_generator
from nanoprobs.server import Engine, serve_in_thread
from nanoprobs.server.run import bind

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def loaded(tok, model=None):
    """What load.load_model returns, for a tiny model."""
    return types.SimpleNamespace(model=model or tiny_model(), tok=tok, ctx=contextlib.nullcontext(), device='cpu',
                                 dtype='float32', source='tiny')


@contextlib.contextmanager
def running(tok, model=None, **settings):
    engine = Engine(loaded(tok, model), serve.settings(**{'max_tokens_limit': 300, **settings}))
    srv = serve_in_thread(engine)
    srv.address = ('127.0.0.1', srv.port)
    try:
        yield srv
    finally:
        srv.stop()
        with engine.lock:  # no job left on the model
            pass


@pytest.fixture
def server(gpt2_tok):
    with running(gpt2_tok) as srv:
        yield srv


@pytest.fixture
def impatient(gpt2_tok):
    """A server that gives a client 1 s to send its request or to take the next chunk."""
    with running(gpt2_tok, timeout=1.0) as srv:
        yield srv


def request(srv, method, path, body=None, raw=None, ctype='application/json', headers=None):
    """(status, response, parsed JSON or text) of one request."""
    c = http.client.HTTPConnection(*srv.address, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers={**({'Content-Type': ctype} if data is not None else {}),
                                                  **(headers or {})})
    r = c.getresponse()
    text = r.read().decode('utf-8')
    c.close()
    ok_json = r.getheader('Content-Type', '').startswith('application/json')
    return r.status, r, json.loads(text) if ok_json else text


def raw_stream(srv, path, body):
    """A socket that sent a streaming request, and a file reading the answer after its headers."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(srv.address, timeout=60)
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
    f = sock.makefile('rb')
    while f.readline() not in (b'\r\n', b''):  # the headers
        pass
    return sock, f


def chunk_line(f):
    """The next non-empty line of a chunked answer (the chunk sizes skipped)."""
    while True:
        line = f.readline()
        if not line:
            return b''
        line = line.strip()
        if line and not all(c in b'0123456789abcdef' for c in line.lower()):
            return line


class Counter(list):
    """[forward passes so far]; at(n) is an Event set once there have been n."""

    def at(self, n):
        self.target, self.reached = n, threading.Event()
        return self.reached


def counted(model, delay=0.0):
    """Count the model's forward passes (and, with delay, make each one slow); returns the Counter."""
    calls, forward = Counter([0]), model.forward
    calls.target, calls.reached = None, None

    def f(*a, **k):
        calls[0] += 1
        if calls[0] == calls.target:
            calls.reached.set()
        if delay:
            time.sleep(delay)
        return forward(*a, **k)
    model.forward = f
    return calls


def test_generate_equals_generate(server, gpt2_tok):
    """Greedy and seeded sampling: the same tokens and the same float64 numbers as decoding.generate()."""
    m = server.engine.L.model
    prompt = gpt2_tok.encode("Once upon a time")
    for t, k in ((0, None), (0.8, 50)):
        st, _, out = request(server, 'POST', '/api/generate', dict(prompt="Once upon a time", max_new_tokens=40,
                                                                   temperature=t, top_k=k, seed=7, top=5))
        assert st == 200
        ref = generate(m, torch.tensor([prompt]), 40, temperature=t, top_k=k, details=5,
                       generator=make_generator('cpu', 7))[0]
        assert out['tokens'] == ref.tokens and out['text'] == gpt2_tok.decode(ref.tokens)
        toks = out['doc']['tokens']
        assert [e['logprob'] for e in toks] == ref.logprobs.tolist()
        assert [e['sample_logprob'] for e in toks] == ref.sample_logprobs.tolist()
        assert [e['rank'] for e in toks] == ref.ranks.tolist()
        assert [e['prob'] for e in toks] == [format_prob(x) for x in ref.logprobs.tolist()]
        assert [[a['id'] for a in e['alternatives']] for e in toks] == [s.top_ids for s in ref.steps]
        assert out['logprob'] == pytest.approx(ref.logprob, abs=1e-12)
        # independently: one full forward pass in float64 log space (40 tokens > block_size: the sliding window)
        ids = prompt + ref.tokens
        bs = m.config.block_size
        with torch.no_grad():
            want = [float(m(torch.tensor([ids[max(0, i - bs):i]]))[0][0, -1].double().log_softmax(-1)[ids[i]])
                    for i in range(len(prompt), len(ids))]
        assert [e['logprob'] for e in toks] == pytest.approx(want, abs=1e-4)


def test_stream_is_one_json_line_per_token(server, gpt2_tok):
    st, r, text = request(server, 'POST', '/api/generate', dict(prompt="Hello", max_new_tokens=6, temperature=0,
                                                                stream=True))
    assert st == 200 and r.getheader('Content-Type').startswith('application/x-ndjson')
    msgs = [json.loads(x) for x in text.splitlines()]
    assert list(msgs[0]) == ['start'] and msgs[0]['start']['prompt_ids'] == gpt2_tok.encode("Hello")
    assert [list(m) for m in msgs[1:-1]] == [['token']] * 6 and list(msgs[-1]) == ['done']
    assert [m['token']['id'] for m in msgs[1:-1]] == msgs[-1]['done']['tokens']


def test_branch_continues_from_the_chosen_token(server, gpt2_tok):
    """prefix_ids: the response starts with these tokens (scored), then generation continues after them."""
    m = server.engine.L.model
    prompt = gpt2_tok.encode("Once upon a time")
    first = generate(m, torch.tensor([prompt]), 3, temperature=0, details=5)[0]
    alt = first.steps[1].top_ids[2]  # the third most likely token at step 2
    prefix = first.tokens[:1] + [alt]
    st, _, out = request(server, 'POST', '/api/generate', dict(prompt_ids=prompt, prefix_ids=prefix,
                                                               max_new_tokens=5, temperature=0, top=5))
    assert st == 200 and out['tokens'][:2] == prefix and len(out['tokens']) == 7
    assert out['tokens'][2:] == generate(m, torch.tensor([prompt + prefix]), 5, temperature=0)[0].tokens
    ref = score(m, [prompt], [out['tokens']])[0]
    assert [e['logprob'] for e in out['doc']['tokens']] == pytest.approx(ref.logprobs.tolist(), abs=1e-4)
    assert out['doc']['tokens'][1]['rank'] == 3


def test_score_and_temperatures_are_decodings_numbers(server, gpt2_tok):
    m = server.engine.L.model
    p, r = gpt2_tok.encode("The capital of France is"), gpt2_tok.encode(" Paris, of course")
    st, _, out = request(server, 'POST', '/api/score', dict(prompt="The capital of France is",
                                                            response=" Paris, of course", temperature=0.7, top=3))
    ref = score(m, [p], [r], temperature=0.7, details=3)[0]
    assert st == 200 and [e['id'] for e in out['doc']['tokens']] == r
    assert [e['logprob'] for e in out['doc']['tokens']] == ref.logprobs.tolist()
    assert [e['sample_logprob'] for e in out['doc']['tokens']] == ref.sample_logprobs.tolist()
    assert out['doc']['totals'][1] == ['probability under the model distribution', format_prob(ref.logprob)]

    st, _, out = request(server, 'POST', '/api/temperatures', dict(ids=p, temperatures=[0, 0.5, 2], top=4))
    assert st == 200 and [c['name'] for c in out['columns']] == ['greedy', 'T=0.5', 'T=2']
    with torch.no_grad():
        logits = m(torch.tensor([p]))[0][0, -1].double()  # (V,)
    top = logits.topk(4).indices.tolist()
    assert [t['id'] for t in out['tokens']] == top
    for col, t in zip(out['columns'], [0, 0.5, 2]):
        want = [0.0, None, None, None] if t == 0 else (logits / t).log_softmax(-1)[top].tolist()
        assert col['logprobs'] == (want if t == 0 else pytest.approx(want, abs=1e-9))
        assert col['probs'][0] == (format_prob(0.0) if t == 0 else format_prob(want[0]))


def test_a_tiny_temperature_answers_as_greedy(server, gpt2_tok):
    """0 < T < 1e-300 overflows logits / T: the server answers it (no 500) with greedy's tokens and numbers, and a
    distribution that is greedy's (all mass on the most likely token), never NaN."""
    prompt = dict(prompt="Once upon a time", max_new_tokens=8, seed=7, top=3)
    st, _, greedy = request(server, 'POST', '/api/generate', {**prompt, 'temperature': 0})
    for t in (5e-324, 1e-310, 2e-308):
        st, _, out = request(server, 'POST', '/api/generate', {**prompt, 'temperature': t})
        assert st == 200 and out['tokens'] == greedy['tokens'], (t, out)
        toks, ref = out['doc']['tokens'], greedy['doc']['tokens']
        assert [e['logprob'] for e in toks] == [e['logprob'] for e in ref]  # the model's own distribution
        assert [e['sample_logprob'] for e in toks] == [0.0] * 8  # the one sampled from: greedy's
    p = gpt2_tok.encode("The capital of France is")
    st, _, out = request(server, 'POST', '/api/temperatures', dict(ids=p, temperatures=[0, 5e-324, 1e-310], top=4))
    assert st == 200
    greedy_col = out['columns'][0]
    for col in out['columns'][1:]:
        assert col['logprobs'][0] == 0.0 and all(x is None or x < -1e300 for x in col['logprobs'][1:]), col
        assert col['probs'] == greedy_col['probs']
    body = dict(prompt="The capital of France is", response=" Paris, of course")
    zero = request(server, 'POST', '/api/score', {**body, 'temperature': 0})[2]['doc']['tokens']
    st, _, out = request(server, 'POST', '/api/score', {**body, 'temperature': 5e-324})
    assert st == 200 and [e['logprob'] for e in out['doc']['tokens']] == [e['logprob'] for e in zero]
    for e, z in zip(out['doc']['tokens'], zero):  # the greedy token has it all; any other none (or ~ -5e306)
        assert (e['sample_logprob'] == 0.0) == (z['sample_logprob'] == 0.0), (e, z)
        assert e['sample_logprob'] in (0.0, None) or e['sample_logprob'] < -1e300


def test_bad_requests_are_400_naming_the_field(server):
    cases = [(b'{"prompt": "x", ', 'not valid JSON'), (b'[1, 2]', 'JSON object'), (b'\xff\xfe', 'not valid JSON'),
             (b'[' * 100000 + b']' * 100000, 'cannot be read'),  # nested 100,000 deep: no RecursionError
             (json.dumps(dict(prompt='x', max_new_tokens=301)).encode(), 'max_new_tokens: input should be less'),
             (json.dumps(dict(prompt='x', max_new_tokens='5')).encode(), 'max_new_tokens: input should be a valid'),
             (json.dumps(dict(prompt='x', max_new_tokens=5.0)).encode(), 'max_new_tokens'),
             (json.dumps(dict(prompt='x' * 20001)).encode(), '--max_prompt_chars'),
             (json.dumps(dict(prompt='x', temperature=-1)).encode(), 'temperature'),
             (json.dumps(dict(prompt='x', top_p=0)).encode(), 'top_p'),
             (json.dumps(dict(prompt='x', seed=-5)).encode(), 'seed'),
             (json.dumps(dict(prompt='x', stream=1)).encode(), 'stream'),
             (json.dumps(dict(prompt='x', max_tokens=5)).encode(), 'max_tokens is not a field'),
             (json.dumps(dict(prompt='')).encode(), 'prompt is empty'),
             (json.dumps(dict(prompt_ids=[1, 99999999])).encode(), 'prompt_ids[1]'),
             (json.dumps(dict(prompt_ids=[1, True])).encode(), 'prompt_ids[1]'),
             (json.dumps(dict(prompt=5)).encode(), 'prompt: input should be a valid string'),
             (json.dumps(dict(max_new_tokens=5)).encode(), 'give prompt')]
    for raw, words in cases:
        st, r, out = request(server, 'POST', '/api/generate', raw=raw)
        assert st == 400 and words in out['error'], (raw[:40], out)
        assert r.getheader('Content-Type') == 'application/json'
    st, _, out = request(server, 'POST', '/api/score', dict(prompt='x'))
    assert st == 400 and 'response' in out['error']
    assert request(server, 'POST', '/api/nope', dict(prompt='x'))[0] == 404
    assert request(server, 'GET', '/../../etc/passwd')[0] == 404
    sock = socket.create_connection(server.address, timeout=60)  # a body over 1 MiB: refused from its head
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 2000000\r\n\r\n")
    answer = b''.join(iter(lambda: sock.recv(65536), b''))
    sock.close()
    assert answer.startswith(b'HTTP/1.1 413') and b'at most 1048576' in answer
    st, r, page = request(server, 'GET', '/')  # and the server still answers
    assert st == 200 and "default-src 'none'" in r.getheader('Content-Security-Policy')
    assert "connect-src 'self'" in r.getheader('Content-Security-Policy') and r.getheader('X-Content-Type-Options')
    assert "frame-ancestors 'none'" in r.getheader('Content-Security-Policy')
    assert '"kind":"live"' in page


def test_other_sites_are_refused(server):
    """JSON only as exactly application/json, Origin must be the server's own, Host is parsed properly."""
    port = server.port
    body = json.dumps(dict(prompt='x', max_new_tokens=1)).encode()
    for ctype in ('text/plain', 'text/plain; x=application/json', 'application/x-www-form-urlencoded',
                  'application/jsonx', 'multipart/form-data; boundary=application/json'):
        st, _, out = request(server, 'POST', '/api/generate', raw=body, ctype=ctype)
        assert st == 415 and 'Content-Type: application/json' in out['error'], ctype
    assert request(server, 'POST', '/api/generate', raw=body, ctype='application/json; charset=utf-8')[0] == 200
    own = f"http://127.0.0.1:{port}"
    assert request(server, 'POST', '/api/generate', raw=body, headers={'Origin': own})[0] == 200
    for origin in ('http://evil.example', 'null', f"http://localhost:{port}", f"{own}.evil.example"):
        st, _, out = request(server, 'POST', '/api/generate', raw=body, headers={'Origin': origin})
        assert st == 403 and 'refused' in out['error'], origin
    st, _, out = request(server, 'POST', '/v1/completions', dict(prompt='x'), headers={'Origin': 'http://evil.example'})
    assert st == 403 and 'refused' in out['error']['message']  # OpenAI's error shape under /v1
    for host, status in (('evil.example:8000', 403), ('127.0.0.1:8000@evil.com', 400), ('127.0.0.1.evil.com', 403),
                         ('127.0.0.1:99999', 400), (f'localhost:{port}', 200), (f'[::1]:{port}', 200)):
        st, _, out = request(server, 'POST', '/api/generate', raw=body, headers={'Host': host})
        assert st == status, (host, out)
    # two Host headers: refused, not the first one believed
    sock = socket.create_connection(server.address, timeout=60)
    sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    answer = b''.join(iter(lambda: sock.recv(65536), b''))
    sock.close()
    assert answer.split(b' ')[1] in (b'400', b'403') and b'"model"' not in answer


def test_requests_together_run_one_at_a_time_and_none_is_lost(server, gpt2_tok):
    m = server.engine.L.model
    active, peak = [0], [0]
    forward = m.forward

    def slow_forward(*a, **k):  # records how many requests are inside the model at once
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.002)
        try:
            return forward(*a, **k)
        finally:
            active[0] -= 1

    m.forward = slow_forward
    results = [None] * 8

    def one(i):
        path = '/api/generate' if i % 2 else '/api/score'
        body = dict(prompt="Once", max_new_tokens=8, temperature=0) if i % 2 else dict(prompt="Once", response=" upon")
        results[i] = request(server, 'POST', path, body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    m.forward = forward
    assert [r[0] for r in results] == [200] * 8
    assert len({json.dumps(r[2]['tokens']) for r in results[1::2]}) == 1  # the same greedy text each time
    assert peak[0] == 1


def test_a_client_that_goes_away_stops_the_generation(server):
    """The page's Stop closes the stream: the server stops at the next token and frees the model."""
    m = server.engine.L.model
    forward = m.forward
    calls = counted(m, delay=0.005)
    sock, f = raw_stream(server, '/api/generate', dict(prompt="Once", max_new_tokens=300, stream=True))
    assert json.loads(chunk_line(f))['start'] and json.loads(chunk_line(f))['token']
    f.close()
    sock.close()
    st, _, out = request(server, 'POST', '/api/generate', dict(prompt="Once", max_new_tokens=2))
    assert st == 200 and len(out['tokens']) == 2
    assert calls[0] < 100  # far fewer than 300 forward passes: it stopped
    # a request answered in one piece, whose client gives up waiting: stopped too
    data = json.dumps(dict(prompt="Once", max_new_tokens=300)).encode()
    generating = calls.at(calls[0] + 5)
    sock = socket.create_connection(server.address, timeout=60)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    assert generating.wait(60)
    sock.close()
    st, _, out = request(server, 'POST', '/api/generate', dict(prompt="Once", max_new_tokens=2))
    m.forward = forward
    assert st == 200 and calls[0] < 200


def test_a_stalled_client_loses_the_model_and_slow_requests_time_out(impatient):
    """A client that never reads its stream cannot keep the model: after --timeout its turn ends and the
    next request is served. A request head or body that does not arrive in time closes the connection."""
    srv = impatient
    calls = counted(srv.engine.L.model)
    body = json.dumps(dict(prompt="Once", max_new_tokens=300, top=50, stream=True)).encode()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's sends block
    stalled.connect(srv.address)
    stalled.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # ... and never reads
    st, _, out = request(srv, 'POST', '/api/generate', dict(prompt="Once", max_new_tokens=2))
    assert st == 200 and len(out['tokens']) == 2
    assert calls[0] < 300  # the stalled generation was abandoned, not run to its end
    stalled.close()

    half = socket.create_connection(srv.address, timeout=30)
    half.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head, never finished
    assert half.recv(1024) == b''  # closed by the server
    half.close()
    half = socket.create_connection(srv.address, timeout=30)
    half.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"prompt\"")  # 9 of 100 bytes
    answer = b''.join(iter(lambda: half.recv(65536), b''))
    half.close()
    assert answer.startswith(b'HTTP/1.1 408') and b'did not arrive' in answer


def test_twenty_clients_at_once_then_greedy_equals_sample_py(impatient, gpt2_tok):
    """Streaming, disconnecting midway, one that never reads, plain requests of both APIs: all complete or
    end cleanly, and afterwards a greedy request gives sample.py's greedy text."""
    srv = impatient
    m = srv.engine.L.model
    results, never = {}, []
    gen = dict(prompt="Once upon a time", max_new_tokens=12, temperature=0.9, seed=3)

    def streamed(i):
        st, _, text = request(srv, 'POST', '/api/generate', dict(gen, stream=True))
        results[i] = st == 200 and 'done' in json.loads(text.splitlines()[-1])

    def openai_streamed(i):
        st, _, text = request(srv, 'POST', '/v1/completions', dict(prompt="Once", max_tokens=8, stream=True))
        results[i] = st == 200 and text.rstrip().endswith('data: [DONE]')

    def leaves(i):
        sock, f = raw_stream(srv, '/api/generate', dict(gen, max_new_tokens=200, stream=True))
        ok = 'start' in json.loads(chunk_line(f)) and 'token' in json.loads(chunk_line(f))
        f.close()
        sock.close()
        results[i] = ok

    def plain(i):
        path, body = [('/api/generate', gen), ('/api/score', dict(prompt="Once", response=" upon a")),
                      ('/v1/completions', dict(prompt="Once upon", max_tokens=0, echo=True, logprobs=2))][i % 3]
        results[i] = request(srv, 'POST', path, body)[0] == 200

    def never_reads(i):
        body = json.dumps(dict(gen, max_new_tokens=300, top=50, stream=True)).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(srv.address)
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        never.append(s)
        results[i] = True

    kinds = [streamed] * 5 + [openai_streamed] * 3 + [leaves] * 5 + [plain] * 6 + [never_reads]
    threads = [threading.Thread(target=k, args=(i,)) for i, k in enumerate(kinds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert results == {i: True for i in range(20)}
    st, _, out = request(srv, 'POST', '/api/generate', dict(prompt="Once upon a time", max_new_tokens=20,
                                                            temperature=0))
    for s in never:
        s.close()
    prompt = gpt2_tok.encode("Once upon a time")
    ref = next(sample.generate_samples(m, contextlib.nullcontext(), prompt, 1, 20, 0, None, 1.0))
    assert st == 200 and out['tokens'] == ref.tokens and out['text'] == gpt2_tok.decode(ref.tokens)


def test_openapi_document_and_no_network_assets(server):
    st, _, doc = request(server, 'GET', '/openapi.json')
    assert st == 200 and {'/api/generate', '/api/score', '/api/temperatures', '/v1/completions'} <= set(doc['paths'])
    gen = doc['components']['schemas']['GenerateRequest']['properties']
    assert gen['max_new_tokens']['maximum'] == 300 and gen['temperature']['minimum'] == 0  # the server's limits
    assert '400' in doc['paths']['/api/generate']['post']['responses']
    assert '422' not in doc['paths']['/api/generate']['post']['responses']
    assert request(server, 'GET', '/docs')[0] == 404  # FastAPI's /docs would load scripts from a CDN


def test_startup_errors_are_one_line(monkeypatch, capsys, gpt2_tok):
    from nanoprobs import load
    monkeypatch.setattr(load, 'load_model', lambda *a, **k: loaded(gpt2_tok))
    taken = bind('127.0.0.1', 0)
    try:
        for name, value, words in (('port', taken.getsockname()[1], 'is in use'), ('port', 99999, '[0, 65535]'),
                                   ('host', '256.1.1.1', 'not an address'), ('seed', -5, '--seed=-5'),
                                   ('timeout', 0, '--timeout')):
            with monkeypatch.context() as mp:
                mp.setattr(serve, name, value)
                with pytest.raises(SystemExit):
                    serve.run_main(serve.main)
            err = capsys.readouterr().err
            assert err.count('\n') == 1 and err.startswith('error: ') and words in err, err
    finally:
        taken.close()


def test_host_other_than_localhost_warns(monkeypatch, capsys, gpt2_tok):
    from nanoprobs import load
    monkeypatch.setattr(load, 'load_model', lambda *a, **k: loaded(gpt2_tok))
    monkeypatch.setattr(serve, 'serve_forever', lambda engine, sock: sock.close())
    monkeypatch.setattr(serve, 'host', '0.0.0.0')
    monkeypatch.setattr(serve, 'port', 0)
    serve.main()
    out = capsys.readouterr().out
    assert 'warning: --host=0.0.0.0' in out and 'serving http://127.0.0.1:' in out


def test_ctrl_c_during_a_generation_stops_at_once(tmp_path):
    """Ctrl-C while a client streams a long generation: the generation ends at its next token and the
    server exits 0 with 'stopped', not with torch's 'terminate called' abort at interpreter teardown."""
    # a model whose forward pass takes milliseconds, so that Ctrl-C lands inside one on torch's thread pool
    write_ckpt(tmp_path / 'out', tiny_model(n_layer=4, n_embd=128, block_size=256))
    env = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([sys.executable, str(ROOT / 'serve.py'), '--out_dir=out', '--port=0', '--device=cpu',
                             '--max_tokens_limit=100000'], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if line.startswith('serving http://127.0.0.1:'):
                port = int(line.split(':')[2].split('/')[0])
                break
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        c.request('POST', '/api/generate', body=json.dumps(dict(prompt='Once', max_new_tokens=100000, stream=True)),
                  headers={'Content-Type': 'application/json'})
        r = c.getresponse()
        assert r.status == 200 and 'start' in json.loads(r.readline())
        assert 'token' in json.loads(r.readline())  # generating now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    try:
        rest = r.read().decode()
    except http.client.IncompleteRead as e:  # the connection ended mid-answer
        rest = e.partial.decode()
    assert proc.returncode == 0, err
    assert 'stopped' in out and 'terminate called' not in err and 'Traceback' not in err
    assert rest.count('"token"') < 100000 - 2  # it stopped mid-generation


def test_inspect_and_attribute_answer_one_token(server, gpt2_tok, monkeypatch):
    """POST /api/inspect: the logit lens (its last row the model distribution of a plain forward pass) and
    Capture's attention of one token; POST /api/attribute: Captum's scores (integrated gradients complete);
    bad input a 400 naming the field, other sites refused; a generation's pieces, joined characters, GLTR."""
    pytest.importorskip('captum', reason="attribution needs Captum: pip install captum")
    from nanoprobs.attribution import attribute
    from nanoprobs.inspector import token_panels
    m = server.engine.L.model
    ids, pos = gpt2_tok.encode("The capital of France is Paris, of course"), 6
    st, _, out = request(server, 'POST', '/api/inspect', dict(ids=ids, position=pos))
    assert st == 200 and out == token_panels(m, gpt2_tok, ids, pos)
    with torch.no_grad():
        ref = m(torch.tensor([ids[:pos]]))[0][0, -1].double().log_softmax(-1)  # (V,) independently
    top, top_p, lp, p, rank = out['lens'][-1]
    assert lp == pytest.approx(float(ref[ids[pos]]), abs=1e-4) and p == format_prob(float(ref[ids[pos]]))
    assert rank == int((ref > ref[ids[pos]]).sum()) + 1 and top == gpt2_tok.token_text(int(ref.argmax()))
    assert len(out['att']) == m.config.n_layer and len(out['att'][0]) == 1 + m.config.n_head
    for method in ('ig', 'gxi'):
        st, _, a = request(server, 'POST', '/api/attribute', dict(ids=ids, position=pos, method=method, steps=8))
        want = attribute(m, ids, pos, method, 8, gpt2_tok.eot).to_json()
        assert st == 200 and a['scores'] == want['scores'] and len(a['scores']) == pos
        assert a['logprob'] == pytest.approx(float(ref[ids[pos]]), abs=1e-4)
    assert abs(a['total'] - a['logprob']) > 0 and a['gap'] is None  # gxi: no completeness
    st, _, a = request(server, 'POST', '/api/attribute', dict(ids=ids, position=pos))  # ig, 32 steps
    assert a['method'] == 'ig' and a['steps'] == 32 and abs(float(a['gap'])) < 0.05
    assert a['total'] == pytest.approx(a['logprob'] - a['baseline_logprob'], abs=0.05)
    for path, body, words in (('/api/inspect', dict(ids=ids, position=0), 'position: input should be greater'),
                              ('/api/inspect', dict(ids=ids, position=len(ids)), 'position must be the index'),
                              ('/api/inspect', dict(ids=ids * 4, position=34), 'block_size (32)'),
                              ('/api/inspect', dict(ids=[1, 99999999], position=1), 'ids[1]'),
                              ('/api/inspect', dict(ids=[1], position=1), 'ids'),
                              ('/api/attribute', dict(ids=ids, position=2, method='lime'), 'method'),
                              ('/api/attribute', dict(ids=ids, position=2, steps=257), 'steps'),
                              ('/api/attribute', dict(ids=ids, position='2'), 'position'),
                              ('/api/attribute', dict(ids=[0] * 20001, position=2), 'ids')):
        st, _, err = request(server, 'POST', path, body)
        assert st == 400 and words in err['error'], (path, body, err)
    st, _, err = request(server, 'POST', '/api/attribute', dict(ids=ids, position=2),
                         headers={'Origin': 'http://evil.example'})
    assert st == 403 and 'refused' in err['error']
    monkeypatch.setitem(sys.modules, 'captum', None)  # a server without Captum says so
    st, _, err = request(server, 'POST', '/api/attribute', dict(ids=ids, position=2))
    assert st == 501 and 'pip install captum' in err['error']
    st, _, r = request(server, 'POST', '/api/generate', dict(prompt='He said “', max_new_tokens=3, temperature=0))
    prompt = gpt2_tok.encode('He said “')
    assert st == 200 and r['gltr']['tokens'] == 3 and r['doc']['prompt_pieces'] == [list(x) for x in gpt2_tok.pieces(prompt)]
    assert r['prompt_pieces'] == r['doc']['prompt_pieces']
