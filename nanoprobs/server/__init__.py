"""
The live app's server (serve.py runs it): FastAPI routes on uvicorn over one loaded model.

    engine      the model and what the API does with it, framework-free; Settings (serve.py's flags)
    jobs        each request's work in a thread of its own: one at a time on the model, a bounded send
                buffer, stopped at the next token when its client goes away
    schemas     the request bodies as pydantic models, every range declared once; one line per bad field
    security    Host, Origin and Content-Type checks, body limits and timeouts, the response headers
    app         the page and the JSON API (/api/*), the OpenAPI document
    openai_api  the OpenAI-compatible completions API (/v1/completions, /v1/models)
    run         binding the port, uvicorn with request timeouts, a server in a thread, Ctrl-C

    from nanoprobs.server import Engine, serve_in_thread
    srv = serve_in_thread(Engine(load.load_model('gpt2'), settings))   # settings: an engine.Settings
    print(srv.url); ...; srv.stop()
"""
from nanoprobs.server.engine import Engine, Settings
from nanoprobs.server.run import serve_in_thread

__all__ = ['Engine', 'Settings', 'serve_in_thread']
