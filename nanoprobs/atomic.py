"""
Atomic file writes: each file is written under a temporary name next to it and renamed into place only
once it (or the whole set it belongs to) is complete, so a reader, a crash or kill -9 at any moment finds
the old file or the new one, never half of one.

    write_all({'out/a.json': text_writer(text), 'out/a.png': draw})   # all renamed, or none
    with staged(['out/train.bin', 'out/val.bin']) as tmp:              # {path: its temporary path}
        write_into(tmp['out/train.bin']) ...                          # renamed when the block ends
    remove_stale('out')                                                # what killed writers left there

A temporary name is <root>.tmp<pid>-<8 hex><ext> for <root><ext> (ckpt.pt -> ckpt.tmp4242-0a1b2c3d.pt):
in the same folder, so the rename never crosses file systems; with the writer's pid, so remove_stale can
tell a killed writer's leftovers from a live one's; unique per call, so threads of one process do not
collide; with the extension, so matplotlib's savefig (which infers the format from it) still works.
"""
import fnmatch
import os
import re
import uuid
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Iterator, Mapping

TEMP_NAME = re.compile(r'(?P<root>.*)\.tmp(?P<pid>\d+)-[0-9a-f]{8}(?P<ext>\.[^.]*)?')


class WriteError(OSError):
    """An operating-system error while writing or renaming one file of a set. Its filename is that file's
    final path (not the temporary one), errno and strerror are the cause's; partial is True when some files
    of the set were already renamed into place (the set on disk may then be a mix of old and new)."""

    def __init__(self, path: str, cause: OSError, partial: bool = False):
        super().__init__(cause.errno, cause.strerror or str(cause) or type(cause).__name__, path)
        self.partial = partial


def temp_path(path: str) -> str:
    """A fresh temporary name for path, in its folder (see the module docstring)."""
    root, ext = os.path.splitext(path)
    return f"{root}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}"


def final_path(path: str) -> str:
    """The path a temporary path stands for (temp_path's inverse); any other path as it is."""
    folder, name = os.path.split(path)
    m = TEMP_NAME.fullmatch(name)
    return os.path.join(folder, m['root'] + (m['ext'] or '')) if m else path


def writer_alive(pid: int) -> bool:
    """Whether the process that named a temporary file may still be writing it. When it cannot tell, it
    says yes: a live writer's file must never be removed, a dead one's may stay a while."""
    if pid <= 0:  # 0 and negative pids name process groups, not a writer
        return True
    if os.name == 'nt':  # os.kill(pid, 0) there would terminate the process, not ask about it
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user (PermissionError)
        return True
    return True


def remove_stale(folder: str, names: Iterable[str] = ('*',)) -> list:
    """Delete the temporary files in folder that writers killed before cleaning up (kill -9, a power loss)
    left behind: those whose final name matches one of the glob patterns `names` and whose writer is no
    longer running. A concurrent writer's files are kept. Best effort: what cannot be listed or removed
    stays. Returns [(temporary path, final path)] of the files removed."""
    try:
        files = sorted(os.listdir(folder))
    except OSError:
        return []
    removed = []
    for f in files:
        m = TEMP_NAME.fullmatch(f)
        final = final_path(f)
        if not m or not any(fnmatch.fnmatchcase(final, n) for n in names) or writer_alive(int(m['pid'])):
            continue
        try:
            os.remove(os.path.join(folder, f))
        except OSError:  # another run removed it first, or it is not ours to remove
            continue
        removed.append((os.path.join(folder, f), os.path.join(folder, final)))
    return removed


@contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """An exclusive lock on a folder while one writer renames its set into place, so that writers of the
    same names one after another (or at once) each leave a whole set. flock on the folder itself leaves
    no lock file behind; where flock does not exist (Windows) or the file system refuses it, the block
    runs unlocked."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync(path: str) -> None:
    """Flush path's data to the disk: a power loss after the rename then cannot leave an empty file."""
    fd = os.open(path, os.O_RDWR)  # Windows' fsync needs a handle open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    """Make the renames in folder durable too. Best effort: Windows cannot open a folder, and some file
    systems cannot fsync one; the files themselves are on disk by then."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:  # never written, or renamed into place
        pass


@contextmanager
def staged(paths: Iterable[str], fsync: bool = False, lock: bool = False,
           remove: Iterable[str] = ()) -> Iterator[dict]:
    """Temporary paths {path: temporary path} for the block to write. When it ends without error they are
    all renamed into place (fsync=True: each flushed to disk first, for checkpoints) and the `remove`
    paths (files of an earlier set that this one does not have) deleted, under folder_lock when lock=True
    (the folder of the first path). On any error, Ctrl-C included, the temporary files are removed and
    nothing is replaced; an operating-system error while renaming is a WriteError naming the file.
    The block's own errors pass through as they are. The folders must exist."""
    tmps = {p: temp_path(p) for p in paths}
    try:
        yield tmps
        _commit(tmps, fsync, lock, remove)
    finally:
        for tmp in tmps.values():
            _discard(tmp)


def _commit(tmps, fsync, lock, remove):
    """Rename the written temporary files into place (see staged)."""
    path, renamed = '', False
    try:
        if fsync:
            for path, tmp in tmps.items():
                _fsync(tmp)
        folder = os.path.dirname(next(iter(tmps), '')) or '.'
        with folder_lock(folder) if lock else nullcontext():
            for path, tmp in tmps.items():
                os.replace(tmp, path)
                renamed = True
            for path in remove:
                if os.path.lexists(path):
                    os.remove(path)
    except OSError as e:
        raise WriteError(path, e, partial=renamed) from None
    if fsync:
        for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in tmps}):
            _fsync_folder(folder)


def write_all(writers: Mapping[str, Callable[[str], object]], fsync: bool = False, lock: bool = False,
              remove: Iterable[str] = ()) -> list:
    """{path: write(temporary path)}: every file is written under its temporary name, then all are renamed
    into place together (staged: fsync, lock and remove as there). So an error (a full disk, a failing
    chart) replaces nothing and leaves no temporary file. An operating-system error is a WriteError whose
    filename is the final path being written or renamed. Returns the paths."""
    with staged(writers, fsync, lock, remove) as tmps:
        for path, write in writers.items():
            try:
                write(tmps[path])
            except OSError as e:
                raise WriteError(path, e) from None
    return list(writers)


def text_writer(text: str) -> Callable[[str], None]:
    """A write_all writer that puts text (UTF-8, newlines as they are) into the path it is given."""
    def write(path):
        with open(path, 'w', encoding='utf-8', newline='') as f:
            f.write(text)
    return write


def stream_writer(write_to: Callable) -> Callable[[str], None]:
    """A write_all writer that opens the path it is given as UTF-8 text (newlines as they are) and hands
    the file to write_to(f), which writes it a piece at a time (a file larger than memory should hold)."""
    def write(path):
        with open(path, 'w', encoding='utf-8', newline='') as f:
            write_to(f)
    return write


def write_text(path: str, text: str) -> str:
    """path's new text (UTF-8, newlines as they are), atomically. Returns path."""
    write_all({path: text_writer(text)})
    return path


def write_bytes(path: str, data: bytes) -> str:
    """path's new bytes, atomically. Returns path."""
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    write_all({path: write})
    return path
