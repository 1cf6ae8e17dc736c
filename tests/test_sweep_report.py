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


def test_every_picture_draws_categorical_numeric_and_missing_values(tmp_path):
    """A categorical searched key (``ensemble.reweighting``) crashed the parallel-coordinates plot."""
    from trainables.spaces import Dist, Resources, Search, Space
    from trainables.sweep_report import plot_metric_vs_params, plot_parallel_coordinates

    space = Space(name="s", path="s.yaml", run={"train": {"steps": 60}, "ensemble": {"size": 1}},
                  params=[Dist("ensemble.reweighting", "choice", ("none", "B")),
                          Dist("train.lr_g", "loguniform", (1e-4, 1e-3))],
                  search=Search("intra_fid", "min", 3, "asha", 20, 3.0, "tpe", 0, 1),
                  resources=Resources(1.0, 0.0, None))
    rows = [{"trial_id": "a", "state": "completed", "config": {"ensemble.reweighting": "none", "train.lr_g": 2e-4},
             "metrics": {"intra_fid": 30.0}},
            {"trial_id": "b", "state": "stopped_by_asha", "config": {"ensemble.reweighting": "B", "train.lr_g": 5e-4},
             "metrics": {"intra_fid": 40.0}},
            {"trial_id": "c", "state": "error", "config": {"ensemble.reweighting": "B", "train.lr_g": 6e-4},
             "metrics": {}}]
    for draw, name in ((plot_parallel_coordinates, "pc.png"), (plot_metric_vs_params, "mp.png")):
        path = draw(rows, space, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
