"""Running a command as a benchmark sample: wall time and peak memory (max RSS)."""
import os
import subprocess
import sys
import tempfile
import time


def measure(cmd, cwd=None):
    """Runs cmd; returns (wall seconds, peak RSS in MB, stdout). Exits on failure.

    Output goes to a file, not a pipe: a pipe nobody reads would block the child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text = out.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{cmd} failed:\n{text}\n{err.read().decode()}")
        return wall, usage.ru_maxrss / 1024.0, text
