"""Automatic discovery of the IOI circuit by recursive path patching (Wang et al. 2022, section 3).

The paper works backwards from the logits: find the heads that write the answer directly,
then the heads that feed their queries, keys and values, and so on. Here the same recursion
runs with a threshold on the path-patching effect instead of a human eye, and each head found
is placed at the position where its output matters and named by what it does (the paper's
class names when its role and attention pattern match them, a descriptive name otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float
from torch import Tensor

from ioi.circuit.oracle import PathPatchingOracle
from ioi.circuit.spec import Circuit
from ioi.head import Head
from ioi.path_patching import RECEIVER_INPUTS, Receiver, Sender, all_head_senders
from ioi.statistics import Estimate, bootstrap

POSITION_KEYS = ("IO", "IO+1", "S1", "S1+1", "S2", "end")
"""Where a head's output may matter; the one carrying most of its effect is kept."""

SOURCE_KEYS = ("IO", "IO+1", "S1", "S1+1", "S2", "end")
"""Attention targets used to name a head (plus ``"previous"``: the token before)."""


@dataclass(frozen=True)
class Edge:
    """A sender above threshold: into the logits (``input="logits"``) or receivers' q/k/v."""

    sender: Head
    receivers: tuple[Head, ...]
    input: str
    receiver_position: str | None
    effect: float


@dataclass(frozen=True)
class HeadFinding:
    """Why a head is in the circuit, where it is kept, and what it attends to there."""

    head: Head
    role: str  # "logits" or the receivers' input ("q", "k", "v") of its strongest edge
    effect: float
    position: str
    position_effects: Mapping[str, float]
    attention: Mapping[str, float]
    cls: str = ""
    per_prompt: Float[Tensor, " row"] | None = field(default=None, compare=False, repr=False)
    """Each prompt's effect along the edge that found the head (its mean is ``effect``)."""

    @property
    def attends_to(self) -> str:
        """The source with the most attention from the kept position (``"previous"`` wins a
        tie, e.g. at S1+1 the previous token *is* S1)."""
        top = max(self.attention.values())
        if self.attention.get("previous", -1.0) >= top:
            return "previous"
        return max(self.attention, key=self.attention.get)


@dataclass(frozen=True)
class DiscoveredCircuit:
    """A discovered circuit: the spec, the graph edges and the evidence behind each head."""

    threshold: float
    circuit: Circuit | None  # None when no head passes the threshold
    edges: tuple[Edge, ...]
    findings: tuple[HeadFinding, ...] = field(default=())
    effects: Estimate | None = field(default=None, compare=False, repr=False)
    """The findings' effects over prompts, [finding] in the order of ``findings``: mean,
    standard error and seeded bootstrap interval (None without findings or per-prompt
    effects, e.g. a circuit given by hand, or fewer than 2 prompts)."""
    max_heads: int | None = None
    """The head budget the search ran with (None: none)."""
    left_out: int = 0
    """Heads that passed the threshold in the round that filled the budget but were not
    taken (the weakest); 0 when the budget never filled. Later rounds did not run."""

    @property
    def budget_full(self) -> bool:
        """Whether the head budget filled, so that the search stopped early."""
        return self.max_heads is not None and len(self.heads()) >= self.max_heads

    def heads(self) -> frozenset[Head]:
        """Every head found."""
        return frozenset(f.head for f in self.findings)

    @classmethod
    def from_spec(cls, circuit: Circuit) -> DiscoveredCircuit:
        """A circuit given by hand (e.g. the paper's), in this form: its classes and positions
        as findings, no edges and no measured effects (NaN), so that one figure draws both."""
        findings = tuple(
            HeadFinding(head, "given", float("nan"), circuit.positions[name], {}, {}, name)
            for name, heads in circuit.heads.items()
            for head in heads
        )
        return cls(float("nan"), circuit, (), findings)


# ---- steps -------------------------------------------------------------------------------


def find_output_heads(oracle: PathPatchingOracle, threshold: float) -> list[Edge]:
    """Step 1: heads whose direct path to the logits has ``|effect| >= threshold``."""
    senders = all_head_senders(oracle.model)
    effects = oracle.effects(senders)
    return [
        Edge(Head(s.layer, s.head), (), "logits", None, float(e))
        for s, e in zip(senders, effects.tolist(), strict=True)
        if abs(e) >= threshold
    ]


def find_senders(
    oracle: PathPatchingOracle,
    receivers: Sequence[tuple[int, int]],
    position: str,
    threshold: float,
) -> list[Edge]:
    """Step 2: earlier heads whose path into the receivers' q (at ``position``), k or v
    (at every position) has ``|effect| >= threshold``."""
    return find_senders_many(oracle, [(receivers, position)], threshold)


def find_senders_many(
    oracle: PathPatchingOracle,
    groups: Sequence[tuple[Sequence[tuple[int, int]], str]],
    threshold: float,
) -> list[Edge]:
    """`find_senders` for many ``(receivers, position)`` groups, asked of the oracle at once
    (so that the engine stacks all of them into few passes); edges in the order of the groups."""
    asked = []  # (receivers, input, receiver position, senders, targets)
    for receivers, position in groups:
        top = max(layer for layer, _ in receivers)
        if top == 0:
            continue
        senders = all_head_senders(oracle.model, below_layer=top)
        for inp in RECEIVER_INPUTS:
            where = position if inp == "q" else None  # a head's query matters where it is kept
            targets = [Receiver(layer, h, inp) for layer, h in receivers]
            asked.append((tuple(map(Head._make, receivers)), inp, where, senders, targets))
    all_effects = oracle.effects_many([(s, t, None, where) for _, _, where, s, t in asked])
    return [
        Edge(Head(s.layer, s.head), heads, inp, where, float(e))
        for (heads, inp, where, senders, _), effects in zip(asked, all_effects, strict=True)
        for s, e in zip(senders, effects.tolist(), strict=True)
        if abs(e) >= threshold
    ]


def best_positions(
    oracle: PathPatchingOracle, edges: Sequence[Edge], keys: Sequence[str] = POSITION_KEYS
) -> list[dict[str, float]]:
    """Step 3: each edge's effect with its sender's output patched at one position only."""
    out: list[dict[str, float]] = [{} for _ in edges]
    groups: dict[tuple, list[int]] = {}
    for i, edge in enumerate(edges):
        groups.setdefault((edge.receivers, edge.input, edge.receiver_position), []).append(i)
    asked = []  # (members, key, senders, targets, receiver position)
    for (receivers, inp, where), members in groups.items():
        senders = [Sender("head", *edges[i].sender) for i in members]
        targets = None if inp == "logits" else [Receiver(lay, h, inp) for lay, h in receivers]
        asked += [(members, key, senders, targets, where) for key in keys]
    all_effects = oracle.effects_many([(s, t, key, w) for _, key, s, t, w in asked])
    for (members, key, *_), effects in zip(asked, all_effects, strict=True):
        for i, value in zip(members, effects.tolist(), strict=True):
            out[i][key] = value
    return out


def name_head(finding: HeadFinding) -> str:
    """Step 4: a class name from the head's role, position and attention (paper names first).

    * logits, attends to IO: ``name_mover`` (or ``negative_name_mover`` if it lowers the
      logit difference);
    * attends mostly to the previous token: ``previous_token``;
    * k/v sender kept at S2, attending to S1: ``duplicate_token``; to S1+1: ``induction``;
    * q sender kept at end, attending to S1/S2: ``s_inhibition``;
    * otherwise ``{role}_{position}_to_{source}``, role ``direct`` for the logits, e.g.
      ``direct_end_to_S2`` (writes the answer from end, reading S2) or ``v_S2_to_IO``.
    """
    src, pos, role = finding.attends_to, finding.position, finding.role
    if role == "logits" and src == "IO":
        return "name_mover" if finding.effect < 0 else "negative_name_mover"
    if src == "previous":
        return "previous_token"
    if role in ("k", "v") and pos == "S2" and src in ("S1", "S1+1"):
        return "duplicate_token" if src == "S1" else "induction"
    if role == "q" and pos == "end" and src in ("S1", "S2"):
        return "s_inhibition"
    if role == "logits":
        return f"{'negative_' if finding.effect > 0 else ''}direct_{pos}_to_{src}"
    return f"{role}_{pos}_to_{src}"


def build_circuit(findings: Sequence[HeadFinding], name: str) -> Circuit | None:
    """Step 5: class -> heads and class -> position (a name used at two positions is split)."""
    if not findings:
        return None
    positions_of: dict[str, set[str]] = {}
    for f in findings:
        positions_of.setdefault(f.cls, set()).add(f.position)
    heads: dict[str, list[Head]] = {}
    where: dict[str, str] = {}
    for f in findings:
        cls = f.cls if len(positions_of[f.cls]) == 1 else f"{f.cls}@{f.position}"
        heads.setdefault(cls, []).append(f.head)
        where[cls] = f.position
    return Circuit(heads, where, name=name)


# ---- orchestrator ------------------------------------------------------------------------


def _request(edge: Edge) -> tuple:
    """The oracle request whose answer is the edge's effect (`find_output_heads`,
    `find_senders_many`)."""
    targets = (
        None
        if edge.input == "logits"
        else [Receiver(layer, h, edge.input) for layer, h in edge.receivers]
    )
    return ([Sender("head", *edge.sender)], targets, None, edge.receiver_position)


def _findings_for(oracle: PathPatchingOracle, edges: Sequence[Edge]) -> list[HeadFinding]:
    """Steps 3-4 for edges: each edge places its sender at one position; one finding per
    (head, position), from the strongest edge there. A head can thus act at two positions."""
    best: dict[tuple[Head, str], HeadFinding] = {}
    per_prompt = oracle.per_prompt_many([_request(e) for e in edges])  # memoised: no new pass
    for edge, effects, values in zip(edges, best_positions(oracle, edges), per_prompt, strict=True):
        position = max(effects, key=lambda k: abs(effects[k]))
        key = (edge.sender, position)
        if key in best and abs(best[key].effect) >= abs(edge.effect):
            continue
        attention = oracle.attention(edge.sender, position, SOURCE_KEYS)
        finding = HeadFinding(
            edge.sender, edge.input, edge.effect, position, effects, attention, "", values[0]
        )
        best[key] = replace(finding, cls=name_head(finding))
    return list(best.values())


def _within_budget(
    edges: Sequence[Edge], taken: set[Head], max_heads: int | None
) -> tuple[list[Edge], int]:
    """The edges to follow: strongest first, those whose sender is already taken or still
    fits the budget; and how many heads did not fit. Edges keep their order."""
    if max_heads is None:
        return list(edges), 0
    new: set[Head] = set()
    left: set[Head] = set()
    keep = set()
    for i in sorted(range(len(edges)), key=lambda i: -abs(edges[i].effect)):
        head = edges[i].sender
        if head in taken or head in new:
            keep.add(i)
        elif len(taken) + len(new) < max_heads:
            new.add(head)
            keep.add(i)
        else:
            left.add(head)
    return [e for i, e in enumerate(edges) if i in keep], len(left)


def discover_circuit(
    oracle: PathPatchingOracle,
    threshold: float,
    max_depth: int | None = None,
    max_heads: int | None = None,
) -> DiscoveredCircuit:
    """Discover the circuit: recursive path patching from the logits backwards.

    Steps:
        1. Output heads: every head's direct path to the logits (`find_output_heads`).
        2. Senders: for each group of heads just found (same role and position), every
           earlier head's path into their q, k and v (`find_senders`); repeat on the new
           heads, up to ``max_depth`` rounds (default: the number of layers).
        3. Positions: each head is kept where its output carries most of its effect along
           the edge that found it (`best_positions`).
        4. Classes: each head is named by role and attention (`name_head`).
        5. Spec: class -> heads, class -> position (`build_circuit`).

    Args:
        oracle: path-patching effects for the model and datasets (`PathPatchingOracle`).
        threshold: minimum ``|effect|`` on the normalised metric (1 = the whole IOI-ABC gap).
        max_depth: rounds of step 2 at most (None: the number of layers).
        max_heads: a budget of heads (None: no budget). Each round takes its edges strongest
            first while their heads fit; when the budget is full the search stops and the
            result says how many heads of that round were left out (``left_out``). Without
            a budget the cost grows with how many heads pass: where the normalised metric's
            gap is tiny (e.g. random weights), nearly every head passes every threshold.

    Returns:
        The circuit (None if no output head passes), its edges and per-head evidence, with
        each head's effect over prompts (``effects``: SE and bootstrap interval).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not threshold > 0:
        raise ValueError(
            f"threshold must be > 0 (an |effect| on the normalised metric), got {threshold}"
        )
    for name, value, low in (("max_depth", max_depth, 0), ("max_heads", max_heads, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low} or None (no limit), got {value}")
    edges, left_out = _within_budget(find_output_heads(oracle, threshold), set(), max_heads)  # 1.
    findings = {(f.head, f.position): f for f in _findings_for(oracle, edges)}  # 3. and 4.
    frontier = list(findings.values())
    for _ in range(oracle.model.cfg.n_layers if max_depth is None else max_depth):
        if max_heads is not None and len({h for h, _ in findings}) >= max_heads:
            break  # the budget is full
        groups: dict[tuple[str, str], list[Head]] = {}
        for f in frontier:
            groups.setdefault((f.role, f.position), []).append(f.head)
        new_edges, left_out = _within_budget(
            find_senders_many(  # 2.
                oracle, [(heads, position) for (_, position), heads in groups.items()], threshold
            ),
            {h for h, _ in findings},
            max_heads,
        )
        edges += new_edges
        frontier = [
            f for f in _findings_for(oracle, new_edges) if (f.head, f.position) not in findings
        ]
        findings.update({(f.head, f.position): f for f in frontier})
        if not frontier:
            break
    ordered = tuple(sorted(findings.values(), key=lambda f: (f.head, f.position)))
    circuit = build_circuit(ordered, name=f"discovered (threshold {threshold:g})")  # 5.
    return DiscoveredCircuit(
        threshold, circuit, tuple(edges), ordered, _estimate(ordered), max_heads, left_out
    )


def _estimate(findings: Sequence[HeadFinding]) -> Estimate | None:
    """The findings' per-prompt effects as one [finding] `Estimate` (default seed and level)."""
    if not findings or len(findings[0].per_prompt) < 2:
        return None
    return bootstrap(torch.stack([f.per_prompt for f in findings]))
