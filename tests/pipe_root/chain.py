"""Test pipes whose values cross bundle boundaries: an int stays an int, files stay files."""
import luigi

from disdat_luigi import PipeTask


class Seed(PipeTask):
    n = luigi.IntParameter(default=20)

    def pipe_run(self):
        return self.n


class Notes(PipeTask):
    def pipe_requires(self):
        self.set_bundle_name("notes")

    def pipe_run(self):
        target = self.create_output_file("notes/first.txt")
        with target.open("w") as f:
            f.write("written through a LocalTarget\n")
        second = self.create_output_file("notes/second.txt")
        with second.temporary_path() as tmp:  # luigi's atomic write: the file appears only when complete
            with open(tmp, "w") as f:
                f.write("written through temporary_path\n")
        return [target, target.path, second]


class Total(PipeTask):
    """Two upstream pipes, one added with positional params."""

    extra = luigi.IntParameter(default=1)

    def pipe_requires(self):
        self.add_dependency("seed", Seed, {"n": 20})
        self.add_dependency("notes", Notes)

    def pipe_run(self, seed, notes, extra):
        assert isinstance(seed, int), type(seed)
        with open(notes[0]) as f:
            text = f.read()
        return {"total": seed + extra, "seed_type": type(seed).__name__, "note": text.strip(),
                "same_file_twice": notes[0] == notes[1]}
