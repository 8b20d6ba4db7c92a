"""Child processes: running and isolating work, the fork server, OOM detection, probes and machine load."""
