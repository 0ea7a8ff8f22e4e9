"""Where the warehouse lives: a local directory, or object storage named by an fsspec URL (``s3://bucket/prefix``).

A local ``PRESCORE_HOME`` uses ``pathlib.Path`` everywhere, with rename-based commits: nothing on the local path
goes through fsspec. A home with a scheme becomes an ``ObjectPath``: the subset of
``pathlib.Path`` that prescore uses (``/``, ``name``, ``parent``, ``exists``, ``is_dir``, ``is_file``,
``iterdir``, ``glob``, ``open``, ``read_bytes``/``write_bytes``, ``read_text``/``write_text``, ``unlink``,
``mkdir``) over an fsspec filesystem. Code that must differ (object stores cannot rename) asks ``is_remote``.

Contract of ``ObjectPath``:

- it holds only its URL (it pickles to Dask workers as text); the filesystem is ``fsspec.filesystem(protocol,
  use_listings_cache=False)``, fsspec's cached instance, so a listing always reflects the store as it is now;
- S3 endpoint and credentials come from the standard AWS variables, read by botocore in each process (the
  driver and every Dask worker): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and
  ``AWS_ENDPOINT_URL`` for an S3-compatible server (honoured by botocore ≥ 1.31);
- there are no directories: ``mkdir`` does nothing, a "directory" exists while an object lies under it;
- what the commits rely on: one object appears whole or not at all (a PUT, or a multipart upload when it
  completes), and a read after a write or a delete sees it (S3 is strongly consistent). Multi-file commits
  are made by a marker written last (``warehouse.datasets.features``, ``warehouse.datasets.score_files``).

Parquet goes through ``arrow(path)``: ``(path, None)`` for a local path — pyarrow's own local I/O, exactly as
before — or ``(key, pyarrow.fs.PyFileSystem(FSSpecHandler(fs)))`` for the ``filesystem=`` argument.

Models are read by xgboost from local files only: ``local_copy`` downloads an object once into a local cache
keyed by its expected sha256 (callers hash-check the copy before loading it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeAlias

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CACHE_DIR = Path(tempfile.gettempdir()) / "prescore-cache"


# A write failed because the volume is full, over quota, read-only or the file hit its size limit: the
# operator must act (free space, grow the volume); retrying as is fails the same way.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def no_room(exc: BaseException) -> str | None:
    """The reason (``No space left on device``…) when ``exc`` — an ``OSError`` from Python, pyarrow or a Dask
    task — is a full, over-quota or read-only volume; ``None`` for any other exception."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in NO_ROOM_ERRNOS:
        return os.strerror(exc.errno)
    return None


def umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path | str | int, directory: bool = False) -> None:
    """Give a file (or directory) made by ``tempfile`` (0600/0700 whatever the umask) the mode a plain ``open`` or
    ``mkdir`` would: 0666 (0777) less the umask, so a home shared by the batch and online images (another uid in
    the same group, with umask 002) stays readable. ``path`` may be an open file descriptor."""
    mode = (0o777 if directory else 0o666) & ~umask()
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(path, mode)


def permission_problem(exc: BaseException) -> str | None:
    """One line for a permission error under ``PRESCORE_HOME`` (the path, this process's uid and gid, what to
    do); ``None`` for any other exception."""
    if not isinstance(exc, PermissionError):
        return None
    where = exc.filename or "a file under PRESCORE_HOME"
    uid, gid = os.getuid(), os.getgid()
    return (
        f"permission denied: {where} is not accessible to uid {uid} (gid {gid}); give that user access (e.g. "
        f"chown -R {uid}:{gid} the directory, or share a group and chmod -R g+rwX it with umask 002), or run as "
        "the user that owns PRESCORE_HOME"
    )


def sha256_file(path: Path) -> str:
    """sha256 hex of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_url(text: object) -> bool:
    """True for text with a scheme (``s3://…``, ``memory://…``), False for a local path."""
    return isinstance(text, str) and bool(_URL.match(text))


class ObjectPath:
    """A file or prefix on an fsspec filesystem, named by its URL (see the module docstring)."""

    __slots__ = ("key", "protocol")

    def __init__(self, url: str) -> None:
        if not is_url(url):
            raise ValueError(f"not a URL: {url!r}")
        protocol, _, rest = url.partition("://")
        self.protocol = protocol.lower()
        self.key = "/".join(p for p in rest.split("/") if p)  # bucket/prefix/…, no empty segments

    # ---- names
    def __str__(self) -> str:
        return f"{self.protocol}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> ObjectPath:
        return ObjectPath(f"{self}/{name}")

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        head = self.key.rsplit("/", 1)[0] if "/" in self.key else self.key
        return ObjectPath(f"{self.protocol}://{head}")

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    # ---- filesystem
    @property
    def fs(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, use_listings_cache=False)

    def _child(self, key: str) -> ObjectPath:
        return ObjectPath(f"{self.protocol}://{key}")

    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.key))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.key))

    def iterdir(self) -> Iterator[ObjectPath]:
        try:
            names = self.fs.ls(self.key, detail=False)
        except FileNotFoundError:
            names = []
        for key in sorted(names):
            if key.rstrip("/") != self.key:
                yield self._child(key.rstrip("/"))

    def glob(self, pattern: str) -> list[ObjectPath]:
        return [self._child(key) for key in sorted(self.fs.glob(f"{self.key}/{pattern}"))]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no directories."""

    def open(self, mode: str = "rb") -> IO[Any]:
        return self.fs.open(self.key, mode)

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.key))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.key, bytes(data))

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def info(self) -> dict[str, Any]:
        return dict(self.fs.info(self.key))


StoragePath: TypeAlias = Path | ObjectPath


def as_path(value: str | os.PathLike[str] | ObjectPath) -> StoragePath:
    """A URL → ``ObjectPath``; anything else → ``Path`` (an ``ObjectPath`` or ``Path`` passes through)."""
    if isinstance(value, ObjectPath | Path):
        return value
    text = os.fspath(value)
    return ObjectPath(text) if is_url(text) else Path(text)


def is_remote(path: object) -> bool:
    return isinstance(path, ObjectPath)


def arrow(path: StoragePath) -> tuple[Any, Any]:
    """``(source, filesystem)`` for pyarrow's readers and writers (``filesystem=None`` for a local path)."""
    if isinstance(path, ObjectPath):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return path.key, PyFileSystem(FSSpecHandler(path.fs))
    return path, None


def size(path: StoragePath) -> int:
    if isinstance(path, ObjectPath):
        return int(path.info()["size"])
    return path.stat().st_size


def identity(path: StoragePath) -> str:
    """Name, size and version of a file (local: modification time in ns; object storage: its ETag)."""
    if isinstance(path, ObjectPath):
        info = path.info()
        version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
        return f"{path.name}:{info['size']}:{str(version).strip(chr(34))}"
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def rmtree(path: StoragePath) -> None:
    """Delete a directory (or prefix) and everything under it; a missing one is fine."""
    if isinstance(path, ObjectPath):
        with contextlib.suppress(FileNotFoundError):
            if path.fs.exists(path.key):
                path.fs.rm(path.key, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def upload(local: Path, target: StoragePath) -> None:
    """Copy a local file to ``target`` (one object on object storage: it appears whole or not at all)."""
    if isinstance(target, ObjectPath):
        target.fs.put_file(str(local), target.key)
    else:
        shutil.copyfile(local, target)


def local_copy(path: StoragePath, sha256: str, cache_dir: Path | None = None) -> Path:
    """A local file with the content of ``path``: the path itself when local, else a cached download.

    The cache (``cache_dir``, default ``$TMPDIR/prescore-cache``) is keyed by the expected ``sha256``; an entry is
    reused only while its content still hashes to it, else downloaded again (to a temporary name, then renamed
    into place, so concurrent workers never see half a file). Callers hash-check what they get before using it.
    """
    if not isinstance(path, ObjectPath):
        return path
    target = (cache_dir or CACHE_DIR) / sha256 / path.name
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.fs.get_file(path.key, str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
