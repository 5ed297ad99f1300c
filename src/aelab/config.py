"""Where the configs live, and the OmegaConf resolvers they use."""

from pathlib import Path

from omegaconf import OmegaConf

# The package is used from a checkout (pip install -e .): conf/ sits beside src/.
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "conf"


def register_resolvers() -> None:
    """`${aelab_root:}` resolves to the checkout, so outputs/ and data/ do not depend on the cwd."""
    if not OmegaConf.has_resolver("aelab_root"):
        OmegaConf.register_new_resolver("aelab_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("aelab_first"):  # the first non-null argument (resume=DIR or a new run dir)
        OmegaConf.register_new_resolver("aelab_first", lambda *args: next((a for a in args if a is not None), None))


register_resolvers()
