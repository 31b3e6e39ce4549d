"""What the text scripts share: a mean with its 95% t-interval over seeds, as the audit computes it."""

from __future__ import annotations

from attacks.audit_seed import interval


def fmt_interval(values: list[float], digits: int) -> str:
    """``mean [low, high]`` of ``values`` with ``digits`` decimals (attacks.audit_seed.interval)."""
    i = interval(values)
    assert i is not None and i["low"] is not None, "an interval needs two finite values or more"
    return f"{i['mean']:.{digits}f} [{i['low']:.{digits}f}, {i['high']:.{digits}f}]"
