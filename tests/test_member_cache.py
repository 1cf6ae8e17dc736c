"""Ensemble members shared between trials (issue #16 item 6): a reused member is the member the trial would have
trained, bit for bit; only inputs that cannot change a member are ignored; concurrent trials train a member once;
a claim dies with its holder (SIGKILL) or its trial's end (SystemExit)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout

from imbgan_core.assets import Assets
from imbgan_core.ensemble.ensemble import Ensemble
from imbgan_core.ensemble.member_cache import MemberCache, member_key
from imbgan_core.training import CHECKPOINT_FORMAT
from test_ensemble import tiny_config

STEPS = 6  # test_ensemble.TINY: members of 6 steps, evaluated every 3


@pytest.fixture(scope="module")
def assets(digits_data, annotator):
    return Assets(data=digits_data, annotator=annotator)


def g_ema(ens: Ensemble, i: int) -> dict:
    return ens.members[i].run.G_ema.state_dict()


def train_all(ens: Ensemble) -> Ensemble:
    """Train to the budget as the trial loop does: ``train`` returns early at a reused member's end."""
    while ens.steps_done < ens.total_steps:
        ens.train(ens.total_steps - ens.steps_done)
    return ens


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_reused_member_is_the_member_it_would_have_trained(digits_cfg, assets, tmp_path):
    cache = MemberCache(tmp_path / "members", log=lambda m: None)
    first = Ensemble(tiny_config(digits_cfg, size=2, reweighting="A_mu", samples_per_class=5), assets, device="cpu",
                     member_cache=cache)
    first.train(first.total_steps)
    assert first.steps_trained == 2 * STEPS and first.members_reused == 0

    cfg = tiny_config(digits_cfg, size=3, reweighting="A_mu", samples_per_class=5)
    reusing = Ensemble(cfg, assets, device="cpu", member_cache=cache)
    assert reusing.train(100) == {} and reusing.steps_done == STEPS  # stops at the loaded member's end
    reusing.train(100)
    assert reusing.steps_done == 2 * STEPS and reusing.members_reused == 2
    reusing.train(reusing.total_steps - reusing.steps_done)
    assert reusing.steps_trained == STEPS and reusing.steps_done == 3 * STEPS  # only member 2 was trained

    alone = Ensemble(cfg, assets, device="cpu")  # no cache: trains all three members itself
    train_all(alone)
    for i in range(3):
        assert same_weights(g_ema(reusing, i), g_ema(alone, i)), f"member {i}"
    assert torch.equal(reusing.members[2].probabilities, alone.members[2].probabilities)
    assert reusing.evaluate().scalars == alone.evaluate().scalars


def test_only_inputs_that_cannot_change_a_member_are_ignored(digits_cfg, assets, tmp_path):
    cache = MemberCache(tmp_path / "members", log=lambda m: None)
    base = Ensemble(tiny_config(digits_cfg, size=2, reweighting="A_mu", samples_per_class=5), assets, device="cpu",
                    member_cache=cache)
    base.train(base.total_steps)
    other_weighting = Ensemble(tiny_config(digits_cfg, size=2, reweighting="B", samples_per_class=5,
                                           generator_weights=[0.75, 0.25]), assets, device="cpu", member_cache=cache)
    train_all(other_weighting)
    assert [m.reused for m in other_weighting.members] == [True, False]  # member 0 samples uniformly in both
    other_lr = Ensemble(tiny_config(digits_cfg, size=2, reweighting="A_mu", samples_per_class=5)
                        .replace({"train.lr_g": 1e-3}), assets, device="cpu", member_cache=cache)
    train_all(other_lr)
    assert other_lr.members_reused == 0 and other_lr.steps_trained == 2 * STEPS
    switched_off = Ensemble(tiny_config(digits_cfg, size=2, reweighting="A_mu", samples_per_class=5,
                                        reuse_members=False), assets, device="cpu", member_cache=cache)
    train_all(switched_off)
    assert switched_off.members_reused == 0


def test_reuse_counts_survive_a_checkpoint(digits_cfg, assets, tmp_path):
    cache = MemberCache(tmp_path / "members", log=lambda m: None)
    cfg = tiny_config(digits_cfg, size=2)
    Ensemble(cfg.replace({"ensemble.size": 1}), assets, device="cpu", member_cache=cache).train(STEPS)
    ens = Ensemble(cfg, assets, device="cpu", member_cache=cache)
    ens.train(100)
    ens.train(2)
    ens.save(tmp_path / "ckpt")
    resumed = Ensemble(ens.cfg, assets, device="cpu", member_cache=cache)
    resumed.load(tmp_path / "ckpt")
    assert (resumed.members_reused, resumed.steps_trained, resumed.steps_done) == (1, 2, STEPS + 2)


def test_a_claim_is_released_when_the_trial_ends(digits_cfg, tmp_path):
    cache = MemberCache(tmp_path / "members", log=lambda m: None)
    key = member_key(tiny_config(digits_cfg, size=2), 0, "cpu", CHECKPOINT_FORMAT)
    assert cache.claim_or_find(key, "member 0") is None  # nobody has it: this caller trains it and holds the claim
    other = FileLock(str(cache.folder(key)) + ".claim")
    with pytest.raises(Timeout):
        other.acquire(timeout=0)
    cache.release()  # Ensemble.close, in the trial loop's finally
    other.acquire(timeout=0)
    other.release()


WORKER = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)
    from imbgan_core.assets import Assets
    from imbgan_core.classifier import get_classifier
    from imbgan_core.config import RunConfig
    from imbgan_core.data import load_dataset
    from imbgan_core.ensemble.ensemble import Ensemble
    from imbgan_core.ensemble.member_cache import MemberCache
    sys.path.insert(0, "tests")
    from conftest import TEST_CLASSIFIER
    from test_ensemble import TINY

    base = {"name": "digits-lt-test", "dataset": {"source": "digits", "resolution": 16, "channels": 1,
            "imbalance": {"profile": "exponential", "ratio": 10}}, "classifier": dict(TEST_CLASSIFIER)}
    cfg = RunConfig.from_dict({**base, **TINY, "ensemble": {"size": int(sys.argv[2])},
                               "train": {**TINY["train"], "steps": int(sys.argv[3])}})
    data = load_dataset(cfg.dataset)
    assets = Assets(data=data, annotator=get_classifier(data, cfg.classifier, "annotator", log=lambda m: None))
    cache = MemberCache(sys.argv[1], log=lambda m: print(m, flush=True))
    if sys.argv[4] == "hold":  # take member 0's claim, then hang until killed
        from imbgan_core.ensemble.member_cache import member_key
        from imbgan_core.training import CHECKPOINT_FORMAT
        assert cache.claim_or_find(member_key(cfg, 0, "cpu", CHECKPOINT_FORMAT), "member 0") is None
        print("holding", flush=True)
        time.sleep(600)
    ens = Ensemble(cfg, assets, device="cpu", member_cache=cache)
    while ens.steps_done < ens.total_steps:
        ens.train(ens.total_steps - ens.steps_done)
    print(f"done trained={ens.steps_trained} reused={ens.members_reused}", flush=True)
""")


def start(tmp_path: Path, size: int, steps: int, mode: str = "train") -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "members"), str(size), str(steps), mode],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


def read_until(proc: subprocess.Popen, text: str) -> str:
    """Lines of ``proc``'s output up to the first that contains ``text`` (or its end)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def test_concurrent_trials_train_a_shared_member_once(tmp_path):
    steps = 60  # long enough that the second process starts while the first trains member 0
    a, b = start(tmp_path, 2, steps), start(tmp_path, 3, steps)
    outs = [finish(a), finish(b)]
    trained = sorted(int(o.split("trained=")[1].split()[0]) for o in outs)
    # together they trained members 0, 1 (shared) and member 2 of the size-3 ensemble once each
    assert trained in ([0, 3 * steps], [steps, 2 * steps]), outs
    assert any("another trial is training it; waiting" in o for o in outs), outs


def test_a_killed_claim_holder_does_not_block_the_others(tmp_path):
    holder = start(tmp_path, 2, STEPS, mode="hold")
    assert "holding" in read_until(holder, "holding")
    waiter = start(tmp_path, 1, STEPS)
    assert "waiting to reuse it" in read_until(waiter, "waiting")
    os.killpg(holder.pid, signal.SIGKILL)  # the OS drops the dead holder's lock
    holder.wait(timeout=30)
    assert f"done trained={STEPS} reused=0" in finish(waiter)
