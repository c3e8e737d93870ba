"""An HTTP proxy on 127.0.0.1 between AWS SDK clients and a local emulator, for tests and benchmarks.

Why it exists: moto's server and SeaweedFS answer at once and accept what AWS refuses. moto takes a job with
any number of ``dependsOn`` entries, any payload size and any call rate; a client that breaks AWS's documented
limits passes every local test and fails on a real account. This proxy forwards each request unchanged
(method, path, headers with the signed ``Host``, bodies streamed in chunks) and can

- add a fixed latency to every request, as a round trip to an AWS region does;
- count the requests by AWS operation (``batch:SubmitJob``, ``logs:GetLogEvents``, ``s3:PUT`` ...), and
  luigid's RPCs (``luigi:get_work`` ...) when it stands in front of a central scheduler;
- enforce AWS's documented limits (``enforce_limits=True``): a request over one is answered as AWS answers it
  (its status code and a JSON error body that botocore parses into a ``ClientError`` with AWS's error code)
  and never reaches the emulator, and each refusal is listed in ``violations()``.

Use it from a test::

    with aws_proxy(moto_url, latency=0.02, enforce_limits=True) as proxy:
        batch = boto3.client("batch", endpoint_url=proxy.url, ...)
        ...
        assert proxy.violations() == []
        assert proxy.counts()["batch:SubmitJob"] == 3

or as a process (benchmarks): ``python scripts/aws_proxy.py --upstream URL [--latency 0.02] [--enforce-limits]
[--port N]`` prints its URL, serves until SIGTERM or SIGINT, then prints one JSON line with the counts and the
violations. Only the standard library is used; nothing is sent anywhere but to the upstream given.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import re
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from typing import Callable, Iterator, Mapping, NamedTuple

CHUNK = 256 * 1024          # bodies are copied in pieces of at most this size
API_BODY_MAX = 1024 * 1024  # an API request body (JSON or form, not S3) up to this size is read whole to name it
UPSTREAM_TIMEOUT = 300.0    # seconds without a byte from the upstream before a request fails with 502

# -- AWS's documented limits, each with the page that states it ----------------------------------------------------
BATCH_QUOTAS = "https://docs.aws.amazon.com/batch/latest/userguide/service_limits.html"
# "Maximum number of job dependencies for a job: 20"
MAX_DEPENDS_ON = 20
# "Maximum job payload size (for SubmitJob API operations): 30 KiB"
MAX_SUBMIT_JOB_BYTES = 30 * 1024
# "Maximum job definition size (for RegisterJobDefinition API operations): 24 KiB"
MAX_JOB_DEFINITION_BYTES = 24 * 1024
# "Maximum array size for array jobs: 10000"; SUBMIT_JOB_API: "The array size can be between 2 and 10,000"
MAX_ARRAY_SIZE = 10_000
# "Maximum number of transactions per second (TPS) for each account for SubmitJob operations: 50", and
# BATCH_THROTTLING: "The maximum number of transactions per second (TPS) for each account for AWS Batch API calls,
# including the SubmitJob operations, is 50"; "AWS Batch API quotas typically apply to every API, including the
# DescribeJobs and SubmitJob API calls"; over it AWS Batch answers "Status Code: 429; Error Code:
# TooManyRequestsException".
BATCH_TPS = 50
BATCH_THROTTLING = "https://repost.aws/knowledge-center/aws-batch-requests-error"

SUBMIT_JOB_API = "https://docs.aws.amazon.com/batch/latest/APIReference/API_SubmitJob.html"
# jobName: "It can be up to 128 letters long. The first character must be alphanumeric, can contain uppercase and
# lowercase letters, numbers, hyphens (-), and underscores (_)."
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
REGISTER_JOB_DEFINITION_API = "https://docs.aws.amazon.com/batch/latest/APIReference/API_RegisterJobDefinition.html"
# jobDefinitionName: "It can be up to 128 letters long. It can contain uppercase and lowercase letters, numbers,
# hyphens (-), and underscores (_)."
JOB_DEFINITION_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
RETRY_STRATEGY_API = "https://docs.aws.amazon.com/batch/latest/APIReference/API_RetryStrategy.html"
MAX_ATTEMPTS = 10  # attempts: "You can specify between 1 and 10 attempts."
DESCRIBE_JOBS_API = "https://docs.aws.amazon.com/batch/latest/APIReference/API_DescribeJobs.html"
MAX_DESCRIBE_JOBS = 100  # jobs: "A list of up to 100 job IDs."

TAG_RESTRICTIONS = "https://docs.aws.amazon.com/batch/latest/userguide/tag-restrictions.html"
MAX_TAGS = 50  # "Maximum number of tags per resource – 50"
MAX_TAG_KEY = 128  # "Maximum key length – 128 Unicode characters in UTF-8"
MAX_TAG_VALUE = 256  # "Maximum value length – 256 Unicode characters in UTF-8"
RESERVED_TAG_PREFIX = "aws:"  # "Don't use aws:, AWS:, or any upper or lowercase combination of such as a prefix"

LOGS_QUOTAS = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html"
LOGS_TPS = {
    "logs:GetLogEvents": 10,  # "10 requests per second per account per Region. This quota can't be changed."
    "logs:FilterLogEvents": 5,  # "5 transactions per second (TPS)/account/Region. This quota can't be changed."
}

# AWS Batch is REST-JSON: its operations are POSTs to /v1/<name in lower case> (and /v1/tags/<arn> for tags).
BATCH_OPERATIONS = (
    "CancelJob", "CancelJobs", "CreateComputeEnvironment", "CreateConsumableResource", "CreateJobQueue",
    "CreateQuotaShare", "CreateSchedulingPolicy", "CreateServiceEnvironment", "DeleteComputeEnvironment",
    "DeleteConsumableResource", "DeleteJobQueue", "DeleteQuotaShare", "DeleteSchedulingPolicy",
    "DeleteServiceEnvironment", "DeregisterJobDefinition", "DescribeComputeEnvironments",
    "DescribeConsumableResource", "DescribeJobDefinitions", "DescribeJobQueues", "DescribeJobs",
    "DescribeQuotaShare", "DescribeSchedulingPolicies", "DescribeServiceEnvironments", "DescribeServiceJob",
    "GetJobQueueSnapshot", "ListConsumableResources", "ListJobs", "ListJobsByConsumableResource", "ListQuotaShares",
    "ListSchedulingPolicies", "ListServiceJobs", "RegisterJobDefinition", "SubmitJob", "SubmitServiceJob",
    "TerminateJob", "TerminateJobs", "TerminateServiceJob", "TerminateServiceJobs", "UpdateComputeEnvironment",
    "UpdateConsumableResource", "UpdateJobQueue", "UpdateQuotaShare", "UpdateSchedulingPolicy",
    "UpdateServiceEnvironment", "UpdateServiceJob",
)
BATCH_PATHS = {f"/v1/{name.lower()}": name for name in BATCH_OPERATIONS}
BATCH_TAG_OPERATIONS = {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}

# Not passed on: they describe one hop. The proxy answers "Expect: 100-continue" itself (SigV4 never signs it).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "expect"})
CREDENTIAL = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")


class Refusal(NamedTuple):
    """An answer as AWS gives it to a request over one of its limits."""
    status: int
    code: str
    message: str
    content_type: str


def _batch_error(message: str) -> Refusal:
    return Refusal(400, "ClientException", message, "application/json")


def request_service(path: str, headers: Mapping[str, str]) -> str:
    """The AWS service a request is for: the SigV4 credential scope names it (header or presigned query)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    scope = headers.get("Authorization") or "Credential=" + query.get("X-Amz-Credential", [""])[0]
    found = CREDENTIAL.search(scope)
    if found:
        return found.group(1)
    target = headers.get("X-Amz-Target")
    if target:  # unsigned: "Logs_20140328.GetLogEvents" is logs
        return target.split(".")[0].split("_")[0].lower()
    return "batch" if urllib.parse.urlsplit(path).path.lower() in BATCH_PATHS else "s3"


def operation_name(method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> str:
    """``service:Operation`` of a request: batch:SubmitJob, logs:GetLogEvents, sts:GetCallerIdentity, s3:PUT ..."""
    service = request_service(path, headers)
    target = headers.get("X-Amz-Target")
    if target:  # JSON protocol (CloudWatch Logs, ECR, ...): "Logs_20140328.GetLogEvents"
        return f"{service}:{target.rpartition('.')[2]}"
    parts = urllib.parse.urlsplit(path)
    if service == "batch":
        route = parts.path.lower()
        if route.startswith("/v1/tags/"):
            return "batch:" + BATCH_TAG_OPERATIONS.get(method, method)
        return "batch:" + BATCH_PATHS.get(route, route)
    if service == "s3" and "Authorization" not in headers and parts.path.startswith("/api/"):
        return "luigi:" + parts.path[len("/api/"):]  # luigid's RPCs, unsigned: the scale bench counts them too
    if service == "s3":
        return f"s3:{method}"
    form = parts.query
    if body is not None and "x-www-form-urlencoded" in headers.get("Content-Type", ""):
        form += "&" + body.decode("utf-8", "replace")
    action = urllib.parse.parse_qs(form).get("Action")  # query protocol (STS, IAM, ...)
    return f"{service}:{action[0] if action else method}"


def _tag_problem(tags: object) -> str | None:
    if not isinstance(tags, dict):
        return None
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags; AWS Batch allows at most {MAX_TAGS} tags per resource ({TAG_RESTRICTIONS})"
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            return (f"a tag key has {len(key)} characters; a tag key has 1 to {MAX_TAG_KEY} characters "
                    f"({TAG_RESTRICTIONS})")
        if len(str(value)) > MAX_TAG_VALUE:
            return (f"the value of tag {key!r} is {len(str(value))} characters; a tag value has at most "
                    f"{MAX_TAG_VALUE} ({TAG_RESTRICTIONS})")
        if key.lower().startswith(RESERVED_TAG_PREFIX):
            return f"tag key {key!r} starts with the reserved prefix aws: ({TAG_RESTRICTIONS})"
    return None


def _attempts_problem(request: dict) -> str | None:
    attempts = (request.get("retryStrategy") or {}).get("attempts")
    if attempts is not None and not 1 <= attempts <= MAX_ATTEMPTS:
        return f"retryStrategy.attempts is {attempts}; it must be 1 to {MAX_ATTEMPTS} ({RETRY_STRATEGY_API})"
    return None


def _submit_job_problem(request: dict) -> str | None:
    depends_on = request.get("dependsOn") or []
    if len(depends_on) > MAX_DEPENDS_ON:
        return (f"dependsOn has {len(depends_on)} jobs; the maximum number of job dependencies for a job is "
                f"{MAX_DEPENDS_ON} ({BATCH_QUOTAS})")
    name = request.get("jobName", "")
    if not JOB_NAME.fullmatch(name):
        return (f"jobName {name[:40]!r} ({len(name)} characters) is not 1 to 128 letters, numbers, hyphens and "
                f"underscores starting with a letter or number ({SUBMIT_JOB_API})")
    size = (request.get("arrayProperties") or {}).get("size")
    if size is not None and not 2 <= size <= MAX_ARRAY_SIZE:
        return f"arrayProperties.size is {size}; an array job has 2 to {MAX_ARRAY_SIZE} children ({BATCH_QUOTAS})"
    return _attempts_problem(request) or _tag_problem(request.get("tags"))


def _register_job_definition_problem(request: dict) -> str | None:
    name = request.get("jobDefinitionName", "")
    if not JOB_DEFINITION_NAME.fullmatch(name):
        return (f"jobDefinitionName {name[:40]!r} ({len(name)} characters) is not 1 to 128 letters, numbers, "
                f"hyphens and underscores ({REGISTER_JOB_DEFINITION_API})")
    return _attempts_problem(request) or _tag_problem(request.get("tags"))


def batch_problem(operation: str, body: bytes | None, size: int) -> str | None:
    """What in a Batch request breaks an AWS limit (one line naming the limit and the value seen), or None."""
    if operation == "batch:SubmitJob" and size > MAX_SUBMIT_JOB_BYTES:
        return (f"the SubmitJob payload is {size} bytes; the maximum job payload size is {MAX_SUBMIT_JOB_BYTES} "
                f"bytes (30 KiB) ({BATCH_QUOTAS})")
    if operation == "batch:RegisterJobDefinition" and size > MAX_JOB_DEFINITION_BYTES:
        return (f"the job definition is {size} bytes; the maximum job definition size is {MAX_JOB_DEFINITION_BYTES} "
                f"bytes (24 KiB) ({BATCH_QUOTAS})")
    try:
        request = json.loads(body) if body else {}
    except ValueError:
        return None  # not ours to judge: the service answers a malformed body itself
    if not isinstance(request, dict):
        return None
    if operation == "batch:DescribeJobs" and len(request.get("jobs") or []) > MAX_DESCRIBE_JOBS:
        return (f"DescribeJobs got {len(request['jobs'])} job IDs; it takes a list of up to {MAX_DESCRIBE_JOBS} "
                f"({DESCRIBE_JOBS_API})")
    if operation == "batch:SubmitJob":
        return _submit_job_problem(request)
    if operation == "batch:RegisterJobDefinition":
        return _register_job_definition_problem(request)
    if operation == "batch:TagResource":
        return _tag_problem(request.get("tags"))
    return None


class SlidingWindow:
    """At most ``limit`` admissions in any one second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque = deque()

    def admit(self, now: float) -> bool:
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


def _rate_limit(operation: str) -> tuple[str, int] | None:
    """The rate window an operation counts in, and its limit per second."""
    if operation.startswith("batch:"):
        return "batch", BATCH_TPS  # one account-wide rate over all Batch calls (BATCH_THROTTLING)
    if operation in LOGS_TPS:
        return operation, LOGS_TPS[operation]
    return None


def _throttled(operation: str, limit: int) -> tuple[Refusal, str]:
    if operation.startswith("batch:"):
        return (Refusal(429, "TooManyRequestsException", "Too Many Requests", "application/json"),
                f"over {limit} AWS Batch calls in one second ({BATCH_THROTTLING})")
    # CloudWatch Logs speaks JSON 1.1 and throttles with a 400 ThrottlingException: "Rate exceeded".
    return (Refusal(400, "ThrottlingException", "Rate exceeded", "application/x-amz-json-1.1"),
            f"over {limit} {operation.split(':')[1]} calls in one second ({LOGS_QUOTAS})")


class AwsProxy:
    """The running proxy: its URL and what it saw. Made by :func:`aws_proxy`."""

    def __init__(self, upstream: str, latency: float, enforce_limits: bool, port: int | None) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the upstream must be an http:// URL, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.latency = latency
        self.enforce_limits = enforce_limits
        self._lock = threading.Lock()
        self._calls: list[tuple[float, str]] = []
        self._violations: list[str] = []
        self._windows: dict[str, SlidingWindow] = {}
        self._server = _Server(("127.0.0.1", port or 0), self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="aws-proxy",
                                        daemon=True)

    def counts(self) -> dict[str, int]:
        """Requests seen per operation, refused ones included."""
        with self._lock:
            return dict(Counter(operation for _, operation in self._calls))

    def calls(self) -> list[tuple[float, str]]:
        """(time.monotonic() on arrival, operation) of every request, in order of arrival."""
        with self._lock:
            return list(self._calls)

    def violations(self) -> list[str]:
        """One line per refused request: the operation, the limit broken and the value seen."""
        with self._lock:
            return list(self._violations)

    def reset(self) -> None:
        """Forget the counts, calls, violations and the rate windows."""
        with self._lock:
            self._calls.clear()
            self._violations.clear()
            self._windows.clear()

    def admit(self, operation: str, body: bytes | None, size: int) -> Refusal | None:
        """Record a request; with limits enforced, the refusal AWS would answer it with (or None)."""
        now = time.monotonic()
        with self._lock:
            self._calls.append((now, operation))
            if not self.enforce_limits:
                return None
            rate = _rate_limit(operation)
            if rate is not None:
                window, limit = rate
                if not self._windows.setdefault(window, SlidingWindow(limit)).admit(now):
                    refusal, why = _throttled(operation, limit)
                    self._violations.append(f"{operation}: {refusal.code}: {why}")
                    return refusal
        problem = batch_problem(operation, body, size) if operation.startswith("batch:") else None
        if problem is None:
            return None
        with self._lock:
            self._violations.append(f"{operation}: ClientException: {problem}")
        return _batch_error(problem)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_clients()
        self._thread.join()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], proxy: AwsProxy) -> None:
        self.proxy = proxy
        self.clients: set[socket.socket] = set()
        self.clients_lock = threading.Lock()
        super().__init__(address, _Handler)

    def drop_clients(self) -> None:
        """End the kept-alive client connections, so that their threads end too."""
        with self.clients_lock:
            for sock in self.clients:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request is no error of the proxy's."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a head and a body written apart must not wait for a delayed ACK (40 ms)
    server: _Server

    def setup(self) -> None:
        super().setup()
        host, port = self.server.proxy.upstream
        self.upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        with self.server.clients_lock:
            self.server.clients.add(self.connection)

    def finish(self) -> None:
        with self.server.clients_lock:
            self.server.clients.discard(self.connection)
        self.upstream.close()
        with contextlib.suppress(OSError):
            super().finish()

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method is forwarded, whatever its name
            return self.proxy_request
        raise AttributeError(name)

    def log_message(self, format: str, *args) -> None:
        """Quiet: the proxy's record is counts() and violations()."""

    def proxy_request(self) -> None:
        proxy = self.server.proxy
        if proxy.latency:
            time.sleep(proxy.latency)
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body = None
        if not chunked and length <= API_BODY_MAX and request_service(self.path, self.headers) != "s3":
            body = self.rfile.read(length)
        operation = operation_name(self.command, self.path, self.headers, body)
        refusal = proxy.admit(operation, body, length)
        if refusal is not None:
            if body is None:
                self.copy_request_body(length, chunked, lambda _: None)
            self.send_refusal(refusal)
            return
        try:
            response = self.exchange(body, length, chunked)
        except (OSError, http.client.HTTPException) as error:
            self.close_connection = True  # the request body may be half read
            host, port = proxy.upstream
            self.send_plain(502, f"aws_proxy: upstream http://{host}:{port} failed: {error!r}\n")
            return
        try:
            self.relay(response)
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # the response is cut short: the client must see the connection end
            self.upstream.close()

    def fresh_upstream(self) -> bool:
        """Close the kept-alive upstream connection if the upstream closed it meanwhile; True if one is kept."""
        sock = self.upstream.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.upstream.close()  # readable while idle: the upstream closed it
        return self.upstream.sock is not None

    def exchange(self, body: bytes | None, length: int, chunked: bool) -> http.client.HTTPResponse:
        """Send the request upstream and read the response's head (once more on a fresh connection if a
        kept-alive one fails and the request can be sent again)."""
        replayable = body is not None or (length == 0 and not chunked)
        while True:
            reused = self.fresh_upstream()
            try:
                self.upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():  # in order, duplicates kept, Host as signed
                    if name.lower() not in HOP_BY_HOP:
                        self.upstream.putheader(name, value)
                self.upstream.endheaders(body)  # an API body goes in the same packet as the head
                if body is None:
                    self.copy_request_body(length, chunked, self.upstream.send)
                return self.upstream.getresponse()
            except (OSError, http.client.HTTPException):
                self.upstream.close()
                if not (reused and replayable):
                    raise

    def copy_request_body(self, length: int, chunked: bool, send: Callable[[bytes], object]) -> None:
        """Pass the client's request body to ``send`` piece by piece (chunked framing as it came)."""
        if not chunked:
            self.copy_exactly(length, send)
            return
        while True:
            line = self.rfile.readline(CHUNK)
            send(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            self.copy_exactly(size + 2, send)  # the chunk and its CRLF
        while line not in (b"\r\n", b"\n", b""):  # trailers, up to the empty line
            line = self.rfile.readline(CHUNK)
            send(line)

    def copy_exactly(self, length: int, send: Callable[[bytes], object]) -> None:
        while length > 0:
            piece = self.rfile.read(min(CHUNK, length))
            if not piece:
                raise ConnectionError("the client closed the connection in the middle of the request body")
            send(piece)
            length -= len(piece)

    def relay(self, response: http.client.HTTPResponse) -> None:
        """Pass the upstream's response on, its body piece by piece (chunked when its length is not known)."""
        bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        rechunk = not bodiless and response.getheader("Content-Length") is None
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "transfer-encoding":
                self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not bodiless:
            piece = response.read1(CHUNK)
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if rechunk else piece)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        response.read()  # marks the response done (read1 does not at the end of a body), so the connection is reused

    def send_refusal(self, refusal: Refusal) -> None:
        data = json.dumps({"__type": refusal.code, "message": refusal.message}).encode()
        self.send_response(refusal.status)
        self.send_header("Content-Type", refusal.content_type)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("x-amzn-ErrorType", refusal.code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_plain(self, status: int, text: str) -> None:
        data = text.encode()
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@contextlib.contextmanager
def aws_proxy(upstream: str, *, latency: float = 0.0, enforce_limits: bool = False,
              port: int | None = None) -> Iterator[AwsProxy]:
    """A proxy on 127.0.0.1 in front of ``upstream`` (an http:// URL) for the duration of the block."""
    proxy = AwsProxy(upstream, latency, enforce_limits, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the emulator's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--enforce-limits", action="store_true", help="refuse what AWS refuses")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with aws_proxy(args.upstream, latency=args.latency, enforce_limits=args.enforce_limits, port=args.port) as proxy:
        print(proxy.url, flush=True)
        stop.wait()
        print(json.dumps({"counts": proxy.counts(), "violations": proxy.violations()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
