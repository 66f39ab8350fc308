"""Kedro project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

from pgu.hooks import DistributedHooks  # noqa: E402

# Joins torch.distributed under torchrun (WORLD_SIZE > 1); only rank 0 writes outputs.
HOOKS = (DistributedHooks(),)
