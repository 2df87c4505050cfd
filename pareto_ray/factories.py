"""A user's own code, named in a config as ``package.module:name`` (``model.factory``, ``data.factory``).

The module is imported from the installed packages or, as uvicorn and gunicorn
do for an app path, from the current working directory; Ray puts the driver's
working directory on its local workers' path too, and ``ray job submit
--working-dir .`` ships it to a cluster's.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any


def import_object(path: str, what: str) -> Any:
    """``package.module:name`` → the object (ValueError naming ``what`` and the path otherwise)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must be 'package.module:function', got {path!r}")
    try:
        top = module_name.split(".")[0]
        if top not in sys.modules and os.getcwd() not in sys.path and importlib.util.find_spec(top) is None:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} {path!r}: cannot import {module_name!r} ({exc}); it must be importable on every "
                         f"Ray worker (installed, or in the job's working_dir / py_modules)") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what} {path!r}: {module_name} has no {attr!r}") from None
