"""S3 clients parse timestamps with remotes.s3.s3_timestamp: the same instants as botocore's own parser, for
a fraction of its CPU (see its docstring). No server: a canned response is handed to the client through
botocore's ``before-send`` event, which returns it in place of the HTTP exchange and lets the client parse it."""
from datetime import timezone

import pytest
from botocore.awsrequest import AWSResponse
from botocore.utils import parse_timestamp

from disdat_luigi.remotes.s3 import make_client, s3_timestamp

SAME_AS_BOTOCORE = [
    "2026-12-04T20:36:05.000Z",           # a LIST's LastModified
    "2026-12-04T20:36:05Z",
    "2026-12-04T20:36:05.5Z",
    "2026-12-04T20:36:05.123456Z",
    "Fri, 04 Dec 2026 20:36:05 GMT",      # a GET's Last-Modified header
    "Thu, 31 Dec 2099 23:59:59 GMT",
    "2026-12-04T20:36:05+02:00",          # the forms below go to botocore's parser
    "Fri, 04 Dec 2026 20:36:05 +0200",
    "2026-12-04",
    "Fri, 04 Dec 2026 8:36:05 PM GMT",    # near the forms: the stdlib would read these otherwise
    "Fri, 04 Dec 70 20:36:05 GMT",
    "Fri, 04 Dec 69 20:36:05 GMT",
    "Mon, 04 Dec 2026 20:36:05 GMT",      # a wrong weekday: both ignore it
    "2026-12-04T20:36:05.1234567Z",
    1700000000,
    1700000000.5,
    "1700000000",
]
REFUSED = ["2026-13-04T20:36:05.000Z", "Xyz GMT", "not a time Z", "Fri, 31 Feb 2026 20:36:05 GMT",
           "Fri, 04 Dec 2026 20:36:05 -0000 GMT", "Fri, 04 Dec 2026 20:36:05 +0200 GMT", "Fri, 04 Dec 2026 EST GMT",
           "Fri, 04 Dec 2026 20.36.05 GMT", "2026-W49-5T20:36:05Z", "2026-12-04T20:36:05.Z", "2026-12-04T24:00:00Z"]


@pytest.mark.parametrize("value", SAME_AS_BOTOCORE)
def test_same_instant_as_botocore(value):
    ours, botocores = s3_timestamp(value), parse_timestamp(value)
    assert (ours.tzinfo is None) == (botocores.tzinfo is None)    # a naive and an aware time never compare equal
    assert ours == botocores and ours.utcoffset() == botocores.utcoffset()


@pytest.mark.parametrize("value", REFUSED)
def test_what_botocore_refuses_is_refused(value):
    with pytest.raises(ValueError) as botocore_error:
        parse_timestamp(value)
    with pytest.raises(ValueError) as ours:
        s3_timestamp(value)
    assert str(ours.value) == str(botocore_error.value)


class _Canned:
    """A before-send handler: the response S3 would send, without a server."""

    def __init__(self, headers: dict, body: bytes):
        self.headers, self.body = headers, body

    def stream(self, *args, **kwargs):     # what AWSResponse reads its content from
        yield self.body

    def __call__(self, request, **kwargs) -> AWSResponse:
        return AWSResponse(request.url, 200, self.headers, self)


LISTING = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
           b'<Name>b</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false'
           b'</IsTruncated><Contents><Key>k</Key><LastModified>2026-12-04T20:36:05.000Z</LastModified><ETag>'
           b'"e"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>')


def test_s3_clients_use_it(monkeypatch):
    """A LIST's LastModified and a HEAD's Last-Modified come out of s3_timestamp (timezone.utc; botocore's
    parser gives dateutil's tzutc), as the instants S3 sent."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    client = make_client(1)
    client.meta.events.register("before-send.s3.ListObjectsV2", _Canned({}, LISTING))
    client.meta.events.register("before-send.s3.HeadObject", _Canned(
        {"Last-Modified": "Fri, 04 Dec 2026 20:36:05 GMT", "Content-Length": "1", "ETag": '"e"'}, b""))
    listed = client.list_objects_v2(Bucket="b")["Contents"][0]["LastModified"]
    headed = client.head_object(Bucket="b", Key="k")["LastModified"]
    for stamp in (listed, headed):
        assert stamp == parse_timestamp("2026-12-04T20:36:05Z")
        assert stamp.tzinfo is timezone.utc
