"""The fork server that export verification forks transformers workers from: real processes, real signals."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edgemed.process.forkserver import ForkServer

HELPER = textwrap.dedent("""
    import os, sys, time
    with open(os.environ["MARKS"], "a") as fh:
        fh.write(f"imported {os.getpid()}\\n")

    def job(path, code):
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()} {os.getppid()} {os.getsid(0)}")
        print("job says hello", flush=True)
        return int(code)

    def crash():
        os.kill(os.getpid(), 11)

    def sleep():
        time.sleep(60)

    def fail():
        raise ValueError("a bug in the job")
""")


@pytest.fixture
def server(tmp_path):
    (tmp_path / "fs_helper.py").write_text(HELPER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MARKS": str(tmp_path / "marks")}
    with ForkServer(["fs_helper"], tmp_path / "server.log", env=env) as fs:
        yield fs


def test_jobs_run_in_fresh_children_of_one_server_that_imported_once(server, tmp_path):
    outs = []
    for n, code in enumerate((0, 7)):
        out = server.run("fs_helper:job", [str(tmp_path / f"pid{n}"), str(code)], tmp_path / f"job{n}.log")
        assert out is not None and out.exit_code == code and out.signal is None and not out.timed_out
        assert "job says hello" in (tmp_path / f"job{n}.log").read_text()
        outs.append((tmp_path / f"pid{n}").read_text().split())
    marks = (tmp_path / "marks").read_text().split()
    assert marks[0] == "imported" and len(marks) == 2  # imported once, in the server, before any job
    server_pid = int(marks[1])
    (pid0, ppid0, sid0), (pid1, ppid1, _) = outs
    assert int(ppid0) == int(ppid1) == server_pid and pid0 != pid1 != str(server_pid)
    assert sid0 == pid0  # its own session: a timeout kills its whole group


def test_a_crash_ends_one_job_and_the_server_takes_the_next(server, tmp_path):
    out = server.run("fs_helper:crash", [], tmp_path / "crash.log")
    assert out is not None and out.signal == signal.SIGSEGV and out.exit_code is None and not out.ok
    assert "SIGSEGV" in out.describe()
    again = server.run("fs_helper:job", [str(tmp_path / "pid"), "0"], tmp_path / "after.log")
    assert again is not None and again.ok


def test_a_job_past_its_timeout_is_killed_and_a_bug_exits_3_with_its_traceback(server, tmp_path):
    start = time.monotonic()
    out = server.run("fs_helper:sleep", [], tmp_path / "sleep.log", timeout_s=1.0)
    assert out is not None and out.timed_out and time.monotonic() - start < 15
    bug = server.run("fs_helper:fail", [], tmp_path / "fail.log")
    assert bug is not None and bug.exit_code == 3
    assert "ValueError: a bug in the job" in (tmp_path / "fail.log").read_text()


def test_a_server_that_cannot_start_declines_so_the_caller_runs_the_job_elsewhere(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('cannot import me')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with ForkServer(["broken"], tmp_path / "server.log", env=env) as fs:
        assert fs.run("os:getpid", [], tmp_path / "job.log") is None
    assert "cannot import me" in (tmp_path / "server.log").read_text()


def test_a_killed_server_declines_the_next_job(server, tmp_path):
    assert server.run("fs_helper:job", [str(tmp_path / "pid"), "0"], tmp_path / "a.log").ok
    server._proc.kill()
    server._proc.wait()
    assert server.run("fs_helper:job", [str(tmp_path / "pid"), "0"], tmp_path / "b.log") is None


def test_an_export_run_forks_only_transformers_artifacts_workers_and_ends_the_server_after_the_last(tmp_path,
                                                                                                  monkeypatch):
    """run_export hands its fork server to the verification of transformers formats (hf, bnb-*) and to no other
    runtime's (llama.cpp must not start with torch imported), and the server is gone before the formats after
    the last transformers one are exported."""
    from edgemed.export import run as export_run
    from edgemed.export import verify
    from edgemed.registry import get_format

    seen = []

    def record(artifact, ref, tolerance, threads=None, server=None):
        alive = server is not None and server._proc is not None and server._proc.poll() is None
        seen.append((Path(artifact).name.split(".")[0], server is not None, alive))
        return {"passed": True}

    monkeypatch.setattr(verify, "verify", record)
    run = export_run._Run.__new__(export_run._Run)
    run.threads, run.workers, run._reference = 2, None, object()
    run._lock = threading.Lock()
    specs = [get_format(n) for n in ("hf", "bnb-int8", "gguf-f16")]
    forked = [s for s in specs if s.runtime == "transformers"]
    with export_run._workers(True, forked) as server:
        run.workers = server
        for spec in specs:
            run._verify(tmp_path / f"{spec.name}.tmp", spec)
    assert [(n, via) for n, via, _ in seen] == [("hf", True), ("bnb-int8", True), ("gguf-f16", False)]
    assert all(alive for _, via, alive in seen if via)
    assert server._proc is None  # closed with the context
