"""The fork server the CLI tests run scripts with ends a script as a fresh `python script.py` does."""
import os
import subprocess
import sys

import pytest

from conftest import fork_server

SCRIPTS = {
    'one_line_hook': "import sys\nsys.excepthook = lambda k, e, tb: print('error:', e, file=sys.stderr)\n"
                     "raise ValueError('bad value')\n",
    'ctrl_c': "raise KeyboardInterrupt\n",
    'crash': "raise RuntimeError('boom')\n",
    'exit_text': "import sys\nsys.exit('stopped: why')\n",
    'exit_3': "import atexit, sys\natexit.register(lambda: print('atexit ran'))\nprint('out')\nsys.exit(3)\n",
}


def test_exit_status_and_output_equal_a_fresh_python(tmp_path):
    server = fork_server()
    if server is None:
        pytest.skip("no fork server here (no os.fork, or NANOPROBS_TEST_FORK=0)")
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    for name, code in SCRIPTS.items():
        path = tmp_path / f'{name}.py'
        path.write_text(code)
        forked = server.run([str(path)], tmp_path, env, 60, tmpdir=None)
        fresh = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), name
