"""What the bench measures: throughput (pp/tg), fidelity (KLD), timing statistics, derived figures."""
