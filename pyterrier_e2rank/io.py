"""Files in and out, the one place that touches them: line-numbered readers, and atomic, exclusive writers for
every artifact the library writes: the complete old artifact or the complete new one, built beside the target
under a lock and swapped in when complete; a directory replaced only when all it holds is the artifact's own."""
import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import json
import os
import secrets
import shutil
import stat
import threading
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple, Type

class ArtifactLocked(RuntimeError):
    """Another process is writing the same artifact."""


class CorruptArtifact(ValueError):
    """An artifact on disk whose files disagree with its metadata; the message names the path."""


class FileFormatError(ValueError):
    """A line of an input file that cannot be read; the message names the file and the line."""


# ---- reading --------------------------------------------------------------------------------------

_BOM = "\ufeff"


def numbered_lines(path, *, error: Type[ValueError] = FileFormatError, skip_blank: bool = True
                   ) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (``.gz`` read transparently), numbered from 1: lines end at
    ``\\n``, ``\\r\\n`` or a lone ``\\r``; a byte-order mark starting a line is dropped; blank lines are skipped
    (``skip_blank``). A line that is not UTF-8 or holds a NUL byte raises ``error`` naming ``file:line``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    number = 0
    with opener(path, "rb") as raw_lines:
        try:
            for raw in raw_lines:
                for part in raw.removesuffix(b"\n").removesuffix(b"\r").split(b"\r"):
                    number += 1
                    try:
                        line = part.decode("utf-8").removeprefix(_BOM)
                    except UnicodeDecodeError as e:
                        raise error(f"{path}:{number}: not UTF-8 text (byte {part[e.start]:#04x} at column "
                                    f"{e.start + 1}); is this the right file?") from None
                    if "\x00" in line:
                        raise error(f"{path}:{number}: a NUL byte: this looks like a binary file, not text")
                    if not skip_blank or line.strip():
                        yield number, line
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise error(f"{path}: its name ends in .gz but it is not gzip data, or is cut short ({e}); is this "
                        f"the right file?") from None


def read_json_object(path, what: str) -> Optional[dict]:
    """The JSON object in the file ``path``, ``None`` if there is none; ``CorruptArtifact`` naming the file when it
    is not ``what`` (a JSON object)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptArtifact(f"{path} is not {what} ({e}); rebuild the index") from None
    if not isinstance(value, dict):
        raise CorruptArtifact(f"{path} is not {what} (a {type(value).__name__}); rebuild the index")
    return value


def json_line(line: str, where: str, *, error: Type[ValueError] = FileFormatError):
    """The JSON value of one line of a JSONL file; ``error`` naming ``where`` (``file:line``) when it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{where}: not a JSON object ({e.msg} at column {e.colno})") from None


def split_fields(line: str, count: int, *, where: str, form: str, sep: Optional[str] = None,
                 error: Type[ValueError] = FileFormatError) -> List[str]:
    """The ``count`` fields of a line, split at each ``sep`` (``None``: runs of whitespace); a line with more or
    fewer raises ``error`` naming ``where`` (``file:line``) and the expected ``form``."""
    fields = line.split(sep)
    if len(fields) != count:
        kind = "tab-separated fields" if sep == "\t" else "fields"
        raise error(f"{where}: expected {count} {kind} '{form}', got {len(fields)}: {line[:80]!r}")
    return fields


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


_THREAD_LOCKS: Dict[Path, threading.RLock] = {}

#: The targets whose outermost ``writer_lock`` block holds the ``flock`` (changed only by the thread holding the
#: target's ``thread_lock``); inner blocks reuse it.
_WRITING: Set[Path] = set()


def thread_lock(target) -> threading.RLock:
    """The lock of ``target`` shared by the threads of this process (``flock`` tells
    processes apart, not threads); a thread holding it may take ``writer_lock(target)``."""
    return _THREAD_LOCKS.setdefault(Path(target).resolve(), threading.RLock())


@contextlib.contextmanager
def writer_lock(target) -> Iterator[None]:
    """Exclusive lock on ``target`` (which need not exist; a symbolic link is locked where it points) for one
    writer: another process or thread gets ``ArtifactLocked``. Re-entrant for the thread holding it: held until
    the outermost block ends."""
    target = artifact_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = target.resolve()
    in_process = thread_lock(target)
    if not in_process.acquire(blocking=False):
        raise ArtifactLocked(f"another thread of this process is writing {target}; wait for it to finish, or write "
                             f"elsewhere")
    try:
        outermost = key not in _WRITING
        with _process_lock(target) if outermost else contextlib.nullcontext():
            _WRITING.add(key)
            try:
                yield
            finally:
                if outermost:
                    _WRITING.discard(key)
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
def atomic_file(target, *, mode: str = "w"):
    """Open a new file beside ``target`` for writing (UTF-8 text, or ``mode="wb"``); it replaces ``target`` only
    when the block ends without an exception, fsync'd, with the mode of the file it replaces. Exclusive
    (``writer_lock``)."""
    target = artifact_path(target)
    with writer_lock(target):
        if target.is_dir():
            raise IsADirectoryError(f"{target} is a directory, not a file")
        tmp, fd = _create_beside(target, ".{name}.{token}.tmp",
                                 lambda path: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            _keep_mode(tmp, target)
            os.replace(tmp, target)
            _fsync_directory(target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def atomic_directory(target, *, owned: Callable[[Path], Set[str]], overwrite: bool = False,
                     what: str = "artifact") -> Iterator[Path]:
    """Yield a new, empty directory beside ``target`` to build an artifact in; it takes ``target``'s place only
    when the block ends without an exception. An existing target is replaced only with ``overwrite`` and only if
    ``owned(target)`` names all it holds (``check_replaceable``). Exclusive (``writer_lock``)."""
    target = artifact_path(target)
    with writer_lock(target):
        check_replaceable(target, owned, overwrite=overwrite, what=what)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # a killed writer's: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging, _ = _create_beside(target, ".{name}.tmp-{token}", lambda path: os.mkdir(path, 0o777))
        try:
            yield staging
            check_replaceable(target, owned, overwrite=overwrite, what=what)  # nothing foreign appeared meanwhile
            _keep_mode(staging, target)
            fsync_tree(staging)  # every file of the new artifact on disk before the swap publishes it
            if not target.exists():
                os.rename(staging, target)
            elif not _rename_exchange(staging, target):  # afterwards staging holds the old artifact
                old = staging.with_name(staging.name + "-old")
                os.rename(target, old)
                os.rename(staging, target)
                os.rename(old, staging)
            _fsync_directory(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # the new artifact's temp dir, or the old artifact


def artifact_path(target) -> Path:
    """Where an artifact at ``target`` is written: ``target``, or the path a symbolic link points to."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def _create_beside(target: Path, template: str, create: Callable[[Path], object]) -> Tuple[Path, object]:
    """A new path beside ``target`` named by ``template`` (``{name}``, ``{token}``), made by ``create``; returns
    the path and what ``create`` returned."""
    while True:
        path = target.with_name(template.format(name=target.name, token=secrets.token_hex(4)))
        try:
            return path, create(path)
        except FileExistsError:
            continue


def _keep_mode(new: Path, target: Path) -> None:
    """Give ``new`` the permission bits of the ``target`` it is about to replace, if there is one."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))


def check_replaceable(target: Path, owned, *, overwrite: bool, what: str,
                      fix: str = "pass overwrite=True (--overwrite) to replace it") -> None:
    """Raise FileExistsError unless ``target`` is absent, empty, or (with ``overwrite``) holds only ``owned``
    entries; ``fix`` says how to replace it."""
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
        article = "an" if what[:1].lower() in "aeio" else "a"
        raise FileExistsError(f"{article} {what} already exists at {target}; {fix}")


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


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory
        _fsync(path)


def file_sha256(path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    with open(path, "rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


def fsync_tree(path) -> None:
    """fsync every file and directory under ``path`` (and ``path`` itself), deepest first."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync_directory(Path(root))
