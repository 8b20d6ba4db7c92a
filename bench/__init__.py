"""``edgemed.bench``: measure exported artifacts (accuracy, latency, throughput, memory, size) side by side.

Each artifact runs in its own child process (:mod:`edgemed.bench.worker`) so its peak memory is its own
and a crash of one never stops the rest; :func:`edgemed.bench.run.run_bench` drives the whole run. Every fact about
a metric (direction, interval, where it is shown and compared) is its entry in :mod:`edgemed.bench.metrics`.
"""
