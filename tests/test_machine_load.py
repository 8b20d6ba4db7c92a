"""The busy flag judges other processes' CPU against what the measurement needed: its own threads' run-queue wait
(real processes, real kernel accounting; nothing stands in)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from edgemed.process.machine_load import BUSY_WAIT, thread_schedstats

SPIN = "import time\nt = time.time()\nwhile time.time() - t < {s}: pass\n"

needs_schedstat = pytest.mark.skipif(thread_schedstats(os.getpid()) is None,
                                     reason="no /proc/PID/task/TID/schedstat on this system (not Linux)")


@needs_schedstat
def test_schedstat_reads_every_thread_of_a_process():
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    try:
        stats = thread_schedstats(os.getpid())
        assert threading.get_native_id() in stats and worker.native_id in stats
        cpu, wait = stats[threading.get_native_id()]
        assert cpu > 0 and wait >= 0
    finally:
        done.set()
        worker.join()
    assert thread_schedstats(2 ** 22 + 12345) is None  # no such process


@needs_schedstat
def test_a_measurement_that_waits_for_a_cpu_is_busy_and_says_so(tmp_path):
    """Twice as many spinning processes as CPUs beside the measured one: it cannot have a CPU all the time, so its
    own threads wait (about half their runnable time), and the result is busy with that share named."""
    from edgemed.process.isolate import measure_child

    cpus = os.cpu_count() or 1
    # each in a session of its own, as the measured child is: with the kernel's autogroup scheduling, processes of
    # one session share one CPU share, so hogs sharing a session would hold back one session's worth of CPU only
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=3.0)], start_new_session=True)
            for _ in range(2 * cpus)]
    try:
        time.sleep(0.2)
        out = measure_child([sys.executable, "-c", SPIN.format(s=1.5)], tmp_path / "m.log", threads=1)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    load = out.load
    assert out.ok and load.needed_cores == 1 and load.runnable_s > 0.5
    assert load.wait_share > BUSY_WAIT and load.busy, load
    assert "waited for a CPU" in load.reason and f"{load.wait_share:.0%}" in load.reason
    assert load.other_cores_mean > 0.5  # the hogs are seen as other processes too
