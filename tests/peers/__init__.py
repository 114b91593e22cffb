"""Real peers started by the tests: servers from other projects, run locally."""
