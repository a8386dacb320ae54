"""Search spaces: YAML files parsed into Optuna distributions, checked before Ray starts.

A space file has up to five top-level keys: ``model`` (fc, csnn or a ``package.module:function``
network factory), ``data`` (mnist, fashion-mnist, kmnist, cifar10 or a ``package.module:function``
data factory; default mnist), ``search`` (the parameters TPE samples, each with a type and bounds
or choices), ``fixed`` (values held constant) and ``budget`` (trials, ASHA's epochs and rungs,
retrain epochs, the silence rule).

A parameter is the trainer's when it is a ``RunConfig`` field (lr, optimizer, batch_size, ...)
and the network's when the factory's signature takes it (T, tau, widths, ...; a name both take
goes to both); any other name is refused with the rule (``snn.networks.route``).

A searched parameter may hold ``when: {other: [values]}``: it is sampled only in trials whose
``other`` (a searched categorical or integer without a condition of its own) took one of the
values, so TPE only sees what a trial uses (tau for LIF/PLIF neurons, momentum for SGD, the
width of a hidden layer that exists). Sampling is define-by-run (``SearchSpace.sample``), as in
Ray's and Optuna's define-by-run examples.

A searched parameter may instead take its range from another's value, ``by: other`` with
``cases: {value: range}`` (a learning rate per optimizer): each case is its own Optuna
parameter (``lr[optimizer=sgd]``), so TPE never models one case's values with another's, and the
parameter is sampled in trials whose ``other`` took a value with a case.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from snn.config import DATASETS, MODELS, ConfigError, RunConfig, is_reference
from snn.errors import SnnTuneError
from snn.networks import Network, NetworkError, config_from_flat, flat_values, resolve, route

SHIPPED = "search_spaces"  # the shipped spaces: package data of ``tuning`` (tuning/search_spaces/*.yaml)
_TOP_KEYS = ("model", "data", "search", "fixed", "budget")
_PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "when"},
    "int": {"type", "low", "high", "log", "when"},
    "categorical": {"type", "choices", "when"},
}
_CASE_KEYS = {"by", "cases"}  # a range per value of another parameter; describe() adds what they imply
# Fields a search never samples or fixes in a space: they name the run, not a hyperparameter (the data is
# the top-level ``data`` key).
_NOT_SEARCHABLE = ("model", "net", "dataset", "epochs", "device", "seed")


class SpaceError(SnnTuneError, ValueError):
    """A space file breaks a rule; the message names the file, the key and the rule."""


@dataclass(frozen=True)
class Budget:
    """How much searching to do."""

    trials: int = 16
    epochs_per_trial: int = 4  # ASHA's max_t
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: int = 2
    retrain_epochs: int = 64
    # when a trial stops as silent: snn.training.SilenceRule's fields; {} its defaults (Firmin et al.
    # 2024: fewer than 5 output spikes for more than 5% of the images), None never
    silence: dict[str, float] | None = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """A validated space: what is searched, what is fixed, and the budget."""

    path: Path
    model: str  # fc, csnn or package.module:function
    params: dict[str, optuna.distributions.BaseDistribution]
    fixed: dict[str, Any]
    budget: Budget = field(default_factory=Budget)
    conditions: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # param -> {other: values}
    # param -> (other, {other's value: its range}), for a parameter given ``by: other``; params holds their hull
    cases: dict[str, tuple[str, dict[Any, optuna.distributions.BaseDistribution]]] = field(default_factory=dict)
    data: str = "mnist"  # the dataset: a torchvision name or a package.module:function factory
    network: Network | None = field(default=None, compare=False, repr=False)  # the resolved factory

    def __setstate__(self, state: dict) -> None:  # a search's pickled searcher holds its space's sample
        self.__dict__.update({"cases": {}, **state})  # the default: pickled before it was

    @property
    def net(self) -> Network:
        return self.network or resolve(self.model)

    def import_paths(self) -> list[str]:
        """The folders a Ray worker needs on its path to import this space's model and data factories:
        where their top-level packages were imported from (none for the shipped ones)."""
        paths = []
        for reference in (self.net.name, self.data):
            module = reference.partition(":")[0] if ":" in reference else ""
            top = sys.modules.get(module.partition(".")[0]) if module else None
            origin = getattr(top, "__file__", None)
            if top is None or origin is None or module.startswith(("snn.", "tuning.")) or module == "__main__":
                continue
            root = Path(origin).resolve().parent
            if Path(origin).name == "__init__.py":
                root = root.parent
            paths.append(str(root))
        return list(dict.fromkeys(paths))

    def applies(self, name: str, values: dict[str, Any]) -> bool:
        """Whether parameter ``name`` is sampled in a trial whose other values are ``values``."""
        return all(values.get(other) in allowed for other, allowed in self.conditions.get(name, {}).items())

    def distribution(self, name: str, values: dict[str, Any]) -> optuna.distributions.BaseDistribution:
        """Parameter ``name``'s range in a trial whose other values are ``values`` (its case's, for ``by:``)."""
        if name not in self.cases:
            return self.params[name]
        other, cases = self.cases[name]
        return cases[values[other]]

    def optuna_name(self, name: str, values: dict[str, Any]) -> str:
        """The name Optuna's study knows the parameter by: ``lr[optimizer=sgd]`` for a case of ``by: optimizer``."""
        if name not in self.cases:
            return name
        other = self.cases[name][0]
        return f"{name}[{other}={values[other]}]"

    def optuna_point(self, point: dict[str, Any]) -> dict[str, Any]:
        """A configuration under the names Optuna's study knows (to enqueue it)."""
        return {self.optuna_name(name, point): value for name, value in point.items()}

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Define-by-run sampling: every unconditional parameter, then each conditional one that applies."""
        values: dict[str, Any] = {}
        for name in sorted(self.params, key=lambda n: n in self.conditions):
            if self.applies(name, values):
                values[name] = _suggest(trial, self.optuna_name(name, values), self.distribution(name, values))
        return values

    def seed_point(self) -> tuple[dict[str, Any], list[str]]:
        """The seed configuration's value of each parameter it uses, and the ones the ranges exclude.

        The seed's values are the trainer's defaults (the seed report's for fc and csnn) and the
        factory's defaults (the seed's networks for fc and csnn), with this space's fixed values.
        A parameter with no default (a factory's required argument) excludes the seed point.
        """
        seed = self.config_for({})
        values = {**flat_values(seed), **self.net.defaults_for(seed.net)}
        point = {name: values.get(name, _NO_DEFAULT) for name in self.params if name not in self.conditions}
        point.update({name: values.get(name, _NO_DEFAULT) for name in self.conditions if self.applies(name, point)})
        outside = [
            f"{name}={'(no default)' if value is _NO_DEFAULT else repr(value)}"
            for name, value in point.items()
            if value is _NO_DEFAULT or not _contains(self.distribution(name, point), value)
        ]
        return point, outside

    def corner(self, pick=max) -> dict[str, Any]:
        """Every searched number at its highest (``pick=max``) or lowest, every other choice at the seed's value
        where it has one (else its first); conditional parameters where their condition holds."""
        seed = self.seed_point()[0]
        point: dict[str, Any] = {}
        for name in sorted(self.params, key=lambda n: n in self.conditions):
            if not self.applies(name, point):
                continue
            dist = self.distribution(name, point)
            values = list(getattr(dist, "choices", None) or [dist.low, dist.high])
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if numbers and len(numbers) == len(values):
                point[name] = pick(numbers)
            else:
                point[name] = seed[name] if seed.get(name, _NO_DEFAULT) in values else values[0]
        return point

    def first_point(self) -> dict[str, Any]:
        """What trial 0 runs: the seed's point when the space holds it, else every number at its lowest."""
        point, outside = self.seed_point()
        return self.corner(min) if outside else point

    def config_for(self, sampled: dict[str, Any], **overrides: Any) -> RunConfig:
        """The RunConfig of one trial: fixed values, then the sampled ones, then overrides (trainer fields)."""
        values = {**self.fixed, **sampled}
        config = config_from_flat(self.model, values, self.net)
        return config.replace(dataset=self.data, **overrides)

    def describe(self) -> dict[str, dict[str, Any]]:
        """The searched parameters as plain data (summary.json, the report). A ``by:`` parameter also has the
        hull of its cases as its range and ``when:`` the values with a case, for readers of one range."""
        out = {}
        for name, d in self.params.items():
            out[name] = _describe(d)
            if name in self.conditions:
                out[name]["when"] = copy.deepcopy(self.conditions[name])
            if name in self.cases:
                other, cases = self.cases[name]
                out[name]["by"] = other
                out[name]["cases"] = {_key_text(value): _describe(dist) for value, dist in cases.items()}
        return out


_NO_DEFAULT = object()


def _describe(dist: optuna.distributions.BaseDistribution) -> dict[str, Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return {"type": "categorical", "choices": list(dist.choices)}
    kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
    return {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}


def _key_text(value: Any) -> str:
    """A case's value as a mapping key JSON keeps (``_case_value`` reads it back)."""
    return json.dumps(value) if not isinstance(value, str) else value


def shipped_spaces() -> dict[str, Path]:
    """The spaces that ship with the package, by name (fc, fc-cpu, csnn, csnn-cpu), read from its package data."""
    folder = importlib.resources.files("tuning") / SHIPPED
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in sorted(folder.iterdir(), key=str)
        if entry.name.endswith(".yaml")
    }


def default_space_path(model: str) -> Path:
    """The shipped space of a shipped model (fc, csnn)."""
    return shipped_spaces()[model]


def space_path(given: Path | str) -> Path:
    """A space file: ``given`` where it exists, else the shipped space of that name (``--space csnn-cpu``)."""
    path = Path(given)
    if not path.exists() and str(given).removesuffix(".yaml") in shipped_spaces():
        return shipped_spaces()[str(given).removesuffix(".yaml")]
    return path


def load_space(path: Path | str, model: str | None = None, network: Network | None = None) -> SearchSpace:
    """Parse and validate a space file; SpaceError names the file, the key and the rule."""
    path = space_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpaceError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SpaceError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}: YAML syntax error{where}: {getattr(e, 'problem', e)}") from None
    return parse_space(raw, path, model, network)


def parse_space(raw: Any, path: Path | str, model: str | None = None, network: Network | None = None) -> SearchSpace:
    """Validate the parsed YAML of a space file (see ``load_space``). ``network``: the model's resolved
    factory when the caller has it (a callable passed from Python); else ``model`` is resolved by name."""
    path = Path(path)

    def fail(key: str, rule: str) -> SpaceError:
        return SpaceError(f"{path}: {key}: {rule}")

    if not isinstance(raw, dict):
        raise fail("(top level)", f"must be a mapping with keys {', '.join(_TOP_KEYS)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise fail(str(key), f"unknown key; allowed: {', '.join(_TOP_KEYS)}")
    space_model = raw.get("model", model) if model is None or network is None else model
    if not (space_model in MODELS or is_reference(space_model)):
        raise fail("model", f"must be one of {', '.join(MODELS)} or package.module:function, got {space_model!r}")
    if model is not None and space_model != model:
        raise fail("model", f"the file is for {space_model!r} but the command searches {model!r}")
    data = raw.get("data", "mnist")
    if not (data in DATASETS or is_reference(data)):
        raise fail("data", f"must be one of {', '.join(DATASETS)} or package.module:function, got {data!r}")
    try:
        network = network or resolve(space_model)
    except NetworkError as e:
        raise fail("model", str(e)) from None

    search = _mapping(raw.get("search"), "search", fail)
    fixed = _mapping(raw.get("fixed"), "fixed", fail)
    budget = _budget(_mapping(raw.get("budget"), "budget", fail), fail)
    if not search:
        raise fail("search", "must list at least one parameter to search")

    for name in [*search, *fixed]:
        section = "search" if name in search else "fixed"
        if name == "dataset":
            raise fail(f"{section}.{name}", "the dataset is the top-level data: key")
        if name in _NOT_SEARCHABLE and not network.takes(name):
            raise fail(
                f"{section}.{name}",
                "names the run, not a hyperparameter; it cannot be searched or fixed in "
                "a space (the command's flags set it)",
            )
        try:
            route({name: None}, network)
        except ConfigError as e:
            raise fail(f"{section}.{name}", e.rule) from None
    for name in search:
        if name in fixed:
            raise fail(f"search.{name}", "is also in fixed; a parameter is either searched or fixed")

    _check_value(space_model, network, fixed, {}, "fixed", fail)
    params = {name: _distribution(name, spec, fail) for name, spec in search.items() if not _has_cases(spec)}
    cases = {name: _cases(name, spec, params, search, fail) for name, spec in search.items() if _has_cases(spec)}
    for name, (_, by_value) in cases.items():
        params[name] = _hull(by_value)
    for name, dist in params.items():
        for value in _extremes(dist):
            _check_value(space_model, network, fixed, {name: value}, f"search.{name}", fail)
    conditions = {
        name: _condition(name, spec["when"], params, search, fail)
        for name, spec in search.items()
        if "when" in spec and name not in cases
    }
    for name, (other, by_value) in cases.items():
        conditions[name] = {other: list(by_value)}
        _check_derived(name, search[name], params[name], conditions[name], fail)
    params = {name: params[name] for name in search}  # the file's order
    required = [p for p in network.parameters if p not in network.defaults and p not in search and p not in fixed]
    if required:
        raise fail(required[0], f"{network.signature_text()} has no default for it: search or fix it")
    return SearchSpace(
        path=path,
        model=space_model,
        params=params,
        fixed=dict(fixed),
        budget=budget,
        conditions=conditions,
        cases=cases,
        data=data,
        network=network,
    )


def with_overrides(
    space: SearchSpace,
    *,
    fixed: dict[str, Any] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    budget: dict[str, int] | None = None,
) -> SearchSpace:
    """A copy of ``space`` with fixed values, parameter specs or budget entries replaced (presets); a replaced
    parameter keeps its ``when:`` condition, and one with cases takes a plain range in each of its cases."""
    described = space.describe()
    replaced = {name: _replacement(spec, described.get(name, {})) for name, spec in (params or {}).items()}
    raw = {
        "model": space.model,
        "data": space.data,
        "search": {**described, **replaced},
        "fixed": {**copy.deepcopy(space.fixed), **(fixed or {})},
        "budget": {**space.budget.__dict__, **(budget or {})},
    }
    for name in fixed or {}:
        raw["search"].pop(name, None)
    return parse_space(raw, space.path, space.model, space.network)


def _replacement(spec: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A parameter's new spec in ``with_overrides``, keeping the old one's condition or cases."""
    if "cases" in old and not _has_cases(spec):
        return {"by": old["by"], "cases": {key: dict(spec) for key in old["cases"]}}
    if _has_cases(spec) or "when" not in old:
        return dict(spec)
    return {"when": old["when"], **spec}


def _mapping(value: Any, key: str, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _budget(raw: dict, fail) -> Budget:
    allowed = Budget.__dataclass_fields__
    values = {}
    for key, value in raw.items():
        if key not in allowed:
            raise fail(f"budget.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        if key == "silence":
            values[key] = _silence(value, fail)
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail(f"budget.{key}", f"must be an integer >= 1, got {value!r}")
        values[key] = value
    budget = Budget(**values)
    if budget.grace_period > budget.epochs_per_trial:
        raise fail(
            "budget.grace_period",
            f"`grace_period <= epochs_per_trial` must hold, got {budget.grace_period} > {budget.epochs_per_trial}",
        )
    if budget.reduction_factor < 2:
        raise fail("budget.reduction_factor", f"must be >= 2, got {budget.reduction_factor}")
    return budget


_SILENCE_RULES = {  # SilenceRule's fields: (integer?, lowest allowed, highest allowed)
    "min_spikes": (False, 0.0, math.inf),
    "max_fraction": (False, 0.0, 1.0),
    "probe_batches": (True, 1, math.inf),
    "warmup_batches": (True, 0, math.inf),
    "per_steps": (True, 1, math.inf),
    "max_accuracy": (False, 0.0, 1.0),
}


def _silence(value: Any, fail) -> dict[str, float] | None:
    """``budget.silence``: false/off (never stop a trial as silent), or a mapping of SilenceRule's fields."""
    if value is False or value is None:
        return None
    if not isinstance(value, dict):
        raise fail(
            "budget.silence", f"must be a mapping like {{min_spikes: 5, max_fraction: 0.05}} or off, got {value!r}"
        )
    for key, number in value.items():
        if key not in _SILENCE_RULES:
            raise fail(f"budget.silence.{key}", f"unknown key; allowed: {', '.join(_SILENCE_RULES)}")
        integer, low, high = _SILENCE_RULES[key]
        ok = isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
        if not ok or (integer and not float(number).is_integer()) or not low <= number <= high:
            kind = "an integer" if integer else "a number"
            raise fail(f"budget.silence.{key}", f"must be {kind} in [{low:g}, {high:g}], got {number!r}")
        if key == "min_spikes" and number == 0:
            raise fail(f"budget.silence.{key}", "must be > 0")
    return dict(value)


def _distribution(name: str, spec: Any, fail) -> optuna.distributions.BaseDistribution:
    key = f"search.{name}"
    if not isinstance(spec, dict) or spec.get("type") not in _PARAM_KEYS:
        raise fail(key, "must be a mapping with type: float, int or categorical")
    kind = spec["type"]
    extra = set(spec) - _PARAM_KEYS[kind]
    if extra:
        raise fail(
            f"{key}.{sorted(extra)[0]}",
            f"unknown key for a {kind} parameter; allowed: {', '.join(sorted(_PARAM_KEYS[kind]))}",
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail(f"{key}.choices", f"must be a non-empty list, got {choices!r}")
        return optuna.distributions.CategoricalDistribution(choices)
    for bound in ("low", "high"):
        value = spec.get(bound)
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number_ok or (kind == "int" and not float(value).is_integer()):
            raise fail(f"{key}.{bound}", f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"{key}.log", f"must be true or false, got {log!r}")
    if low > high:
        raise fail(key, f"`low <= high` must hold, got low={low}, high={high}")
    if log and low <= 0:
        raise fail(key, f"log scale needs `low > 0`, got low={low}")
    if kind == "int":
        return optuna.distributions.IntDistribution(int(low), int(high), log=log)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log)


def _has_cases(spec: Any) -> bool:
    return isinstance(spec, dict) and ("by" in spec or "cases" in spec)


def _cases(name: str, spec: dict, params: dict, search: dict, fail) -> tuple[str, dict[Any, Any]]:
    """``by: other, cases: {value: range}``: other is a searched categorical or integer without a condition or
    cases of its own; each case a value of other's, with a float, int or categorical range (all one type)."""
    key = f"search.{name}"
    other, cases = spec.get("by"), spec.get("cases")
    if not isinstance(other, str) or other not in params:
        searched = ", ".join(n for n in search if not _has_cases(search[n]))
        raise fail(f"{key}.by", f"must name a searched parameter (one of {searched}), got {other!r}")
    dist = params[other]
    if not isinstance(dist, (optuna.distributions.CategoricalDistribution, optuna.distributions.IntDistribution)):
        raise fail(f"{key}.by", "must name a categorical or integer parameter")
    if "when" in search[other]:
        raise fail(f"{key}.by", "must name a parameter without a condition of its own")
    values = list(dist.choices) if hasattr(dist, "choices") else []
    if any(not isinstance(v, (str, int, float, bool)) for v in values):
        raise fail(f"{key}.by", f"must name a parameter whose choices are numbers, text or true/false: {values!r}")
    if len({_key_text(v) for v in values}) < len(values):
        raise fail(f"{key}.by", f"{other}'s choices {values!r} read the same as text; cases could not tell them apart")
    if not isinstance(cases, dict) or not cases:
        raise fail(f"{key}.cases", f"must be a mapping of {other}'s values to ranges, got {cases!r}")
    out: dict[Any, Any] = {}
    for text, case in cases.items():
        value = _case_value(text, dist)
        if value is _NO_DEFAULT:
            allowed = list(dist.choices) if hasattr(dist, "choices") else f"[{dist.low}, {dist.high}]"
            raise fail(f"{key}.cases.{text}", f"is not a value of {other} ({allowed})")
        if value in out:
            raise fail(f"{key}.cases.{text}", f"names {other}={value!r} twice")
        if isinstance(case, dict) and ("when" in case or _has_cases(case)):
            extra = next(k for k in ("when", "by", "cases") if k in case)
            raise fail(f"{key}.cases.{text}.{extra}", "a case is a range: type and its bounds or choices")
        out[value] = _distribution(f"{name}.cases.{text}", case, fail)
    kinds = {type(d) for d in out.values()}
    if len(kinds) > 1:
        raise fail(f"{key}.cases", "every case must have the same type (float, int or categorical)")
    return other, out


def _case_value(text: Any, dist: optuna.distributions.BaseDistribution) -> Any:
    """The value of ``by``'s parameter a case's key names: the key itself, or its JSON text (summary.json's keys
    are strings)."""
    if isinstance(dist, optuna.distributions.IntDistribution):  # its range, not a list of it (it may be long)
        number = int(text) if isinstance(text, str) and re.fullmatch(r"-?[0-9]+", text) else text
        whole = isinstance(number, int) and not isinstance(number, bool)
        return number if whole and dist.low <= number <= dist.high else _NO_DEFAULT
    values = list(dist.choices)
    for value in values:
        if type(value) is type(text) and value == text:
            return value
    for value in values:
        if isinstance(text, str) and not isinstance(value, str) and _key_text(value) == text:
            return value
    return _NO_DEFAULT


def _hull(cases: dict) -> optuna.distributions.BaseDistribution:
    """One range holding every case's (the parameter's range for readers of one range: the report, the table)."""
    dists = list(cases.values())
    first = dists[0]
    if isinstance(first, optuna.distributions.CategoricalDistribution):
        choices = list(dict.fromkeys(c for d in dists for c in d.choices))
        return optuna.distributions.CategoricalDistribution(choices)
    low, high, log = min(d.low for d in dists), max(d.high for d in dists), all(d.log for d in dists)
    if isinstance(first, optuna.distributions.IntDistribution):
        return optuna.distributions.IntDistribution(low, high, log=log)
    return optuna.distributions.FloatDistribution(low, high, log=log)


def _check_derived(name: str, spec: dict, hull, condition: dict, fail) -> None:
    """A ``by:`` parameter's other keys are what describe() derives from its cases (summary.json holds them); a
    file that gives one must give that value."""
    derived = {**_describe(hull), "when": condition}
    for extra in sorted(set(spec) - _CASE_KEYS):
        if extra not in derived:
            allowed = ", ".join(sorted(_CASE_KEYS))
            raise fail(f"search.{name}.{extra}", f"unknown key for a parameter with cases; allowed: {allowed}")
        if spec[extra] != derived[extra]:
            raise fail(
                f"search.{name}.{extra}",
                f"follows from the cases ({derived[extra]!r}), got {spec[extra]!r}; leave it out",
            )


def _condition(name: str, when: Any, params: dict, search: dict, fail) -> dict[str, list[Any]]:
    """``when: {other: [values]}``: other is a searched categorical or integer without a condition, values among
    its choices (its range)."""
    key = f"search.{name}.when"
    if not isinstance(when, dict) or not when:
        raise fail(key, f"must be a mapping like {{neuron: [lif, plif]}}, got {when!r}")
    condition = {}
    for other, values in when.items():
        if other not in params:
            raise fail(f"{key}.{other}", f"names no searched parameter; searched: {', '.join(params)}")
        dist = params[other]
        if not isinstance(dist, (optuna.distributions.CategoricalDistribution, optuna.distributions.IntDistribution)):
            raise fail(f"{key}.{other}", "a condition must name a categorical or integer parameter")
        if other == name or "when" in search[other] or _has_cases(search[other]):
            raise fail(f"{key}.{other}", "a condition must name a parameter without a condition of its own")
        values = values if isinstance(values, list) else [values]
        unknown = [
            v
            for v in values
            if not _contains(dist, v)
            or (isinstance(dist, optuna.distributions.IntDistribution) and not isinstance(v, int))
        ]
        if not values or unknown:
            allowed = (
                f"choices {list(dist.choices)}"
                if isinstance(dist, optuna.distributions.CategoricalDistribution)
                else f"range [{dist.low}, {dist.high}]"
            )
            raise fail(f"{key}.{other}", f"values must be among {other}'s {allowed}, got {unknown or values!r}")
        condition[other] = values
    return condition


def _suggest(trial: optuna.Trial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high


def _extremes(dist: optuna.distributions.BaseDistribution) -> list[Any]:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def _check_value(model: str, network: Network, fixed: dict, sampled: dict, key: str, fail) -> None:
    """Build the RunConfig the value implies (and check the shipped factories' rules), so impossible values
    fail at load."""
    try:
        config = config_from_flat(model, {**fixed, **sampled}, network)
        network.check(config.net, complete=False)
    except ConfigError as e:
        where = key if key != "fixed" else f"fixed.{e.field_name}"
        raise fail(where, f"impossible value: {e}") from None
    except TypeError as e:  # a wrongly typed value in a comparison
        raise fail(key, f"impossible value: {e}") from None
