"""Models (thesis 6.2): AMB and the baselines."""
