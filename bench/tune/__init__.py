"""``edgemed tune``: its config, search space, stage 1 (export + KLD), stage 2 (the full bench), decision rules,
tune.json's state, worker and report."""
