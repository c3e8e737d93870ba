"""``dsdt dockerize``: the image that runs the pipe classes of a pipe_root, and finding it again at run time.

Names: pipe class ``module.submodule.PipeClass`` runs in image ``disdat-module-submodule:latest``,
prefixed by ``[dockerize] registry`` / ``repository_prefix`` when set. One build serves every module of the
pipe_root; each module's name is a tag of it.

The image holds disdat-luigi, the pipe_root and the pipe_root's ``requirements.txt``, installed from wheels
built on the host (the build itself runs with no network). It is labelled with a hash of everything that
went in; a dockerize with nothing changed only re-tags, and a run refuses an image built from other code.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from .. import config
from . import registry
from .docker_engine import docker_client
from ..errors import DisdatError, NotFound
from ..fsutil import user_cache
from ..pipe.loader import code_version, content_hash, files_of, pipe_modules

LABEL_IMAGE = "disdat.image_hash"
LABEL_CODE = "disdat.code_version"
LABEL_PACKAGE = "disdat.package_version"
PACKAGE_DIR = Path(__file__).resolve().parent.parent

DOCKERFILE = """\
FROM {base}
ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheels/deps /tmp/wheels/deps
RUN python3 -m venv /opt/disdat && /opt/disdat/bin/pip install -q --no-index --find-links /tmp/wheels/deps {deps}
COPY wheels/reqs /tmp/wheels/reqs
COPY requirements.txt /tmp/requirements.txt
RUN /opt/disdat/bin/pip install -q --no-index --find-links /tmp/wheels/reqs --find-links /tmp/wheels/deps \\
    -r /tmp/requirements.txt
COPY wheels/app /tmp/wheels/app
RUN /opt/disdat/bin/pip install -q --no-index --no-deps /tmp/wheels/app/*.whl && rm -rf /tmp/wheels
ENV PATH=/opt/disdat/bin:$PATH DISDAT_PIPE_ROOT=/pipe_root PYTHONPATH=/pipe_root HOME=/tmp DISDAT_HOME=/tmp/disdat \
    DISDAT_BOTOCORE_DATA=/opt/disdat/botocore-data
RUN python -m disdat_luigi.remotes.botocore_data
COPY pipe_root /pipe_root
ENTRYPOINT ["dsdt-entrypoint"]
LABEL {labels}
"""


def base_image(override: Optional[str] = None) -> str:
    return override or config.get("dockerize", "base_image")


def image_repository(module: str) -> str:
    """``a.b`` -> ``[registry/][prefix/]disdat-a-b``."""
    name = "disdat-" + module.replace(".", "-").lower()
    registry, prefix = config.get("dockerize", "registry"), config.get("dockerize", "repository_prefix")
    parts = [p.strip("/") for p in (registry, prefix.lower() if prefix else None) if p and p.strip("/")]
    return "/".join(parts + [name])


def image_name(module: str) -> str:
    return image_repository(module) + ":latest"


def package_version() -> str:
    """A hash of the disdat_luigi package itself: an image built with other disdat-luigi code is stale."""
    files = sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    return content_hash(files, PACKAGE_DIR)


def dockerize_command(pipe_root: Path, module: str) -> str:
    return f"dsdt dockerize {shlex.quote(str(pipe_root))} {module}"


@dataclass(frozen=True)
class ResolvedImage:
    name: str
    id: str
    code_version: str
    digests: Tuple[str, ...] = ()       # repository@sha256:... of where it was pushed to or pulled from


def resolve_image(module: str, pipe_root: Path) -> ResolvedImage:
    """The local image for ``module``, checked to hold the pipe_root and disdat-luigi as they are now."""
    import docker

    name = image_name(module)
    client = docker_client()
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        if registry.registry() is None:
            raise NotFound(f"image {name} does not exist: run `{dockerize_command(pipe_root, module)}`") from None
        image = registry.pull(client, name)  # a team member dockerized and pushed it
    labels = image.labels or {}
    current = code_version(pipe_root)
    if labels.get(LABEL_CODE) != current:
        raise DisdatError(f"image {name} was built from a different pipe_root than {pipe_root} has now: run "
                          f"`{dockerize_command(pipe_root, module)}`")
    if labels.get(LABEL_PACKAGE) != package_version():
        raise DisdatError(f"image {name} holds another version of disdat-luigi than this one: run "
                          f"`{dockerize_command(pipe_root, module)}`")
    return ResolvedImage(name, image.id, current, tuple(image.attrs.get("RepoDigests") or ()))


# ---------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------

def _runtime_requirements() -> List[str]:
    reqs = importlib.metadata.requires("disdat-luigi") or []
    return [r for r in reqs if "extra ==" not in r]


def _source_tree() -> Optional[Path]:
    root = PACKAGE_DIR.parent
    return root if (root / "setup.cfg").exists() or (root / "pyproject.toml").exists() else None


def wheel_cache() -> Path:
    return user_cache() / "wheels"


def _pip_wheel(dest: Path, args: List[str]) -> None:
    """``pip wheel`` into dest: offline from the cache first, from the index only when that is not enough."""
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(dest),
            "--find-links", str(cache)]
    offline = subprocess.run(base + ["--no-index"] + args, capture_output=True, text=True)
    if offline.returncode != 0:
        online = subprocess.run(base + args, capture_output=True, text=True)
        if online.returncode != 0:
            tail = "\n".join((online.stderr or online.stdout).strip().splitlines()[-5:])
            raise DisdatError(f"building wheels for the image failed (pip wheel {' '.join(args)}):\n{tail}")
    for whl in dest.glob("*.whl"):
        if not (cache / whl.name).exists():
            shutil.copy2(whl, cache / whl.name)


def _build_context(ctx: Path, pipe_root: Path, base: str, labels: dict) -> None:
    wheels = ctx / "wheels"
    for d in ("deps", "reqs", "app"):
        (wheels / d).mkdir(parents=True)
    deps = _runtime_requirements()
    _pip_wheel(wheels / "deps", deps)
    requirements = pipe_root / "requirements.txt"
    (ctx / "requirements.txt").write_text(requirements.read_text() if requirements.exists() else "")
    if requirements.exists() and requirements.read_text().strip():
        _pip_wheel(wheels / "reqs", ["--find-links", str(wheels / "deps"), "-r", str(requirements)])
    source = _source_tree()
    if source is not None:
        _pip_wheel(wheels / "app", ["--no-deps", str(source)])
    else:
        _pip_wheel(wheels / "app", ["--no-deps", f"disdat-luigi=={importlib.metadata.version('disdat-luigi')}"])
    for src in files_of(pipe_root):
        dst = ctx / "pipe_root" / src.relative_to(pipe_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    (ctx / "pipe_root").mkdir(exist_ok=True)
    label_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in labels.items())
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base, deps=" ".join(shlex.quote(d) for d in deps),
                                                      labels=label_text))


def _ensure_base(client, base: str) -> str:
    """The base image's id (pulled when it is not here)."""
    import docker

    try:
        return client.images.get(base).id
    except docker.errors.ImageNotFound:
        pass
    try:
        return client.images.pull(base).id
    except docker.errors.APIError:
        raise NotFound(f"base image {base} is not here and cannot be pulled: build one without a registry with "
                       f"`scripts/build-base-image.sh` and pass --base-image disdat-luigi-base:bookworm (or set "
                       f"[dockerize] base_image)") from None


def _is_this_build(image, labels: dict) -> bool:
    """Whether ``image`` is exactly what this build makes, not merely an image carrying its hash label.

    LABEL is the Dockerfile's last step, so only a finished build carries the hash: a build-cache image of an
    earlier step (left dangling when its image is removed) does not. But an image built FROM ours inherits every
    label, so one that changed a label (another disdat.package_version) or added a layer carries it too: ours
    is the one whose newest layer is our LABEL step itself, with every label as this build sets it."""
    if (image.attrs.get("Config") or {}).get("Entrypoint") != ["dsdt-entrypoint"]:
        return False
    if any((image.labels or {}).get(k) != v for k, v in labels.items()):
        return False
    newest = image.history()[0].get("CreatedBy") or ""
    return f"{LABEL_IMAGE}={labels[LABEL_IMAGE]}" in newest


def dockerize(pipe_root: Path, module: Optional[str] = None, base: Optional[str] = None,
              push: bool = False) -> Iterator[str]:
    """Build (or re-tag) the pipe_root's image; yields progress lines."""
    import docker

    if not pipe_root.is_dir():
        raise NotFound(f"pipe_root {pipe_root} is not a directory")
    modules = pipe_modules(pipe_root)
    if module is not None:
        if module not in modules:
            raise NotFound(f"no pipe classes in module {module} under {pipe_root} (modules with pipe classes: "
                           f"{', '.join(modules) or 'none'})")
        modules = [module]
    if not modules:
        raise NotFound(f"no pipe classes under {pipe_root}: a pipe class subclasses disdat_luigi.PipeTask")
    names = [image_name(m) for m in modules]
    base = base_image(base)
    client = docker_client()
    base_id = _ensure_base(client, base)
    labels = {LABEL_CODE: code_version(pipe_root), LABEL_PACKAGE: package_version(), "disdat.base_image": base}
    content = repr(sorted(labels.items())) + base_id + DOCKERFILE  # a rebuilt base image means a rebuild
    labels[LABEL_IMAGE] = hashlib.sha256(content.encode()).hexdigest()

    built = [i for i in client.images.list(filters={"label": f"{LABEL_IMAGE}={labels[LABEL_IMAGE]}"})
             if _is_this_build(i, labels)]
    if built:
        image = built[0]
        yield f"up to date: {image.short_id} (nothing changed since the last build)"
    else:
        yield f"building the image of {pipe_root} on {base}"
        with tempfile.TemporaryDirectory(prefix="disdat-dockerize-") as ctx:
            _build_context(Path(ctx), pipe_root, base, labels)
            try:
                image, _ = client.images.build(path=ctx, network_mode="none", rm=True, forcerm=True, pull=False)
            except docker.errors.BuildError as exc:
                tail = [str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log][-15:]
                raise DisdatError("the image build failed:\n" + "\n".join(t for t in tail if t)) from None
    for name in names:
        repository, _, tag = name.rpartition(":")
        image.tag(repository, tag)
        yield f"tagged {name} ({image.short_id})"
    if push:
        for name in names:
            yield from registry.push(client, name)
