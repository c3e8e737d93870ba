"""A test pipe that returns what no bundle can hold."""
from disdat_luigi import PipeTask


class ReturnsASocket(PipeTask):
    def pipe_run(self):
        import socket

        return {"conn": socket.socket()}
