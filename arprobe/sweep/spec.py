"""The sweep file: a run config (the keys of `arprobe run`, flat or by section) plus ``[grid]``
(option → list of values) and ``seeds``. Expanded into points: every combination of grid values,
times every seed.

    name = "table1"                 # the sweep's folder: <out>/table1 (default: the file's stem)
    seeds = [0, 1, 2]
    [schedule]
    epochs = 4
    [grid]
    order = ["cyclic", "shuffle"]   # leaf or full names (schedule.order)
    d_model = [64, 128]

``control = "shuffle"`` gives every point a matched shuffled control: the same options and seed
(so the same documents and initialisation; the order draws from its own RNG stream) with
``schedule.order = "shuffle"``. The control's folder is the point's name with ``_control-shuffle``
before the seed; the manifest marks it with ``"control": "shuffle"`` and the report pairs the two
by seed (the recovery score's and online loss's paired difference with its interval).
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from arprobe.errors import UserError
from arprobe.trainer.config import all_keys, load_config, resolve_key
from arprobe.values import flatten

# Keys of the sweep file that are not run options.
SWEEP_KEYS = ("grid", "seeds", "control", "slurm")

# The matched controls a sweep can add to every point: control name -> the run options it changes.
CONTROLS = {"shuffle": {"schedule.order": "shuffle"}}

# A factor may link options that change together, each value a table (Fig. 6: Adam at 1e-5 vs SGD
# at 1e-3, not all four combinations):
#     [grid]
#     optim = [{name = "adam", lr = 1e-5}, {name = "sgd", lr = 1e-3}]


@dataclass
class Point:
    """One run of the sweep: the grid options it sets and its seed."""

    name: str  # folder under runs/
    options: dict  # dotted key -> value, one per grid factor (in grid order)
    seed: int
    control: str | None = None  # "shuffle": the matched control of the point with these options and seed

    @classmethod
    def from_entry(cls, entry: dict) -> Point:
        """The point of a manifest entry."""
        return cls(entry["name"], entry["options"], entry["seed"], entry.get("control"))

    @property
    def key(self) -> str:
        return point_key(self.options, self.seed, self.control)

    @property
    def group_key(self) -> str:
        """The point without its seed: seeds of one group are replicates."""
        return group_key(self.options, self.control)


def point_key(options: dict, seed: int, control: str | None = None) -> str:
    parts = [sorted(options.items()), int(seed)]
    return json.dumps(parts + [control] if control else parts, sort_keys=True, default=str)


def group_key(options: dict, control: str | None = None) -> str:
    """A point's options without the seed (and its control mark): what its seeds replicate."""
    return json.dumps({**options, "control": control} if control else options, sort_keys=True, default=str)


@dataclass
class SweepSpec:
    path: Path
    name: str  # the sweep's folder name
    base: dict  # run options shared by every point: dotted key -> value
    grid: dict  # dotted key -> list of values, in file order
    seeds: list[int]
    out: str | None = None  # the file's `out` (where sweep folders go), if it sets one
    labels: dict = field(default_factory=dict)  # dotted key -> short name used in point names
    control: str | None = None  # "shuffle": every point gets its matched shuffled control
    slurm: dict = field(default_factory=dict)  # [slurm]: the slurm backend's options (not part of the points)

    def canonical(self) -> dict:
        """Everything that decides the points, flat, for comparing two versions of a file."""
        flat = {k: v for k, v in self.base.items()}
        flat.update({f"grid.{k}": v for k, v in self.grid.items()})
        flat["seeds"] = self.seeds
        if self.control:
            flat["control"] = self.control
        return flat

    def points(self, taken: dict[str, str] | None = None) -> list[Point]:
        """Every grid combination × seed, seeds innermost, each point followed by its matched
        control when the sweep has one. ``taken``: point key -> name of points that already have a
        folder (kept as they are; new names never collide with them)."""
        taken = dict(taken or {})
        used = set(taken.values())
        points = []
        factors = list(self.grid)
        for values in itertools.product(*(self.grid[k] for k in factors)):
            options = dict(zip(factors, values))
            for seed in self.seeds:
                for control in (None, self.control) if self.control else (None,):
                    key = point_key(options, seed, control)
                    name = taken.get(key)
                    if name is None:
                        name = unique_name(self.point_name(options, seed, control), used)
                        used.add(name)
                    points.append(Point(name=name, options=options, seed=seed, control=control))
        return points

    def point_name(self, options: dict, seed: int, control: str | None = None) -> str:
        parts = [f"{self.labels[k]}-{format_value(v)}" for k, v in options.items()]
        return "_".join([*parts, *([f"control-{control}"] if control else []), f"s{seed}"])

    def overrides(self, point: Point, runs_dir: Path) -> dict:
        """The `arprobe run` options of ``point``: base, its grid values, its control's changes,
        seed, name and folder."""
        options = {}
        for key, value in point.options.items():
            options.update(value if isinstance(value, dict) else {key: value})
        options.update(CONTROLS[point.control] if point.control else {})
        return {**self.base, **options, "seed": point.seed, "name": point.name, "out": str(runs_dir)}


def resolve_linked(factor: str, table: dict, resolve_key, where: str) -> dict:
    """One value of a linked factor (options that change together, e.g. optimizer and its lr):
    its keys as dotted paths, looked up inside the section the factor names when it names one."""
    if not table:
        raise UserError(f"{where}: grid.{factor} has an empty table; give the options it sets.")
    resolved = {}
    for key, value in flatten(table).items():
        inside = f"{factor}.{key}".replace("-", "_")
        dotted = inside if inside in all_keys() else resolve_key(key)
        if dotted in ("seed", "name", "out"):
            raise UserError(f"{where}: grid.{factor} cannot set '{dotted}'.")
        resolved[dotted] = value
    return resolved


def show(value) -> str:
    """A grid value for people: linked options as "name=adam, lr=1e-05"."""
    if isinstance(value, dict):
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in value.items())
    return str(value)


def format_value(value) -> str:
    """A grid value as a folder-name fragment: letters, digits, '.', '+' and '-' only."""
    if isinstance(value, dict):
        value = "+".join(str(v) for v in value.values())
    if isinstance(value, list):
        value = "+".join(str(v) for v in value) or "none"
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")
    return text or "x"


def unique_name(name: str, used: set[str]) -> str:
    if name not in used:
        return name
    i = 2
    while f"{name}-{i}" in used:
        i += 1
    return f"{name}-{i}"


def read_sweep_text(path: Path) -> tuple[str, dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Sweep file '{path}' does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except UnicodeDecodeError:
        raise UserError(f"Sweep file '{path}' is not text (TOML is UTF-8); give a TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Sweep file '{path}' is not valid TOML: {exc}.") from None


def load_sweep(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep file: every key known, every grid value a list, every point a valid
    run config (checked here, before anything runs)."""
    path = Path(path)
    _, table = read_sweep_text(path)
    where = f"Sweep file '{path}'"
    name = table.pop("name", None) if name is None else name
    table.pop("name", None)
    out = table.pop("out", None)
    grid_table = table.pop("grid", {})
    seeds = table.pop("seeds", None)
    control = table.pop("control", None)
    slurm = table.pop("slurm", {})
    if not isinstance(slurm, dict):
        raise UserError(f"{where}: 'slurm' must be a table, e.g. [slurm] partition = \"gpu\".")
    if control is not None and control not in CONTROLS:
        raise UserError(
            f"{where}: control must be one of {', '.join(repr(c) for c in CONTROLS)}, got {control!r}."
        )
    if not isinstance(grid_table, dict):
        raise UserError(f"{where}: 'grid' must be a table, e.g. [grid] d_model = [64, 128].")
    name = str(name) if name is not None else path.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise UserError(
            f"{where}: the sweep name '{name}' must be a plain folder name (letters, digits, . _ + -)."
        )

    base, seeds = base_and_seeds(table, seeds, where)
    grid = grid_factors(grid_table, base, where)
    if control:
        check_control(control, base, grid, where)
    leaves = [k.split(".")[-1] for k in grid]
    labels = {k: (leaf if leaves.count(leaf) == 1 else k) for k, leaf in zip(grid, leaves)}
    spec = SweepSpec(
        path=path,
        name=name,
        base=base,
        grid=grid,
        seeds=list(seeds),
        out=str(out) if out is not None else None,
        labels=labels,
        control=control,
        slurm=slurm,
    )
    for point in spec.points():
        try:
            load_config(None, spec.overrides(point, Path("runs")))
        except UserError as exc:
            raise UserError(f"{where}, point {point.name}: {exc}") from None
    return spec


def base_and_seeds(table: dict, seeds, where: str) -> tuple[dict, list]:
    """The run options every point shares ({dotted key: value}) and the checked seeds."""
    base: dict = {}
    for key, value in flatten(table).items():
        dotted = resolve_key(key)
        if dotted in ("name", "out"):
            continue
        if dotted in base:
            raise UserError(f"{where} sets '{dotted}' twice (as '{key}' and by its other name).")
        base[dotted] = value
    if "seed" in base:
        if seeds is not None:
            raise UserError(f"{where} sets both 'seed' and 'seeds'; keep only seeds = [...].")
        seeds = [base.pop("seed")]
    seeds = [0] if seeds is None else seeds
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise UserError(
            f"{where}: 'seeds' must be a non-empty list of non-negative integers, e.g. seeds = [0, 1, 2]."
        )
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: 'seeds' lists a seed twice.")
    return base, seeds


def grid_factors(grid_table: dict, base: dict, where: str) -> dict:
    """{factor: values} of the [grid] table, checked; a factor's options are taken out of ``base``."""
    grid: dict = {}
    for key, values in flatten(grid_table).items():
        if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
            linked = [resolve_linked(key, v, resolve_key, where) for v in values]
            if key in grid:
                raise UserError(f"{where}: the grid names '{key}' twice.")
            if len({json.dumps(v, sort_keys=True, default=str) for v in linked}) != len(linked):
                raise UserError(f"{where}: grid.{key} lists a value twice.")
            grid[key] = linked
            for value in linked:
                for dotted in value:
                    base.pop(dotted, None)
            continue
        dotted = resolve_key(key)
        if dotted == "seed":
            raise UserError(
                f"{where}: give seeds at the top of the file as seeds = [0, 1, 2], not in [grid]."
            )
        if dotted in ("name", "out"):
            hint = " (for the model, write model.name)" if dotted == "name" else ""
            raise UserError(f"{where}: '{dotted}' cannot be a grid factor; the sweep names its runs{hint}.")
        if dotted in grid:
            raise UserError(f"{where}: the grid names '{dotted}' twice.")
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}: grid.{key} must be a non-empty list of values, e.g. {key} = [1, 2].")
        if len({json.dumps(v, default=str) for v in values}) != len(values):
            raise UserError(f"{where}: grid.{key} lists a value twice.")
        grid[dotted] = values
        base.pop(dotted, None)  # the grid value wins over a base value of the same key
    owner: dict[str, str] = {}  # option -> the factor that sets it
    for factor, values in grid.items():
        for option in {k for v in values for k in (v if isinstance(v, dict) else {factor: v})}:
            if option in owner:
                raise UserError(
                    f"{where}: grid factors '{owner[option]}' and '{factor}' both set '{option}'."
                )
            owner[option] = factor
    return grid


def check_control(control: str, base: dict, grid: dict, where: str) -> None:
    """A control changes options the grid must leave alone, and must change something."""
    for option, value in CONTROLS[control].items():
        setters = [
            f
            for f, values in grid.items()
            for v in values
            if option in (v if isinstance(v, dict) else {f: v})
        ]
        if setters:
            raise UserError(
                f"{where}: control = {control!r} sets {option} itself, but grid.{setters[0]} varies it; "
                f"drop the control and put {value!r} among that factor's values (points of one seed are "
                "paired), or drop the factor."
            )
        if base.get(option) == value:
            raise UserError(
                f"{where}: control = {control!r} sets {option} = {value!r}, which every run already has; "
                "the control would repeat each point."
            )


def differing_keys(old: SweepSpec, new: SweepSpec) -> list[str]:
    """Keys whose value differs between two versions of a sweep (added and removed ones included)."""
    a, b = old.canonical(), new.canonical()
    return sorted(
        k for k in set(a) | set(b) if json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str)
    )
