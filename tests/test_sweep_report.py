"""The sweep-level pictures' numbers (issue #16): the anytime curve and the parallel-coordinates scaling."""
from trainables.sweep_report import _unit, anytime_curve


def test_anytime_curve_counts_steps_spent_in_report_order_and_keeps_the_best():
    histories = [
        {"trial_id": "a", "state": "completed", "reports": [(1.0, 20, 50.0), (3.0, 40, 30.0), (5.0, 60, 25.0)]},
        {"trial_id": "b", "state": "stopped_by_asha", "reports": [(2.0, 20, 40.0)]},
        {"trial_id": "c", "state": "completed", "reports": [(4.0, 20, 60.0), (6.0, 40, 20.0)]},
    ]
    assert anytime_curve(histories, "min") == [(20, 50.0), (40, 40.0), (60, 30.0), (80, 30.0), (100, 25.0),
                                               (120, 20.0)]
    assert anytime_curve(histories, "max")[-1] == (120, 60.0)
    resumed = [{"trial_id": "a", "state": "completed", "reports": [(1.0, 20, 5.0), (2.0, 20, 5.0), (3.0, 40, 4.0)]}]
    assert anytime_curve(resumed, "min")[-1] == (40, 4.0)  # a re-reported step after a restore costs nothing


def test_parallel_axes_scale_numbers_and_categories_to_the_unit_interval():
    assert _unit([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]
    assert _unit([7.0, 7.0]) == [0.5, 0.5]
    assert _unit(["B", "A_mu", "B"]) == [1.0, 0.0, 1.0]
