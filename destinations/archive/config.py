"""Settings of the archive destination: where files go and when a file is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

from router.config import Duration

MIB = 1024 * 1024
#: S3's smallest part of a multipart upload (every part but the last).
S3_MIN_PART = 5 * MIB


class S3Location(BaseModel):
    """An S3 bucket, or any S3-compatible store (MinIO, Ceph, R2 ...) through ``endpoint_url``.

    Without ``access_key_id``/``secret_access_key`` the standard AWS credential chain applies
    (environment, shared files, instance or pod role).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    #: Key prefix every file is written under (``segment/`` -> ``segment/source=web/...``).
    prefix: str = Field(default="", pattern=r"^([^/].*/)?$")
    region: str | None = None
    endpoint_url: AnyHttpUrl | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    #: Files larger than this (compressed) go up as a multipart upload.
    multipart_threshold: int = Field(default=16 * MIB, ge=S3_MIN_PART)
    part_size: int = Field(default=8 * MIB, ge=S3_MIN_PART, le=5 * 1024 * MIB)

    @model_validator(mode="after")
    def _keys(self) -> S3Location:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self


class ArchiveSettings(BaseModel):
    """Every event as gzip JSON lines, in files partitioned by source, date and hour.

    Exactly one of ``directory`` (a local or mounted file system) and ``s3``. A file is
    complete when it holds ``max_file_events`` events, ``max_file_bytes`` bytes of JSON lines
    (before compression) or its oldest event has waited ``max_file_age``, whichever comes
    first; these replace ``delivery.batch_size`` and ``delivery.flush_interval``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = None
    s3: S3Location | None = None
    max_file_events: int = Field(default=5000, ge=1, le=100_000)
    max_file_bytes: int = Field(default=64 * MIB, ge=1024, le=4096 * MIB)
    max_file_age: Duration = Field(default=60.0, gt=0)
    compression_level: int = Field(default=6, ge=1, le=9)

    @model_validator(mode="after")
    def _one_storage(self) -> ArchiveSettings:
        if (self.directory is None) == (self.s3 is None):
            raise ValueError("set exactly one of directory and s3")
        return self
