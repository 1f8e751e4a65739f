"""Writing whole files atomically: a local directory or S3-compatible object storage.

A file is complete or absent, never partial:

- local: the gzip stream goes to ``<root>/_tmp/<writer>/``, is flushed and fsynced, then
  renamed into place (``rename`` is atomic within one file system) and the directory is
  fsynced, so a rename that returned survives a power cut. Each writer owns a directory under
  ``_tmp`` and holds a lock on it while it runs; a writer that starts removes the directories
  of writers that died (their lock is free), with whatever half-written files they left;
- S3: one ``PutObject``, or a multipart upload that becomes visible only when completed (and
  is aborted when a part fails). An upload cut short by a crash is never visible; S3 keeps
  its parts until a bucket lifecycle rule (``AbortIncompleteMultipartUpload``) removes them.

Errors become :class:`~destinations.base.DestinationError`: local I/O errors are retried
(a full disk or a permission an operator fixes); S3 answers follow the HTTP rules every
destination uses (429, 408, 5xx retried; other 4xx dead-lettered), connection problems and
timeouts are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gzip
import hashlib
import logging
import os
import shutil
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from destinations.archive.config import S3Location
from destinations.archive.layout import TMP
from destinations.base import (
    ConnectionFailed,
    DestinationError,
    PermanentError,
    RejectedStatus,
    RequestTimeout,
    RetryableError,
    RetryableStatus,
)
from destinations.http import is_retryable_status, status_reason

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

logger = logging.getLogger(__name__)

#: Slices written to the gzip stream at a time (bounds the work between two checks).
CHUNK = 1024 * 1024
#: S3 error codes worth another attempt whatever their status (S3's RequestTimeout is a 400).
_RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "SlowDown", "Throttling", "InternalError", "ServiceUnavailable"}
)


class StorageError(RetryableError):
    """A local file system error; retried (the lane dead-letters past the retry window)."""

    reason = "io_error"


class Storage(Protocol):
    """A place for archive files; keys are ``/``-separated paths under the root."""

    def url(self, key: str) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write_gzip(self, key: str, data: bytes, level: int) -> tuple[int, str]:
        """Compress ``data`` into the complete file ``key``; (bytes stored, their sha256)."""
        ...

    async def write(self, key: str, data: bytes) -> None:
        """Store ``data`` as the complete file ``key`` (small files: manifests)."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (a directory-like path ending in ``/``, or ``""``), sorted."""
        ...

    async def read(self, key: str) -> bytes: ...

    async def health(self) -> tuple[bool, str]: ...


def gzip_bytes(data: bytes, level: int) -> bytes:
    """Deterministic gzip (no name, mtime 0): the same lines always give the same bytes."""
    return gzip.compress(data, compresslevel=level, mtime=0)


# ---------------------------------------------------------------- local directory


class _HashingWriter:
    """A file object that counts and hashes what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


class LocalStorage:
    """Files under ``root`` on a local (or mounted) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp: Path | None = None
        self._lock: int | None = None

    def url(self, key: str) -> str:
        return str(self.root / key)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._start)
        except OSError as exc:
            raise _os_error(exc, "preparing", self.root) from exc

    def _start(self) -> None:
        tmp_root = self.root / TMP
        tmp_root.mkdir(parents=True, exist_ok=True)
        for other in tmp_root.iterdir():
            _remove_if_abandoned(other)
        mine = tmp_root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        mine.mkdir()
        lock = os.open(mine / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._tmp, self._lock = mine, lock

    async def stop(self) -> None:
        tmp, lock = self._tmp, self._lock
        self._tmp = self._lock = None
        if tmp is not None:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        if lock is not None:
            os.close(lock)

    def _scratch(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("LocalStorage is not started")
        return self._tmp

    async def write_gzip(self, key: str, data: bytes, level: int) -> tuple[int, str]:
        target = self.root / key
        try:
            return await asyncio.to_thread(self._write_gzip, target, data, level)
        except OSError as exc:
            raise _os_error(exc, "writing", target) from exc

    def _write_gzip(self, target: Path, data: bytes, level: int) -> tuple[int, str]:
        scratch = self._scratch() / f"{uuid.uuid4().hex}.part"
        try:
            with open(scratch, "wb") as raw:
                hashing = _HashingWriter(raw)
                # filename="" and mtime=0: deterministic bytes, like gzip_bytes.
                with gzip.GzipFile(
                    filename="", mode="wb", compresslevel=level, fileobj=hashing, mtime=0
                ) as stream:
                    view = memoryview(data)
                    for start in range(0, len(view), CHUNK):
                        stream.write(view[start : start + CHUNK])
                raw.flush()
                os.fsync(raw.fileno())
            _publish(scratch, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()
        return hashing.size, hashing.sha256.hexdigest()

    async def write(self, key: str, data: bytes) -> None:
        target = self.root / key
        try:
            await asyncio.to_thread(self._write, target, data)
        except OSError as exc:
            raise _os_error(exc, "writing", target) from exc

    def _write(self, target: Path, data: bytes) -> None:
        scratch = self._scratch() / f"{uuid.uuid4().hex}.part"
        try:
            with open(scratch, "wb") as raw:
                raw.write(data)
                raw.flush()
                os.fsync(raw.fileno())
            _publish(scratch, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()

    async def list_keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            relative = path.relative_to(self.root).as_posix()
            if path.is_file() and not relative.startswith(f"{TMP}/"):
                keys.append(relative)
        return sorted(keys)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread((self.root / key).read_bytes)

    async def health(self) -> tuple[bool, str]:
        root = self.root
        if not root.is_dir():
            return False, f"{root} is not a directory"
        if not os.access(root, os.W_OK | os.X_OK):
            return False, f"{root} is not writable"
        return True, f"{root} is writable"


def _publish(scratch: Path, target: Path) -> None:
    """Rename a complete, fsynced file into place and make the rename durable."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove_if_abandoned(directory: Path) -> None:
    """Remove a writer's scratch directory if no live writer holds its lock."""
    if not directory.is_dir():
        return
    try:
        lock = os.open(directory / ".lock", os.O_RDWR)
    except FileNotFoundError:
        # Its writer died between creating the directory and the lock: nothing half-written.
        shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a live writer
    finally:
        os.close(lock)  # closing releases the lock taken just above, if any
    logger.info("removing %s, left by a writer that stopped mid-write", directory)
    shutil.rmtree(directory, ignore_errors=True)


def _os_error(exc: OSError, doing: str, where: Path) -> StorageError:
    name = errno.errorcode.get(exc.errno or 0, "other").lower()
    return StorageError(f"{doing} {where}: {exc.strerror or exc}", reason=f"io_{name}")


# ---------------------------------------------------------------- S3


class S3Storage:
    """Objects in an S3 bucket (or an S3-compatible store) under ``prefix``."""

    def __init__(self, location: S3Location, *, timeout: float) -> None:
        self.location = location
        self.timeout = timeout
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None

    def url(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix}{key}"

    def _key(self, key: str) -> str:
        return f"{self.location.prefix}{key}"

    async def start(self) -> None:
        location = self.location
        config = AioConfig(
            connect_timeout=min(self.timeout, 10.0),
            read_timeout=self.timeout,
            # The delivery lane owns retries (with backoff, across restarts).
            retries={"mode": "standard", "total_max_attempts": 1},
            s3={"addressing_style": location.addressing_style},
        )
        options: dict[str, Any] = {"config": config}
        if location.region:
            options["region_name"] = location.region
        if location.endpoint_url is not None:
            options["endpoint_url"] = str(location.endpoint_url)
        if location.access_key_id is not None and location.secret_access_key is not None:
            options["aws_access_key_id"] = location.access_key_id.get_secret_value()
            options["aws_secret_access_key"] = location.secret_access_key.get_secret_value()
        if location.session_token is not None:
            options["aws_session_token"] = location.session_token.get_secret_value()
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(get_session().create_client("s3", **options))
        self._stack = stack

    async def stop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Storage is not started")
        return self._client

    async def write_gzip(self, key: str, data: bytes, level: int) -> tuple[int, str]:
        body = await asyncio.to_thread(gzip_bytes, data, level)
        digest = hashlib.sha256(body).hexdigest()
        if len(body) > self.location.multipart_threshold:
            await self._multipart(key, body)
        else:
            await self._put(key, body, "application/gzip")
        return len(body), digest

    async def write(self, key: str, data: bytes) -> None:
        await self._put(key, data, "application/json")

    async def _put(self, key: str, body: bytes, content_type: str) -> None:
        async with self._errors("PutObject", key):
            await self.client.put_object(
                Bucket=self.location.bucket,
                Key=self._key(key),
                Body=body,
                ContentType=content_type,
            )

    async def _multipart(self, key: str, body: bytes) -> None:
        bucket, object_key = self.location.bucket, self._key(key)
        async with self._errors("CreateMultipartUpload", key):
            created = await self.client.create_multipart_upload(
                Bucket=bucket, Key=object_key, ContentType="application/gzip"
            )
        upload_id = created["UploadId"]
        try:
            parts = []
            size = self.location.part_size
            for number, start in enumerate(range(0, len(body), size), start=1):
                async with self._errors("UploadPart", key):
                    answer = await self.client.upload_part(
                        Bucket=bucket,
                        Key=object_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body[start : start + size],
                    )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            async with self._errors("CompleteMultipartUpload", key):
                await self.client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
        except BaseException:
            # Never visible once aborted; if this fails too, a lifecycle rule cleans up.
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=bucket, Key=object_key, UploadId=upload_id
                )
            raise

    async def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        strip = len(self.location.prefix)
        async with self._errors("ListObjectsV2", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self.location.bucket, Prefix=self._key(prefix)
            ):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    async def read(self, key: str) -> bytes:
        async with self._errors("GetObject", key):
            answer = await self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            async with answer["Body"] as stream:
                data: bytes = await stream.read()
        return data

    async def health(self) -> tuple[bool, str]:
        try:
            async with self._errors("HeadBucket", ""):
                await self.client.head_bucket(Bucket=self.location.bucket)
        except DestinationError as exc:
            return False, exc.message
        return True, f"bucket {self.location.bucket} is reachable"

    @contextlib.asynccontextmanager
    async def _errors(self, operation: str, key: str) -> Any:
        """Turn botocore's errors into the lane's, naming the operation, never a credential."""
        where = self.url(key)
        try:
            yield
        except ClientError as exc:
            raise _client_error(exc, operation, where) from exc
        except NoCredentialsError as exc:
            raise PermanentError(
                f"{operation} {where}: no AWS credentials found", reason="no_credentials"
            ) from exc
        except TimeoutError as exc:
            raise RequestTimeout(f"{operation} {where}: no answer in time") from exc
        except (BotoCoreError, OSError) as exc:
            # Connection refused/reset, DNS, read timeouts (botocore wraps them all).
            if "timeout" in type(exc).__name__.lower():
                raise RequestTimeout(f"{operation} {where}: {exc}") from exc
            raise ConnectionFailed(f"{operation} {where}: {type(exc).__name__}: {exc}") from exc


def _client_error(exc: ClientError, operation: str, where: str) -> DestinationError:
    response: Any = exc.response
    error = response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"{operation} {where}: {status} {code}: {error.get('Message', '')}".rstrip(": ")
    reason = status_reason(status) if status else "s3_error"
    if is_retryable_status(status) or code in _RETRYABLE_CODES:
        return RetryableStatus(message, reason=reason)
    return RejectedStatus(message, reason=reason)
