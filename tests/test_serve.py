"""serve.py's JSON API: the numbers of generate()/score()/sampling_logprobs, status codes, limits, one at a time."""
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

import serve
from conftest import ROOT, tiny_model, write_ckpt
from nanoprobs.decoding import generate, score
from nanoprobs.sampling import make_generator
from nanoprobs.formatting import format_prob


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def loaded(tok, model=None):
    """What load.load_model returns, for a tiny model."""
    return types.SimpleNamespace(model=model or tiny_model(), tok=tok, ctx=contextlib.nullcontext(), device='cpu',
                                 dtype='float32', source='tiny')


@pytest.fixture
def server(gpt2_tok):
    srv = serve.serve_in_thread(serve.App(loaded(gpt2_tok), serve.settings(max_tokens_limit=300)))
    yield srv
    srv.shutdown()
    with srv.RequestHandlerClass.app.lock:  # no generation left running
        pass
    srv.server_close()


def request(srv, method, path, body=None, raw=None, ctype='application/json'):
    """(status, headers, parsed JSON or text) of one request."""
    host, port = srv.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers={'Content-Type': ctype} if data is not None else {})
    r = c.getresponse()
    text = r.read().decode('utf-8')
    c.close()
    ok_json = r.getheader('Content-Type', '').startswith('application/json')
    return r.status, r, json.loads(text) if ok_json else text


def test_generate_equals_generate(server, gpt2_tok):
    """Greedy and seeded sampling: the same tokens and the same float64 numbers as decoding.generate()."""
    m = server.RequestHandlerClass.app.L.model
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
    m = server.RequestHandlerClass.app.L.model
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
    m = server.RequestHandlerClass.app.L.model
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


def test_bad_requests_are_400_with_a_json_error(server):
    cases = [(b'{"prompt": "x", ', 'not valid JSON'), (b'[1, 2]', 'JSON object'), (b'\xff\xfe', 'not valid JSON'),
             (json.dumps(dict(prompt='x', max_new_tokens=301)).encode(), 'max_new_tokens=301'),
             (json.dumps(dict(prompt='x', max_new_tokens='5')).encode(), 'max_new_tokens must be'),
             (json.dumps(dict(prompt='x' * 20001)).encode(), 'at most 20000'),
             (json.dumps(dict(prompt='x', temperature=-1)).encode(), 'temperature'),
             (json.dumps(dict(prompt='x', top_p=0)).encode(), 'top_p'),
             (json.dumps(dict(prompt='')).encode(), 'prompt is empty'),
             (json.dumps(dict(prompt_ids=[1, 99999999])).encode(), 'token ids'),
             (json.dumps(dict(prompt=5)).encode(), 'give prompt')]
    for raw, words in cases:
        st, _, out = request(server, 'POST', '/api/generate', raw=raw)
        assert st == 400 and words in out['error'], (raw[:40], out)
    st, _, out = request(server, 'POST', '/api/score', dict(prompt='x'))
    assert st == 400 and 'response' in out['error']
    st, _, out = request(server, 'POST', '/api/generate', raw=b'prompt=x', ctype='application/x-www-form-urlencoded')
    assert st == 400 and 'Content-Type: application/json' in out['error']  # no cross-site form posts
    assert request(server, 'POST', '/api/nope', dict(prompt='x'))[0] == 404
    assert request(server, 'GET', '/../../etc/passwd')[0] == 404
    host, port = server.server_address[:2]  # a page of another site reaching the app by DNS rebinding
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.request('POST', '/api/generate', body=b'{"prompt": "x"}',
              headers={'Host': 'evil.example:8000', 'Content-Type': 'application/json'})
    r = c.getresponse()
    assert r.status == 403 and 'not this machine' in json.loads(r.read())['error']
    c.close()
    st, r, page = request(server, 'GET', '/')  # and the server still answers
    assert st == 200 and "default-src 'none'" in r.getheader('Content-Security-Policy')
    assert "connect-src 'self'" in r.getheader('Content-Security-Policy') and r.getheader('X-Content-Type-Options')
    assert '"kind":"live"' in page


def test_requests_together_run_one_at_a_time_and_none_is_lost(server, gpt2_tok):
    m = server.RequestHandlerClass.app.L.model
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
    m = server.RequestHandlerClass.app.L.model
    calls, forward = [0], m.forward

    def counted(*a, **k):
        calls[0] += 1
        time.sleep(0.005)
        return forward(*a, **k)

    m.forward = counted
    body = json.dumps(dict(prompt="Once", max_new_tokens=300, stream=True)).encode()
    sock = socket.create_connection(server.server_address[:2], timeout=60)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    f = sock.makefile('rb')
    while f.readline() not in (b'\r\n', b''):  # the headers
        pass
    assert json.loads(f.readline())['start'] and json.loads(f.readline())['token']
    f.close()
    sock.close()
    t0 = time.time()
    st, _, out = request(server, 'POST', '/api/generate', dict(prompt="Once", max_new_tokens=2))
    m.forward = forward
    assert st == 200 and len(out['tokens']) == 2
    assert calls[0] < 100 and time.time() - t0 < 5  # far fewer than 300 forward passes: it stopped


def test_host_other_than_localhost_warns(monkeypatch, capsys, gpt2_tok):
    from nanoprobs import load
    monkeypatch.setattr(load, 'load_model', lambda *a, **k: loaded(gpt2_tok))
    monkeypatch.setattr(serve.ThreadingHTTPServer, 'serve_forever', lambda self: None)
    monkeypatch.setattr(serve, 'host', '0.0.0.0')
    monkeypatch.setattr(serve, 'port', 0)
    serve.main()
    out = capsys.readouterr().out
    assert 'warning: --host=0.0.0.0' in out and 'serving http://127.0.0.1:' in out


def test_ctrl_c_during_a_generation_stops_cleanly(tmp_path):
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
        assert r.status == 200 and 'start' in json.loads(r.fp.readline())
        assert 'token' in json.loads(r.fp.readline())  # generating now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    tokens = sum('"token"' in line for line in r.read().decode().splitlines())
    assert proc.returncode == 0, err
    assert 'stopped' in out and 'terminate called' not in err and 'Traceback' not in err
    assert tokens < 100000 - 1  # it stopped mid-generation
