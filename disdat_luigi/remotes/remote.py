"""The remote layout over an object store, for one remote context::

    blobs/<sha256[:2]>/<sha256>                       one large file, content-addressed, shared
    packs/<sha256>                                    many small files in one object
    context/<ctx>/bundles/<uuid>.json                 manifest: written LAST, after every object it names
    context/<ctx>/names/<name>/<created>_<uuid>       empty marker: the latest version of a name is one LIST
    context/<ctx>/runs/, leases/, logs/                run records, leases and logs (see .runs)

A manifest on the remote means the bundle is complete there.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..errors import DisdatError, IntegrityError, NotFound
from ..store.manifest import Manifest, check_created, check_name, check_uuid
from .base import ObjectStore

MAX_MANIFEST_BYTES = 128 << 20  # a manifest of ~500,000 files; a larger object on a remote is not one of ours


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def pack_key(sha256: str) -> str:
    return f"packs/{sha256}"


class Remote:
    def __init__(self, store: ObjectStore, remote_context: str):
        self.store = store
        self.context = check_name(remote_context, "remote context name")
        self._root = f"context/{self.context}"
        self._manifests: Dict[str, Manifest] = {}  # a published manifest never changes: read it once

    @property
    def url(self) -> str:
        return self.store.url

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- keys ------------------------------------------------------------------------------------
    def manifest_key(self, uuid: str) -> str:
        return f"{self._root}/bundles/{uuid}.json"

    def names_prefix(self, name: Optional[str] = None) -> str:
        return f"{self._root}/names/" + (f"{name}/" if name else "")

    # -- bundles ---------------------------------------------------------------------------------
    def has_bundle(self, uuid: str) -> bool:
        return self.store.exists(self.manifest_key(uuid))

    def manifest(self, uuid: str) -> Manifest:
        """The bundle's remote manifest, validated (no path may escape the bundle)."""
        if uuid in self._manifests:
            return self._manifests[uuid]
        try:
            raw = self.store.get_bytes(self.manifest_key(uuid), MAX_MANIFEST_BYTES)
        except NotFound:
            raise NotFound(f"bundle {uuid} is not on the remote {self.url} (context {self.context})") from None
        try:
            m = Manifest.from_json(raw)
            if m.uuid != uuid:
                raise IntegrityError(f"field uuid names bundle {m.uuid}, not {uuid}")
        except IntegrityError as exc:
            raise IntegrityError(f"the manifest of bundle {uuid} on the remote {self.url} is refused, nothing was "
                                 f"kept: {exc}") from None
        self._manifests[uuid] = m
        return m

    def publish(self, manifest: Manifest) -> None:
        """Write the manifest, then the name marker: call only after every blob and pack it names is up."""
        self.store.put_bytes(self.manifest_key(manifest.uuid), manifest.to_json())
        self.store.put_bytes(self.names_prefix(manifest.name) + f"{manifest.created}_{manifest.uuid}", b"")

    def versions(self, name: Optional[str] = None) -> List[Tuple[str, str, str]]:
        """(name, created, uuid) of every version of ``name`` (every name when None), newest first."""
        out = []
        prefix = self.names_prefix(name)
        for key in self.store.list(prefix):
            bundle_name, _, marker = key[len(self.names_prefix()):].partition("/")
            created, _, uuid = marker.rpartition("_")
            try:  # markers are untrusted: one that is not name/created_uuid is not a version
                check_name(bundle_name)
                check_created(created)
                check_uuid(uuid)
            except DisdatError:
                continue
            out.append((bundle_name, created, uuid))
        out.sort(key=lambda v: (v[1], v[2]), reverse=True)
        return out

    def latest(self, name: str, tags: Optional[Dict[str, str]] = None) -> Manifest:
        """The newest version of ``name`` on the remote (carrying every tag in ``tags``)."""
        for _, _, uuid in self.versions(check_name(name)):
            try:
                m = self.manifest(uuid)
            except NotFound:
                continue  # markers are written after manifests, so this cannot happen; never trust it
            if m.name != name:
                continue  # a marker filed under another name than its manifest's: not a version of this name
            if all(m.tags.get(k) == v for k, v in (tags or {}).items()):
                return m
        with_tags = " with tags " + " ".join(f"{k}:{v}" for k, v in tags.items()) if tags else ""
        raise NotFound(f"no bundle named {name}{with_tags} on the remote {self.url} (context {self.context})")

    def existing_blobs(self, shas: Iterable[str], workers: int = 8) -> Set[str]:
        """Which of these blobs are on the remote: one LIST per sha prefix, not one request per blob."""
        wanted = set(shas)
        prefixes = sorted({s[:2] for s in wanted})
        if not prefixes:
            return set()

        def listing(p: str) -> Set[str]:
            return {k.rpartition("/")[2] for k in self.store.list(f"blobs/{p}/")}

        with ThreadPoolExecutor(min(workers, len(prefixes))) as pool:
            present = set().union(*pool.map(listing, prefixes))
        return wanted & present
