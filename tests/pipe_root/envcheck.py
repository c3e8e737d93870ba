"""A test pipe that reports what the container was given (credentials, mounts, user)."""
import hashlib
import os

from disdat_luigi import PipeTask


class Environment(PipeTask):
    def pipe_run(self):
        with open("/proc/self/mounts") as f:
            mounts = sorted({line.split()[1] for line in f})
        return {
            "access_key_id": os.environ.get("AWS_ACCESS_KEY_ID"),
            # a hash, so that the secret itself never lands in a bundle (the tests look for it there)
            "secret_sha256": hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode()).hexdigest(),
            "has_session_token": bool(os.environ.get("AWS_SESSION_TOKEN")),
            "endpoint_s3": os.environ.get("AWS_ENDPOINT_URL_S3"),
            "mounts": " ".join(mounts),  # one string: a str that names an existing file would become a file
            "uid": os.getuid(),
            "interfaces": sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]),
        }
