"""pgu file for ensuring the package is executable as `pgu` and `python -m pgu`."""

import sys
from pathlib import Path
from typing import Any

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project


def main(*args: Any, **kwargs: Any) -> Any:
    package_name = Path(__file__).parent.name
    configure_project(package_name)

    interactive = hasattr(sys, "ps1")
    kwargs["standalone_mode"] = not interactive

    if sys.argv[1:2] == ["run"]:  # `python -m pgu run ...` reads like `kedro run ...`
        del sys.argv[1]

    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
