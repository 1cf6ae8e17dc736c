"""GAN ensembles: Algorithm 1's weights reach the member's sampler, the ensemble sampler follows the generator
weights, an ensemble of one equals the single run, and save/load resumes exactly across members."""
import pytest
import torch

from imbgan_core.assets import Assets
from imbgan_core.ensemble.ensemble import Ensemble, EnsembleGenerator, member_config
from imbgan_core.sampling import BatchSampler
from imbgan_core.training import Run

TINY = {
    "method": {"name": "cgan"},
    "model": {"arch": "sndcgan", "width": 0.125, "z_dim": 16},
    "train": {"batch_size": 16, "steps": 6, "eval_every": 3, "diffaugment": ""},
    "eval": {"samples_per_class": 10, "metrics": ["intra_fid", "class_accuracy", "cas"],
             "cas": {"steps": 10, "batch_size": 16}},
}


def tiny_config(digits_cfg, **ensemble):
    from imbgan_core.config import RunConfig, apply_overrides

    data = apply_overrides(digits_cfg.to_dict(), {f"ensemble.{k}": v for k, v in ensemble.items()})
    return RunConfig.from_dict({**data, **TINY})


@pytest.fixture(scope="module")
def assets(digits_data, annotator):
    return Assets(data=digits_data, annotator=annotator)


@pytest.fixture(scope="module")
def a_mu_ensemble(digits_cfg, assets):
    """Two members, the second trained on A_mu weights (half of every class zeroed)."""
    ens = Ensemble(tiny_config(digits_cfg, size=2, reweighting="A_mu", samples_per_class=10), assets, device="cpu")
    ens.train(ens.total_steps)
    return ens


def draw_counts(sampler: BatchSampler, n_batches: int, n: int) -> torch.Tensor:
    return torch.bincount(torch.cat([sampler.next() for _ in range(n_batches)]), minlength=n).double()


def test_weights_reach_the_sampler(a_mu_ensemble):
    first, second = a_mu_ensemble.members
    assert first.probabilities is None and first.reweighting is None  # the first member samples uniformly
    probs = second.probabilities
    zeroed = second.reweighting.weights == 0
    assert 0.2 < float(zeroed.double().mean()) < 0.8
    counts = draw_counts(second.run.sampler, 1500, len(probs))
    freq = counts / counts.sum()
    assert counts[zeroed].sum() == 0  # zeroed samples are never drawn
    assert 0.5 * float((freq - probs).abs().sum()) < 0.1  # total variation to the weights
    uniform = torch.full_like(probs, 1.0 / len(probs))
    assert 0.5 * float((uniform - probs).abs().sum()) > 0.3  # ... and the weights are far from uniform


def test_sampler_follows_hand_made_weights():
    labels = torch.tensor([0] * 4 + [1] * 4)
    weights = torch.tensor([0.0, 0.0, 1.0, 3.0, 1.0, 1.0, 0.0, 2.0])
    counts = draw_counts(BatchSampler(labels, 16, seed=0, sample_weights=weights), 2000, 8)
    assert (counts / counts.sum()).tolist() == pytest.approx((weights / weights.sum()).tolist(), abs=0.01)
    with pytest.raises(ValueError, match="sample weights must be 8 values"):
        BatchSampler(labels, 16, seed=0, sample_weights=torch.ones(7))


def test_stats_and_weights_saved_and_resume_is_exact(a_mu_ensemble, digits_cfg, assets, tmp_path):
    a_mu_ensemble.save(tmp_path / "ckpt")
    saved = sorted(p.name for p in (tmp_path / "ckpt" / "member_1").iterdir())
    assert saved == ["checkpoint.pt", "sample_weights.pt", "weight_stats.json"]
    restored = Ensemble(a_mu_ensemble.cfg, assets, device="cpu")
    restored.load(tmp_path / "ckpt")
    assert restored.steps_done == a_mu_ensemble.steps_done == 12
    assert torch.equal(restored.members[1].probabilities, a_mu_ensemble.members[1].probabilities)
    labels = torch.arange(10).repeat(4)
    assert torch.equal(restored.sample(labels), a_mu_ensemble.sample(labels))
    rows = a_mu_ensemble.write_weight_stats_csv(tmp_path / "w.csv").read_text().splitlines()
    assert rows[0] == "member,class,count,mu,sigma,zero_share" and len(rows) == 1 + 10


def test_resume_in_the_middle_of_a_member(digits_cfg, assets, tmp_path):
    cfg = tiny_config(digits_cfg, size=2, reweighting="B", samples_per_class=5)
    ens = Ensemble(cfg, assets, device="cpu")
    ens.train(8)  # member 0 finished, member 1 at step 2
    ens.save(tmp_path)
    resumed = Ensemble(cfg, assets, device="cpu")
    resumed.load(tmp_path)
    assert resumed.train(4) == ens.train(4)
    assert resumed.steps_done == ens.total_steps
    with pytest.raises(RuntimeError, match="trained all 2 members"):
        ens.step()


def test_ensemble_sampler_respects_generator_weights():
    def member(j):
        # image value encodes (member, label) so both the draw and the caller's order can be checked
        return lambda labels: (labels.float() + 100 * j).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)

    sampler = EnsembleGenerator([member(0), member(1)], [0.75, 0.25], seed=0, batch_size=8)
    labels = torch.arange(10).repeat_interleave(80)  # class-sorted, as an evaluator asks
    out = sampler(labels)[:, 0, 0, 0]
    assert torch.equal(out % 100, labels.float())  # caller's order kept
    from_second = (out >= 100).double()
    assert float(from_second.mean()) == pytest.approx(0.25, abs=0.06)
    assert all(0 < float(from_second[labels == k].mean()) < 1 for k in range(10))  # members mix inside a class
    with pytest.raises(ValueError, match="generator_weights"):
        EnsembleGenerator([member(0)], [0.5, 0.5])


def test_members_get_consecutive_seeds(digits_cfg):
    cfg = tiny_config(digits_cfg, size=3)
    assert [member_config(cfg, i).train.seed for i in range(3)] == [cfg.train.seed + i for i in range(3)]


def test_ensemble_of_one_equals_the_single_run(digits_cfg, assets):
    cfg = tiny_config(digits_cfg, size=1)
    run = Run(cfg, assets, device="cpu")
    run.train(cfg.train.steps)
    ens = Ensemble(cfg, assets, device="cpu")
    ens.train(ens.total_steps)
    labels = torch.arange(10).repeat(3)
    assert torch.equal(ens.sample(labels), run.sample(labels))
    single, ensemble = run.evaluate().scalars, ens.evaluate().scalars
    assert single == ensemble and {"intra_fid", "class_accuracy", "cas"} <= set(single)


def test_bad_input_fails_before_work(digits_cfg, a_mu_ensemble, assets, tmp_path):
    from imbgan_core.config import ConfigError
    from imbgan_core.training import CheckpointError

    bad = tiny_config(digits_cfg, size=2).replace({"train.diffaugment": "sparkle"})
    with pytest.raises(ConfigError, match="diffaugment"):
        Ensemble(bad, assets=None, device="cpu")  # no assets are prepared for a config that cannot train
    a_mu_ensemble.save(tmp_path)
    other = Ensemble(tiny_config(digits_cfg, size=2, reweighting="C", samples_per_class=10), assets, device="cpu")
    with pytest.raises(CheckpointError, match="ensemble.reweighting"):
        other.load(tmp_path)
    with pytest.raises(CheckpointError, match="no ensemble state"):
        other.load(tmp_path / "missing")


def test_generator_weights_of_a_partial_ensemble(digits_cfg, a_mu_ensemble):
    ens = Ensemble(tiny_config(digits_cfg, size=2, generator_weights=[0.0, 1.0]), a_mu_ensemble.assets, device="cpu")
    ens.members = a_mu_ensemble.members[:1]  # while member 0 trains, its zero weight still leaves it sampled
    assert ens.generator().weights.tolist() == [1.0]
    ens.members = a_mu_ensemble.members
    assert ens.generator().weights.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("damaged", ["member_1/checkpoint.pt", "member_1/sample_weights.pt", "ensemble.json"])
def test_unreadable_checkpoint_leaves_the_ensemble_fresh_for_an_older_one(a_mu_ensemble, assets, tmp_path, damaged):
    """trainables.trial.restore falls back to an older checkpoint on CheckpointError: load must be all or nothing."""
    from imbgan_core.training import CheckpointError

    a_mu_ensemble.save(tmp_path / "new")
    a_mu_ensemble.save(tmp_path / "old")
    path = tmp_path / "new" / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a truncated copy
    restored = Ensemble(a_mu_ensemble.cfg, assets, device="cpu")
    with pytest.raises(CheckpointError, match="unreadable"):
        restored.load(tmp_path / "new")
    assert restored.members == [] and restored.steps_done == 0
    restored.load(tmp_path / "old")
    assert restored.steps_done == a_mu_ensemble.steps_done
