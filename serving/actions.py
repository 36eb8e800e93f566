"""Choosing the retention action worth taking, from a playbook of actions, costs and success rates.

Loyal is not the same as profitable: an action is recommended only when its expected net value,
churn probability x CLV x margin x success rate - cost, beats the playbook's minimum. Otherwise the
answer is "no action", with the figures that say why.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError

NO_ACTION = "no_action"


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    description: str = ""
    addresses: tuple[str, ...] = Field(min_length=1)
    cost: float = Field(ge=0)
    success_rate: float = Field(gt=0, le=1)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    margin: float = Field(default=1.0, gt=0, le=1)
    min_net_value: float = 0.0
    actions: tuple[Action, ...] = Field(min_length=1)


@lru_cache(maxsize=8)
def load_playbook(path: Path | None = None) -> Playbook:
    """The shipped default playbook, or the YAML file at ``path``."""
    try:
        if path is None:
            text = (Path(__file__).parent / "playbook.yaml").read_text(encoding="utf-8")
            where = "the default playbook"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        return Playbook.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the playbook ({exc})") from exc
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{where}: " + "; ".join(lines)) from None


def choose_actions(
    playbook: Playbook, probability: np.ndarray, clv: np.ndarray, risk_groups: list[set[str]]
) -> list[dict[str, object]]:
    """One decision per customer: the best action for the reasons that raise their risk, or no action."""
    decisions = []
    at_stake = probability * clv * playbook.margin
    for i, groups in enumerate(risk_groups):
        candidates = [a for a in playbook.actions if groups.intersection(a.addresses)]
        if not candidates:
            candidates = [a for a in playbook.actions if "engagement" in a.addresses]
        values = [(at_stake[i] * a.success_rate - a.cost, a) for a in candidates]
        net, best = max(values, key=lambda pair: pair[0])
        figures = (
            f"{probability[i]:.0%} churn risk x {clv[i]:,.2f} value"
            + (f" x {playbook.margin:.0%} margin" if playbook.margin < 1 else "")
            + f" x {best.success_rate:.0%} success - {best.cost:,.2f} cost = {net:,.2f}"
        )
        if net > playbook.min_net_value:
            decisions.append(
                {
                    "name": best.name,
                    "label": best.label,
                    "description": best.description,
                    "expected_net_value": round(float(net), 2),
                    "cost": best.cost,
                    "success_rate": best.success_rate,
                    "why": f"Worth it: {figures}.",
                }
            )
        else:
            decisions.append(
                {
                    "name": NO_ACTION,
                    "label": "No action",
                    "description": "",
                    "expected_net_value": 0.0,
                    "cost": 0.0,
                    "success_rate": 0.0,
                    "why": f"Not worth an offer: the best option, {best.label.lower()}, "
                    f"would return {figures}.",
                }
            )
    return decisions
