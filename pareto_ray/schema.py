"""What every config schema shares: strict sections and one way to report validation errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """A config section: unknown keys are errors that name the field."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A config that does not validate; the message names the fields."""


def describe_errors(exc: ValidationError) -> str:
    """One indented line per error: the dotted field, the message and the value given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        got = f" (got {err.get('input')!r})" if err["loc"] else ""  # a whole-config check: no need to echo it
        lines.append(f"  {loc}: {err['msg']}{got}")
    return "\n".join(lines)
