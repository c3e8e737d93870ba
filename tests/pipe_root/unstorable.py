"""A test pipe that returns what no bundle can hold."""
from disdat_luigi import PipeTask


class ReturnsASocket(PipeTask):
    def pipe_run(self):
        import socket

        return {"conn": socket.socket()}


class AfterASocket(PipeTask):
    """Downstream of a pipe that fails: in a graph handed over whole, it never runs."""

    def pipe_requires(self):
        self.add_dependency("socket", ReturnsASocket)

    def pipe_run(self, socket):
        return "never"


class ReturnsDeepNesting(PipeTask):
    """A list nested 100,000 deep: more than Python's recursion could walk."""

    def pipe_run(self):
        value = []
        for _ in range(100_000):
            value = [value]
        return value
