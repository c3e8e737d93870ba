"""Settings: luigi.cfg with environment variables on top, each one validated against one schema.

The files are the ones luigi reads, in luigi's order (``/etc/luigi/client.cfg``, ``/etc/luigi/luigi.cfg``,
``client.cfg``, ``luigi.cfg``, then ``$LUIGI_CONFIG_PATH``), with luigi's ``${ENV_VAR}`` interpolation, so
``dsdt``, ``luigi --module disdat_luigi`` and luigid agree. They are parsed here with configparser rather
than through ``luigi.configuration`` because importing luigi costs ~0.15 s, which every ``dsdt ls``,
``push`` and ``pull`` would pay for nothing.

Environment variables override the file: ``DISDAT_<KEY>`` for the ``[disdat]`` section (``DISDAT_HOME``,
``DISDAT_PIPE_ROOT``, ...) and ``DISDAT_<SECTION>_<KEY>`` for the others (``DISDAT_RUN_BACKEND``,
``DISDAT_DOCKERIZE_BASE_IMAGE``, ...). Values are read when asked for, so a test or a CLI flag that sets the
environment takes effect at once.

Every key this package reads is declared once in :data:`SCHEMA` with its parser, default and accepted
values. :func:`validate` checks them all at start-up (``dsdt``, ``RunPipe``, the container entrypoint), so a
bad value is one line naming the key, where it came from and what is accepted, before anything happens;
:func:`get` returns the typed value. Booleans accept only true/false/yes/no/1/0.
"""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import DisdatError

LUIGI_CONFIG_PATHS = ("/etc/luigi/client.cfg", "/etc/luigi/luigi.cfg", "client.cfg", "luigi.cfg")


class SettingsError(DisdatError):
    """One or more settings have values this package cannot use (one line each)."""


class _EnvInterpolation(configparser.BasicInterpolation):
    """``%(option)s`` as configparser does, plus ``${ENV_VAR}`` as luigi does."""

    def before_get(self, parser, section, option, value, defaults):
        value = re.sub(r"\$\{([^}]+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), value)
        return super().before_get(parser, section, option, value, defaults)


_parsed_files: Dict[tuple, configparser.ConfigParser] = {}


def get_config() -> configparser.ConfigParser:
    """luigi.cfg as luigi would read it now: parsed again whenever one of its files appears, changes or goes
    (keyed by path and mtime), so settings follow the files without re-parsing them for every key."""
    extra = os.environ.get("LUIGI_CONFIG_PATH")
    paths = [*LUIGI_CONFIG_PATHS, *([extra] if extra else [])]
    key = tuple((p, os.path.abspath(p), _mtime(p)) for p in paths)
    parser = _parsed_files.get(key)
    if parser is None:
        parser = configparser.ConfigParser(interpolation=_EnvInterpolation())
        try:
            parser.read(paths)
        except configparser.Error as exc:
            raise SettingsError(f"luigi.cfg cannot be read: {str(exc).splitlines()[0]}") from None
        _parsed_files.clear()
        _parsed_files[key] = parser
    return parser


def _mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def env_name(section: str, key: str) -> str:
    prefix = "DISDAT_" if section == "disdat" else f"DISDAT_{section.upper()}_"
    return prefix + key.upper()


def raw_setting(section: str, key: str) -> Tuple[Optional[str], str]:
    """(raw value, where it came from): the environment first, then luigi.cfg; (None, '') when unset."""
    name = env_name(section, key)
    value = os.environ.get(name)
    if value is not None:
        return value, name
    try:
        return get_config().get(section, key, fallback=None), f"[{section}] {key} in luigi.cfg"
    except configparser.Error as exc:
        raise SettingsError(f"[{section}] {key} in luigi.cfg cannot be read: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------------
# parsers: each returns the typed value or raises ValueError with what is accepted
# ---------------------------------------------------------------------------------------------------

def _int(lo: int, hi: Optional[int] = None) -> Callable[[str], int]:
    accepted = f"an integer from {lo} to {hi}" if hi is not None else f"an integer of at least {lo}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(accepted) from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(accepted)
        return value

    return parse


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("true, false, yes, no, 1 or 0")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in options:
            raise ValueError(" or ".join(options))
        return text.strip()

    return parse


_NETWORK = re.compile(r"^(default|bridge|host|none|container:[A-Za-z0-9][A-Za-z0-9_.-]*"
                      r"|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


def _network_mode(text: str) -> str:
    if not _NETWORK.fullmatch(text.strip()):
        raise ValueError("default, bridge, host, none, container:NAME or the name of a Docker network")
    return text.strip()


_ARN_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}")


def _role_arn(text: str) -> str:
    if not _ARN_ROLE.fullmatch(text.strip()):
        raise ValueError("an IAM role ARN, arn:aws:iam::123456789012:role/NAME")
    return text.strip()


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}=[^,=\x00-\x1f]{0,256}$")


def _labels(text: str) -> Dict[str, str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(_LABEL.fullmatch(item) for item in items):
        raise ValueError("comma-separated key=value pairs, e.g. team=data,project=churn")
    return dict(item.split("=", 1) for item in items)


def _text(text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("text without control characters")
    return text.strip()


@dataclass(frozen=True)
class Setting:
    parse: Callable[[str], Any]
    default: Any
    doc: str


SCHEMA: Dict[Tuple[str, str], Setting] = {
    ("disdat", "home"): Setting(_text, "~/.disdat", "the local store"),
    ("disdat", "pipe_root"): Setting(_text, ".", "where pipe classes are imported from"),
    ("disdat", "pack_threshold"): Setting(_int(0), 1024 * 1024, "files below this many bytes travel packed"),
    ("disdat", "transfer_workers"): Setting(_int(1, 256), 10, "parallel requests per transfer"),
    ("disdat", "s3_max_attempts"): Setting(_int(1, 20), 5, "attempts of each S3 request"),
    ("run", "backend"): Setting(_choice("Local", "AWSBatch"), "Local", "where containers run"),
    ("run", "network_mode"): Setting(_network_mode, "default", "the container's Docker network mode"),
    ("run", "timeout"): Setting(_int(1), None, "seconds an attempt of a pipe may run (@timeout)"),
    ("run", "local_scheduler"): Setting(parse_bool, True, "false: dsdt run uses luigid"),
    ("run", "workers"): Setting(_int(1, 64), 1, "Luigi workers: nodes run at the same time"),
    ("run", "wait"): Setting(parse_bool, False, "AWSBatch: wait for the jobs and pull the output"),
    ("run", "aws_batch_queue"): Setting(_text, None, "the AWS Batch job queue"),
    ("run", "vcpus"): Setting(_int(1, 256), 1, "vCPUs of a pipe's container (@resources)"),
    ("run", "memory"): Setting(_int(6, 4_000_000), 2048, "MiB of memory of a pipe's container (@resources)"),
    ("run", "gpus"): Setting(_int(0, 16), 0, "GPUs of a pipe's container (@resources)"),
    ("run", "job_role_arn"): Setting(_role_arn, None, "the IAM role of Batch jobs"),
    ("run", "retries"): Setting(_int(0, 9), 0, "attempts of a failed pipe after the first (@retry)"),
    ("run", "batch_calls_per_second"): Setting(_int(1, 50), 40, "AWS Batch API calls a second at most (the "
                                                                "account has 50)"),
    ("run", "follow_logs"): Setting(_int(0, 1000), 4, "a --wait Batch run of at most this many nodes streams "
                                                      "their CloudWatch logs"),
    ("run", "labels"): Setting(_labels, {}, "extra labels (tags on Batch) of every container"),
    ("dockerize", "base_image"): Setting(_text, "python:3.11-slim", "base of the pipe images"),
    ("dockerize", "registry"): Setting(_text, None, "registry the images are pushed to"),
    ("dockerize", "repository_prefix"): Setting(_text, None, "prefix of the image repositories"),
    ("dockerize", "ecr"): Setting(parse_bool, None, "the registry is Amazon ECR (default: known by its host name)"),
}


PIPE_KEYS = ("vcpus", "memory", "gpus", "retries", "timeout")   # of a [run module.PipeClass] section
_PIPE_SECTION = re.compile(r"run\s+(\S+)")


def check_pipe_setting(key: str, text: str) -> Any:
    """A pipe's own setting (a decorator's or a ``[run module.PipeClass]`` value), parsed as ``[run] key`` is;
    ValueError with what is accepted."""
    if key not in PIPE_KEYS:
        raise ValueError(f"one of {', '.join(PIPE_KEYS)}")
    return SCHEMA[("run", key)].parse(text)


def pipe_settings(pipe_cls: str) -> Dict[str, Any]:
    """The values luigi.cfg's ``[run module.PipeClass]`` section gives the pipe class ``pipe_cls``."""
    return _section_settings(f"run {pipe_cls}")


def _section_settings(name: str) -> Dict[str, Any]:
    parser = get_config()
    if not parser.has_section(name):
        return {}
    out = {}
    for key in parser.options(name):
        if key in parser.defaults():   # configparser shows [DEFAULT]'s keys in every section: not this one's
            continue
        raw = parser.get(name, key)
        try:
            out[key] = check_pipe_setting(key, raw)
        except ValueError as exc:
            raise SettingsError(f"[{name}] {key} in luigi.cfg = {raw!r} is not valid: use {exc}") from None
    return out


def _pipe_section_problems() -> List[str]:
    problems = []
    for name in get_config().sections():
        if not name.startswith(("run ", "run\t")):
            continue
        if not _PIPE_SECTION.fullmatch(name) or name != f"run {name.split()[1]}":
            problems.append(f"[{name}] in luigi.cfg is not a section of one pipe class: write [run module.PipeClass]")
            continue
        try:
            _section_settings(name)
        except SettingsError as exc:
            problems.append(str(exc))
    return problems


def _parsed(section: str, key: str) -> Any:
    spec = SCHEMA[(section, key)]
    raw, source = raw_setting(section, key)
    if raw is None or raw.strip() == "":
        return spec.default
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{source} = {raw!r} is not valid: use {exc}") from None


def get(section: str, key: str) -> Any:
    """The typed value of a declared setting (its default when unset)."""
    return _parsed(section, key)


def validate() -> None:
    """Check every declared setting at once; SettingsError with one line per bad value."""
    problems: List[str] = []
    for section, key in SCHEMA:
        try:
            _parsed(section, key)
        except SettingsError as exc:
            problems.append(str(exc))
    problems += _pipe_section_problems()
    if problems:
        raise SettingsError("\n".join(problems))


def section(name: str) -> dict:
    """Every key of a luigi.cfg section (no environment overrides): used for luigi's own ``[s3]``."""
    config = get_config()
    return dict(config.items(name)) if config.has_section(name) else {}


def disdat_home() -> Path:
    return Path(get("disdat", "home")).expanduser()


def pipe_root() -> Path:
    return Path(get("disdat", "pipe_root")).expanduser().resolve()
