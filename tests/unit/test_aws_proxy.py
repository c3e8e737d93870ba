"""scripts/aws_proxy.py: the proxy that adds latency, counts AWS operations and enforces AWS's limits.

The upstream here is a tiny recording HTTP server in the test process (no emulator needed): it proves what
reaches the upstream byte for byte, and botocore clients pointed at the proxy prove that refusals look to
botocore exactly like AWS's (ClientError with AWS's code, retried by the standard retry mode when throttled).
"""
from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import aws_proxy  # noqa: E402  (scripts/aws_proxy.py)
from aws_proxy import aws_proxy as proxy_to  # noqa: E402

SCRIPT = Path(aws_proxy.__file__)
BLOCK = random.Random(7).randbytes(1 << 20)  # what /big/<n> answers, repeated


class Seen(NamedTuple):
    method: str
    path: str
    headers: list
    size: int
    sha256: str
    body: bytes  # kept when under 1 MiB
    peer_port: int


def big_sha(n: int) -> str:
    digest = hashlib.sha256()
    for start in range(0, n, len(BLOCK)):
        digest.update(BLOCK[:min(len(BLOCK), n - start)])
    return digest.hexdigest()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request (body hashed as it streams in) and answers by path: /big/<n> streams n bytes,
    /chunked answers chunked, /status/<code> answers that status, anything else 200 with {} or nothing."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def log_message(self, format, *args) -> None:
        pass

    def read_body(self):
        digest, kept, size = hashlib.sha256(), [], 0

        def take(n: int) -> None:
            nonlocal size
            while n:
                piece = self.rfile.read(min(n, 1 << 20))
                digest.update(piece)
                size += len(piece)
                n -= len(piece)
                if size < (1 << 20):
                    kept.append(piece)

        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while (n := int(self.rfile.readline().split(b";")[0], 16)):
                take(n)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
        else:
            take(int(self.headers.get("Content-Length") or 0))
        return size, digest.hexdigest(), b"".join(kept) if size < (1 << 20) else b""

    def answer(self) -> None:
        size, sha, body = self.read_body()
        self.server.seen.append(Seen(self.command, self.path, list(self.headers.items()), size, sha, body,
                                     self.client_address[1]))
        if self.path.startswith("/big/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for start in range(0, n, len(BLOCK)):
                self.wfile.write(BLOCK[:min(len(BLOCK), n - start)])
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/status/"):
            self.send_response(int(self.path.split("/")[2]))
            self.end_headers()
        else:
            json_api = "json" in self.headers.get("Content-Type", "")
            out = b"{}" if json_api else b""
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if json_api else "application/octet-stream")
            self.send_header("Content-Length", "1234" if self.command == "HEAD" else str(len(out)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.seen: list[Seen] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def upstream():
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def limited(upstream):
    with proxy_to(upstream.url, enforce_limits=True) as proxy:
        yield proxy


def connect(url: str) -> http.client.HTTPConnection:
    """A plain HTTP/1.1 connection to the proxy (a broken proxy fails the test in seconds, not hangs it)."""
    return http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)


def client(service: str, url: str, attempts: int = 1):
    """A boto3 client of ``service`` at ``url`` with dummy credentials; ``attempts`` = 1 means no retries."""
    return boto3.session.Session().client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))


def refused(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def submit(batch, **changes) -> dict:
    request = dict(jobName="job", jobQueue="queue", jobDefinition="definition")
    request.update(changes)
    return batch.submit_job(**request)


def deps(n: int) -> list:
    return [{"jobId": f"job-{i}"} for i in range(n)]


# -- forwarding ------------------------------------------------------------------------------------------------
def test_every_method_path_header_and_body_reaches_the_upstream_unchanged(upstream):
    with proxy_to(upstream.url) as proxy:
        conn = connect(proxy.url)
        for method in ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND"):
            conn.putrequest(method, "/bucket/some%20key?versionId=3&x=a%2Fb", skip_host=True,
                            skip_accept_encoding=True)
            for name, value in (("Host", "bucket.s3.example.test:8333"), ("X-Amz-Date", "20240101T000000Z"),
                                ("X-Dup", "one"), ("X-Dup", "two"), ("Content-Length", "11")):
                conn.putheader(name, value)
            conn.endheaders(b"hello world")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
    assert [s.method for s in upstream.seen] == ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "PROPFIND"]
    for seen in upstream.seen:
        assert seen.path == "/bucket/some%20key?versionId=3&x=a%2Fb"
        assert seen.headers == [("Host", "bucket.s3.example.test:8333"), ("X-Amz-Date", "20240101T000000Z"),
                                ("X-Dup", "one"), ("X-Dup", "two"), ("Content-Length", "11")]
        assert seen.body == b"hello world"


def test_connections_are_kept_alive_on_both_sides(upstream):
    with proxy_to(upstream.url) as proxy:
        conn = connect(proxy.url)
        socks = set()
        for i in range(5):
            conn.request("PUT", f"/bucket/key{i}", body=b"x" * i)
            response = conn.getresponse()
            response.read()
            socks.add(id(conn.sock))
        conn.close()
    assert len(socks) == 1, "the proxy closed the client's connection between requests"
    assert len({s.peer_port for s in upstream.seen}) == 1, "the proxy opened a new upstream connection per request"
    assert [s.size for s in upstream.seen] == [0, 1, 2, 3, 4]


def test_head_204_304_and_chunked_responses(upstream):
    with proxy_to(upstream.url) as proxy:
        conn = connect(proxy.url)
        conn.request("HEAD", "/bucket/key")
        head = conn.getresponse()
        assert (head.status, head.getheader("Content-Length"), head.read()) == (200, "1234", b"")
        for status in (204, 304):
            conn.request("GET", f"/status/{status}")
            response = conn.getresponse()
            assert (response.status, response.read()) == (status, b"")
        conn.request("GET", "/chunked")
        chunked = conn.getresponse()
        assert (chunked.status, chunked.read()) == (200, b"first,second,third")
        conn.request("GET", "/bucket/after")  # the connection is still in step after all of them
        assert conn.getresponse().status == 200
        conn.close()


def test_chunked_request_body_is_forwarded(upstream):
    parts = [b"a" * 1000, b"b" * 70_000, b"c"]
    with proxy_to(upstream.url) as proxy:
        conn = connect(proxy.url)
        conn.request("PUT", "/bucket/streamed", body=iter(parts), encode_chunked=True)
        assert conn.getresponse().status == 200
        conn.close()
    assert (upstream.seen[0].size, upstream.seen[0].sha256) == (71_001, hashlib.sha256(b"".join(parts)).hexdigest())


def test_an_unreachable_upstream_answers_502():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: connections are refused
        with proxy_to(dead) as proxy:
            conn = connect(proxy.url)
            conn.request("GET", "/bucket/key")
            response = conn.getresponse()
            body = response.read()
    assert response.status == 502
    assert body.startswith(b"aws_proxy: upstream " + dead.encode()) and len(body) < 300


def test_50_mb_each_way_streams_through_the_cli_proxy_in_bounded_memory(upstream):
    size = 50 * 1024 * 1024
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--upstream", upstream.url], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = proc.stdout.readline().strip()
        before = _memory_kib(proc.pid)["VmRSS"]
        conn = connect(url)
        conn.putrequest("PUT", "/bucket/big")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for _ in range(size // len(BLOCK)):
            conn.send(BLOCK)
        assert conn.getresponse().read() == b""
        conn.request("GET", f"/big/{size}")
        response = conn.getresponse()
        digest, got = hashlib.sha256(), 0
        while piece := response.read(1 << 20):
            digest.update(piece)
            got += len(piece)
        conn.close()
        peak = _memory_kib(proc.pid)["VmHWM"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert (upstream.seen[0].size, upstream.seen[0].sha256) == (size, big_sha(size))
    assert (got, digest.hexdigest()) == (size, big_sha(size))
    assert peak - before < 20 * 1024, f"the proxy grew by {(peak - before) // 1024} MiB moving 2 x 50 MiB"
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"counts": {"s3:PUT": 1, "s3:GET": 1}, "violations": []}


def _memory_kib(pid: int) -> dict:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines if line.startswith("Vm"))}


# -- latency and counting ----------------------------------------------------------------------------------------
def test_latency_delays_every_request(upstream):
    with proxy_to(upstream.url, latency=0.05) as proxy:
        conn = connect(proxy.url)
        took = []
        for _ in range(4):
            start = time.monotonic()
            conn.request("GET", "/bucket/key")
            conn.getresponse().read()
            took.append(time.monotonic() - start)
        conn.close()
    assert min(took) >= 0.05, took


def test_counts_and_calls_name_aws_operations(upstream):
    with proxy_to(upstream.url) as proxy:
        batch, logs, s3 = (client(s, proxy.url) for s in ("batch", "logs", "s3"))
        submit(batch)
        batch.describe_jobs(jobs=["a", "b"])
        batch.describe_jobs(jobs=["c"])
        batch.list_jobs(jobQueue="queue")
        batch.terminate_job(jobId="a", reason="test")
        batch.register_job_definition(jobDefinitionName="d", type="container")
        batch.describe_job_definitions()
        batch.describe_job_queues()
        batch.create_compute_environment(computeEnvironmentName="ce", type="UNMANAGED")
        batch.create_job_queue(jobQueueName="q", priority=1, computeEnvironmentOrder=[])
        arn = "arn:aws:batch:us-east-1:123456789012:job/a"
        batch.tag_resource(resourceArn=arn, tags={"k": "v"})
        batch.list_tags_for_resource(resourceArn=arn)
        batch.untag_resource(resourceArn=arn, tagKeys=["k"])
        logs.get_log_events(logGroupName="/aws/batch/job", logStreamName="s")
        s3.put_object(Bucket="bucket", Key="k", Body=b"data")
        s3.get_object(Bucket="bucket", Key="k")["Body"].read()
        s3.head_object(Bucket="bucket", Key="k")
        conn = connect(proxy.url)
        conn.request("POST", "/", body="Action=GetCallerIdentity&Version=2011-06-15", headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": "AWS4-HMAC-SHA256 Credential=K/20240101/us-east-1/sts/aws4_request, SignedHeaders=host"})
        conn.getresponse().read()
        conn.request("POST", "/api/get_work", body="data=%7B%7D")   # luigid's RPC, unsigned
        conn.getresponse().read()
        conn.close()
        assert proxy.counts() == {
            "batch:SubmitJob": 1, "batch:DescribeJobs": 2, "batch:ListJobs": 1, "batch:TerminateJob": 1,
            "batch:RegisterJobDefinition": 1, "batch:DescribeJobDefinitions": 1, "batch:DescribeJobQueues": 1,
            "batch:CreateComputeEnvironment": 1, "batch:CreateJobQueue": 1, "batch:TagResource": 1,
            "batch:ListTagsForResource": 1, "batch:UntagResource": 1, "logs:GetLogEvents": 1, "s3:PUT": 1,
            "s3:GET": 1, "s3:HEAD": 1, "sts:GetCallerIdentity": 1, "luigi:get_work": 1}
        calls = proxy.calls()
        assert [op for _, op in calls[:3]] == ["batch:SubmitJob", "batch:DescribeJobs", "batch:DescribeJobs"]
        assert [t for t, _ in calls] == sorted(t for t, _ in calls) and calls[-1][0] <= time.monotonic()
        proxy.reset()
        assert (proxy.counts(), proxy.calls(), proxy.violations()) == ({}, [], [])


@pytest.mark.parametrize("path, headers, body, expected", [
    ("/v1/submitjob", {}, b"{}", "batch:SubmitJob"),  # unsigned: the path names it
    ("/v1/tags/arn%3Aaws%3Abatch", {"Authorization": "AWS4-HMAC-SHA256 Credential=K/20240101/us-east-1/batch/"
                                                     "aws4_request, SignedHeaders=host"}, b"", "batch:TagResource"),
    ("/", {"X-Amz-Target": "Logs_20140328.FilterLogEvents"}, b"{}", "logs:FilterLogEvents"),
    ("/?Action=ListUsers&Version=2010-05-08", {"Authorization": "AWS4-HMAC-SHA256 Credential=K/20240101/"
                                                                "us-east-1/iam/aws4_request"}, b"", "iam:ListUsers"),
    ("/v1/submitjob?X-Amz-Credential=K%2F20240101%2Fus-east-1%2Fs3%2Faws4_request", {}, None, "s3:POST"),
])
def test_operation_names(path, headers, body, expected):
    assert aws_proxy.operation_name("POST", path, headers, body) == expected


# -- AWS Batch limits ---------------------------------------------------------------------------------------------
def test_submit_job_with_21_dependencies_is_refused_as_aws_refuses_it(upstream, limited):
    batch = client("batch", limited.url)
    error = refused(lambda: submit(batch, dependsOn=deps(21)))
    assert error.response["Error"]["Code"] == "ClientException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "dependsOn has 21 jobs" in error.response["Error"]["Message"]
    assert upstream.seen == []
    assert limited.violations() == [
        "batch:SubmitJob: ClientException: dependsOn has 21 jobs; the maximum number of job dependencies for a job "
        "is 20 (https://docs.aws.amazon.com/batch/latest/userguide/service_limits.html)"]
    submit(batch, dependsOn=deps(20))
    assert len(upstream.seen) == 1 and len(limited.violations()) == 1


def test_a_refusal_is_on_the_wire_as_aws_rest_json_sends_it(limited):
    conn = connect(limited.url)
    conn.request("POST", "/v1/submitjob", body=json.dumps({"jobName": "j", "dependsOn": deps(21)}), headers={
        "Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert (response.status, response.getheader("x-amzn-ErrorType")) == (400, "ClientException")
    assert body["__type"] == "ClientException" and body["message"].startswith("dependsOn has 21 jobs")


def test_submit_job_payload_over_30_kib_is_refused(upstream, limited):
    batch = client("batch", limited.url)

    def payload_of(kib: int) -> dict:
        return {"environment": [{"name": "BIG", "value": "x" * (kib * 1024)}]}

    error = refused(lambda: submit(batch, containerOverrides=payload_of(31)))
    assert error.response["Error"]["Code"] == "ClientException"
    assert "SubmitJob payload is 3" in limited.violations()[0] and "30 KiB" in limited.violations()[0]
    refused(lambda: submit(batch, containerOverrides=payload_of(2048)))  # too big to read whole: drained instead
    submit(batch, containerOverrides=payload_of(29))  # on the same connection, still in step
    assert len(upstream.seen) == 1 and len(limited.violations()) == 2


@pytest.mark.parametrize("changes, what", [
    (dict(jobName="has space"), "jobName"),
    (dict(jobName="-starts-with-hyphen"), "jobName"),
    (dict(jobName="n" * 129), "jobName"),
    (dict(tags={f"k{i}": "v" for i in range(51)}), "51 tags"),
    (dict(tags={"k" * 129: "v"}), "a tag key has 129 characters"),
    (dict(tags={"k": "v" * 257}), "257 characters"),
    (dict(tags={"AWS:owner": "me"}), "reserved prefix aws:"),
    (dict(arrayProperties={"size": 10_001}), "arrayProperties.size is 10001"),
    (dict(arrayProperties={"size": 1}), "arrayProperties.size is 1"),
    (dict(retryStrategy={"attempts": 11}), "retryStrategy.attempts is 11"),
])
def test_submit_job_over_a_documented_limit_is_refused(upstream, limited, changes, what):
    error = refused(lambda: submit(client("batch", limited.url), **changes))
    assert error.response["Error"]["Code"] == "ClientException"
    assert what in error.response["Error"]["Message"]
    assert upstream.seen == [] and len(limited.violations()) == 1


def test_submit_job_at_the_documented_limits_passes(upstream, limited):
    submit(client("batch", limited.url), jobName="N" * 128, dependsOn=deps(20), arrayProperties={"size": 10_000},
           retryStrategy={"attempts": 10}, tags={**{f"k{i}": "v" for i in range(49)}, "k" * 128: "v" * 256})
    assert len(upstream.seen) == 1 and limited.violations() == []


def test_register_job_definition_over_24_kib_is_refused(upstream, limited):
    batch = client("batch", limited.url)

    def register(kib: int) -> dict:
        return batch.register_job_definition(jobDefinitionName="definition", type="container", containerProperties={
            "image": "busybox", "environment": [{"name": "BIG", "value": "x" * (kib * 1024)}]})

    error = refused(lambda: register(25))
    assert error.response["Error"]["Code"] == "ClientException"
    assert "24 KiB" in limited.violations()[0]
    register(23)
    assert len(upstream.seen) == 1


def test_describe_jobs_takes_at_most_100_ids(upstream, limited):
    batch = client("batch", limited.url)
    error = refused(lambda: batch.describe_jobs(jobs=[f"job-{i}" for i in range(101)]))
    assert error.response["Error"]["Code"] == "ClientException"
    assert limited.violations()[0].startswith("batch:DescribeJobs: ClientException: DescribeJobs got 101 job IDs")
    batch.describe_jobs(jobs=[f"job-{i}" for i in range(100)])
    assert len(upstream.seen) == 1


def test_tag_resource_with_51_tags_is_refused(upstream, limited):
    error = refused(lambda: client("batch", limited.url).tag_resource(
        resourceArn="arn:aws:batch:us-east-1:123456789012:job/a", tags={f"k{i}": "v" for i in range(51)}))
    assert error.response["Error"]["Code"] == "ClientException"
    assert upstream.seen == []


def test_over_50_batch_calls_in_a_second_get_429_too_many_requests(upstream, limited):
    batch = client("batch", limited.url)
    outcomes = []
    start = time.monotonic()
    for i in range(60):
        call = batch.describe_jobs if i % 2 else batch.list_jobs  # one account-wide rate over all Batch calls
        try:
            call(jobs=["a"]) if i % 2 else call(jobQueue="queue")
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append((error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]))
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, f"60 calls took {elapsed:.2f} s: too slow a machine to test a one-second window"
    assert outcomes == ["ok"] * 50 + [("TooManyRequestsException", 429)] * 10
    assert len(upstream.seen) == 50
    assert [v.split(": ")[0] for v in limited.violations()] == ["batch:ListJobs", "batch:DescribeJobs"] * 5
    assert all(": TooManyRequestsException: over 50 AWS Batch calls in one second (" in v for v in limited.violations())
    limited.reset()  # the rate window starts again too
    batch.describe_jobs(jobs=["a"])


def test_botocore_standard_retries_ride_out_the_throttling(upstream, limited):
    batch = client("batch", limited.url, attempts=10)
    for _ in range(51):
        batch.describe_jobs(jobs=["a"])  # none raises: the 429 is retried with backoff
    assert len(upstream.seen) == 51
    assert limited.violations(), "51 calls in a row were never throttled"
    assert limited.counts()["batch:DescribeJobs"] == 51 + len(limited.violations())


def test_get_log_events_over_10_a_second_is_throttled_as_cloudwatch_logs_does(upstream, limited):
    logs = client("logs", limited.url)
    outcomes = []
    for _ in range(11):
        try:
            logs.get_log_events(logGroupName="/aws/batch/job", logStreamName="s")
            outcomes.append("ok")
        except ClientError as error:
            outcomes.append((error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"],
                             error.response["Error"]["Message"]))
    assert outcomes == ["ok"] * 10 + [("ThrottlingException", 400, "Rate exceeded")]
    for _ in range(5):  # a quota of its own: 5 a second
        logs.filter_log_events(logGroupName="/aws/batch/job")
    error = refused(lambda: logs.filter_log_events(logGroupName="/aws/batch/job"))
    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert [v.split(":")[1] for v in limited.violations()] == ["GetLogEvents", "FilterLogEvents"]


def test_nothing_is_refused_unless_limits_are_enforced(upstream):
    with proxy_to(upstream.url) as proxy:
        batch = client("batch", proxy.url)
        submit(batch, dependsOn=deps(21))
        batch.describe_jobs(jobs=[f"job-{i}" for i in range(101)])
        for _ in range(60):
            batch.list_jobs(jobQueue="queue")
        assert proxy.violations() == []
    assert len(upstream.seen) == 62
