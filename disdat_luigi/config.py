"""Settings: luigi.cfg with environment variables on top.

The files are the ones luigi reads, in luigi's order (``/etc/luigi/client.cfg``, ``/etc/luigi/luigi.cfg``,
``client.cfg``, ``luigi.cfg``, then ``$LUIGI_CONFIG_PATH``), with luigi's ``${ENV_VAR}`` interpolation, so
``dsdt``, ``luigi --module disdat_luigi`` and luigid agree. They are parsed here with configparser rather
than through ``luigi.configuration`` because importing luigi costs ~0.15 s, which every ``dsdt ls``,
``push`` and ``pull`` would pay for nothing.

Environment variables override the file: ``DISDAT_<KEY>`` for the ``[disdat]`` section (``DISDAT_HOME``,
``DISDAT_PIPE_ROOT``, ...) and ``DISDAT_<SECTION>_<KEY>`` for the others (``DISDAT_RUN_BACKEND``,
``DISDAT_DOCKERIZE_BASE_IMAGE``, ...). Values are read when asked for, so a test or a CLI flag that sets the
environment takes effect at once.
"""
from __future__ import annotations

import configparser
import os
import re
from pathlib import Path
from typing import Optional

LUIGI_CONFIG_PATHS = ("/etc/luigi/client.cfg", "/etc/luigi/luigi.cfg", "client.cfg", "luigi.cfg")


class _EnvInterpolation(configparser.BasicInterpolation):
    """``%(option)s`` as configparser does, plus ``${ENV_VAR}`` as luigi does."""

    def before_get(self, parser, section, option, value, defaults):
        value = re.sub(r"\$\{([^}]+)\}", lambda m: os.environ.get(m.group(1), m.group(0)), value)
        return super().before_get(parser, section, option, value, defaults)


def get_config() -> configparser.ConfigParser:
    """luigi.cfg as luigi would read it now (re-read on every call: it is small and may change)."""
    parser = configparser.ConfigParser(interpolation=_EnvInterpolation())
    extra = os.environ.get("LUIGI_CONFIG_PATH")
    parser.read([*LUIGI_CONFIG_PATHS, *([extra] if extra else [])])
    return parser


def env_name(section: str, key: str) -> str:
    prefix = "DISDAT_" if section == "disdat" else f"DISDAT_{section.upper()}_"
    return prefix + key.upper()


def setting(section: str, key: str, default: Optional[str] = None) -> Optional[str]:
    """The value of ``[section] key``: environment first, then luigi.cfg, then ``default``."""
    value = os.environ.get(env_name(section, key))
    if value is not None:
        return value
    return get_config().get(section, key, fallback=default)


def int_setting(section: str, key: str, default: int) -> int:
    from .errors import DisdatError

    raw = setting(section, key)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise DisdatError(f"[{section}] {key} must be an integer, got {raw!r} (luigi.cfg or "
                          f"{env_name(section, key)})") from None


def bool_setting(section: str, key: str, default: bool) -> bool:
    raw = setting(section, key)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def section(name: str) -> dict:
    """Every key of a luigi.cfg section (no environment overrides): used for luigi's own ``[s3]``."""
    config = get_config()
    return dict(config.items(name)) if config.has_section(name) else {}


def disdat_home() -> Path:
    return Path(setting("disdat", "home") or "~/.disdat").expanduser()


def pipe_root() -> Path:
    return Path(setting("disdat", "pipe_root") or ".").expanduser().resolve()
