"""Uplift: the share of the oracle policy's gain over doing nothing that each way of choosing actions captures.

    python benchmarks/bench_uplift.py --customers 6000 [--seed 3] [--full] [--dogs usage|id_hash] [--scenario base]

A generator world runs randomised campaigns (every playbook action to a share of the customers active at a
month start, the rest held out). `churnguard train` (the real pipeline, a real MLflow store) learns from the
first ones (two unless ``--learn-campaigns`` says more, four months apart) and gates the learned policy
against the playbook on the next, the newest one whose outcomes have ended. The last starts two months
before the data ends, so training never sees its outcomes: the policies are judged on its customers, whose true effect of every action the generator's
truth holds (the oracle's change in 90-day churn probability with and without the action's hazard
multiplier, see features.synthetic.campaigns).

Each policy scores those customers at the third campaign's date through the real scoring path
(serving.scoring.Scorer: the learned effects, or the playbook's priors). A choice is worth the true
retention it adds x the value if retained (the trained model's, the same for every policy, x the playbook
margin on a revenue basis) - the action's cost; the oracle takes each customer's best action by the truth,
or nothing. Reported: each policy's gain and its share of the oracle's, for (a) the learned policy (the
pooled learner's effect models that the bundle would carry, whatever the gate said, through the scoring
path; the DR- and T-learners with the same choice rule beside it), (b) the current playbook, (c) random
contact (as many contacts as the learned policy, a random customer and a random paid action each, in
expectation); then the do-not-contact flag's precision and recall against the truth's sleeping dogs, and
what the gate decided.

A ceiling no learner can pass: whether a contract customer is a sleeping dog is drawn by a hash of the
id, against odds that behaviour reveals (``--dogs usage``, the default: light users are likelier dogs) or
that are the same for every contract customer (``--dogs id_hash``, the earlier world). The row "oracle
that knows each customer's sleeping-dog odds, not the draw" chooses by the truth's ``true_effect_blind``
(the effect expected over the draw): the most any policy built on the data could capture. Truth folders
without it fall back to the earlier, cruder ceiling (every contract customer gets the contract customers'
mean true effect).

A second ceiling, for what the features carry: the row "model fitted to the truth's effects" is a
LightGBM per action fitted to the evaluation customers' true effects themselves (cross-fitted, no outcome
noise), choosing by the same rule. A learner that sees only outcomes cannot pass it on these features.

Any scenario whose world has the contract tables runs with ``--scenario`` (never tune to one world).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import QUICK_TRAIN, churnguard_home, parse_count, table

# Learning campaigns, four months apart (a campaign's effect lasts three); the benchmark uses the newest
# ``learn_campaigns`` of them (two unless told), so more randomised history is the only thing that changes.
LEARN_DATES = (date(2024, 2, 1), date(2024, 6, 1), date(2024, 10, 1), date(2025, 2, 1), date(2025, 6, 1))
JUDGE, EVALUATE = date(2025, 10, 1), date(2026, 5, 1)
ARM_SHARE = 0.08  # per action; seven actions leave 44% as the shared control group
AIM = 0.8  # the share of the oracle's gain the learned policy should capture


@dataclasses.dataclass(frozen=True)
class WorldChoice:
    """Which generator world: the scenario and how its sleeping dogs are drawn."""

    scenario: str = "base"
    dogs: str = "usage"
    learn_campaigns: int = 2

    def folder(self, work_dir: Path, customers: int, seed: int) -> Path:
        learn = "" if self.learn_campaigns == 2 else f"-learn{self.learn_campaigns}"
        return work_dir / f"uplift5-{self.scenario}-{self.dogs}{learn}-{customers}-seed-{seed}"


def generate_world(
    folder: Path, customers: int, seed: int, world: WorldChoice = WorldChoice()
) -> tuple[Path, Path]:
    """The data and truth folders of a world with its learning campaigns, the judging and the evaluation
    campaign (cached by size, seed and world)."""
    from features.synthetic import Scenario, generate_dataset
    from features.synthetic.campaigns import ACTION_COSTS, DO_NOTHING, CampaignDesign, CampaignSetup

    data, truth = folder / "data", folder / "truth"
    if (data / "campaigns.parquet").exists() and (truth / "campaign_effects.parquet").exists():
        return data, truth
    arms = tuple((a, ARM_SHARE) for a in ACTION_COSTS if a != DO_NOTHING)
    designs = (
        *(
            CampaignDesign(f"learn{i}", at, arms)
            for i, at in enumerate(LEARN_DATES[-world.learn_campaigns :], 1)
        ),
        CampaignDesign("judge", JUDGE, arms),
        CampaignDesign("evaluate", EVALUATE, arms),
    )
    setup = CampaignSetup(designs=designs, sleeping_dogs=world.dogs)  # type: ignore[arg-type]
    scenario = Scenario(world.scenario, campaigns=setup)
    print(
        f"  generating {customers:,} customers ({world.scenario}, sleeping dogs by {world.dogs}) with "
        f"{len(designs)} randomised campaigns (not timed)",
        flush=True,
    )
    generate_dataset(data, customers, seed, scenario=scenario, truth_dir=truth)
    return data, truth


def _train(data: Path, quick: bool) -> tuple[Any, float, str]:
    """Train and register into the current home; returns the loaded version, seconds, and the uplift line."""
    from features.model_store import load_model
    from features.settings import get_settings
    from training.config import TrainConfig
    from training.pipeline import train

    began = time.perf_counter()
    cfg = TrainConfig.model_validate({**(QUICK_TRAIN if quick else {}), "threads": 2})
    result = train(data, cfg, get_settings(), promote=False)
    seconds = time.perf_counter() - began
    return load_model(f"models:/{get_settings().model_name}/{result.version}"), seconds, result.uplift


@dataclasses.dataclass(frozen=True)
class Judged:
    """The evaluation campaign's customers: their features, what each action is truly worth, who is a
    sleeping dog."""

    features: pd.DataFrame
    worth: pd.DataFrame  # customers x actions: true retention gained x value if retained x weight - cost
    dogs: np.ndarray
    value: np.ndarray
    gained: np.ndarray  # customers x actions: true retention gained
    costs: np.ndarray  # per action
    gained_blind: np.ndarray | None = None  # ... expected over the sleeping-dog draw (None: old truth)


def judged_customers(data: Path, truth: Path, bundle: Any, playbook: Any) -> Judged:
    from features.campaigns import campaign_features, load_campaigns
    from features.loading import load_dataset
    from features.synthetic.campaigns import load_campaign_effects

    dataset = load_dataset(data)
    campaigns = load_campaigns(data)
    assert campaigns is not None
    rows = campaigns[campaigns["campaign"] == "evaluate"]
    features = campaign_features(dataset, rows).reset_index(drop=True)
    effects = load_campaign_effects(truth)
    effects = effects[effects["campaign"] == "evaluate"]
    true = effects.pivot(index="customer_id", columns="action", values="true_effect")
    dogs = effects.drop_duplicates("customer_id").set_index("customer_id")["sleeping_dog"]
    ids = features["customer_id"].astype(str)
    matrix = bundle.matrix(features)
    probability = bundle.probability(bundle.churn_raw(matrix))
    revenue = bundle.revenue(matrix)
    basis = "revenue" if bundle.value_model is None else bundle.value_model.basis
    value = bundle.retained_value(bundle.customer_value(features, probability, revenue), revenue)
    value = value * playbook.weight(basis)
    costs = playbook.costs()
    actions = [a for a in true.columns if a in costs]
    gained = -true.loc[ids, actions].to_numpy(dtype=np.float64)  # churn probability removed = retention added
    blind = None
    if "true_effect_blind" in effects.columns:
        expected = effects.pivot(index="customer_id", columns="action", values="true_effect_blind")
        blind = -expected.loc[ids, actions].to_numpy(dtype=np.float64)
    worth = gained * value[:, None] - np.array([costs[a] for a in actions])[None, :]
    return Judged(
        features,
        pd.DataFrame(worth, columns=actions, index=ids),
        dogs.loc[ids].to_numpy(dtype=bool),
        value,
        gained,
        np.array([costs[a] for a in actions]),
        blind,
    )


def blind_oracle(judged: Judged, earlier: bool = False) -> np.ndarray:
    """The oracle's choices by the effects expected over the sleeping-dog draw (see the module docstring):
    the ceiling for a policy learned from the data. ``earlier`` (and older truth folders): every contract
    customer's effect is the contract customers' mean, the cruder ceiling reported before."""
    if judged.gained_blind is not None and not earlier:
        gained = judged.gained_blind
    else:
        contract = judged.features["plan"].astype(str).str.lower().ne("none").to_numpy()
        gained = judged.gained.copy()
        if contract.any():
            gained[contract] = gained[contract].mean(axis=0)
    net = gained * judged.value[:, None] - judged.costs[None, :]
    best = net.argmax(axis=1)
    return np.where(net.max(axis=1) > 0, judged.worth.columns[best], "no_action")


def truth_fitted_effects(judged: Judged, x: pd.DataFrame, seed: int, folds: int = 5) -> np.ndarray:
    """The data's ceiling for learned effects: per action, a LightGBM fitted to the truth's own effects
    (retention gained, expected over the sleeping-dog draw where the truth has it) of the evaluation
    customers, from their model inputs, cross-fitted over ``folds`` folds.

    No learner sees true effects; this one does, for four fifths of the customers each time, with no
    outcome noise at all. Its policy (the same choice rule) shows how much of the oracle's gain the
    features can carry; the rest lies in what no table records (the latent gap, the sleeping-dog draw)."""
    import lightgbm as lgb
    from sklearn.model_selection import KFold

    target = judged.gained_blind if judged.gained_blind is not None else judged.gained
    fitted = np.zeros_like(target)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        for j in range(target.shape[1]):
            model = lgb.LGBMRegressor(
                n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=30,
                random_state=seed, verbose=-1,
            )  # fmt: skip
            fitted[test, j] = model.fit(x.iloc[train], target[train, j]).predict(x.iloc[test])
    return fitted


def policy_gain(judged: Judged, chosen: np.ndarray) -> tuple[float, int]:
    """The true net gain of a policy's choices over doing nothing, and how many it contacts."""
    worth = judged.worth
    contact = np.isin(chosen, worth.columns)
    columns = worth.columns.get_indexer(np.where(contact, chosen, worth.columns[0]))
    values = worth.to_numpy()[np.arange(len(chosen)), columns]
    return float(values[contact].sum()), int(contact.sum())


def scored_actions(
    bundle: Any, playbook: Any, info: Any, features: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's action and do-not-contact flag through the real scoring path."""
    from serving.scoring import Scorer

    scores = Scorer(bundle, playbook, info).score_frame(features, str(EVALUATE))
    actions = scores["action"].tolist()
    return (
        np.array([a["name"] for a in actions], dtype=object),
        np.array([bool(a.get("do_not_contact")) for a in actions]),
    )


def run(
    customers: int, work_dir: Path, seed: int = 3, quick: bool = True, world: WorldChoice = WorldChoice()
) -> dict[str, Any]:
    from features.bundle import choose_by_effects
    from features.campaigns import load_campaigns, playbook_from_env
    from features.loading import load_dataset
    from training.uplift import UpliftInputs, learn_uplift

    data, truth = generate_world(world.folder(work_dir, customers, seed), customers, seed, world)
    playbook = playbook_from_env()
    with churnguard_home(work_dir / f"uplift-home-{customers}-{seed}-{time.time_ns()}"):
        loaded, train_seconds, uplift_line = _train(data, quick)
    bundle = loaded.bundle
    shipped = bundle.metadata.get("uplift", {})
    judged = judged_customers(data, truth, bundle, playbook)
    began = time.perf_counter()
    # The learned models whatever the gate said: the same step as training, on the deployed bundle.
    result = learn_uplift(
        UpliftInputs(
            dataset=load_dataset(data),
            campaigns=load_campaigns(data),
            bundle=dataclasses.replace(bundle, effects=None),
            playbook=playbook,
            horizon_days=bundle.horizon_days,
        )
    )
    uplift_seconds = time.perf_counter() - began
    model = result.model
    figures: dict[str, Any] = {
        "customers": customers,
        "seed": seed,
        "world": dataclasses.asdict(world),
        "evaluated": len(judged.features),
        "train_seconds": round(train_seconds, 1),
        "uplift_seconds": round(uplift_seconds, 1),
        "training_said": uplift_line,
        "gate": shipped.get("gate"),
        "decided_by": shipped.get("decided_by"),
        "samples": shipped.get("samples"),
    }
    oracle = float(np.maximum(judged.worth.to_numpy().max(axis=1), 0.0).sum())
    rows: list[dict[str, Any]] = []

    def add(name: str, chosen: np.ndarray) -> None:
        gain, contacts = policy_gain(judged, chosen)
        rows.append({"policy": name, "gain": gain, "share": gain / oracle if oracle > 0 else float("nan"),
                     "contacts": contacts})  # fmt: skip

    best = judged.worth.to_numpy().argmax(axis=1)
    add(
        "oracle (truth)",
        np.where(judged.worth.to_numpy().max(axis=1) > 0, judged.worth.columns[best], "no_action"),
    )
    if judged.gained_blind is not None:
        add("oracle that knows each customer's sleeping-dog odds, not the draw", blind_oracle(judged))
    if "plan" in judged.features.columns:
        earlier = (
            "oracle giving every contract customer the contract customers' mean effect (earlier ceiling)"
        )
        add(earlier, blind_oracle(judged, earlier=True))
    choose = {"costs": judged.costs, "min_net_value": playbook.min_net_value}
    ceiling = truth_fitted_effects(judged, bundle.model_input(judged.features), seed)
    add(
        "model fitted to the truth's effects, same choice rule (the data's ceiling)",
        choose_by_effects(ceiling, judged.value, **choose).names(list(judged.worth.columns)),
    )
    flagged = np.zeros(len(judged.features), dtype=bool)
    if model is not None:
        basis = "revenue" if bundle.value_model is None else bundle.value_model.basis
        learned = dataclasses.replace(bundle, effects=model.action_effects(playbook, basis))
        chosen, flagged = scored_actions(learned, playbook, loaded.info, judged.features)
        add("learned policy (pooled learner, as the bundle carries it)", chosen)
        x = learned.model_input(judged.features)
        for learner, name in (("dr", "DR-learner"), ("t", "T-learner")):
            estimates = model.effects(x, learner)
            estimates = estimates[[a for a in estimates.columns if a in playbook.costs()]]
            choice = choose_by_effects(
                estimates.to_numpy(), judged.value, np.array([playbook.costs()[a] for a in estimates.columns]),
                min_net_value=playbook.min_net_value,
            )  # fmt: skip
            add(f"learned policy ({name}, same choice rule)", choice.names(list(estimates.columns)))
    prior, _ = scored_actions(
        dataclasses.replace(bundle, effects=None), playbook, loaded.info, judged.features
    )
    add("current playbook (priors)", prior)
    contacts = next((r["contacts"] for r in rows if r["policy"].startswith("learned")), rows[-1]["contacts"])
    random_gain = contacts * float(judged.worth.to_numpy().mean())
    rows.append({"policy": "random contact (same number of contacts)", "gain": random_gain,
                 "share": random_gain / oracle if oracle > 0 else float("nan"), "contacts": contacts})  # fmt: skip
    figures["policies"] = rows
    dogs = judged.dogs
    figures["sleeping_dogs"] = {
        "customers": int(dogs.sum()),
        "share": float(dogs.mean()),
        "flagged": int(flagged.sum()),
        "precision": float(dogs[flagged].mean()) if flagged.any() else float("nan"),
        "recall": float(flagged[dogs].mean()) if dogs.any() else float("nan"),
    }
    if model is not None:
        figures["shrinkage"] = dict(model.shrinkage_)
    return figures


def markdown(figures: dict[str, Any]) -> str:
    """The policies' table, then the sleeping-dog flag's line and the gate's."""
    n = figures["evaluated"]
    rows = [
        [r["policy"], f"{r['gain']:,.0f}", f"{r['gain'] / n:,.2f}", f"{r['share']:.0%}", f"{r['contacts']:,}"]
        for r in figures["policies"]
    ]
    world = figures.get("world", {})
    out = [
        f"World: {world.get('scenario', 'base')}, sleeping dogs by {world.get('dogs', 'id_hash')}, "
        f"{world.get('learn_campaigns', 2)} campaigns to learn from, {figures['customers']:,} customers, "
        f"seed {figures['seed']}.\n",
        table(["policy", "true net gain", "per customer", "share of oracle", "contacts"], rows),
    ]
    dog = figures["sleeping_dogs"]
    out.append(
        f"\nDo-not-contact flag vs the truth's sleeping dogs ({dog['customers']:,} of {n:,} customers, "
        f"{dog['share']:.1%}): {dog['flagged']:,} flagged, precision {dog['precision']:.0%}, "
        f"recall {dog['recall']:.0%}."
    )
    gate = figures.get("gate")
    if gate:
        out.append(
            f"Gate in training: {gate['reason']} (learned policy - playbook, DR value per customer "
            f"{gate['gain_per_customer']:+,.2f} [{gate['low']:+,.2f}, {gate['high']:+,.2f}])."
        )
    if figures.get("shrinkage"):
        kept = ", ".join(f"{k} {v:.2f}" for k, v in figures["shrinkage"].items())
        out.append(f"Share of each effect model kept after cross-fitting: {kept}.")
    out.append(
        f"Training: {figures['training_said']} ({figures['train_seconds']:.0f} s to train, "
        f"{figures['uplift_seconds']:.0f} s to learn and gate the effects again for this table)."
    )
    return "\n".join(out)


def targets(figures: dict[str, Any]) -> list[list[str]]:
    learned = next((r for r in figures["policies"] if r["policy"].startswith("learned policy (pooled")), None)
    share = float("nan") if learned is None else learned["share"]
    return [["uplift: learned policy's share of the oracle's gain", f">= {AIM:.0%}", f"{share:.0%}",
             "met" if share >= AIM else "**missed**"]]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", default="6000", help="customers in the generated world (k/M allowed)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--full", action="store_true", help="default training settings instead of the quick ones"
    )
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "churnguard-bench")
    parser.add_argument(
        "--dogs",
        choices=("usage", "id_hash"),
        default="usage",
        help="how the world draws sleeping dogs: odds by usage (default) or a flat share (the earlier world)",
    )
    parser.add_argument("--scenario", default="base", help="a generator scenario with the contract tables")
    parser.add_argument(
        "--learn-campaigns",
        type=int,
        choices=range(1, len(LEARN_DATES) + 1),
        default=2,
        metavar=f"1..{len(LEARN_DATES)}",
        help="randomised campaigns to learn from before the judging one (default 2: how much history helps)",
    )
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    world = WorldChoice(args.scenario, args.dogs, args.learn_campaigns)
    figures = run(parse_count(args.customers), args.work_dir, args.seed, quick=not args.full, world=world)
    print(markdown(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
