"""botocore's data files for the services disdat-luigi calls, uncompressed, in a directory of their own.

Why: before a process's first client, botocore's Loader lists every one of its ~450 service directories
(~2,800 stats) only to check that "s3" is among them, decompresses the service's model and parses the
1.25 MB endpoints.json of all services: ~0.09 s of CPU in every ``dsdt`` command and in every node's
container (on a 1,000-node graph, 90 s of CPU). Pointed at a copy of the few services we use, the same
client costs ~0.07 s instead of ~0.16 s.

The copy is made from the installed botocore (so it always matches its code), once per botocore version:
into the image by ``dsdt dockerize`` (``DISDAT_BOTOCORE_DATA``), and on a host into the user's cache on
first use. The files are botocore's own, except that endpoints.json keeps only the services copied;
:class:`TrimmedLoader` still loads any other service's model from botocore's full data, and says its files
are botocore's built-in ones (they are), so that endpoint resolution behaves exactly as with the full data.
Anyone customizing botocore's data (``AWS_DATA_PATH``, the ``data_path`` setting, ``~/.aws/models``)
gets botocore's own loader, untouched.
"""
from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Optional

from botocore import __version__ as BOTOCORE_VERSION
from botocore.loaders import Loader

from ..fsutil import user_cache

# What disdat-luigi creates clients for, and what botocore's credential providers may create (sts for
# assumed roles and web identity, sso/sso-oidc for IAM Identity Center, signin for `aws login`).
SERVICES = ("s3", "sts", "batch", "logs", "ecr", "sso", "sso-oidc", "signin")
_SKIPPED = ("examples-1.json",)   # documentation only: botocore never loads it to make requests


def location() -> Path:
    """Where the copy for the installed botocore is (or goes)."""
    base = os.environ.get("DISDAT_BOTOCORE_DATA")
    return (Path(base) if base else user_cache() / "botocore-data") / BOTOCORE_VERSION


class TrimmedLoader(Loader):
    """botocore's Loader over the copy, falling back to botocore's full data for any other service."""

    def __init__(self, path: Path):
        super().__init__(extra_search_paths=[str(path)], include_default_search_paths=False)
        self._path = str(path)
        self._full: Optional[Loader] = None

    def is_builtin_path(self, path: str) -> bool:
        # botocore resolves endpoints differently when endpoints.json is not its own; this copy is.
        return path.startswith(self._path) or super().is_builtin_path(path)

    def load_service_model(self, service_name: str, type_name: str, api_version: Optional[str] = None) -> Any:
        if service_name in SERVICES:
            return super().load_service_model(service_name, type_name, api_version)
        if self._full is None:
            self._full = Loader()
        return self._full.load_service_model(service_name, type_name, api_version)


def loader_for(session) -> Loader:
    """The data loader for a botocore session: the copy (made now if this host has none), or the session's
    own loader when the user customizes botocore's data or the copy cannot be made (a read-only home)."""
    if session.get_config_variable("data_path") or os.path.isdir(Loader.CUSTOMER_DATA_PATH):
        return session.get_component("data_loader")
    path = location()
    if not path.is_dir():
        try:
            build(path)
        except OSError:
            return session.get_component("data_loader")
    return TrimmedLoader(path)


def build(dest: Path) -> None:
    """Copy botocore's data for SERVICES into ``dest``, whole or not at all: built beside it and renamed, so
    that processes starting at once each build their own and the first rename wins."""
    source = Path(Loader.BUILTIN_DATA_PATH)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}")
    tmp.mkdir()
    try:
        for entry in source.iterdir():
            if entry.is_file():
                _copy(entry, tmp)
        endpoints = json.loads((tmp / "endpoints.json").read_bytes())
        for partition in endpoints["partitions"]:
            partition["services"] = {k: v for k, v in partition["services"].items() if k in SERVICES}
        (tmp / "endpoints.json").write_text(json.dumps(endpoints))
        for service in SERVICES:
            for version in (source / service).glob("*"):
                for entry in version.iterdir():
                    if entry.name not in _SKIPPED:
                        _copy(entry, tmp / service / version.name)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy(entry: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if entry.suffix == ".gz":
        with gzip.open(entry) as src:
            (into / entry.stem).write_bytes(src.read())
    else:
        shutil.copyfile(entry, into / entry.name)


if __name__ == "__main__":    # `python -m disdat_luigi.remotes.botocore_data`: what `dsdt dockerize` runs
    build(location())
