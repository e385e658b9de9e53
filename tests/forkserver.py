"""A fork server for the CLI tests: each `python script.py ...` a test runs is a real child process, forked
from a server that imported torch (and the other heavy libraries) once, instead of a fresh interpreter
that spends seconds importing them again.

What stays as in a fresh `python` process: its own pid, argv, cwd, environment, stdin (/dev/null), stdout
and stderr (captured), exit status (SystemExit, an uncaught exception's 1 printed by sys.excepthook,
an uncaught Ctrl-C's SIGINT, os._exit, a signal's -N), atexit
handlers and the join of non-daemon threads at exit, and fresh random state (Python's `random` reseeds
itself after a fork; numpy's global generator is reseeded here; torch's default generator starts from
its fixed default seed, as in any new process). What is shared: the modules imported before the fork.
A library that reads environment variables at import time would see the server's, so run_script uses the
server only when those variables (SHARED_ENV) are the same as the server's; otherwise it starts python.

The server imports no project code and runs no torch op before forking: torch's CPU thread pools, which
are not fork-safe, are created lazily by the first parallel op, and so only ever inside a child.
"""
import json
import os
import signal
import subprocess
import sys
import threading

# variables that the preloaded libraries (torch/OpenMP, transformers, matplotlib) read when imported
SHARED_ENV = ('OMP_', 'MKL_', 'KMP_', 'TORCH', 'PYTORCH', 'HF_', 'TRANSFORMERS', 'MPLBACKEND', 'PYTHONHASHSEED')
PRELOAD = ('numpy', 'torch', 'tqdm', 'tiktoken', 'safetensors.torch', 'transformers', 'matplotlib.pyplot')


def shared_part(env):
    return {k: v for k, v in env.items() if k.startswith(SHARED_ENV)}


def serve():
    """The server's loop (runs in its own interpreter): one request per line on stdin, replies on stdout."""
    import atexit
    import importlib
    import runpy
    import traceback
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional library is imported (or not) by the child itself
            pass
    reply = os.fdopen(os.dup(1), 'w', buffering=1)
    requests = os.fdopen(os.dup(0), 'r')
    here = os.path.dirname(os.path.abspath(__file__))
    base_path = [p for p in sys.path if p not in ('', here)]  # what a fresh `python script.py` has
    print(json.dumps({'ready': True}), file=reply)
    for line in requests:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: become `python <argv>` in req['cwd'] with req['env']
            code, interrupted = 1, False
            try:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                os.chdir(req['cwd'])
                os.environ.clear()
                os.environ.update(req['env'])
                for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, req['stdout'], os.O_WRONLY),
                                       (2, req['stderr'], os.O_WRONLY)):
                    f = os.open(path, mode)
                    os.dup2(f, fd)
                    os.close(f)
                import numpy
                numpy.random.seed()  # a new process draws fresh entropy; a fork would share the server's state
                extra = [p for p in req['env'].get('PYTHONPATH', '').split(os.pathsep) if p]
                argv = req['argv']
                if argv[0] == '-m':
                    sys.path[:] = [req['cwd'], *extra, *base_path]
                    sys.argv = [argv[1], *argv[2:]]
                    run = lambda: runpy.run_module(argv[1], run_name='__main__', alter_sys=True)  # noqa: E731
                else:
                    sys.path[:] = [os.path.dirname(os.path.abspath(argv[0])), *extra, *base_path]
                    sys.argv = list(argv)
                    run = lambda: runpy.run_path(argv[0], run_name='__main__')  # noqa: E731
                try:
                    run()
                    code = 0
                except SystemExit as e:  # what the interpreter does with sys.exit(...)
                    if e.code is None:
                        code = 0
                    elif isinstance(e.code, int):
                        code = e.code
                    else:
                        print(e.code, file=sys.stderr)
                        code = 1
                except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception:
                    e = sys.exc_info()[1]
                    tb = e.__traceback__
                    while tb and tb.tb_frame.f_code.co_filename in (__file__, '<frozen runpy>'):
                        tb = tb.tb_next  # the traceback starts in the script, as python's does
                    sys.excepthook(type(e), e.with_traceback(tb), tb)  # the script's own hook (one-line errors) or the traceback
                    code, interrupted = 1, isinstance(e, KeyboardInterrupt)
                threading._shutdown()  # join non-daemon threads, as interpreter exit does
                atexit._run_exitfuncs()
                if interrupted:  # an uncaught Ctrl-C ends python by SIGINT itself (status -2), as since 3.8
                    sys.stdout.flush()
                    sys.stderr.flush()
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    os.kill(os.getpid(), signal.SIGINT)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        print(json.dumps({'pid': pid}), file=reply)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({'returncode': os.waitstatus_to_exitcode(status)}), file=reply)


class ForkServer:
    """The test side: start the server once, then run(argv, cwd, env, timeout) -> CompletedProcess."""

    def __init__(self, env):
        self.env = shared_part(env)
        code = f'import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import forkserver; forkserver.serve()'
        self.proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=os.path.dirname(__file__))
        if json.loads(self.proc.stdout.readline() or '{}').get('ready') is not True:
            raise RuntimeError('the fork server did not start')

    def accepts(self, env):
        return self.proc.poll() is None and shared_part(env) == self.env

    def run(self, argv, cwd, env, timeout, tmpdir):
        import tempfile
        with tempfile.TemporaryDirectory(dir=tmpdir) as d:
            out, err = os.path.join(d, 'stdout'), os.path.join(d, 'stderr')
            open(out, 'w').close()
            open(err, 'w').close()
            self.proc.stdin.write(json.dumps({'argv': argv, 'cwd': str(cwd), 'env': env,
                                              'stdout': out, 'stderr': err}) + '\n')
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())['pid']
            timed_out = threading.Event()
            timer = threading.Timer(timeout, lambda: (timed_out.set(), os.kill(pid, signal.SIGKILL)))
            timer.start()
            try:
                rc = json.loads(self.proc.stdout.readline())['returncode']
            finally:
                timer.cancel()
            with open(out, errors='replace') as f, open(err, errors='replace') as g:
                stdout, stderr = f.read(), g.read()
        if timed_out.is_set():  # as subprocess.run(timeout=...) does
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, stdout, stderr)
        return subprocess.CompletedProcess([sys.executable, *argv], rc, stdout, stderr)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
