"""CI gates on a bench run: budgets from a TOML file and the A/B gate on one runner."""
