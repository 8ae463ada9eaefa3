"""Where a batch writes: S3, through boto3, with nothing but list and put on the run's output prefix.

The batch function's role may list the output prefix and put objects under
it; it may read nothing. So "is this batch already written?" is asked with
one ListObjectsV2 on the batch's key prefix (which also finds the parts of a
batch split at a deadline) rather than a HeadObject, which would need read
access. boto3 retries throttling and 5xx answers itself (standard mode); what
still fails is raised as ``StorageUnavailable`` so the state machine retries
the batch later, with backoff.

``AWS_ENDPOINT_URL_S3`` (read by boto3 itself) points the client elsewhere,
which the tests use for a local S3 stand-in.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError


class StorageUnavailable(Exception):
    """S3 did not answer, or refused for a reason that may pass: the batch is retried later."""


class StorageRefused(Exception):
    """S3 refused for a reason a retry will not fix (access denied, no such bucket)."""


class ObjectStore(Protocol):
    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix``."""
        ...

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None: ...


_PERMANENT = frozenset({"AccessDenied", "NoSuchBucket", "InvalidBucketName", "AllAccessDisabled"})


class S3Store:
    """An ``ObjectStore`` on S3 (the client is made on first use, so importing costs nothing)."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5)
            )
        return self._client

    def keys(self, bucket: str, prefix: str) -> list[str]:
        found: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                found.extend(str(item["Key"]) for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error("list", bucket, prefix, exc) from exc
        return found

    def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error("write", bucket, key, exc) from exc


def _storage_error(action: str, bucket: str, key: str, exc: ClientError | BotoCoreError) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    message = f"cannot {action} s3://{bucket}/{key}: {exc}"
    if code in _PERMANENT:
        return StorageRefused(message)
    return StorageUnavailable(message)
