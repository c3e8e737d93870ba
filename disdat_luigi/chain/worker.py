"""Luigi's worker, with each task of a run in a thread of this process instead of a child process.

A node's task does no computing of its own: it starts a container and waits for it (Local), or waits for a
Batch job that was submitted with the graph. Luigi's own worker runs each task in a forked child process
when ``--workers`` is above 1, so every node costs a fork, its own Docker and S3 clients, and, on Batch, its
own poller; and at most ``--workers`` jobs show as running in luigid however many Batch runs at once. Here:

* every node's task runs in a thread (:class:`_TaskThread`), sharing one Docker client, one S3 client pool
  and one Batch job monitor (:func:`~disdat_luigi.containers.backend.get_backend`);
* ``--workers N`` bounds the tasks that occupy this machine (Local containers, transfers); a task whose
  work runs elsewhere (``runs_elsewhere``: waiting for a Batch job) takes no slot, so every submitted job's
  task runs, and shows RUNNING in luigid, while its job does;
* the tasks of the run's two ends (pushing the input, submitting a graph, pulling outputs) run in the
  worker's own thread, as Luigi runs a task with one worker, so Ctrl-C reaches them directly;
* stopping the worker (Ctrl-C, a task's timeout) calls the running tasks' ``interrupt(why)``, and waits for
  them to stop their containers or jobs and record it.

``dsdt run`` and the Python API build with this worker (:func:`factory`); ``luigi --module disdat_luigi
RunPipe`` uses Luigi's own, with which the same tasks run as before: in child processes, one job each.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from luigi import configuration, rpc, scheduler, worker

JOIN_ON_EXIT = 60.0     # seconds to wait for interrupted tasks to stop their containers and jobs
RPC_RETRY_WAIT = 2      # seconds between attempts to reach a central scheduler (Luigi's default: 30)


class _TaskThread(worker.ContextManagedTaskProcess):
    """Luigi's TaskProcess, run in a thread (made from the worker's own TaskProcess, see ThreadWorker)."""

    def _as_thread(self) -> "_TaskThread":
        self.use_multiprocessing = True   # so that the worker calls start(), not run()
        self._thread = threading.Thread(target=self._run_to_the_end, daemon=True,
                                        name=f"task {self.task.task_family}")
        return self

    def start(self) -> None:
        self._thread.start()

    def _run_to_the_end(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # run() re-raises KeyboardInterrupt: an interrupted task failed
            from luigi.scheduler import FAILED

            try:
                self.result_queue.put((self.task.task_id, FAILED, f"interrupted ({exc})", [], []))
            except (ValueError, OSError):  # the worker is gone and closed its queue
                pass

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def exitcode(self) -> Optional[int]:
        return None if self._thread.is_alive() else 0

    @property
    def pid(self) -> int:
        return os.getpid()

    def terminate(self, why: str = "it ran longer than the worker's timeout") -> None:
        interrupt = getattr(self.task, "interrupt", None)
        if interrupt is not None:
            interrupt(why)

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)


class ThreadWorker(worker.Worker):
    """See the module docstring."""

    @property
    def worker_processes(self) -> int:
        """The slots Luigi's loop counts: N for the tasks that occupy this machine, plus one for each running
        task whose work runs elsewhere (so those never wait for a slot, nor hold one)."""
        running = getattr(self, "_running_tasks", {})
        return self._slots + sum(1 for p in running.values() if getattr(p.task, "runs_elsewhere", False))

    @worker_processes.setter
    def worker_processes(self, value: int) -> None:
        self._slots = int(value)

    def add(self, task, multiprocess: bool = False, processes: int = 0) -> bool:
        """Luigi's scheduling of the graph (a completion check of every task, one after the other), answered
        from the run's survey of its nodes where there is one (chain/targets.py: one bounded pool of requests
        instead of a request per node in turn)."""
        from .targets import completion

        with completion.scheduling():
            return super().add(task, multiprocess, processes)

    def _create_task_process(self, task):
        process = super()._create_task_process(task)
        if not getattr(task, "runs_in_thread", False):
            process.use_multiprocessing = False   # in the worker's own thread (see the module docstring)
            return process
        process.__class__ = _TaskThread
        return process._as_thread()

    def __exit__(self, type, value, traceback):
        """Stop the running tasks (they stop their containers and jobs), and wait for them to record it. When the
        central scheduler stopped answering, the tasks need it for nothing: they finish their nodes first."""
        running = [p for p in self._running_tasks.values() if isinstance(p, _TaskThread)]
        scheduler_gone = type is not None and issubclass(type, rpc.RPCError)
        if not scheduler_gone:
            why = "Ctrl-C or SIGTERM" if type is not None and issubclass(type, KeyboardInterrupt) else "its run stopped"
            for process in running:
                if process.is_alive():
                    process.terminate(why)
        for process in running:
            process.join(None if scheduler_gone else JOIN_ON_EXIT)
        return super().__exit__(type, value, traceback)


class WorkerSchedulerFactory:
    """What ``luigi.build`` makes its scheduler and worker with: Luigi's own schedulers, this module's worker."""

    def create_local_scheduler(self):
        return scheduler.Scheduler(prune_on_get_work=True, record_task_history=False)

    def create_remote_scheduler(self, url: str):
        """Luigi's RemoteScheduler, giving up on a scheduler that stopped answering after a few seconds (3
        attempts 2 s apart, not 30 s) without a traceback for each attempt, unless luigi.cfg says otherwise:
        ``dsdt run`` then finishes the run without it (chain/run.py). (Set on the instance, not in Luigi's
        [core] section, where Luigi would warn that its own parameters are not [core]'s.)"""
        scheduler = rpc.RemoteScheduler(url)
        config = configuration.get_config()
        if not any(config.has_option("core", key) for key in ("rpc-retry-wait", "rpc_retry_wait")):
            scheduler._rpc_retry_wait = RPC_RETRY_WAIT
        if not any(config.has_option("core", key) for key in ("rpc-log-retries", "rpc_log_retries")):
            scheduler._rpc_log_retries = False
        return scheduler

    def create_worker(self, scheduler, worker_processes: int, assistant: bool = False) -> ThreadWorker:
        return ThreadWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant)
