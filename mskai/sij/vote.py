"""The paper's output layer (SPEC §1.4, formulas 1-3): one grade for a range of slices.

The network grades every slice of the analysed range (each with its 5-slice
context).  The slices are numbered ``1..N`` in range order; for each grade
``j`` present, with ``d_1 < ... < d_k`` its positions:

* ``AvgGap(j) = mean(d_{i+1} - d_i) = (d_k - d_1) / (k - 1)`` (formula 1): 1 for
  a contiguous run, larger when the grade is scattered.  A grade seen on a
  single slice has no gap; it gets ``AvgGap = N``, more than any grade seen
  twice can have (at most ``N - 1``), so a lone slice counts as incoherent.
* ``AvgPosition(j) = mean(d)`` (formula 2).
* ``score(j) = AvgGap(j) + alpha * |AvgPosition(j) - centre|`` (formula 3) and
  the grade with the lowest score wins.  Ties (scores within 1e-9) go to the
  grade with more slices, then to the higher grade (in screening a second look
  costs less than a missed sacroiliitis).

``centre``: the paper writes ``N(C_j)/2``; issue 10 settles N as the number of
analysed slices, so the centre is ``N / 2`` (2.5 for N = 5, half a slice below
the middle position 3).  Positions always run in range order, from the
inferior end of the range to the superior (LPS z, whatever the direction the
scan was acquired or stored in), so the half-slice offset is the same for every
scan: it leans a tie between two equally coherent runs towards the lower part
of the range, the part the paper analyses.

:data:`DEFAULT_ALPHA` = 0.5: both terms are measured in slices, so alpha is
the number of slices of average gap that one slice of distance from the middle
costs.  The paper's name for formula 1 is "predicting coherence" and its range
is chosen around the middle of the joint, so coherence leads and centrality
decides between equally coherent runs: with 0.5 a contiguous run still beats
an interleaved run (gap 2) unless its mean lies more than 2 slices further
from the middle.  Any alpha < 2 keeps the property that a grade seen on one
slice never outvotes a grade seen on two or more (a noise slice cannot decide
the verdict); 0.5 is well inside that.  The paper gives no value: alpha is a
bundle parameter (``metadata["alpha"]``) that training or evaluation can tune.
"""
from __future__ import annotations

import math
from typing import Sequence

DEFAULT_ALPHA = 0.5
"""Weight of the distance from the middle of the range against the average gap (see above)."""
_TIE_TOLERANCE = 1e-9


def _checked(classes: Sequence[int], alpha: float) -> tuple[list[int], float]:
    values = list(classes)
    if not values:
        raise ValueError("cannot vote over an empty slice range: no slice classes were given")
    checked = []
    for value in values:
        try:
            grade = int(value)
        except (TypeError, ValueError):
            grade = -1
        if isinstance(value, bool) or grade != value or grade < 0:
            raise ValueError(f"slice classes must be grades (integers >= 0), got {value!r}")
        checked.append(grade)
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return checked, alpha


def _positions(classes: list[int]) -> dict[int, list[int]]:
    """Positions 1..N of each class present, in range order."""
    positions: dict[int, list[int]] = {}
    for position, grade in enumerate(classes, start=1):
        positions.setdefault(grade, []).append(position)
    return positions


def _scores(values: list[int], alpha: float) -> dict[int, float]:
    count = len(values)
    centre = count / 2
    scores = {}
    for grade, where in sorted(_positions(values).items()):
        gap = (where[-1] - where[0]) / (len(where) - 1) if len(where) > 1 else float(count)
        scores[grade] = gap + alpha * abs(sum(where) / len(where) - centre)
    return scores


def coherence_scores(classes: Sequence[int], alpha: float = DEFAULT_ALPHA) -> dict[int, float]:
    """``{grade: AvgGap + alpha * |AvgPosition - N / 2|}`` for every grade in
    ``classes`` (the per-slice grades in range order), sorted by grade; lower is better.

    Raises ValueError for an empty range, a class that is not an integer >= 0
    or an alpha that is negative or not finite.
    """
    return _scores(*_checked(classes, alpha))


def coherence_vote(classes: Sequence[int], alpha: float = DEFAULT_ALPHA) -> int:
    """The range's grade: the grade with the lowest :func:`coherence_scores` score;
    ties go to the grade with more slices, then to the higher grade.

    Raises ValueError as :func:`coherence_scores`.
    """
    values, alpha = _checked(classes, alpha)
    scores = _scores(values, alpha)
    best = min(scores.values())
    tied = [grade for grade, score in scores.items() if score - best <= _TIE_TOLERANCE * max(1.0, best)]
    return max(tied, key=lambda grade: (values.count(grade), grade))
