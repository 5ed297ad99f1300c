"""aelab's Hydra configs. This file makes conf/ the package aelab.conf (pyproject.toml maps it), so Hydra finds
the configs at pkg://aelab.conf wherever aelab is installed."""
