"""``edgemed tune``: its config, search space, stage 1 (export + KLD), decision rules, worker and report."""
