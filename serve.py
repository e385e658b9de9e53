"""
A live local app over one model: generate, score and branch text in the browser, every probability shown,
and the OpenAI completions API, so any OpenAI client or lm-evaluation-harness can use a nanoGPT checkpoint.

    python serve.py --init_from=gpt2                 # then open http://127.0.0.1:8000
    python serve.py --out_dir=out-children --port=8001

It loads the model once (sample.py's loading settings) and serves, on FastAPI with uvicorn
(nanoprobs/server/), the page of html_report.py (the same page as sample.py's report) and two APIs:
    POST /api/generate     {"prompt": "Once upon a time", "max_new_tokens": 50, "temperature": 0.8, ...}
    POST /api/score        {"prompt": "The capital of France is", "response": " Paris"}
    POST /api/temperatures {"ids": [464, 3139], "temperatures": [0.5, 1, 2]}
    POST /api/inspect      {"ids": [464, 3139, 286], "position": 2}    (logit lens and attention of a token)
    POST /api/attribute    {"ids": [464, 3139, 286], "position": 2, "method": "ig"}   (Captum attribution)
    GET  /api/info
    POST /v1/completions   {"prompt": "Once upon a time", "max_tokens": 20, "logprobs": 5, "echo": true, ...}
    GET  /v1/models
    GET  /openapi.json     every field of every request, with its range
(docs/browser.md describes them). Requests take turns on the model (none is lost; a client that goes
away stops its generation at the next token, and one that stops reading loses its turn after --timeout
seconds). The server reads and writes no files, binds 127.0.0.1 unless told otherwise, refuses requests
from other web sites, and answers bad input with a 400 naming the field. Ctrl-C stops it at once.
"""
from dataclasses import fields

from configurator import configure, run_main
from nanoprobs import load
from nanoprobs.server.engine import Engine, Settings
from nanoprobs.server.run import bind, is_loopback, serve_forever, url_of

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
top: int = 10  # candidates per token shown in the inspector
max_prompt_chars: int = 20000  # longer prompts (or responses) are refused with a 400
max_tokens_limit: int = 1000  # the largest max_new_tokens (max_tokens) a request may ask for
timeout: float = 10.0  # seconds a client may take to send its request, or to take the next chunk of an
#   answer; then its connection is closed (and a stalled stream gives the model to the next request)
# -----------------------------------------------------------------------------


def settings(**changes):
    """Settings from this script's flags (their defaults, or what configure() set), with changes."""
    return Settings(**{f.name: changes.get(f.name, globals()[f.name]) for f in fields(Settings)})


def main():
    opts = settings().check()
    sock = bind(host, port)  # before the model loads: a port in use is said at once
    L = load.load_model(init_from, out_dir, device, dtype, compile, seed=seed)
    engine = Engine(L, opts)
    if not is_loopback(host):
        print(f"warning: --host={host} lets any machine that can reach this one use the model (there is no "
              "password); keep the default 127.0.0.1 unless you mean it")
    print(f"model: {L.source} on {L.device} ({L.dtype})\n"
          f"serving {url_of(sock)}/ (Ctrl-C stops)", flush=True)
    serve_forever(engine, sock)


if __name__ == '__main__':
    configure(globals())
    run_main(main)
