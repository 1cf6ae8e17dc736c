"""One GAN training run built from a typed ``RunConfig``: step, evaluate, sample, save / load with exact resume.

Randomness lives in explicit streams so that ``save`` + ``load`` reproduces an uninterrupted run bit for bit on
the CPU: the real-batch sampler (``sampling.BatchSampler``), ``noise`` (latents, fake classes, method draws) and
``augment`` (DiffAugment). Network initialisation uses ``train.seed`` inside a forked global RNG, so building a
Run never disturbs the caller's RNG; evaluation and sampling use their own freshly seeded generators.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .assets import Assets, prepare_assets
from .augment import DiffAugment, parse_policy
from .config import ConfigError, RunConfig, flatten
from .files import atomic_write
from .methods import build_method, config_problems
from .metrics.evaluator import Evaluator
from .metrics.features import extract
from .sampling import BatchSampler
from .viz import save_sample_grid, to_uint8

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
SAMPLE_POOL = 4  # an unconditional G's sample grid sorts SAMPLE_POOL x the grid's images by annotator label
NOISE_SEED_OFFSET, AUGMENT_SEED_OFFSET, SAMPLE_SEED_OFFSET, STANDING_SEED_OFFSET = 1, 2, 3, 4  # streams
STANDING_STATS_BATCHES = 16  # generator forwards that re-estimate the EMA generator's BatchNorm statistics
SAMPLE_CHUNK = 256  # images per generator forward when sampling


class DivergedError(RuntimeError):
    """A loss became NaN or infinite; ``step`` is the 1-based generator step that produced it."""

    def __init__(self, step: int, loss_name: str, value: float):
        self.step, self.loss_name, self.value = step, loss_name, value
        super().__init__(f"training diverged at step {step}: loss {loss_name!r} is {value}")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or belongs to a different run configuration."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else must name an available device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError([f"train.device: {name!r} is not a device (auto | cpu | cuda | cuda:N)"]) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError([f"train.device: {name!r} requested but CUDA is not available"])
    return device


def run_config_problems(cfg: RunConfig) -> list[str]:
    """Everything the training loop can reject before data is loaded (dotted keys)."""
    problems = config_problems(cfg)
    try:
        parse_policy(cfg.train.diffaugment)
    except ValueError as exc:
        problems.append(str(exc))
    try:
        resolve_device(cfg.train.device)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems


def truncated_normal(shape: tuple[int, ...], psi: float | None, gen: torch.Generator) -> torch.Tensor:
    """N(0, I) latents; with ``psi``, entries outside [-psi, psi] are redrawn (BigGAN's truncation trick, as used
    by Slim 2020 Sec. 3.1). Without ``psi`` the draws are exactly ``torch.randn``'s."""
    z = torch.randn(shape, generator=gen)
    if psi is not None:
        outside = z.abs() > psi
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
            outside = z.abs() > psi
    return z


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters; buffers (BN statistics, SN vectors) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def standing_statistics(net: nn.Module, z_dim: int, num_classes: int, batch_size: int, seed: int) -> None:
    """Re-estimate every BatchNorm's running statistics for ``net``'s own weights (BigGAN's "standing
    statistics", Brock et al. 2019): the EMA generator's averaged weights do not match the running statistics
    copied from the trained generator, and sampling with the mismatch gives off-class images early in training."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    gen = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    was_training = net.training
    net.train()
    try:
        for _ in range(STANDING_STATS_BATCHES):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            net(z, torch.randint(0, num_classes, (batch_size,), generator=gen).to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.train(was_training)


class Run:
    """A GAN, its optimisers, EMA generator, method state, data sampler and RNG streams."""

    def __init__(self, cfg: RunConfig, assets: Assets | None = None, cache_dir=None, device=None,
                 sample_weights: torch.Tensor | None = None):
        """``sample_weights``: optional per-training-image sampling weights (ensemble members, Slim 2020 Sec. 5.2)."""
        problems = run_config_problems(cfg)
        if problems:
            raise ConfigError(problems)
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.device = resolve_device(device if device is not None else cfg.train.device)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        if cfg.train.amp and not self.amp:
            warnings.warn("train.amp is for CUDA only; running in float32 on the CPU", stacklevel=2)
        self.assets = assets if assets is not None else prepare_assets(cfg, cache_dir, str(self.device))
        data = self.assets.data
        self.num_classes = data.num_classes
        self.real_images = data.train.as_float().to(self.device)
        self.real_labels = data.train.labels.to(self.device)
        _, channels, resolution, _ = data.train.images.shape

        self.method = build_method(cfg, self.assets, self.num_classes, self.device)
        self.loss = self.method.default_loss if cfg.train.loss == "auto" else cfg.train.loss
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            self.G = self.method.build_generator(cfg, resolution, channels).to(self.device)
            self.D = self.method.build_discriminator(cfg, resolution, channels).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        t = cfg.train
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.augment = DiffAugment(t.diffaugment)
        self.sampler = BatchSampler(data.train.labels, t.batch_size, t.seed,
                                    self.method.class_weights(data.train.counts()), sample_weights)
        self.noise_gen = torch.Generator().manual_seed(t.seed + NOISE_SEED_OFFSET)
        self.augment_gen = torch.Generator().manual_seed(t.seed + AUGMENT_SEED_OFFSET)
        self.steps_done = 0
        self._standing_step: int | None = None  # steps_done when G_ema's standing statistics were computed
        self._evaluator = None

    # ---------------------------------------------------------------------------------------------- training
    def _autocast(self):
        return torch.autocast("cuda", enabled=True) if self.amp else contextlib.nullcontext()

    @property
    def total_steps(self) -> int:
        """The run's budget (``train.steps``); an ``Ensemble`` has the same property over all its members."""
        return self.cfg.train.steps

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.model.z_dim, generator=self.noise_gen).to(self.device)

    def _d_labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels if self.cfg.model.d_conditional else None

    def _check(self, name: str, value: torch.Tensor) -> float:
        number = float(value.detach())
        if not torch.isfinite(value.detach()).all():
            raise DivergedError(self.steps_done + 1, name, number)
        return number

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.sampler.next()
        dev_index = index.to(self.device)
        return self.method.real_batch(self.real_images[dev_index], self.real_labels[dev_index], index,
                                      self.noise_gen)

    def _discriminate(self, x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor,
                      y_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D logits of augmented real and fake batches in one forward (D has no batch statistics, so this
        equals two forwards and halves the per-layer overhead)."""
        x = torch.cat([self.augment(x_real, self.augment_gen), self.augment(x_fake, self.augment_gen)])
        labels = None
        if self.cfg.model.d_conditional:
            if y_real.is_floating_point():  # probability vectors: fakes join as one-hot rows
                y_fake = torch.nn.functional.one_hot(y_fake, self.num_classes).to(y_real.dtype)
            labels = torch.cat([y_real, y_fake])
        logits = self.D(x, labels).float()
        return logits[: x_real.shape[0]], logits[x_real.shape[0]:]

    def _discriminator_step(self) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
        n = self.cfg.train.batch_size
        x_real, y_real = self._real_batch()
        y_fake = self.method.fake_labels(n, self.noise_gen)
        with torch.no_grad(), self._autocast():
            x_fake = self.G(self._latents(n), y_fake).float()
        with self._autocast():
            d_real, d_fake = self._discriminate(x_real, y_real, x_fake, y_fake)
            loss = self.method.discriminator_loss(self.loss, d_real, d_fake, y_real, y_fake)
        value = self._check("loss_d", loss)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return value, (x_real, y_real)

    def _generator_step(self, last_real: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        n = self.cfg.train.batch_size
        self.D.requires_grad_(False)
        try:
            z, y_fake = self._latents(n), self.method.fake_labels(n, self.noise_gen)
            with self._autocast():
                x_fake = self.G(z, y_fake)
                d_real = None
                if self.loss == "relativistic":  # L_G compares fakes with the last real batch (CBGAN Eq. 3)
                    x_real, y_real = last_real
                    with torch.no_grad():  # no graph through the real half: only the fakes need gradients
                        d_real = self.D(self.augment(x_real, self.augment_gen), self._d_labels(y_real)).float()
                d_fake = self.D(self.augment(x_fake, self.augment_gen), self._d_labels(y_fake)).float()
                loss = self.method.generator_loss(self.loss, d_fake, d_real, y_fake)
                terms = self.method.generator_terms(self.G, z, y_fake, x_fake, self.noise_gen)
            logs = {"loss_g": self._check("loss_g", loss)}
            for name, term in terms.items():
                logs[name] = self._check(name, term)
            total = loss + sum(terms.values()) if terms else loss
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(total).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.D.requires_grad_(True)
        return logs

    def step(self) -> dict[str, float]:
        """One generator step after ``train.n_dis`` discriminator steps; returns the losses (loss_d averaged)."""
        self.G.train()
        self.D.train()
        d_losses = []
        for _ in range(self.cfg.train.n_dis):
            value, last_real = self._discriminator_step()
            d_losses.append(value)
        logs = {"loss_d": sum(d_losses) / len(d_losses), **self._generator_step(last_real)}
        self.steps_done += 1
        t = self.cfg.train
        update_ema(self.G_ema, self.G, t.ema_decay if self.steps_done > t.ema_start else 0.0)
        self.method.after_step(self.steps_done)
        return logs

    def train(self, n_steps: int) -> dict[str, float]:
        """``n_steps`` more steps; returns the losses of the last one."""
        logs: dict[str, float] = {}
        for _ in range(n_steps):
            logs = self.step()
        return logs

    # -------------------------------------------------------------------------------------------- sampling
    def _sampling_generator(self) -> nn.Module:
        """G, or the EMA generator with BatchNorm statistics of its own weights (computed once per step)."""
        if not self.cfg.eval.use_ema:
            return self.G
        if self._standing_step != self.steps_done:
            standing_statistics(self.G_ema, self.cfg.model.z_dim, self.num_classes, self.cfg.train.batch_size,
                                self.cfg.train.seed + STANDING_SEED_OFFSET)
            self._standing_step = self.steps_done
        return self.G_ema

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, gen: torch.Generator, truncation: float | None = None) -> torch.Tensor:
        """G output in [-1, 1] for class ``labels`` (eval mode, latents from ``gen``, truncated to |z| <= psi when
        ``truncation`` is given: CAS's psi), in chunks."""
        net = self._sampling_generator()
        was_training = net.training
        net.eval()
        try:
            outs = []
            for chunk in labels.split(SAMPLE_CHUNK):
                z = truncated_normal((chunk.shape[0], self.cfg.model.z_dim), truncation, gen).to(self.device)
                with self._autocast():
                    outs.append(net(z, chunk.to(self.device)).float().cpu())
            return torch.cat(outs) if outs else torch.empty(0)
        finally:
            net.train(was_training)

    def sample(self, labels: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """uint8 images N x C x H x W of the given classes; reproducible for a given ``seed``."""
        seed = self.cfg.train.seed + SAMPLE_SEED_OFFSET if seed is None else seed
        return to_uint8(self.generate(torch.as_tensor(labels, dtype=torch.long), torch.Generator().manual_seed(seed)))

    def save_sample_grid(self, path, per_class: int = 8) -> Path:
        """One row of ``per_class`` samples per class, labelled with the class name.

        An unconditional G ignores the labels it is given, so its rows would all hold the same mixture under class
        names that mean nothing: its samples are drawn from a pool of ``SAMPLE_POOL`` x as many and sorted into rows
        by the annotator's label (how its per-class metrics see them, docs/metrics.md); a class the annotator finds
        fewer than ``per_class`` times gets a short row, padded black."""
        labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        labeller = None if self.cfg.model.g_conditional else self._prepared_evaluator().labeller
        if labeller is None:
            return save_sample_grid(self.sample(labels), self.assets.data.class_names, per_class, path)
        pool = self.sample(labels.repeat(SAMPLE_POOL)).cpu()
        rows = annotator_rows(pool, extract(labeller, pool)[1].argmax(1).cpu(), self.num_classes, per_class)
        return save_sample_grid(rows, self.assets.data.class_names, per_class, path)

    def _prepared_evaluator(self):
        """The assets' prepared evaluator, or one built and prepared here (a run without sweep assets)."""
        if self._evaluator is None:
            self._evaluator = self.assets.evaluator_state
        if self._evaluator is None:
            self._evaluator = Evaluator(self.assets.data, self.cfg.eval, self.assets.annotator, self.cache_dir,
                                        str(self.device), conditional=self.cfg.model.g_conditional)
            self._evaluator.prepare()
        return self._evaluator

    def evaluate(self, latent_seed: int | None = None):
        """Metrics of ``cfg.eval`` on the (EMA) generator; latents seeded the same at every evaluation (another
        ``latent_seed``: the same generator re-evaluated, to measure evaluation noise)."""
        self._prepared_evaluator()
        seed = self.cfg.train.seed + SAMPLE_SEED_OFFSET if latent_seed is None else latent_seed
        gen = torch.Generator().manual_seed(seed)
        return self._evaluator.evaluate(lambda labels, **kw: self.generate(labels, gen, **kw),
                                        conditional=self.cfg.model.g_conditional)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "steps_done": self.steps_done,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
            "method": self.method.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": {"noise": self.noise_gen.get_state(), "augment": self.augment_gen.get_state()},
        }

    def close(self) -> None:
        """Nothing to release: the trial loop's hook for trainees that hold something (an Ensemble's member claims)."""

    def save(self, directory) -> Path:
        """Write ``checkpoint.pt`` into ``directory`` atomically (temporary file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return atomic_write(directory / CHECKPOINT_FILE, lambda tmp: torch.save(self.state_dict(), tmp))

    def load(self, directory, ignore: Sequence[str] = ()) -> None:
        """Restore everything ``save`` wrote; the stored config must equal this run's except ``train.steps`` and the
        dotted keys in ``ignore`` (an ensemble member loaded from another trial: imbgan_core.ensemble.member_cache)."""
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: no checkpoint file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, bad pickle, ...: all mean "unreadable"
            raise CheckpointError(f"{path}: unreadable or corrupt checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not an imbgan checkpoint of format {CHECKPOINT_FORMAT}")
        differences = config_differences(state["config"], self.cfg.to_dict(), ignore)
        if differences:
            raise CheckpointError(f"{path}: checkpoint config differs from this run's in "
                                  + ", ".join(differences))
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.method.load_state_dict(state["method"])
        self.sampler.load_state_dict(state["sampler"])
        self.noise_gen.set_state(state["rng"]["noise"])
        self.augment_gen.set_state(state["rng"]["augment"])
        self.steps_done = int(state["steps_done"])
        self._standing_step = None


def annotator_rows(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """``images`` regrouped class by class (``labels``: the annotator's), the first ``per_class`` of each class, a
    short class padded with black images: num_classes x per_class images for ``viz.save_sample_grid``."""
    out = torch.zeros((num_classes * per_class, *images.shape[1:]), dtype=images.dtype)
    for k in range(num_classes):
        mine = images[labels == k][:per_class]
        out[k * per_class:k * per_class + len(mine)] = mine
    return out


def config_differences(saved: dict, current: dict, ignore: Sequence[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two config dicts, ignoring ``train.steps`` (a resume may extend)
    and ``ignore``."""
    a, b = flatten(saved), flatten(current)
    skip = {"train.steps", *ignore}
    return sorted(f"{k} ({a.get(k)!r} != {b.get(k)!r})" for k in set(a) | set(b)
                  if k not in skip and a.get(k) != b.get(k))
