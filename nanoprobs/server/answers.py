"""
How the server writes its answers: JSON (no NaN), NDJSON lines, errors, and starting a request's job.
"""
import json
import logging

from starlette.responses import Response

from nanoprobs.server.jobs import Job
from nanoprobs.server.security import error_payload

log = logging.getLogger('uvicorn.error')


def dumps(obj):
    """JSON as the API writes it: UTF-8 text, no NaN or infinity (html_report.num turns -inf into null)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(',', ':'))


def json_response(obj, status=200):
    return Response(dumps(obj).encode('utf-8'), status, media_type='application/json')


def error_response(request, status, message):
    return json_response(error_payload(request.url.path, status, message), status)


def ndjson(m):
    """One message of a streamed /api/generate: a JSON object on a line of its own."""
    return (dumps(m) + '\n').encode('utf-8')


def failure(e):
    """(status, message) for a job's exception: a ValueError is bad input that the decoding functions
    found (its message says what); anything else is a fault of the server, logged with its traceback."""
    if isinstance(e, ValueError):
        return 400, str(e)
    log.error("a request failed", exc_info=e)
    return 500, f"the server failed on this request ({type(e).__name__}: {str(e)[:200]})"


def start_job(engine, work):
    """Start a request's work (a generator function of engine.py or openai_api.py) as a jobs.Job."""
    return Job(engine, work, timeout=engine.settings.timeout).start()
