"""Many bench runs read back and compared: ``edgemed report``, run-to-run deltas and comparability."""
