"""Kedro project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import os

from kedro.config import OmegaConfigLoader

# Kedro's rich log handler lays lines out 80 columns wide when no terminal is attached (CI,
# cron, nohup), so one error message wraps over a dozen short lines. There, unless COLUMNS says
# otherwise, lay them out wider: rich reads COLUMNS whenever it draws a line.
if "COLUMNS" not in os.environ and not any(os.isatty(fd) for fd in (0, 1, 2)):
    os.environ["COLUMNS"] = "160"

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters merge into base's key by key: `data: {source: csv}` in
    # conf/local changes the source and keeps base's root, split and the rest of the block
    # (Kedro's default replaces the whole block, and the run then fails on a missing key).
    # Catalog entries are still replaced whole.
    "merge_strategy": {"parameters": "soft"},
}

from pgu.hooks import DistributedHooks  # noqa: E402

# Joins torch.distributed under torchrun (WORLD_SIZE > 1); only rank 0 writes outputs.
HOOKS = (DistributedHooks(),)
