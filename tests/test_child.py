"""edgemed.process.child: the one child-process runner of bench, export verification and GGUF conversion."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from edgemed.process.child import run_child


def test_exit_code_and_last_log_line(tmp_path):
    out = run_child([sys.executable, "-c", "import sys; print('working'); sys.exit('error: the file is bad')"],
                    tmp_path / "x.log")
    assert not out.ok and out.exit_code == 1 and out.signal is None
    assert out.why() == "error: the file is bad" and "working" in (tmp_path / "x.log").read_text()


def test_crash_is_reported_not_raised(tmp_path):
    out = run_child([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"], tmp_path / "segv.log")
    assert out.signal_name == "SIGSEGV" and out.exit_code is None
    assert out.why() == "crashed: killed by SIGSEGV"


def test_timeout_kills_the_whole_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    start = time.monotonic()
    out = run_child([sys.executable, "-c", code], tmp_path / "hang.log", timeout_s=2)
    assert out.timed_out and not out.ok and time.monotonic() - start < 20
    assert "timed out" in out.why()
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    try:
        os.kill(grandchild, 0)
        state = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        assert state == "Z", "the grandchild outlived the timeout"
    except (ProcessLookupError, FileNotFoundError):
        pass


def test_a_sigkill_without_an_oom_kill_is_a_plain_crash(tmp_path):
    out = run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                    tmp_path / "kill.log")
    assert out.signal_name == "SIGKILL" and not out.oom_killed
    assert out.why().startswith("crashed: killed by SIGKILL") and "out of memory" not in out.why()


def test_a_child_the_kernel_kills_for_memory_is_told_apart(tmp_path, memory_cgroup):
    """A real kernel OOM kill: the child joins a 200 MB cgroup and touches 1 GB (counted by /proc/vmstat)."""
    procs = memory_cgroup(200) / "cgroup.procs"
    code = (f"import os; open({str(procs)!r}, 'w').write(str(os.getpid())); "
            "held = [b'x' * (16 << 20) for _ in range(64)]")
    out = run_child([sys.executable, "-c", code], tmp_path / "oom.log", timeout_s=60)
    assert out.signal_name == "SIGKILL" and out.oom_killed is True, out.why()
    assert out.why().startswith("killed: out of memory (the kernel's OOM killer; this machine has ")
    assert out.said_of("the runtime").startswith("the runtime was killed: out of memory")


# --- call_in_child: the pipeline's steps each run in a forked child -------------------------------------------
def _allocate_and_report(mb: int) -> dict:
    import numpy as np

    block = np.ones(mb * 2**20, dtype=np.uint8)  # touched: resident in the child
    from edgemed.process.probes import self_peak_rss_bytes

    return {"pid": os.getpid(), "peak": self_peak_rss_bytes(), "sum": int(block[:1000].sum())}


def test_call_in_child_returns_the_value_and_keeps_the_memory_out_of_the_parent():
    from edgemed.process.call import call_in_child
    from edgemed.process.probes import rss_bytes

    before = rss_bytes()
    got = call_in_child(lambda: _allocate_and_report(300), "the test step")
    assert got["pid"] != os.getpid() and got["sum"] == 1000
    assert got["peak"] > 300 * 2**20  # the child held it...
    assert rss_bytes() - before < 100 * 2**20  # ...and this process never did


def test_call_in_child_raises_the_childs_error_with_its_class_and_exit_code():
    import pytest

    from edgemed.errors import CheckFailed, EdgemedError, MissingDependency
    from edgemed.process.call import call_in_child

    def fails():
        raise CheckFailed("export failed for onnx-int8")

    with pytest.raises(CheckFailed, match="export failed for onnx-int8"):
        call_in_child(fails, "the export step")

    def missing():  # its constructor takes other arguments than its message: sent back as the same message
        raise MissingDependency("optimum", "onnx-export", "ONNX export")

    with pytest.raises(EdgemedError, match="ONNX export") as info:
        call_in_child(missing, "the export step")
    assert info.value.exit_code == 2


def test_call_in_child_says_how_a_child_died_without_an_answer():
    import signal

    import pytest

    from edgemed.errors import EdgemedError
    from edgemed.process.call import call_in_child

    with pytest.raises(EdgemedError, match=r"the merge step ended without a result \(killed by SIGKILL\)"):
        call_in_child(lambda: os.kill(os.getpid(), signal.SIGKILL), "the merge step")


def test_stop_set_by_another_thread_ends_the_child_at_once(tmp_path):
    """export's overlapped chains: when the main thread is interrupted it sets child.STOP, and a run_child in the
    other thread kills its child's process group and raises ChildStopped instead of waiting for it."""
    import threading

    import pytest

    from edgemed.process import child

    pidfile = tmp_path / "child.pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    threading.Timer(1.0, child.STOP.set).start()
    start = time.monotonic()
    try:
        with pytest.raises(child.ChildStopped, match="interrupted"):
            run_child([sys.executable, "-c", code], tmp_path / "stop.log")
    finally:
        child.STOP.clear()
    assert time.monotonic() - start < 15
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass  # killed and reaped
    else:
        assert Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", "the stopped child still runs"
    assert run_child([sys.executable, "-c", "pass"], tmp_path / "after.log").ok  # cleared: the next one runs
