"""GAN ensembles (Slim 2020, Sec. 5): |G| runs trained in sequence, real-sample reweighting, one sampler for all.

Member i is a core ``Run`` of the configured method with ``train.seed + i``. Before member i + 1 starts, Algorithm 1
(``reweighting``) weighs every real training image by its feature distance to the previous members' samples of its
class, in the metrics' feature space (the evaluator's extractor: the annotator by default); the weights become
member i + 1's sampling probabilities (Sec. 5.2). ``reweighting: none`` is the paper's baseline: independent seeds,
uniform sampling. ``EnsembleGenerator`` draws a member per batch, so the evaluator and CAS score the ensemble
exactly like a single generator. Given a ``MemberCache``, a member that another trial (or run) already trained from the
same inputs is loaded instead of trained (``ensemble.reuse_members``; imbgan_core.ensemble.member_cache).
"""
from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from imbgan_core.assets import Assets, prepare_assets
from imbgan_core.config import ConfigError, RunConfig
from imbgan_core.data.types import ImageDataset
from imbgan_core.files import atomic_write_text
from imbgan_core.ensemble.member_cache import MemberCache, ignored_keys, member_key
from imbgan_core.ensemble.reweighting import ClassWeightStats, Reweighting, algorithm1, sampling_probabilities
from imbgan_core.metrics.evaluator import Evaluator
from imbgan_core.metrics.features import extract
from imbgan_core.training import (CHECKPOINT_FORMAT, SAMPLE_SEED_OFFSET, CheckpointError, DivergedError, Run, config_differences,
                                  resolve_device, run_config_problems)
from imbgan_core.viz import save_sample_grid, to_uint8

STATE_FILE = "ensemble.json"
STATE_FORMAT = 1  # ensemble.json; steps_trained / members_reused were added later and default to "all trained"
WEIGHTS_FILE = "sample_weights.pt"
STATS_FILE = "weight_stats.json"


class EnsembleGenerator:
    """``generate(labels, **kw)`` for an ensemble, usable wherever a single generator's ``generate`` is.

    Sec. 5.1 draws "a generator from G for each batch" (baseline) or with weights (e.g. 3/4, 1/4, "weighted
    conditioned GANs"). Labels are shuffled before being cut into batches of ``batch_size``, so a class-sorted
    request (as an evaluator makes) still mixes members within every class; outputs come back in the caller's
    order. Draws use the sampler's own seeded generator; a single member is called unchanged.
    """

    def __init__(self, members: Sequence[Callable], weights: Sequence[float] | None = None, seed: int = 0,
                 batch_size: int = 64):
        if not members:
            raise ValueError("EnsembleGenerator needs at least one member")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(f"ensemble.generator_weights: {len(weights)} weights for {len(members)} members")
        w = torch.tensor(weights, dtype=torch.float64)
        if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"ensemble.generator_weights: need weights >= 0 with a positive sum, got {weights}")
        self.members, self.weights, self.batch_size = list(members), w / w.sum(), batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](labels, **kwargs)
        order = torch.randperm(len(labels), generator=self.gen)
        chunks = []
        for start in range(0, len(labels), self.batch_size):
            member = int(torch.multinomial(self.weights, 1, generator=self.gen))
            chunks.append(self.members[member](labels[order[start:start + self.batch_size].to(labels.device)],
                                               **kwargs))
        out = torch.cat(chunks)
        result = torch.empty_like(out)
        result[order.to(out.device)] = out
        return result


def member_config(cfg: RunConfig, index: int) -> RunConfig:
    """Member ``index`` trains the same run config with seed ``train.seed + index`` (independent seeds, Sec. 5.1)."""
    return cfg.replace({"train.seed": cfg.train.seed + index})


def member_generate(run: Run, latent_seed: int | None = None) -> Callable:
    """The member's sampling function, latents seeded exactly as ``Run.evaluate`` seeds them (or, for a
    re-evaluation, from ``latent_seed`` + the member's seed offset)."""
    offset = run.cfg.train.seed + SAMPLE_SEED_OFFSET
    gen = torch.Generator().manual_seed(offset if latent_seed is None else latent_seed + run.cfg.train.seed)
    return lambda labels, **kw: run.generate(labels, gen, **kw)


def reweight(previous: Sequence[Callable], train: ImageDataset, extractor, method: str,
             samples_per_class: int) -> tuple[Reweighting, torch.Tensor]:
    """Algorithm 1 in the metrics' feature space (``extractor``, e.g. the annotator) against ``samples_per_class``
    images per class from every previous member (pooled D_G), then the next member's sampling probabilities."""
    labels = torch.arange(train.num_classes).repeat_interleave(samples_per_class)
    with torch.no_grad():
        fake = torch.cat([extract(extractor, to_uint8(generate(labels)))[0] for generate in previous])
    real = extract(extractor, train.images)[0]
    result = algorithm1(real, train.labels, fake, labels.repeat(len(previous)), train.num_classes, method)
    return result, sampling_probabilities(result.weights, train.labels, train.num_classes)


@dataclass
class Member:
    """A trained (or training) member, with the Algorithm 1 output its sampler used (None: uniform sampling);
    ``reused``: loaded from the member cache, trained by another trial."""

    run: Run
    reweighting: Reweighting | None = None
    probabilities: torch.Tensor | None = None
    reused: bool = False


class Ensemble:
    """|G| = ``ensemble.size`` runs trained one after another; the step counter runs over the whole ensemble.

    ``steps_done`` counts a reused member's steps (it is where the ensemble stands); ``steps_trained`` counts only the
    steps this ensemble trained itself (its compute)."""

    def __init__(self, cfg: RunConfig, assets: Assets | None = None, cache_dir=None, device=None,
                 member_cache: MemberCache | None = None):
        problems = run_config_problems(cfg)
        if problems:  # before assets are prepared: bad input fails fast
            raise ConfigError(problems)
        self.cfg, self.cache_dir = cfg, cache_dir
        self.device = str(resolve_device(device if device is not None else cfg.train.device))
        self.assets = assets if assets is not None else prepare_assets(cfg, cache_dir, self.device)
        self.members: list[Member] = []
        self.member_cache = member_cache if cfg.ensemble.reuse_members else None
        self.steps_trained = 0

    @property
    def total_steps(self) -> int:
        return self.cfg.ensemble.size * self.cfg.train.steps

    @property
    def steps_done(self) -> int:
        return sum(m.run.steps_done for m in self.members)

    @property
    def members_reused(self) -> int:
        return sum(m.reused for m in self.members)

    def evaluator(self):
        """The assets' prepared evaluator (built once here when the assets came without one)."""
        if self.assets.evaluator_state is None:
            evaluator = Evaluator(self.assets.data, self.cfg.eval, self.assets.annotator, self.cache_dir, self.device,
                                  conditional=self.cfg.model.g_conditional)
            self.assets.evaluator_state = evaluator.prepare()
        return self.assets.evaluator_state

    def _start_member(self) -> Member:
        """The next member: loaded from the member cache when another trial trained it, else a fresh Run."""
        index = len(self.members)
        if self.member_cache is not None:
            found = self.member_cache.claim_or_find(self._member_key(index), f"ensemble member {index}")
            if found is not None:
                try:
                    member = self._load_member(index, found, ignore=ignored_keys(self.cfg, index))
                except CheckpointError as exc:  # e.g. an entry of another imbgan version: train it here instead
                    warnings.warn(f"ensemble member {index}: not reusing {found} ({exc}); training it", stacklevel=2)
                else:
                    member.reused = True
                    return member
        reweighting = probabilities = None
        if index > 0 and self.cfg.ensemble.reweighting != "none":
            previous = [member_generate(m.run) for m in self.members]
            reweighting, probabilities = reweight(previous, self.assets.data.train, self.evaluator().extractor,
                                                  self.cfg.ensemble.reweighting, self.cfg.ensemble.samples_per_class)
        return self._add_member(index, reweighting, probabilities)

    def _add_member(self, index: int, reweighting, probabilities) -> Member:
        run = Run(member_config(self.cfg, index), self.assets, self.cache_dir, self.device,
                  sample_weights=probabilities)
        member = Member(run, reweighting, probabilities)
        self.members.append(member)
        return member

    def _member_key(self, index: int) -> dict:
        return member_key(self.cfg, index, self.device, CHECKPOINT_FORMAT)

    def step(self) -> dict[str, float]:
        """One generator step of the current member, starting the next member when the current one is done.

        A next member found in the member cache is loaded whole instead: nothing trains, and the logs are empty."""
        if self.steps_done >= self.total_steps:
            raise RuntimeError(f"the ensemble has trained all {self.cfg.ensemble.size} members")
        if not self.members or self.members[-1].run.steps_done >= self.cfg.train.steps:
            if self._start_member().reused:
                return {}
        member = self.members[-1]
        try:
            logs = member.run.step()
        except DivergedError as exc:  # re-raised with the ensemble-wide step, the counter the trainable reports
            raise DivergedError(self.steps_done + 1, exc.loss_name, exc.value) from exc
        self.steps_trained += 1
        if self.member_cache is not None and member.run.steps_done >= self.cfg.train.steps:
            self.member_cache.publish(self._member_key(len(self.members) - 1),
                                      lambda folder: self._save_member(member, folder))
        return logs

    def train(self, n_steps: int) -> dict[str, float]:
        """Up to ``n_steps`` steps; stops early at a reused member's end, so the caller evaluates every member."""
        logs: dict[str, float] = {}
        for _ in range(n_steps):
            logs = self.step()
            if self.members[-1].reused:
                break
        return logs

    def close(self) -> None:
        """Release the member cache's claims (a trial that ends mid-member: ASHA stopped it, or an error)."""
        if self.member_cache is not None:
            self.member_cache.release()

    # ------------------------------------------------------------------------------------------------ sampling
    def generator(self, latent_seed: int | None = None) -> EnsembleGenerator:
        """Every member so far (the current one included), weighted by ``ensemble.generator_weights``; seeded the
        same at every call so evaluations are comparable. A member draw covers one CAS batch (Sec. 5.1).
        Members so far whose weights are all zero (e.g. [0, 1] while member 0 trains) are sampled uniformly."""
        weights = (self.cfg.ensemble.generator_weights or [])[:len(self.members)]
        weights = weights if sum(weights) > 0 else None
        return EnsembleGenerator([member_generate(m.run, latent_seed) for m in self.members], weights,
                                 seed=self.cfg.train.seed if latent_seed is None else latent_seed,
                                 batch_size=self.cfg.eval.cas.batch_size)

    def evaluate(self, latent_seed: int | None = None):
        """Every metric of ``cfg.eval`` (CAS included when listed) on the ensemble so far (``latent_seed``: see
        ``Run.evaluate``)."""
        return self.evaluator().evaluate(self.generator(latent_seed), conditional=self.cfg.model.g_conditional)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generator()(torch.as_tensor(labels, dtype=torch.long)))

    def save_sample_grid(self, path, per_class: int = 8) -> Path:
        labels = torch.arange(self.assets.data.num_classes).repeat_interleave(per_class)
        return save_sample_grid(self.sample(labels), self.assets.data.class_names, per_class, path)

    def write_weight_stats_csv(self, path) -> Path:
        """member, class, count, mu_k, sigma_k, zero share: the per-class statistics of every reweighted member."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["member", "class", "count", "mu", "sigma", "zero_share"])
            for i, member in enumerate(self.members):
                for k, s in enumerate(member.reweighting.stats if member.reweighting else []):
                    writer.writerow([i, self.assets.data.class_names[k], s.count, s.mu, s.sigma, s.zero_share])
        return path

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save(self, directory) -> Path:
        """``member_<i>/``: the Run checkpoint (G, D, EMA, optimisers, RNG) plus, for reweighted members, the
        sample weights (raw, transformed, probabilities) and per-class statistics; ``ensemble.json`` last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, member in enumerate(self.members):
            self._save_member(member, directory / f"member_{i}")
        state = {"format": STATE_FORMAT, "config": self.cfg.to_dict(), "members": len(self.members),
                 "steps_done": self.steps_done, "steps_trained": self.steps_trained,
                 "reused": [m.reused for m in self.members]}
        return atomic_write_text(directory / STATE_FILE, json.dumps(state, indent=1))

    @staticmethod
    def _save_member(member: Member, folder: Path) -> None:
        """The Run checkpoint plus, for a reweighted member, its sample weights and per-class statistics."""
        member.run.save(folder)
        if member.reweighting is not None:
            r = member.reweighting
            torch.save({"raw": r.raw, "weights": r.weights, "probabilities": member.probabilities},
                       folder / WEIGHTS_FILE)
            (Path(folder) / STATS_FILE).write_text(json.dumps([s.to_dict() for s in r.stats], indent=1))

    def load(self, directory) -> None:
        """Rebuild every saved member (finished ones and the one in progress) exactly; this must be a fresh Ensemble.

        All or nothing: an unreadable member leaves the ensemble fresh and raises ``CheckpointError``, so the caller
        can try an older checkpoint (trainables.trial.restore)."""
        directory = Path(directory)
        path = directory / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: no ensemble state file")
        if self.members:
            raise CheckpointError("Ensemble.load needs a fresh ensemble (members were already trained)")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ensemble state ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path}: not an imbgan ensemble state of format {STATE_FORMAT}")
        differences = config_differences(state["config"], self.cfg.to_dict())
        if differences:
            raise CheckpointError(f"{path}: ensemble config differs from this one in " + ", ".join(differences))
        try:
            reused = state.get("reused") or [False] * int(state["members"])
            for i in range(int(state["members"])):
                self._load_member(i, directory / f"member_{i}").reused = bool(reused[i])
            self.steps_trained = int(state.get("steps_trained", state["steps_done"]))
        except CheckpointError:
            self.members = []
            raise
        except Exception as exc:  # a truncated weights file or stats table: unreadable, like a bad Run checkpoint
            self.members = []
            raise CheckpointError(f"{directory}: unreadable ensemble member ({type(exc).__name__}: {exc})") from None

    def _load_member(self, index: int, folder: Path, ignore=()) -> Member:
        reweighting = probabilities = None
        if (folder / WEIGHTS_FILE).is_file():
            saved = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            stats = [ClassWeightStats(**s) for s in json.loads((folder / STATS_FILE).read_text())]
            reweighting = Reweighting(saved["raw"], saved["weights"], stats)
            probabilities = saved["probabilities"]
        member = self._add_member(index, reweighting, probabilities)
        try:
            member.run.load(folder, ignore=ignore)
        except BaseException:
            self.members.pop()
            raise
        return member
