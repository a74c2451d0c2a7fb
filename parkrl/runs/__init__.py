"""Run management: checkpoints and exact resume, stop requests (Ctrl-C, SIGTERM), metrics and trackers."""
