"""
Each request's work on the model, in a thread of its own, its messages handed to the event loop.

A Job runs a work function (engine.py, openai_api.py) while it holds the engine's lock, so requests take
turns on the model and none is lost. Its messages reach the connection through a buffer of `buffer`
messages: a client that stops reading fills it, and `timeout` seconds later the job gives up, so a stalled
client cannot keep the model from the others. A client that goes away cancels its job, which then stops
before its next token: each message is handed over before the next one is computed, and the hand-over
checks. The connection side (gather, JobStream) watches for the client going away and sends each chunk
with the same timeout.
"""
import asyncio
import logging
import threading

from starlette.responses import Response

log = logging.getLogger('uvicorn.error')


class Gone(Exception):
    """The job's client went away or stalled, or the server is stopping: the job ended early."""


class Fault(Exception):
    """The work failed, not on bad input (a ValueError) but on a fault of the server: logged, answered 500."""


class Job:
    """work: a generator function; its messages, one at a time, go to whoever iterates messages()."""

    def __init__(self, engine, work, buffer=32, timeout=10.0):
        self.engine, self.work, self.buffer, self.timeout = engine, work, buffer, timeout
        self._cancel = threading.Event()
        self._room = threading.Semaphore(buffer)  # messages the connection may still be behind by
        self._loop = self._queue = None
        self.outcome = None  # 'done', 'cancelled', 'stalled' or 'error', once the job has ended

    def start(self):
        """Start the job's thread; called on the event loop that reads its messages."""
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        with self.engine._jobs_lock:
            self.engine.jobs.add(self)
        if self.engine.stopping.is_set():
            self.cancel()
        threading.Thread(target=self._run, name='model-job', daemon=True).start()
        return self

    def cancel(self):
        """End the job before its next message (wakes it if it waits for room in the buffer)."""
        self._cancel.set()
        self._room.release(self.buffer)

    @property
    def cancelled(self):
        return self._cancel.is_set()

    def _post(self, kind, value=None):
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed: nobody is listening
            self._cancel.set()

    def _put(self, msg):
        if not self._room.acquire(timeout=self.timeout):
            self.outcome = 'stalled'
            raise Gone
        if self._cancel.is_set():
            raise Gone
        self._post('msg', msg)

    def _run(self):
        try:
            with self.engine.lock:
                if self._cancel.is_set():
                    raise Gone
                it = self.work()
                try:
                    for msg in it:
                        self._put(msg)
                finally:
                    it.close()
            self.outcome = 'done'
        except Gone:
            self.outcome = self.outcome or 'cancelled'
        except Exception as e:  # handed to the connection, which answers (and logs) it
            self.outcome = 'error'
            self._post('error', e)
        finally:
            self._post('end')
            with self.engine._jobs_lock:
                self.engine.jobs.discard(self)

    async def messages(self):
        """The job's messages as they come; an exception raised by the work is raised here."""
        while True:
            kind, value = await self._queue.get()
            if kind == 'end':
                return
            if kind == 'error':
                raise value
            yield value
            self._room.release()  # the caller has dealt with it (sent it) and asks for the next


async def watch(receive, job):
    """Cancel the job when the client goes away (the ASGI server says http.disconnect)."""
    while (await receive())['type'] != 'http.disconnect':
        pass
    job.cancel()


async def gather(job, receive):
    """All the messages of a job, for an answer sent in one piece. Raises Gone if the client went away, the
    work's ValueError (bad input), or Fault (anything else, logged here)."""
    watcher = asyncio.ensure_future(watch(receive, job))
    try:
        msgs = [m async for m in job.messages()]
    except ValueError:
        raise
    except Exception as e:
        log.error("a request failed", exc_info=e)
        raise Fault(f"the server failed on this request ({type(e).__name__}: {str(e)[:200]})") from None
    finally:
        watcher.cancel()
    if job.outcome != 'done':
        raise Gone
    return msgs


class JobStream(Response):
    """A streamed answer: each of the job's messages as encode(message) bytes, sent as it comes, then end()
    (the end marker of the format). A failure of the work after the answer began is sent as on_error(e).
    A chunk the client does not take within timeout seconds ends the answer and the job."""

    def __init__(self, job, encode, end, on_error, media_type, timeout):
        self.job, self.encode, self.end, self.on_error, self.timeout = job, encode, end, on_error, timeout
        self.status_code, self.media_type, self.background = 200, media_type, None
        self.init_headers({'X-Accel-Buffering': 'no'})  # no body: no Content-Length, chunks as they come

    async def _send(self, send, data, more=True):
        await asyncio.wait_for(send({'type': 'http.response.body', 'body': data, 'more_body': more}),
                               self.timeout)

    async def __call__(self, scope, receive, send):
        job = self.job
        watcher = asyncio.ensure_future(watch(receive, job))
        try:
            await send({'type': 'http.response.start', 'status': 200, 'headers': self.raw_headers})
            try:
                async for m in job.messages():
                    if job.cancelled:
                        break
                    await self._send(send, self.encode(m))
            except (asyncio.TimeoutError, asyncio.CancelledError):
                raise
            except Exception as e:
                await self._send(send, self.on_error(e))
            if job.outcome == 'done':
                await self._send(send, self.end(), more=False)
            elif job.outcome == 'error':
                await self._send(send, b'', more=False)
            elif job.outcome == 'stalled':
                raise asyncio.TimeoutError
            # cancelled (the client went away, or the server stops): the answer stays unfinished and the
            # ASGI server closes the connection
        except asyncio.TimeoutError:
            client = scope.get('client') or ('?', 0)
            log.warning(f"{client[0]}:{client[1]} stopped reading its answer for {self.timeout:g} s: "
                        "closing the connection, the model goes to the next request")
        finally:
            watcher.cancel()
            job.cancel()
