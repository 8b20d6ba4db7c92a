"""Many bench runs read back and compared: ``edgemed report`` (run_report), run-to-run deltas, ``bench --baseline``'s
regressions and comparability."""
