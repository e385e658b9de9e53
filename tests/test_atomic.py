"""atomic.py: temporary names, the is-the-writer-alive check, stale-temp cleanup, and sets of files renamed
into place all together or not at all."""
import errno
import os
import subprocess
import sys
import threading

import pytest

from conftest import dead_pid
from nanoprobs import atomic


def files(folder):
    return sorted(os.listdir(folder))


def test_temp_name_is_beside_the_file_with_pid_and_extension_and_unique(tmp_path):
    path = str(tmp_path / 'eval_x.png')
    a, b = atomic.temp_path(path), atomic.temp_path(path)
    assert a != b  # one per call: threads of one process never share one
    for t in (a, b):
        assert os.path.dirname(t) == str(tmp_path) and t.endswith('.png')  # savefig infers PNG from it
        m = atomic.TEMP_NAME.fullmatch(os.path.basename(t))
        assert int(m['pid']) == os.getpid() and m['root'] + m['ext'] == 'eval_x.png'
    m = atomic.TEMP_NAME.fullmatch(os.path.basename(atomic.temp_path(str(tmp_path / 'README'))))
    assert m['root'] == 'README' and m['ext'] is None
    assert atomic.final_path(a) == path and atomic.final_path(path) == path  # and back


def test_a_failure_mid_set_replaces_nothing_and_leaves_no_temp_file(tmp_path):
    a, b = str(tmp_path / 'r.json'), str(tmp_path / 'r.md')
    atomic.write_all({a: atomic.text_writer('old a'), b: atomic.text_writer('old b')})

    def full(path):
        open(path, 'w').write('half')
        raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(atomic.WriteError) as e:
        atomic.write_all({a: atomic.text_writer('new a'), b: full})
    assert e.value.filename == b and e.value.errno == errno.ENOSPC and not e.value.partial
    assert e.value.strerror == 'No space left on device' and isinstance(e.value, OSError)
    for interrupt in (ValueError('a chart failed'), KeyboardInterrupt()):  # not OS errors: as they are
        def fail(path, interrupt=interrupt):
            open(path, 'w').write('half')
            raise interrupt
        with pytest.raises(type(interrupt)):
            atomic.write_all({a: atomic.text_writer('new a'), b: fail})
    assert open(a).read() == 'old a' and open(b).read() == 'old b'
    assert files(tmp_path) == ['r.json', 'r.md']


def test_a_failed_rename_says_the_set_may_be_mixed(tmp_path, monkeypatch):
    a, b = str(tmp_path / 'a.txt'), str(tmp_path / 'b.txt')
    replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, 'Input/output error')
        replace(src, dst)
    monkeypatch.setattr(os, 'replace', second_fails)
    with pytest.raises(atomic.WriteError) as e:
        atomic.write_all({a: atomic.text_writer('a'), b: atomic.text_writer('b')})
    assert e.value.filename == b and e.value.partial  # a.txt is new, b.txt is not
    assert files(tmp_path) == ['a.txt']


def test_staged_renames_at_the_end_removes_old_files_and_can_fsync(tmp_path, monkeypatch):
    a, old = str(tmp_path / 'a.bin'), str(tmp_path / 'old.png')
    open(old, 'w').write('an earlier set had it')
    synced, fsync = [], os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd) or fsync(fd))
    with atomic.staged([a], fsync=True, lock=True, remove=[old, str(tmp_path / 'never.png')]) as tmp:
        assert set(tmp) == {a} and os.path.dirname(tmp[a]) == str(tmp_path)
        open(tmp[a], 'wb').write(b'\0\1')
        assert not os.path.exists(a)  # nothing is in place before the block ends
    assert files(tmp_path) == ['a.bin'] and open(a, 'rb').read() == b'\0\1'
    assert synced  # the file (and its folder) reached the disk before and after the rename


def test_a_dead_writers_temp_file_is_removed_a_live_ones_kept(tmp_path):
    live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        dead = dead_pid()
        names = {'stale': f'ckpt.tmp{dead}-0123abcd.pt', 'live': f'ckpt.tmp{live.pid}-0123abcd.pt',
                 'mine': f'ckpt.tmp{os.getpid()}-0123abcd.pt', 'other': f'notes.tmp{dead}-0123abcd.txt',
                 'plain': 'ckpt.pt', 'group': 'ckpt.tmp0-0123abcd.pt'}
        for n in names.values():
            (tmp_path / n).write_text('x')
        assert not atomic.writer_alive(dead) and atomic.writer_alive(live.pid) and atomic.writer_alive(0)
        removed = atomic.remove_stale(str(tmp_path), names=('ckpt*.pt',))
        assert removed == [(str(tmp_path / names['stale']), str(tmp_path / 'ckpt.pt'))]
        assert files(tmp_path) == sorted(n for k, n in names.items() if k != 'stale')
        atomic.remove_stale(str(tmp_path))  # every name
        assert files(tmp_path) == sorted(n for k, n in names.items() if k not in ('stale', 'other'))
    finally:
        live.kill()
        live.wait()
    assert atomic.remove_stale(str(tmp_path / 'no such folder')) == []


def test_windows_never_asks_with_os_kill(tmp_path, monkeypatch):
    dead = dead_pid()
    (tmp_path / f'a.tmp{dead}-0123abcd.txt').write_text('x')

    def kill(pid, sig):
        raise AssertionError('os.kill(pid, 0) would terminate the process on Windows')
    monkeypatch.setattr(os, 'kill', kill)
    monkeypatch.setattr(os, 'name', 'nt')
    assert atomic.writer_alive(dead)  # it cannot tell, so it keeps the file
    assert atomic.remove_stale(str(tmp_path)) == [] and len(files(tmp_path)) == 1


def test_threads_writing_one_path_at_once_do_not_collide(tmp_path):
    path, n = str(tmp_path / 'same.json'), 4
    barrier, temps, errors = threading.Barrier(n), [], []

    def writer(i):
        def write(tmp):
            temps.append(tmp)
            with open(tmp, 'w') as f:
                f.write(f'writer {i} ' * 1000)
                barrier.wait(timeout=20)  # every temp file is open and half written at the same moment
                f.write('end')
        return write

    def run(i):
        try:
            atomic.write_all({path: writer(i)}, lock=True)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(temps)) == n
    assert open(path).read() in {f'writer {i} ' * 1000 + 'end' for i in range(n)}  # one writer's, whole
    assert files(tmp_path) == ['same.json']


@pytest.mark.skipif(os.name == 'nt', reason='flock: POSIX only (Windows renames unlocked)')
def test_the_folder_lock_excludes_another_writer(tmp_path):
    order, inside = [], threading.Event()

    def second():
        inside.wait(10)
        with atomic.folder_lock(str(tmp_path)):
            order.append('second')
    t = threading.Thread(target=second)
    t.start()
    with atomic.folder_lock(str(tmp_path)):
        inside.set()
        t.join(0.3)  # it waits for the lock
        order.append('first')
    t.join(10)
    assert order == ['first', 'second'] and files(tmp_path) == []  # no lock file left behind
