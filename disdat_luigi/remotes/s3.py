"""A remote on S3 or an S3-compatible server (``s3://bucket/prefix``).

One boto3 client per store, shared by every thread (its connection pool sized to the worker count), one
s3transfer TransferManager for multipart uploads and downloads of large files, and botocore's standard
retry mode (backoff on throttling, 5xx and dropped connections) as the single place retries happen.

Settings: luigi.cfg ``[s3]`` (endpoint_url, region_name, credentials: luigi's own section, passed to boto3),
boto3's environment (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_PROFILE``, ...) and the usual
credential chain. Every botocore failure becomes one RemoteError line here.
"""
from __future__ import annotations

import contextlib
import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from .. import config
from ..display import safe
from ..errors import NotFound, RemoteError
from .base import ObjectStore, OnBytes, TooLarge
from .faults import checkpoint

# luigi.cfg [s3] keys that are boto3 client arguments (luigi's S3Client passes the same ones).
_CLIENT_KEYS = ("endpoint_url", "region_name", "aws_access_key_id", "aws_secret_access_key",
                "aws_session_token", "verify", "use_ssl")
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired", "403", "Forbidden"}
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (with check_bucket's two rules)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
# The two timestamp forms S3 sends (s3_timestamp); fractions of 3 or 6 digits, as Python 3.9's fromisoformat takes
_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?Z")
_HTTP_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                        r"\d{4} \d{2}:\d{2}:\d{2} GMT")
MULTIPART = 8 * 1024 * 1024      # files above this are uploaded multipart ...
PART_SIZE = 32 * 1024 * 1024     # ... in parts of this size (an object of many small parts reads slower)


def client_kwargs() -> Dict[str, Any]:
    """boto3 client arguments from luigi.cfg ``[s3]``."""
    s3 = config.section("s3")
    kwargs: Dict[str, Any] = {k: s3[k] for k in _CLIENT_KEYS if s3.get(k) not in (None, "")}
    for flag in ("verify", "use_ssl"):
        if flag in kwargs:
            kwargs[flag] = str(kwargs[flag]).lower() not in ("0", "false", "no", "off")
    return kwargs


_loader = None


def make_session():
    """A botocore session: the same credential chain and environment (AWS_PROFILE, AWS_ENDPOINT_URL, ...) as
    boto3's, without importing boto3 and s3transfer up front (~0.05 s off every dsdt push/pull).

    Each call resolves credentials afresh, but all sessions of a process share one data loader over
    botocore's data for our services only (botocore_data.py), so models are found without listing every
    service and parsed once: a client then costs ~10 ms instead of ~60 ms (a run's chain makes several).
    """
    global _loader
    import botocore.session

    session = botocore.session.get_session()
    if _loader is None:
        from .botocore_data import loader_for
        _loader = loader_for(session)
    session.register_component("data_loader", _loader)
    return session


def make_client(workers: int, max_attempts: Optional[int] = None):
    """An S3 client on a session of its own, whose timestamps are parsed by :func:`s3_timestamp`."""
    from botocore.config import Config

    attempts = max_attempts or config.get("disdat", "s3_max_attempts")
    # botocore's own CRC32 on every body is skipped: every byte is already checked end to end against the
    # sha256 in the manifest (pulls verify, keys are content hashes), and the CRC costs ~10% of a push's CPU.
    cfg = Config(max_pool_connections=workers + 4, connect_timeout=10, read_timeout=120,
                 retries={"mode": "standard", "total_max_attempts": attempts},
                 request_checksum_calculation="when_required", response_checksum_validation="when_required")
    session = make_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=s3_timestamp)
    return session.create_client("s3", config=cfg, **client_kwargs())


def s3_timestamp(value: Any) -> datetime:
    """The instant botocore's own parser gives, for less: botocore parses every timestamp with dateutil (35-45
    us each here), which a LIST page pays for every key's LastModified (half of the CPU of listing 200 keys,
    and a run lists its records and statuses again and again) and every GET for its Last-Modified header.
    The two forms S3 sends, ISO 8601 in XML bodies ("2026-12-04T20:36:05.000Z") and RFC 1123 in headers
    ("Fri, 04 Dec 2026 20:36:05 GMT"), are parsed by the stdlib (0.2 and 3 us) when they are exactly those
    forms; anything else, and anything the stdlib refuses, by botocore."""
    if isinstance(value, str):
        try:
            if _ISO_UTC.fullmatch(value):
                return datetime.fromisoformat(value[:-1] + "+00:00")
            if _HTTP_DATE.fullmatch(value):
                return parsedate_to_datetime(value)
        except (TypeError, ValueError):    # a day that is not in its month (3.9's email.utils: TypeError)
            pass
    from botocore.utils import parse_timestamp
    return parse_timestamp(value)


def endpoint_of(client) -> str:
    return client.meta.endpoint_url


@contextlib.contextmanager
def s3_errors(bucket: str, endpoint: str, key: str = "") -> Iterator[None]:
    """Turn botocore's exceptions into one line that says what to do."""
    from botocore import exceptions as bx
    from urllib3 import exceptions as urllib3_errors

    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise RemoteError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                          "AWS_PROFILE, or [s3] aws_access_key_id in luigi.cfg") from None
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            raise NotFound(f"{key or 'object'} is not on the remote s3://{bucket}") from None
        if code == "NoSuchBucket":
            raise RemoteError(f"bucket {bucket} does not exist at {endpoint}: create it or fix the remote URL"
                              ) from None
        if code in _CREDENTIAL_CODES:
            raise RemoteError(f"S3 at {endpoint} refused the credentials for bucket {bucket} ({code}): check "
                              f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
        raise RemoteError(f"S3 error on s3://{bucket}/{key}: {code} "
                          f"{exc.response.get('Error', {}).get('Message', '')}".rstrip()) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError) as exc:
        raise RemoteError(f"cannot reach S3 at {endpoint}: is the server up and the endpoint right? ([s3] "
                          f"endpoint_url or AWS_ENDPOINT_URL) ({type(exc).__name__})") from None
    except (bx.ConnectionClosedError, bx.IncompleteReadError, bx.ResponseStreamingError, bx.ReadTimeoutError,
            urllib3_errors.HTTPError) as exc:
        raise RemoteError(f"the connection to S3 at {endpoint} dropped during s3://{bucket}/{key} "
                          f"({type(exc).__name__}): run the command again (what was verified is kept; the remote "
                          f"copy is not known to be damaged)") from None
    except bx.ParamValidationError as exc:
        raise RemoteError(f"botocore refused to send a request for s3://{bucket}/{key} ({_one_line(exc)}): fix the "
                          f"remote URL") from None
    except bx.BotoCoreError as exc:
        raise RemoteError(f"S3 request failed for s3://{bucket}/{key}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    """botocore's message on one line (a parameter validation report has one line per bad parameter)."""
    return " ".join(str(exc).split())


def check_bucket(name: str) -> str:
    """A bucket name by AWS's rules for general purpose buckets, checked before any request is made (botocore
    would refuse it with its regex over several lines, or S3 with an unhelpful code)."""
    if not (_BUCKET.fullmatch(name) and ".." not in name and not _IP_ADDRESS.fullmatch(name)):
        raise RemoteError(f"invalid S3 bucket name {safe(repr(name))[:80]}: a bucket name has 3 to 63 lowercase "
                          f"letters, digits, dots and hyphens, starts and ends with a letter or digit, has no two dots "
                          f"in a row and is not an IP address; fix the remote URL (s3://bucket/prefix)")
    return name


class S3Store(ObjectStore):
    leaves_partial_uploads = True
    def __init__(self, bucket: str, prefix: str, workers: int, client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.workers = workers
        self.client = client or make_client(workers)
        self.endpoint = endpoint_of(self.client)
        self._manager = None

    def _errors(self, key: str = ""):
        return s3_errors(self.bucket, self.endpoint, self.prefix + key)

    @property
    def manager(self):
        if self._manager is None:
            from s3transfer.manager import TransferConfig, TransferManager

            self._manager = TransferManager(self.client, TransferConfig(
                multipart_threshold=MULTIPART, multipart_chunksize=PART_SIZE,
                max_request_concurrency=self.workers, max_submission_concurrency=self.workers))
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None

    def check(self) -> None:
        with self._errors():
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> Optional[int]:
        try:
            with self._errors(key):
                return self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"]
        except NotFound:
            return None

    def listing(self, prefix: str) -> Iterator[Tuple[str, str]]:
        skip = len(self.prefix)
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][skip:], obj.get("ETag", "")

    def get_bytes(self, key: str, limit: Optional[int] = None) -> bytes:
        return self.get_versioned(key, limit)[0]

    def get_versioned(self, key: str, limit: Optional[int] = None) -> Tuple[bytes, str]:
        """One GET; with ``limit`` a ranged one for the first ``limit + 1`` bytes, so that a huge object costs
        no more than that (the ETag of a ranged GET is the whole object's)."""
        checkpoint("get", key)
        kwargs = {} if limit is None else {"Range": f"bytes=0-{limit}"}
        try:
            with self._errors(key):
                response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kwargs)
                data = response["Body"].read() if limit is None else response["Body"].read(limit + 1)
        except RemoteError as exc:
            if limit is None or "InvalidRange" not in str(exc):
                raise
            return self.get_versioned(key)   # an empty object has no byte 0 to range over
        if limit is not None and len(data) > limit:
            raise TooLarge(key, limit)
        return data, response["ETag"]

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        checkpoint("get", key)
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key,
                                          Range=f"bytes={start}-{start + length - 1}")["Body"]
            try:
                yield body
            finally:
                body.close()

    def put_bytes(self, key: str, data: bytes) -> None:
        checkpoint("put", key)
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        checkpoint("put", key)
        with self._errors(key):
            future = self.manager.upload(str(path), self.bucket, self.prefix + key, subscribers=[_Progress(on_bytes)])
            try:
                future.result()
            except BaseException:
                # A cancelled transfer's multipart upload is aborted by s3transfer's failure cleanup, so an
                # interrupted or failed push leaves none open on the server (a SIGKILL can: see
                # remotes.uploads). Wait for that cleanup, but not for ever.
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result()
                raise

    def pending_uploads(self, key: str) -> List[Tuple[str, float]]:
        """(upload id, initiated as epoch seconds) of the multipart uploads of ``key`` still open."""
        with self._errors(key):
            response = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + key)
        return [(u["UploadId"], u["Initiated"].timestamp()) for u in response.get("Uploads", ())
                if u["Key"] == self.prefix + key]

    def abort_upload(self, key: str, upload_id: str) -> None:
        with self._errors(key):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        checkpoint("put", key)
        kwargs = {"IfMatch": version} if version else {"IfNoneMatch": "*"}
        try:
            with self._errors(key):
                return self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                              **kwargs)["ETag"]
        except RemoteError as exc:
            if "PreconditionFailed" in str(exc) or "ConditionalRequestConflict" in str(exc):
                return None
            raise

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def copy(self, key: str, to: str, limit: int) -> None:
        """On the server (one request, nothing through this machine), once the object is known to be small."""
        size = self.size(key)
        if size is None:
            raise NotFound(f"{key} is not on the remote s3://{self.bucket}")
        if size > limit:
            raise TooLarge(key, limit)
        checkpoint("put", to)
        with self._errors(to):
            self.client.copy_object(Bucket=self.bucket, Key=self.prefix + to,
                                    CopySource={"Bucket": self.bucket, "Key": self.prefix + key})


class _Progress:
    """s3transfer subscriber that forwards byte counts."""

    def __init__(self, on_bytes: OnBytes):
        self.on_bytes = on_bytes

    def on_queued(self, **kwargs) -> None:
        pass

    def on_progress(self, bytes_transferred: int, **kwargs) -> None:
        self.on_bytes(bytes_transferred)

    def on_done(self, **kwargs) -> None:
        pass
