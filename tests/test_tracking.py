"""The one place cells are counted (edge.tracking.CellTracker): each cell once, its label decided once by the track
rule (mean ood over the scope threshold -> other, else mean P(all) against the threshold), read by stream, the
station and the report."""

import numpy as np
import pytest

from leuk_edge.edge.tracking import Cell, CellTracker, TrackInfo, track_label


def test_tracker_counts_a_drifting_cell_once():
    tracker = CellTracker(threshold=0.5)
    for index in (0, 1, 2, 6, 7, 12):  # frames dropped in between: the predicted position bridges the gaps
        dx = 9 * index
        tracker.update([Cell((100 + dx, 50, 80, 80), "all", 0.9), Cell((400 + dx, 300, 60, 60), "hem", 0.2)], index)
    assert tracker.counts() == {"all": 1, "hem": 1, "other": 0}
    tracker.update([Cell((900, 600, 70, 70), "all", 0.7)], 13)  # a new cell entering
    assert tracker.counts() == {"all": 2, "hem": 1, "other": 0}


def test_tracker_lets_finished_tracks_go_and_keeps_their_counts():
    tracker = CellTracker(threshold=0.5, max_missed=2)
    for index in range(3):  # a blast (mean P 0.6) and a normal cell (mean P 0.45) drift by ...
        tracker.update([Cell((100 + 5 * index, 50, 80, 80), "all", (0.9, 0.3, 0.6)[index]),
                        Cell((400, 300, 60, 60), "hem", (0.4, 0.6, 0.35)[index])], index)
    assert len(tracker.tracks) == 2 and tracker.counts() == {"all": 1, "hem": 1, "other": 0}
    for index in range(3, 6):  # ... and are gone: missed 3 > max_missed times, their tracks are dropped
        tracker.update([], index)
    assert tracker.tracks == {} and tracker.counts() == {"all": 1, "hem": 1, "other": 0}
    tracker.update([Cell((100, 50, 80, 80), "hem", 0.1)], 6)  # the same place again: a new cell
    assert tracker.counts() == {"all": 1, "hem": 2, "other": 0}


def test_track_rule_is_the_mean_not_a_vote_of_the_sightings():
    # ood 3.3, 3.3, 1.2 against 3.0: two of three sightings were labelled other, the mean 2.6 is in scope
    assert track_label(0.7, (3.3 + 3.3 + 1.2) / 3, 0.5, 3.0) == "all"
    assert track_label(0.7, 3.01, 0.5, 3.0) == "other" and track_label(0.2, 3.01, 0.5, 3.0) == "other"
    assert track_label(0.2, 9.0, 0.5, None) == "hem"  # no gate in use: never other
    tracker = CellTracker(threshold=0.5, ood_threshold=3.0)
    for index, (p, ood) in enumerate([(0.9, 3.3), (0.8, 3.3), (0.4, 1.2)]):
        cells = [Cell((100 + 4 * index, 50, 80, 80), "other" if ood > 3 else "all", p, ood),
                 Cell((400, 300, 60, 60), "hem", 0.2, 4.0 + index)]  # always out of scope: other
        tracker.update(cells, index)
    a, b = (tracker.get(k) for k in (0, 1))
    assert (a.label, b.label) == ("all", "other")
    assert a.probability == pytest.approx(0.7) and a.ood == pytest.approx((3.3 + 3.3 + 1.2) / 3)
    assert cells[0].track_label == "all" and cells[1].track_label == "other"  # the events carry the decision
    assert tracker.counts() == {"all": 1, "hem": 0, "other": 1}


def test_reads_and_the_ended_notification():
    heard: list[TrackInfo] = []
    tracker = CellTracker(threshold=0.5, ood_threshold=3.0, max_missed=1)
    tracker.on_ended(heard.append)
    for index in (4, 5, 6):
        tracker.update([Cell((100, 50, 80, 80), "all", 0.8, 1.0), Cell((500, 50, 80, 80), "hem", 0.1, 1.0)]
                       if index < 6 else [Cell((100, 50, 80, 80), "all", 0.6, 2.0)], index)
    live = tracker.get(0)
    assert (live.sightings, live.first_frame, live.last_frame, live.ended) == (3, 4, 6, False)
    assert live.probability == pytest.approx((0.8 + 0.8 + 0.6) / 3) and live.ood == pytest.approx(4 / 3)
    assert heard == []  # track 1 missed once: not over yet
    tracker.update([Cell((100, 50, 80, 80), "all", 0.6, 2.0)], 7)
    assert [(t.id, t.label, t.sightings, t.first_frame, t.last_frame, t.ended) for t in heard] == \
        [(1, "hem", 2, 4, 5, True)]
    assert tracker.get(1) is None and [t.id for t in tracker.active()] == [0]
    assert tracker.finish()[0].id == 0 and [t.id for t in heard] == [1, 0]  # the run's end ends the rest
    assert tracker.counts() == {"all": 1, "hem": 1, "other": 0} and tracker.active() == []


def test_cells_in_events_carry_the_track_and_its_label():
    tracker = CellTracker(threshold=0.5)
    cells = [Cell((10, 10, 40, 40), "all", 0.91234)]
    tracker.update(cells, 0)
    assert cells[0].to_event() == {"box": [10, 10, 40, 40], "label": "all", "probability": 0.9123, "track": 0,
                                   "track_label": "all"}
    scoped = Cell((10, 10, 40, 40), "other", 0.5, 7.123456)
    assert list(scoped.to_event()) == ["box", "label", "probability", "ood"] and scoped.to_event()["ood"] == 7.1235
