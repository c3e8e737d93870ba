"""disdat-luigi: Disdat bundles, and pipe classes run in Docker containers as Luigi task chains.

``from disdat_luigi import PipeTask`` for pipe classes (and ``resources``, ``retry``, ``timeout``, their
decorators); ``luigi --module disdat_luigi RunPipe ...`` runs one in a container.

Importing luigi costs ~0.15 s, which ``dsdt ls``, ``push`` or ``pull`` should not pay, so the Luigi parts
load on first use. Inside a Luigi process (``luigi --module disdat_luigi``, luigid workers, any program
that imported luigi first) they load at once, so that Luigi's task registry knows RunPipe and its steps.
"""
import sys

__version__ = "0.1.0"
__all__ = ["PipeTask", "resources", "retry", "timeout", "RunPipe", "PushInput", "ExecuteContainer", "PullOutput"]


def __getattr__(name: str):
    if name == "PipeTask":
        from .pipe.task import PipeTask

        return PipeTask
    if name in ("resources", "retry", "timeout"):   # the decorators of pipe classes (pipe/settings.py)
        from .pipe import settings

        return getattr(settings, name)
    if name in __all__:
        from .chain import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'disdat_luigi' has no attribute {name!r}")


def luigi_defaults() -> None:
    """Luigi's defaults where disdat-luigi needs others, unless the user's luigi.cfg sets them:

    * ``luigi --module disdat_luigi RunPipe ...`` exits non-zero when a task fails (luigi's own [retcode]
      defaults exit 0). Luigi imports the module before it reads [retcode], so defaults set here count.
    * A worker with nothing to run looks for work again within a fifth of a second, not after
      ``wait_interval`` 1 s plus up to ``wait_jitter`` 5 s: a node of a graph starts when its upstream ends.
    """
    import luigi.configuration

    cfg = luigi.configuration.get_config()
    defaults = {"retcode": {"already_running": 10, "missing_data": 20, "not_run": 25, "task_failed": 30,
                            "scheduling_error": 35, "unhandled_exception": 40},
                "worker": {"wait_interval": 0.2, "wait_jitter": 0.1}}
    for section, values in defaults.items():
        for key, value in values.items():
            if not cfg.has_option(section, key):
                cfg.set(section, key, str(value))


if "luigi" in sys.modules:
    from .chain import tasks as _tasks  # noqa: F401  (registers RunPipe, PushInput, ExecuteContainer, PullOutput)

    luigi_defaults()
