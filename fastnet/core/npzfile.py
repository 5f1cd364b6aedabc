"""The ``.npz`` container of model files and checkpoints: writing, reading, locking, checksums.

Below the model in the import order: it takes a model as any object with
``get_config``, ``get_weights``, ``n_iter_`` and ``built``, and never imports
the model module.  Reading a model back (which builds one) is ``fastnet.core.io``.

Reading (:class:`Archive`) looks at sizes before it takes memory: the zip
directory (entry names, compressed and declared sizes) and every ``.npy`` header
(dtype and shape) are read and checked first, against each other and the file's
real size; the caller then compares names and shapes with the configuration, and
only then are arrays read, each into an array of the size already checked.  A
file that is not a regular file (a FIFO, a device, a folder) is refused without
being opened for reading.

Writing (:func:`atomic_write`) goes through a temporary file (fsynced, renamed);
:func:`writer_lock` keeps one writer per path (``fcntl.flock`` on ``<path>.lock``).

Checksums: a model file's or checkpoint's metadata holds ``sha256`` (every array:
name, dtype, shape, bytes) and ``meta_sha256`` (the metadata itself, ``sha256``
included, as canonical JSON): :func:`checksums` and :func:`verify_checksums`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np

try:  # Linux and macOS; elsewhere writes go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
META_KEY = "__fastnet__"

#: Largest metadata entry read (bytes of JSON): configuration, history, random state.
MAX_META_BYTES = 16 << 20
#: Most entries an archive may list (a model has two per layer; its checkpoint four).
MAX_ENTRIES = 10_000
#: Largest ``.npy`` header read (NumPy's own default limit).
MAX_HEADER_BYTES = 10_000
#: Deflate cannot expand data more than ~1032 times: a larger declared ratio is a lie.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 18  # bytes per read: the only memory a read takes besides its array


class ModelFileError(ValueError):
    """A model file is unreadable, damaged, hostile or from a newer fastnet."""


class NotAnArchive(ModelFileError):
    """The file is neither a zip archive nor damaged one: ``kind`` is ``"npy"`` (a single
    ``.npy`` array, ``shape`` set), ``"empty"`` or ``"other"``."""

    def __init__(self, message, kind, shape=None):
        super().__init__(message)
        self.kind, self.shape = kind, shape


def json_type(value):
    """JSON's name for the type of a parsed ``value``: object, array, string, number, boolean, null."""
    for types, name in ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean"),
                        ((int, float), "number"), (type(None), "null")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def encode_meta(obj):
    """JSON metadata as a uint8 array (readable without pickle)."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


# ------------------------------------------------------------------ checksums
def array_digest(arrays):
    """SHA-256 over every array of ``arrays`` (sorted by name): its name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        _digest_update(h, name, arrays[name])
    return h.hexdigest()


def _digest_update(h, name, a):
    a = np.ascontiguousarray(a)
    h.update(name.encode())
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(memoryview(a.reshape(-1)).cast("B") if a.size else b"")  # the bytes, not a copy of them


def meta_digest(meta):
    """SHA-256 of ``meta`` (less its ``meta_sha256``) as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def checksums(meta, arrays):
    """``meta`` with ``sha256`` (the arrays) and ``meta_sha256`` (the metadata, ``sha256``
    included) set; computed on the JSON round trip, as a reader will see it."""
    meta = json.loads(json.dumps({**meta, "sha256": array_digest(arrays)}))
    meta["meta_sha256"] = meta_digest(meta)
    return meta


def verify_checksums(meta, digest, fail, required=False):
    """Compare ``meta``'s checksums with the metadata and ``digest`` (the arrays' one, as read).

    A file with neither key predates them (fastnet < 0.3 model files; checkpoints had
    ``sha256`` only): accepted unless ``required``.  Raises ``fail(detail)``."""
    has_arrays, has_meta = "sha256" in meta, "meta_sha256" in meta
    if not has_arrays and not has_meta:
        if required:
            raise fail("carries no checksum")
        return
    if has_meta and meta["meta_sha256"] != meta_digest(meta):
        raise fail("failed its checksum: the metadata (configuration, optimizer, history, random state) "
                   "differs from what was written: the file is damaged")
    if not has_arrays:
        raise fail("failed its checksum: the checksum of its arrays is missing: the file is damaged")
    if meta["sha256"] != digest:
        raise fail("failed its checksum: the file is damaged")


# ------------------------------------------------------------------ reading
def _file_kind(mode):
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return what
    return "not a regular file"


class Entry:
    """One ``.npy`` entry as its headers declare it (nothing of its data read)."""

    def __init__(self, info, shape, dtype, fortran, header_len):
        self.info, self.shape, self.dtype, self.fortran, self.header_len = info, shape, dtype, fortran, header_len
        self.count = int(np.prod(shape, dtype=object)) if shape else 1
        self.nbytes = self.count * dtype.itemsize


class Archive:
    """An ``.npz`` opened for checked reading: ``entries`` (name -> :class:`Entry`, from the zip
    directory and the ``.npy`` headers) are known before any array is read; :meth:`read` reads one.

    Every problem raises ``error`` (``ModelFileError`` or a subclass) with a message naming
    ``what`` (``"model file"``, ``"checkpoint"``), the path and, where there is one, the entry;
    a file that is no zip archive raises :class:`NotAnArchive` (the caller words it).
    """

    def __init__(self, path, what="model file", error=ModelFileError):
        self.path, self.what, self.error = os.fspath(path), what, error
        self._file = self._open()
        try:
            self._zip = self._open_zip()
            self.entries = self._directory()
        except BaseException:
            self.close()
            raise

    # -- errors
    def fail(self, detail, entry=None):
        where = f"{self.what} {self.path!r}" + (f", entry {entry!r}" if entry is not None else "")
        return self.error(f"{where}: {detail}")

    def _cannot(self, detail):
        return self.error(f"cannot read {self.what} {self.path!r}: {detail}")

    # -- opening
    def _open(self):
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise self._cannot(os_reason(exc)) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._cannot(f"it is {_file_kind(st.st_mode)}, not a regular file (refused without opening it)")
        try:  # O_NONBLOCK: were it swapped for a FIFO since, opening does not wait for a writer
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise self._cannot(os_reason(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._cannot(f"it is {_file_kind(st.st_mode)}, not a regular file")
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self.size = st.st_size
        return os.fdopen(fd, "rb")

    def _open_zip(self):
        f = self._file
        head = f.read(8)
        if not head:
            raise NotAnArchive(f"{self.path!r} is empty", "empty")
        if head.startswith(b"\x93NUMPY"):
            f.seek(0)
            shape = None
            with contextlib.suppress(Exception):
                version = np.lib.format.read_magic(f)
                shape = _read_header(f, version)[0]
            raise NotAnArchive(f"{self.path!r} holds a single .npy array", "npy", shape)
        if not head.startswith(b"PK"):
            raise NotAnArchive(f"{self.path!r} is no zip archive", "other")
        f.seek(0)
        try:
            end = zipfile._EndRecData(f)  # the end record alone: the entry count before any directory is read
        except OSError as exc:
            raise self._cannot(f"{os_reason(exc)}") from None
        if end is None:
            raise self._cannot("the archive is truncated or damaged (no zip end record: "
                               "File is not a zip file)")
        if end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ENTRIES:
            raise self.fail(f"lists {end[zipfile._ECD_ENTRIES_TOTAL]:,} entries (at most {MAX_ENTRIES:,} "
                            "are read): refused")
        if end[zipfile._ECD_SIZE] > self.size:
            raise self._cannot(f"the archive is truncated or damaged (its directory declares "
                               f"{end[zipfile._ECD_SIZE]:,} bytes in a file of {self.size:,})")
        try:
            f.seek(0)
            return zipfile.ZipFile(f)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError,
                IndexError, OverflowError, UnicodeDecodeError, NotImplementedError) as exc:
            raise self._cannot(f"the archive is truncated or damaged ({type(exc).__name__}: {exc})") from None

    def _directory(self):
        entries = {}
        seen = set()
        stored_total = 0
        for info in self._zip.infolist():
            name = info.filename
            if name in seen:
                raise self.fail("the archive holds two entries of this name (one would hide the other): refused",
                                name)
            seen.add(name)
            if not name.endswith(".npy"):
                raise self.fail("not an .npy array (every entry of an .npz is one): refused", name)
            if info.flag_bits & 0x1:
                raise self.fail("encrypted: refused", name)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.fail(f"compressed with method {info.compress_type} (NumPy writes stored or deflated "
                                "entries only): refused", name)
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise self.fail(f"stored uncompressed, yet declares {info.file_size:,} bytes in "
                                f"{info.compress_size:,}: damaged", name)
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
                raise self.fail(f"declares {info.file_size:,} bytes uncompressed from {info.compress_size:,} "
                                f"compressed, more than deflate can expand (x{MAX_DEFLATE_RATIO}): a zip bomb "
                                "or a damaged directory, refused", name)
            stored_total += info.compress_size
            if stored_total > self.size or info.header_offset > self.size:
                raise self.fail(f"lies beyond the end of the file ({self.size:,} bytes): truncated or damaged",
                                name)
            entries[name[:-4]] = self._header(info)
        return entries

    def _header(self, info):
        name = info.filename
        try:
            with self._zip.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                shape, fortran, dtype = _read_header(fp, version)
                header_len = fp.tell()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, TypeError, KeyError, SyntaxError,
                OverflowError, RecursionError, MemoryError, NotImplementedError) as exc:
            raise self.fail(f"no readable .npy header ({type(exc).__name__}: {exc})", name) from None
        if dtype.hasobject:
            raise self.fail(f"holds Python objects (dtype {dtype}: a pickle, which fastnet never reads): refused",
                            name)
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
            raise self.fail(f"has dtype {dtype} (fastnet writes plain numbers only): refused", name)
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise self.fail(f"declares the shape {shape!r}: refused", name)
        entry = Entry(info, shape, dtype, fortran, header_len)
        if header_len + entry.nbytes != info.file_size:
            raise self.fail(f"declares a {shape} {dtype} array ({entry.nbytes:,} bytes) but holds "
                            f"{max(info.file_size - header_len, 0):,} bytes of data: damaged or hostile, refused",
                            name)
        return entry

    # -- reading
    def read(self, key, limit=None, out=None):
        """The array of entry ``key`` (its size was checked; ``limit``: most bytes allowed).
        ``out``: a C-contiguous NumPy array of the entry's shape and dtype to read into (no copy)."""
        entry = self.entries[key]
        name = entry.info.filename
        if limit is not None and entry.nbytes > limit:
            raise self.fail(f"declares {entry.nbytes:,} bytes (at most {limit:,} are read): refused", name)
        if out is not None and self.fits(key, out):
            flat = out.reshape(-1)
        else:
            flat = np.empty(entry.count, dtype=entry.dtype)
        view = memoryview(flat).cast("B") if entry.nbytes else memoryview(b"")
        try:
            with self._zip.open(entry.info) as fp:
                skipped = fp.read(entry.header_len)
                if len(skipped) != entry.header_len:
                    raise EOFError("the header ended early")
                done = 0
                while done < entry.nbytes:
                    n = fp.readinto(view[done:done + _CHUNK])
                    if not n:
                        raise EOFError(f"the data ended after {done:,} of {entry.nbytes:,} bytes")
                    done += n
                if fp.read(1):  # also reaches the end, where the CRC is compared
                    raise ValueError("more data than declared")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, zipfile.BadZipFile) and "CRC" in detail:
                detail = "its CRC-32 does not match its data"
            raise self.fail(f"damaged ({type(exc).__name__}: {detail})", name) from None
        except Exception as exc:  # zlib.error and the like
            raise self.fail(f"damaged ({type(exc).__name__}: {exc})", name) from None
        return flat.reshape(entry.shape, order="F" if entry.fortran else "C")

    def fits(self, key, a):
        """True when entry ``key`` can be read straight into the NumPy array ``a``."""
        entry = self.entries[key]
        return (isinstance(a, np.ndarray) and a.dtype == entry.dtype and tuple(a.shape) == tuple(entry.shape)
                and a.flags.c_contiguous and a.flags.writeable and not entry.fortran)

    def read_meta(self):
        """The metadata entry parsed: a dict (JSON of any other type is refused)."""
        entry = self.entries.get(META_KEY)
        if entry is None:
            return None
        if entry.dtype != np.uint8 or len(entry.shape) != 1:
            raise self.fail(f"has dtype {entry.dtype} and shape {entry.shape}, not JSON bytes: damaged",
                            entry.info.filename)
        raw = self.read(META_KEY, limit=MAX_META_BYTES)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise self.fail(f"damaged metadata ({type(exc).__name__}: {str(exc)[:200]})") from None
        if not isinstance(meta, dict):
            raise self.fail(f"damaged metadata: JSON {json_type(meta)} where an object is expected")
        return meta

    def close(self):
        z = getattr(self, "_zip", None)
        if z is not None:
            z.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _read_header(fp, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_HEADER_BYTES)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_HEADER_BYTES)
    raise ValueError(f".npy format version {version} (fastnet reads 1.0 and 2.0)")


def check_format_version(meta, fail):
    """``meta["format_version"]`` must be an integer in [1, FORMAT_VERSION]."""
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise fail(f"has format version {version!r}, not a positive integer: damaged, or not written by fastnet")
    if version > FORMAT_VERSION:
        raise fail(f"has format version {version!r}; this fastnet reads up to {FORMAT_VERSION}: upgrade fastnet")
    return version


# ------------------------------------------------------------------ one writer per path
_registry = threading.Lock()
_held: dict[str, _Lock] = {}


class _Lock:
    def __init__(self, key, fd, lock_file):
        self.key, self.fd, self.lock_file = key, fd, lock_file
        self.thread = threading.get_ident()
        self.thread_name = threading.current_thread().name
        self.count = 1


def _key(path):
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def lock_file_of(path):
    """The lock file of ``path``: ``<path>.lock``, beside it."""
    return os.fspath(path) + ".lock"


def holds_lock(path):
    """True when this process holds ``path``'s writer lock."""
    with _registry:
        return _key(path) in _held


def _holder_words(info):
    if not info:
        return "a process that has not yet said who it is"
    words = f"pid {info.get('pid')} on host {info.get('host')!s}, since {info.get('since')}"
    if info.get("command"):
        words += f" (command: {info['command']})"
    return words


def _read_holder(fd):
    for _ in range(20):  # the holder writes who it is just after taking the lock
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            return None
        if data:
            try:
                info = json.loads(data.decode("utf-8", "replace"))
                return info if isinstance(info, dict) else None
            except ValueError:
                pass
        time.sleep(0.01)
    return None


def acquire(path, error=ModelFileError, what="model file"):
    """Take ``path``'s writer lock (re-entrant in the thread that holds it); another process's
    or thread's hold raises ``error`` naming the holder.  Returns a handle for :func:`release`."""
    path = os.fspath(path)
    key = _key(path)
    with _registry:
        held = _held.get(key)
        if held is not None:
            if held.thread == threading.get_ident():
                held.count += 1
                return held
            raise error(f"{what} {path!r} is being written by another fit in this process (thread "
                        f"{held.thread_name!r}): one writer per path; give this one another path")
        held = _Lock(key, *_flock(path, error, what))
        _held[key] = held
        return held


def release(held):
    with _registry:
        held.count -= 1
        if held.count:
            return
        _held.pop(held.key, None)
    if held.fd is None:
        return
    try:
        with contextlib.suppress(OSError):  # unlinked while locked, and only if it is still ours
            st, mine = os.stat(held.lock_file), os.fstat(held.fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(held.lock_file)
    finally:
        os.close(held.fd)


@contextlib.contextmanager
def writer_lock(path, error=ModelFileError, what="model file"):
    """``with writer_lock(path):`` this thread is ``path``'s one writer (see :func:`acquire`)."""
    held = acquire(path, error, what)
    try:
        yield held
    finally:
        release(held)


def _flock(path, error, what):
    """``(fd, lock file)`` with an exclusive ``flock`` held, or ``(None, None)`` where no lock
    can be taken (no fcntl, a folder where nothing can be created, a file system without
    locks): the write then goes ahead unlocked and reports its own failures."""
    lock_file = lock_file_of(path)
    if fcntl is None:
        return None, None
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_NONBLOCK", 0)
    for _ in range(10):
        try:
            fd = os.open(lock_file, flags, 0o666)
        except OSError:
            return None, None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise error(
                f"{what} {path!r} is being written by another run: {_holder_words(holder)}. Two runs must not "
                f"share one {what} path (each would overwrite the other's): give this one another path, or "
                f"wait for that run to end (lock file {lock_file!r})") from None
        except OSError:  # ENOLCK, EOPNOTSUPP...: this file system has no locks
            os.close(fd)
            return None, None
        try:  # a holder that just ended unlinks the file: the one locked must still be the one there
            st, mine = os.stat(lock_file), os.fstat(fd)
            current = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
        except OSError:
            current = False
        if not current:
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        with contextlib.suppress(OSError):  # (a full disk: the lock holds, its holder goes unnamed)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        return fd, lock_file
    raise error(f"could not lock {what} {path!r}: its lock file {lock_file!r} keeps changing")


# ------------------------------------------------------------------ writing
#: Temporary files of atomic_write: ``.tmp-<pid>-<8 random>-<name>`` (and older ``.tmp-<8 random>-<name>``).
_TMP = re.compile(r"\.tmp-(?:(\d+)-)?[a-z0-9_]{8}-(.+)\Z")


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (another user's process)
        return True
    return True


def sweep_temporaries(folder, names, everything=False):
    """Remove the temporary files that writers of ``names`` (file names in ``folder``) left
    behind (a writer killed mid-write): all of them with ``everything`` (the caller holds the
    target's writer lock: no other writer can be at work), else those whose process is dead.
    Returns the names removed."""
    removed = []
    try:
        listing = os.listdir(folder)
    except OSError:
        return removed
    for entry in listing:
        m = _TMP.match(entry)
        if m is None or m.group(2) not in names:
            continue
        pid = m.group(1)
        if not everything and (pid is None or _alive(int(pid))):
            continue
        try:
            os.unlink(os.path.join(folder, entry))
            removed.append(entry)
        except OSError:
            pass
    return removed


def atomic_write(path, write, keep_previous=None, locked=None):
    """Write ``path`` so that it is always complete, and the file it replaces survives any failure.

    1. ``write(f)`` fills a temporary file in the same folder, flushed and fsynced;
    2. only then, with ``keep_previous`` (a path), the current ``path`` is also kept
       there: a hard link, so ``path`` never disappears (a rename where the file
       system has no hard links);
    3. the temporary file is renamed onto ``path`` (atomic) and the folder fsynced.

    If a step fails (no space, a quota, a size limit, a read-only folder, an I/O
    error, an interrupt), the temporary file is removed and the exception re-raised:
    ``path`` is as it was.

    Temporary files that earlier writers of ``path`` left (killed mid-write) are removed
    first: every one when this process holds ``path``'s writer lock (``locked``; by default
    :func:`holds_lock`), else those whose process is gone.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    names = {os.path.basename(path)}
    if keep_previous is not None:
        names.add(os.path.basename(os.fspath(keep_previous)))
    sweep_temporaries(folder, names, everything=holds_lock(path) if locked is None else locked)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes owner-only files: the mode open() would give
                os.fchmod(f.fileno(), _mode_for(path))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and os.path.exists(path):
            _keep(path, os.fspath(keep_previous), folder)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def _mode_for(path):
    """The mode of the file ``path`` replaces, else what ``open(path, "w")`` gives: 0o666
    less the process's umask (read without changing it where /proc tells it)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _keep(path, previous, folder):
    """``previous`` becomes (a link to) the current ``path``; ``path`` stays in place."""
    with contextlib.suppress(OSError):
        if os.path.samefile(path, previous):  # already the same file (a hard link made by hand)
            return
    staged = os.path.join(folder, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{os.path.basename(previous)}")
    try:
        os.link(path, staged)
    except OSError:  # no hard links here: move it (path is missing until the next rename)
        os.replace(path, previous)
        return
    try:
        os.replace(staged, previous)
    finally:
        # rename() between two links of one file does nothing and leaves the source in place
        with contextlib.suppress(OSError):
            os.unlink(staged)


def fsync_folder(folder):
    """Persist the renames in ``folder`` (where the platform lets a folder be opened)."""
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


def os_reason(exc):
    """``"no space left on device"``, ``"permission denied"``...: the OS's words for ``exc``."""
    if getattr(exc, "errno", None):
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def check_target(path, error, what):
    """Refuse to write over something that is not a regular file (a FIFO, a device, a folder):
    the rename would replace it."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {os.fspath(path)!r} is {_file_kind(st.st_mode)}, not a regular file: refused to "
                    "write over it")


def save_model(model, path):
    """Write ``model`` to ``path`` atomically, under its writer lock, with its checksums."""
    weights = model.get_weights() if model.built else {}
    meta = checksums({"format_version": FORMAT_VERSION, "config": model.get_config(), "n_iter": model.n_iter_},
                     weights)
    arrays = {META_KEY: encode_meta(meta), **weights}
    path = os.fspath(path)
    check_target(path, ModelFileError, "model file")
    existed = os.path.exists(path)
    with writer_lock(path, ModelFileError, "model file"):
        try:
            atomic_write(path, lambda f: np.savez(f, **arrays), locked=True)
        except OSError as exc:
            kept = "the file already there is unchanged" if existed else "nothing was written"
            # The same OSError subclass (PermissionError, ...), with the path and what is left.
            raise OSError(exc.errno, f"could not write the model file: {os_reason(exc)}; {kept}", path) from exc
