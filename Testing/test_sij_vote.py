"""Tests of mskai.sij.vote: the paper's coherence vote (formulas 1-3) over a slice range.

Every case is worked by hand below: positions are 1..N in range order, the
centre is N / 2 (issue 10), a grade on a single slice has AvgGap = N, and
score = AvgGap + alpha * |AvgPosition - N/2| (alpha 0.5 unless stated).
"""
from __future__ import annotations

import itertools

import pytest

from mskai.sij.vote import DEFAULT_ALPHA, coherence_scores, coherence_vote


def test_default_alpha_is_one_half():
    assert DEFAULT_ALPHA == 0.5


def test_a_noise_slice_inside_a_run_is_outvoted():
    # [2, 2, 3, 2, 2], N = 5, centre 2.5.
    # grade 2 at 1, 2, 4, 5: gaps 1, 2, 1 -> AvgGap 4/3; AvgPosition 12/4 = 3; score 4/3 + 0.5*0.5 = 1.5833
    # grade 3 at 3 only: AvgGap = N = 5; AvgPosition 3; score 5 + 0.5*0.5 = 5.25
    scores = coherence_scores([2, 2, 3, 2, 2])
    assert scores == pytest.approx({2: 4 / 3 + 0.25, 3: 5.25})
    assert coherence_vote([2, 2, 3, 2, 2]) == 2


def test_single_slice_grades_get_a_gap_of_n():
    # [1, 1, 3, 1, 1, 1, 0], N = 7, centre 3.5.
    # grade 1 at 1, 2, 4, 5, 6: AvgGap (6-1)/4 = 1.25; AvgPosition 18/5 = 3.6; score 1.25 + 0.5*0.1 = 1.3
    # grade 3 at 3: AvgGap 7; score 7 + 0.5*|3-3.5| = 7.25
    # grade 0 at 7: AvgGap 7; score 7 + 0.5*|7-3.5| = 8.75
    classes = [1, 1, 3, 1, 1, 1, 0]
    assert coherence_scores(classes) == pytest.approx({0: 8.75, 1: 1.3, 3: 7.25})
    assert coherence_vote(classes) == 1


def test_one_slice_range():
    # [2], N = 1, centre 0.5: grade 2 at 1, AvgGap = N = 1, score 1 + 0.5*0.5 = 1.25
    assert coherence_scores([2]) == {2: 1.25}
    assert coherence_vote([2]) == 2


def test_all_single_slices_the_central_one_wins():
    # [0, 1, 2], N = 3, centre 1.5; every grade AvgGap 3.
    # grade 0: 3 + 0.5*|1-1.5| = 3.25; grade 1: 3 + 0.5*|2-1.5| = 3.25; grade 2: 3 + 0.5*|3-1.5| = 3.75
    # grades 0 and 1 tie with one slice each -> the higher grade, 1
    assert coherence_scores([0, 1, 2]) == pytest.approx({0: 3.25, 1: 3.25, 2: 3.75})
    assert coherence_vote([0, 1, 2]) == 1


def test_the_position_term_decides_between_equally_coherent_runs():
    # [0, 0, 0, 2, 2], N = 5, centre 2.5.
    # grade 0 at 1, 2, 3: AvgGap 1; AvgPosition 2; score 1 + 0.5*0.5 = 1.25
    # grade 2 at 4, 5:    AvgGap 1; AvgPosition 4.5; score 1 + 0.5*2 = 2
    assert coherence_scores([0, 0, 0, 2, 2]) == pytest.approx({0: 1.25, 2: 2.0})
    assert coherence_vote([0, 0, 0, 2, 2]) == 0


def test_the_centre_is_n_over_2_as_issue_10_settles():
    # [0, 0, 2, 2, 2], N = 5, centre 5/2 = 2.5.
    # grade 0 at 1, 2: AvgGap 1; AvgPosition 1.5; score 1 + 0.5*1 = 1.5
    # grade 2 at 3, 4, 5: AvgGap 1; AvgPosition 4; score 1 + 0.5*1.5 = 1.75 -> grade 0
    # (with the middle position (N+1)/2 = 3 instead, grade 0 would score 1.75 and grade 2 1.5)
    assert coherence_scores([0, 0, 2, 2, 2]) == pytest.approx({0: 1.5, 2: 1.75})
    assert coherence_vote([0, 0, 2, 2, 2]) == 0
    # [2, 2, 2, 0, 0]: grade 2 at 1, 2, 3 (AvgPosition 2, score 1.25), grade 0 at 4, 5 (AvgPosition 4.5,
    # score 2): the range's inferior end comes first, so order matters by half a slice.
    assert coherence_scores([2, 2, 2, 0, 0]) == pytest.approx({0: 2.0, 2: 1.25})
    assert coherence_vote([2, 2, 2, 0, 0]) == 2


def test_alpha_weighs_centrality_against_coherence():
    # [0, 0, 1, 3, 1, 3, 3], N = 7, centre 3.5.
    # grade 0 at 1, 2:    AvgGap 1;   AvgPosition 1.5;      |.-3.5| = 2
    # grade 1 at 3, 5:    AvgGap 2;   AvgPosition 4;        |.-3.5| = 0.5
    # grade 3 at 4, 6, 7: AvgGap 1.5; AvgPosition 17/3;     |.-3.5| = 13/6
    classes = [0, 0, 1, 3, 1, 3, 3]
    # alpha 0.5: 0 -> 1 + 1 = 2; 1 -> 2 + 0.25 = 2.25; 3 -> 1.5 + 13/12 = 2.5833 -> grade 0
    assert coherence_scores(classes, 0.5) == pytest.approx({0: 2.0, 1: 2.25, 3: 1.5 + 13 / 12})
    assert coherence_vote(classes, 0.5) == 0
    # alpha 1.5: 0 -> 1 + 3 = 4; 1 -> 2 + 0.75 = 2.75; 3 -> 1.5 + 3.25 = 4.75 -> grade 1
    assert coherence_scores(classes, 1.5) == pytest.approx({0: 4.0, 1: 2.75, 3: 4.75})
    assert coherence_vote(classes, 1.5) == 1
    # alpha 0: only the gaps count: 0 -> 1, 1 -> 2, 3 -> 1.5 -> grade 0
    assert coherence_vote(classes, 0.0) == 0


def test_a_tie_goes_to_the_grade_with_more_slices():
    # [0, 1, 0, 1, 0], N = 5, centre 2.5.
    # grade 0 at 1, 3, 5: AvgGap 2; AvgPosition 3; score 2 + 0.25 = 2.25
    # grade 1 at 2, 4:    AvgGap 2; AvgPosition 3; score 2.25 -> tie; grade 0 has 3 slices, grade 1 has 2
    assert coherence_scores([0, 1, 0, 1, 0]) == pytest.approx({0: 2.25, 1: 2.25})
    assert coherence_vote([0, 1, 0, 1, 0]) == 0


def test_a_tie_with_as_many_slices_goes_to_the_higher_grade():
    # [0, 2, 0, 2], N = 4, centre 2; both at gap 2.
    # grade 0 at 1, 3: AvgPosition 2, score 2 + 0 = 2; grade 2 at 2, 4: AvgPosition 3, score 2 + 0.5 = 2.5
    # -> grade 0; alpha 0 makes them tie (2 slices each) -> the higher grade, 2
    assert coherence_scores([0, 2, 0, 2]) == pytest.approx({0: 2.0, 2: 2.5})
    assert coherence_vote([0, 2, 0, 2]) == 0
    assert coherence_vote([0, 2, 0, 2], alpha=0.0) == 2
    # alpha 0 with two equally long runs: [1, 1, 3, 3], AvgGap 1 each -> grade 3
    assert coherence_vote([1, 1, 3, 3], alpha=0.0) == 3


def test_ties_survive_floating_point_rounding():
    # alpha 0.1, [0, 1, 0, 2, 1, 0, 1, 2], N = 8, centre 4.
    # grade 0 at 1, 3, 6: AvgGap (6-1)/2 = 2.5; AvgPosition 10/3; score 2.5 + 0.1*2/3 = 2.5667
    # grade 1 at 2, 5, 7: AvgGap (7-2)/2 = 2.5; AvgPosition 14/3; score 2.5 + 0.1*2/3 = 2.5667
    # grade 2 at 4, 8:    AvgGap 4; AvgPosition 6; score 4.2
    # Exactly tied with 3 slices each -> the higher grade, 1.  In floats grade 0 comes out
    # 2.5666666666666664 and grade 1 2.566666666666667: without a tolerance grade 0 would win.
    classes = [0, 1, 0, 2, 1, 0, 1, 2]
    assert coherence_scores(classes, 0.1) == pytest.approx({0: 2.5 + 0.2 / 3, 1: 2.5 + 0.2 / 3, 2: 4.2})
    assert coherence_vote(classes, 0.1) == 1


def test_accepts_any_integer_sequence():
    import numpy as np

    assert coherence_vote(np.array([2, 2, 3, 2, 2])) == 2
    assert coherence_vote((3, 3, 3)) == 3


def test_refuses_an_empty_range():
    with pytest.raises(ValueError, match="empty slice range"):
        coherence_vote([])
    with pytest.raises(ValueError, match="empty slice range"):
        coherence_scores([])


@pytest.mark.parametrize("classes", [[1, -1], [1, 1.5], [True, 1], ["2"], [None]])
def test_refuses_classes_that_are_not_grades(classes):
    with pytest.raises(ValueError, match="grades"):
        coherence_vote(classes)


@pytest.mark.parametrize("alpha", [-0.1, float("nan"), float("inf")])
def test_refuses_a_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        coherence_vote([1, 2], alpha)


def _every_range(longest: int = 6, grades: int = 4):
    for length in range(1, longest + 1):
        yield from itertools.product(range(grades), repeat=length)


def test_a_single_noise_slice_never_outvotes_a_repeated_grade():
    # The docstring's claim: for alpha < 2 a grade seen on >= 2 slices scores at most N - 1 < N.
    for classes in _every_range():
        repeated = {grade for grade in classes if classes.count(grade) >= 2}
        for alpha in (0.0, DEFAULT_ALPHA, 1.9):
            winner = coherence_vote(classes, alpha)
            assert winner in classes
            if repeated:
                assert winner in repeated, (classes, alpha)
