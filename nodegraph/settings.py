"""Settings read from environment variables, checked before a command does anything.

A setting is read where it is used, each time (a test or a deployment can change it without
re-importing), and some are used deep inside a run: the checkpoint parameter limit is read when a
model loads. A mistyped value would then surface as a node failure long after the start. So each
variable has a reader that raises `SettingError` naming it, and plugins register their readers as
"setting" components (name: the variable, value: a function of no arguments). `check_settings`
calls every one; the CLI and the editor call it at start and report a SettingError in one line.
The loader reads the engine's own ($NODEGRAPH_PLUGIN_IMPORT_TIMEOUT) before any plugin loads.
"""

from __future__ import annotations

import math
import os
from typing import Any

SETTING_COMPONENT = "setting"
"""Component kind of an environment variable's reader (see `check_settings`)."""


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot use; the message names the variable."""


def positive_env_number(name: str, default: float, unit: str, minimum: float | None = None) -> float:
    """$`name` as a finite number above 0 (and at least `minimum`), `default` when unset or blank.

    Accepts what float() does: "2.5", "2e9", "2_000_000". Raises SettingError otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and (minimum is None or value >= minimum)):
        raise SettingError(f"${name} must be a positive number of {unit}, got {raw!r}")
    return value


def check_settings(registry: Any) -> None:
    """Read every setting the registry's plugins registered; the first bad one raises SettingError."""
    for name in registry.component_names(SETTING_COMPONENT):
        registry.component(SETTING_COMPONENT, name)()
