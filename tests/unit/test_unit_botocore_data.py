"""botocore_data: the trimmed copy of botocore's data resolves, signs and addresses every client exactly as
botocore's full data does, is used unless the user customizes botocore's data, and is built whole or not at all.
No request is sent: endpoints, regions and presigned URLs are computed locally."""
from __future__ import annotations

import os
import threading
import urllib.parse

import botocore.session
import pytest
from botocore.loaders import Loader

from disdat_luigi.remotes import botocore_data, s3
from disdat_luigi.remotes.botocore_data import SERVICES, TrimmedLoader, build


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("botocore-data") / "copy"
    build(dest)
    return dest


@pytest.fixture
def aws_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _session(loader=None):
    session = botocore.session.get_session()
    if loader is not None:
        session.register_component("data_loader", loader)
    return session


def _client(loader, service, **kwargs):
    return _session(loader).create_client(service, **kwargs)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"])
def test_every_client_resolves_as_with_botocores_full_data(copy, aws_env, region):
    for service in SERVICES:
        ours, full = _client(TrimmedLoader(copy), service, region_name=region), _client(None, service,
                                                                                        region_name=region)
        assert ours.meta.endpoint_url == full.meta.endpoint_url, service
        assert ours.meta.region_name == full.meta.region_name, service
        assert ours.meta.service_model.operation_names == full.meta.service_model.operation_names, service
    # S3 addressing (virtual-hosted on AWS, path-style on an endpoint of one's own) and signing
    for kwargs in ({}, {"endpoint_url": "http://127.0.0.1:8333"}):
        urls = [_client(loader, "s3", region_name=region, **kwargs).generate_presigned_url(
            "get_object", Params={"Bucket": "my-bucket", "Key": "a/b"}, ExpiresIn=60) for loader in
            (TrimmedLoader(copy), None)]
        assert _signed_for(urls[0]) == _signed_for(urls[1])
        assert "Signature=" in urls[0]


def _signed_for(url: str):
    """What a presigned URL addresses and how it is signed, without its time and signature."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    return (parts.scheme, parts.netloc, parts.path, sorted(query), query.get("X-Amz-Credential"),
            query.get("X-Amz-Algorithm"))


def test_any_other_service_still_loads_from_botocores_data(copy, aws_env):
    ours = _client(TrimmedLoader(copy), "dynamodb", region_name="us-west-2")
    full = _client(None, "dynamodb", region_name="us-west-2")
    assert ours.meta.service_model.operation_names == full.meta.service_model.operation_names
    assert ours.meta.endpoint_url == full.meta.endpoint_url
    assert not (copy / "dynamodb").exists()


def test_the_copy_holds_only_our_services_and_is_not_compressed(copy):
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == sorted(
        s for s in SERVICES if os.path.isdir(os.path.join(Loader.BUILTIN_DATA_PATH, s)))
    assert not list(copy.rglob("*.gz")) and not list(copy.rglob("examples-1.json"))
    assert (copy / "s3").is_dir() and (copy / "endpoints.json").stat().st_size < 400_000


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path, aws_env):
    """make_session as a new process makes it: no loader yet, the cache in tmp_path."""
    monkeypatch.setattr(s3, "_loader", None)
    monkeypatch.delenv("DISDAT_BOTOCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_session_builds_the_copy_once_and_uses_it(fresh_loader):
    session = s3.make_session()
    loader = session.get_component("data_loader")
    assert isinstance(loader, TrimmedLoader)
    assert botocore_data.location() == fresh_loader / "cache" / "disdat-luigi" / "botocore-data" / \
        botocore.__version__
    assert (botocore_data.location() / "endpoints.json").is_file()
    assert s3.make_session().get_component("data_loader") is loader


@pytest.mark.parametrize("customized", ["AWS_DATA_PATH", "~/.aws/models", "unwritable cache"])
def test_botocores_own_loader_when_the_user_customizes_its_data_or_the_copy_cannot_be_made(
        fresh_loader, monkeypatch, customized):
    if customized == "AWS_DATA_PATH":
        monkeypatch.setenv("AWS_DATA_PATH", str(fresh_loader / "models"))
    elif customized == "~/.aws/models":
        monkeypatch.setattr(Loader, "CUSTOMER_DATA_PATH", str(fresh_loader / ".aws" / "models"))
        (fresh_loader / ".aws" / "models").mkdir(parents=True)
    else:
        (fresh_loader / "cache").write_text("a file where the cache directory would be")
    loader = s3.make_session().get_component("data_loader")
    assert type(loader) is Loader
    assert not (fresh_loader / "cache").is_dir()


def test_builds_racing_leave_one_whole_copy(tmp_path):
    dest = tmp_path / "v"
    errors = []

    def one():
        try:
            build(dest)
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert (dest / "s3").is_dir() and (dest / "endpoints.json").is_file()
