"""
The live app's web application: the page, the JSON API (/api/*), the OpenAI API (openai_api.py), OpenAPI.

create_app(engine) builds it on FastAPI: request bodies are the models of schemas.py (400 with one line
per bad field), each request's work runs as a jobs.Job (one at a time on the model), a generation streams
one JSON object per line, and security.Guard checks every request first. The OpenAPI document is at
/openapi.json; there is no /docs page (FastAPI's loads its scripts from a CDN, and the app loads nothing
from the network).
"""
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from nanoprobs.server.openai_api import router as openai_router
from nanoprobs.server.engine import Unavailable, collect
from nanoprobs.server.answers import error_response, failure, json_response, ndjson, start_job
from nanoprobs.server.jobs import Fault, Gone, JobStream, gather
from nanoprobs.server.schemas import error_text
from nanoprobs.server.security import Guard

MAX_BODY = 1 << 20  # bytes of a request body
ROUTES = "the page is /; POST /api/generate, /api/score, /api/temperatures, /api/inspect, /api/attribute; " \
         "GET /api/info; " \
         "POST /v1/completions, GET /v1/models; GET /openapi.json"


def create_app(engine, local_only=True):
    """The ASGI application for engine (an engine.Engine); local_only: served only under a loopback Host."""
    M = engine.models
    app = FastAPI(title='nanoGPT-probs', version='1', docs_url=None, redoc_url=None,
                  openapi_url='/openapi.json',
                  description="The live app's API: every probability of a GPT's text. Log-probs are natural logs "
                              "under the model distribution (the model's own: T=1, no top-k/top-p) unless named "
                              "sample_ (the sampling distribution a token was drawn from).")

    @app.get('/', include_in_schema=False)
    @app.get('/index.html', include_in_schema=False)
    async def page():
        return HTMLResponse(engine.page)

    @app.get('/api/info', summary="the model, its vocabulary and block size, the defaults and limits")
    async def info():
        return json_response(engine.info())

    @app.post('/api/generate', summary="generate: every token with its probabilities under both distributions")
    async def generate(body: M.generate, request: Request):
        job = start_job(engine, engine.generate(body))
        if body.stream:
            def on_error(e):
                return ndjson(dict(error=failure(e)[1]))
            return JobStream(job, ndjson, lambda: b'', on_error, 'application/x-ndjson', engine.settings.timeout)
        return json_response(collect(await gather(job, request.receive)))

    @app.post('/api/score', summary="score: the probability of a fixed response after a prompt")
    async def score(body: M.score, request: Request):
        return json_response((await gather(start_job(engine, engine.score(body)), request.receive))[0])

    @app.post('/api/temperatures', summary="the next-token distribution under several temperatures")
    async def temperatures(body: M.temperatures, request: Request):
        return json_response((await gather(start_job(engine, engine.temperatures(body)), request.receive))[0])

    @app.post('/api/inspect', summary="the inspector of one token: what each layer predicted (logit lens), where "
                                      "its prediction looked (attention)")
    async def inspect(body: M.inspect, request: Request):
        return json_response((await gather(start_job(engine, engine.inspect(body)), request.receive))[0])

    @app.post('/api/attribute', summary="which earlier tokens made one token likely (Captum: integrated gradients "
                                        "or gradient x input)")
    async def attribute(body: M.attribute, request: Request):
        return json_response((await gather(start_job(engine, engine.attribute(body)), request.receive))[0])

    app.include_router(openai_router(engine))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return error_response(request, 400, error_text(exc.errors()))

    @app.exception_handler(ValueError)  # BadRequest, and what the decoding functions refuse
    async def bad(request, exc):
        return error_response(request, 400, str(exc))

    @app.exception_handler(Unavailable)  # an optional package this server lacks
    async def unavailable(request, exc):
        return error_response(request, 501, str(exc))

    @app.exception_handler(Gone)
    async def gone(request, exc):
        return Response(status_code=499)  # nobody reads it: the client went away

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        path = request.url.path[:100]
        msg = {404: f"no such page or API: {path} ({ROUTES})",
               405: f"{request.method} is not what {path} takes ({ROUTES})",
               400: "the request body cannot be read (is it UTF-8 JSON, nested less than a few hundred "
                    "levels deep?)"}.get(exc.status_code, str(exc.detail))
        return error_response(request, exc.status_code, msg)

    @app.exception_handler(Fault)  # a job's fault (logged): the connection stays usable
    async def job_fault(request, exc):
        return error_response(request, 500, str(exc))

    @app.exception_handler(Exception)  # any other fault of the server; uvicorn logs its traceback
    async def fault(request, exc):
        return error_response(request, 500, f"the server failed on this request ({type(exc).__name__})")

    app.openapi = lambda: openapi_doc(app)
    return Guard(app, local_only=local_only, policy=engine.policy, max_body=MAX_BODY,
                 timeout=engine.settings.timeout)


def openapi_doc(app):
    """FastAPI's OpenAPI document, saying what this app answers to bad input: 400 with a JSON error (FastAPI
    would document its default, 422)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for ops in doc.get('paths', {}).values():
        for op in ops.values():
            responses = op.get('responses', {})
            if responses.pop('422', None) is not None:
                responses['400'] = {'description': 'bad input: {"error": "what is wrong and how to fix it"} '
                                                   '(under /v1: OpenAI\'s {"error": {"message": ...}})'}
    for name in ('HTTPValidationError', 'ValidationError'):
        doc.get('components', {}).get('schemas', {}).pop(name, None)
    app.openapi_schema = doc
    return doc
