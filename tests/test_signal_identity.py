"""Known answers for reading a marker's second from onset times (qoe.signal.identity).

Onsets here are exact nominal times, as the generator defines them, put on a stream timeline
whose origin is not a whole second (as RTP and container timelines are not). The decoder's
rule is never to guess: every test checks that no marker gets a wrong identity, only the
right one or None.
"""

from __future__ import annotations

import numpy as np
import pytest

from qoe.signal.audio import IDENTITY_MODULUS, identity_delay
from qoe.signal.identity import IDENTITY_TOLERANCE_SECONDS, AudioMarker, identify_markers

ORIGIN = 37.123  # stream time of sender second 0


def signal(seconds: range, origin: float = ORIGIN) -> list[float]:
    """Marker and identity onsets of ``seconds``, on the stream timeline."""
    return [at + origin for s in seconds for at in (s, s + identity_delay(s))]


def marker(second: int, identity: int | None = -1, origin: float = ORIGIN) -> AudioMarker:
    return AudioMarker(second + origin, second % IDENTITY_MODULUS if identity == -1 else identity)


def assert_markers(found: list[AudioMarker], expected: list[AudioMarker]) -> None:
    assert [m.identity for m in found] == [m.identity for m in expected]
    assert [m.at for m in found] == pytest.approx([m.at for m in expected], abs=1e-9)


def test_clean_signal_names_every_second_through_the_wrap() -> None:
    seconds = range(10, 50)  # 40 s: identities 10..15, 0..15, 0..15, 0..1
    onsets = signal(seconds)
    found = identify_markers(onsets)
    assert_markers(found, [marker(s) for s in seconds])
    assert [m.identity for m in found][5:8] == [15, 0, 1]
    assert identify_markers(onsets[::-1]) == found  # order of the input does not matter


def test_one_identity_burst_missing() -> None:
    onsets = signal(range(100, 108))
    del onsets[2 * 3 + 1]  # the burst of second 103
    found = identify_markers(onsets)
    # Second 103 is still a marker (it keeps the 1 s rhythm), but says nothing of itself.
    assert_markers(found, [marker(s, None if s == 103 else -1) for s in range(100, 108)])


def test_one_marker_missing_leaves_its_burst_out() -> None:
    onsets = signal(range(100, 108))
    del onsets[2 * 3]  # the marker of second 103: its burst alone is no marker
    assert_markers(identify_markers(onsets), [marker(s) for s in range(100, 108) if s != 103])


def test_stray_onset_before_a_marker_is_not_taken_for_one() -> None:
    # 0.264 s before the marker of 103 is exactly on the grid (identity 4 by its gap), so the
    # stray reads like a marker followed by its burst; it keeps no 1 s rhythm, so it is left
    # out and 103 keeps its own identity.
    onsets = [*signal(range(100, 108)), 103 + ORIGIN - identity_delay(4)]
    assert_markers(identify_markers(onsets), [marker(s) for s in range(100, 108)])


def test_stray_onset_in_a_markers_window_makes_it_unidentified() -> None:
    # Two onsets in the window of 104 (its burst at 0.328 s and a stray at 0.232 s, both on
    # the grid): which is the burst cannot be known, so 104 gets no identity.
    onsets = [*signal(range(100, 108)), 104 + ORIGIN + identity_delay(2)]
    assert_markers(identify_markers(onsets), [marker(s, None if s == 104 else -1) for s in range(100, 108)])


@pytest.mark.parametrize(
    ("shift", "identified"), [(0.002, True), (-0.0025, True), (0.005, False), (0.008, False)]
)
def test_off_grid_gaps_are_unidentified(shift: float, identified: bool) -> None:
    assert IDENTITY_TOLERANCE_SECONDS == 0.003
    onsets = signal(range(100, 108))
    onsets[2 * 5 + 1] += shift  # the burst of second 105
    expected = [marker(s, -1 if identified or s != 105 else None) for s in range(100, 108)]
    assert_markers(identify_markers(onsets), expected)


def test_a_burst_a_whole_step_off_is_not_confirmed() -> None:
    # On the grid, but one step late: it reads as 106, which its neighbours contradict.
    onsets = signal(range(100, 108))
    onsets[2 * 5 + 1] += 0.016  # the burst of second 105
    assert_markers(identify_markers(onsets), [marker(s, None if s == 105 else -1) for s in range(100, 108)])


def test_a_lone_marker_and_burst_cannot_confirm_itself() -> None:
    found = identify_markers(signal(range(100, 101)))
    assert_markers(found, [marker(100, None)])


def test_a_signal_without_identity_bursts_still_counts_its_markers() -> None:
    onsets = [s + ORIGIN for s in range(100, 106)]
    assert_markers(identify_markers(onsets), [marker(s, None) for s in range(100, 106)])
    assert identify_markers([]) == []


def test_tolerates_jitter_and_never_guesses_among_losses_and_strays() -> None:
    """Onsets jittered by up to 0.5 ms (FLV timestamps), 10 % of them lost, and a stray onset
    every 2 s on average, anywhere: whatever is identified names its second rightly, and most
    markers still are identified. (A stray within the tolerance of a lost marker stands in
    for it, so a marker's time is only held to the tolerance.) The detector itself reports no
    onsets in noise, so real streams have far fewer strays than this."""
    rng = np.random.default_rng(7)
    seconds = range(500, 620)
    right = wrong = 0
    for _ in range(20):
        onsets = np.array(signal(seconds)) + rng.uniform(-0.0005, 0.0005, 2 * len(seconds))
        onsets = onsets[rng.random(onsets.size) > 0.1]
        strays = rng.uniform(ORIGIN + 500, ORIGIN + 620, len(seconds) // 2)
        for m in identify_markers(np.concatenate([onsets, strays])):
            if m.identity is None:
                continue
            second = round(m.at - ORIGIN)
            near = abs(m.at - ORIGIN - second) <= IDENTITY_TOLERANCE_SECONDS + 0.0005
            if second in seconds and near and m.identity == second % IDENTITY_MODULUS:
                right += 1
            else:
                wrong += 1
    assert wrong == 0
    assert right > 0.6 * 20 * len(seconds)  # measured: 71 %


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="1-D"):
        identify_markers(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        identify_markers([1.0, float("nan")])
    with pytest.raises(ValueError, match="tolerance"):
        identify_markers([1.0], tolerance=0.008)
