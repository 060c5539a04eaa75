"""Files in and out, the one place that touches them: line-numbered readers and atomic, exclusive
writers for every artifact the library writes (indexes, FAISS directories, run files, checkpoints,
training data).

An artifact is either the complete old one or the complete new one. A writer:

1. refuses an output that is one of its inputs (``refuse_output_as_input``) before reading anything;
2. takes an exclusive lock beside the target (``.<name>.lock``, ``flock``: released by the kernel when
   the process dies, so a SIGKILL never leaves a stale lock), so a second writer gets ``ArtifactLocked``;
3. builds the new artifact in a private directory or file beside the target (same file system);
4. only when it is complete, swaps it into place: a file with ``os.replace``; a directory with an atomic
   exchange (Linux ``renameat2(RENAME_EXCHANGE)``, two renames elsewhere), then removes the old one.

A directory is replaced only with ``overwrite=True`` and only if every entry in it belongs to the
artifact (``owned``): files of the user's or other indexes inside it are never deleted; the
write is refused instead, naming them.
"""
import contextlib
import ctypes
import errno
import fcntl
import gzip
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Set, Tuple, Type

__all__ = ["ArtifactLocked", "CorruptArtifact", "FileFormatError", "atomic_directory", "atomic_file",
           "check_replaceable", "numbered_lines", "refuse_output_as_input", "thread_lock", "writer_lock"]


class ArtifactLocked(RuntimeError):
    """Another process is writing the same artifact."""


class CorruptArtifact(ValueError):
    """An artifact on disk whose files disagree with its metadata; the message names the path."""


class FileFormatError(ValueError):
    """A line of an input file that cannot be read; the message names the file and the line."""


# ---- reading --------------------------------------------------------------------------------------

def numbered_lines(path, *, error: Type[ValueError] = FileFormatError, skip_blank: bool = True
                   ) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (``.gz`` read transparently), numbered from 1.

    A line that is not UTF-8 (a binary file, another encoding) raises ``error`` naming ``file:line``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{number}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                            f"is this the right file?") from None
            if "\x00" in line:
                raise error(f"{path}:{number}: a NUL byte: this looks like a binary file, not text")
            if skip_blank and not line.strip():
                continue
            yield number, line


# ---- writing --------------------------------------------------------------------------------------

def refuse_output_as_input(output, **inputs) -> None:
    """Raise before anything is read or written when ``output`` is one of ``inputs`` or a directory
    holding one (inputs given by argument name, e.g. ``run=args.run``; ``None`` and ``irds:`` skipped)."""
    out = Path(output).expanduser().resolve()
    for name, value in inputs.items():
        if value is None or (isinstance(value, str) and ":" in value.split("/")[0]):  # irds:..., hub ids
            continue
        source = Path(value).expanduser().resolve()
        if out == source or out in source.parents:
            raise ValueError(f"the output {str(output)!r} is the input {name} {str(value)!r} (or holds it): "
                             f"writing it would destroy what is being read; choose another output path")


_THREAD_LOCKS: Dict[Tuple[int, int, str], threading.RLock] = {}


def thread_lock(target) -> threading.RLock:
    """The lock of ``target`` (in an existing directory) shared by the threads of this process: ``flock``
    tells processes apart, not the threads of one. ``writer_lock`` takes it without waiting; a thread that
    holds it may take ``writer_lock(target)``, so threads can wait here for one of them to write."""
    target = Path(target)
    directory = os.stat(target.parent)
    return _THREAD_LOCKS.setdefault((directory.st_dev, directory.st_ino, target.name), threading.RLock())


@contextlib.contextmanager
def writer_lock(target) -> Iterator[None]:
    """Exclusive lock on ``target`` (a path that need not exist yet) for one writer at a time."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    in_process = thread_lock(target)
    if not in_process.acquire(blocking=False):
        raise ArtifactLocked(f"another thread of this process is writing {target}; wait for it to finish, or write "
                             f"elsewhere")
    try:
        with _process_lock(target):
            yield
    finally:
        in_process.release()


@contextlib.contextmanager
def _process_lock(target: Path) -> Iterator[None]:
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArtifactLocked(f"another process is writing {target} (lock {lock_path} is held); wait for it "
                                 f"to finish, or write elsewhere") from None
        try:  # the file we locked must still be the one at lock_path (a finishing writer unlinks it)
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target, *, overwrite: bool = True, mode: str = "w", encoding: Optional[str] = "utf-8"):
    """Open a private file beside ``target`` for writing; it replaces ``target`` only when the block
    ends without an exception (fsync'd first). Exclusive: a second writer gets ``ArtifactLocked``."""
    target = Path(target)
    with writer_lock(target):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite to replace it")
        if target.is_dir():
            raise IsADirectoryError(f"{target} is a directory, not a file")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            _fsync_directory(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def atomic_directory(target, *, owned: Callable[[Path], Set[str]], overwrite: bool = False,
                     what: str = "artifact") -> Iterator[Path]:
    """Yield a private, empty directory beside ``target`` to build an artifact in; it takes
    ``target``'s place only when the block ends without an exception.

    ``owned(existing)`` names the entries of an existing ``target`` that belong to the artifact; an
    existing target is replaced only with ``overwrite=True`` and only if it holds nothing else. A
    failure, including SIGKILL, leaves ``target`` as it was (a dead writer's leftovers, hidden
    ``.<name>.tmp-*`` directories, are removed by the next writer)."""
    target = Path(target)
    with writer_lock(target):
        check_replaceable(target, owned, overwrite=overwrite, what=what)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # a killed writer's: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            yield staging
            check_replaceable(target, owned, overwrite=overwrite, what=what)  # nothing foreign appeared meanwhile
            _swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # the new artifact's temp dir, or the old artifact


def check_replaceable(target: Path, owned, *, overwrite: bool, what: str) -> None:
    """Raise unless ``target`` is absent, empty, or (with ``overwrite``) holds only ``owned`` entries."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory; it cannot hold the {what}")
    entries = {p.name for p in target.iterdir()}
    if not entries:
        return
    foreign = sorted(entries - set(owned(target)))
    if foreign:
        raise FileExistsError(f"{target} holds entries that are not the {what}'s own ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}); nothing was written. Move them, or "
                              f"choose another path")
    if not overwrite:
        raise FileExistsError(f"a {what} already exists at {target}; pass overwrite=True (--overwrite) to "
                              f"replace it")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Exchange ``staging`` and ``target`` atomically; afterwards ``staging`` holds the old artifact."""
    _fsync_directory(staging)
    if not target.exists():
        os.rename(staging, target)
    elif not _rename_exchange(staging, target):
        old = staging.with_name(staging.name + "-old")
        os.rename(target, old)
        os.rename(staging, target)
        os.rename(old, staging)
    _fsync_directory(target.parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: Path, b: Path) -> bool:
    """Linux ``renameat2(a, b, RENAME_EXCHANGE)``; False where the system does not offer it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
