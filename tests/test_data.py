"""imbgan_core.data: imbalance profiles, groups, the digits / CIFAR / image-folder sources and the CLI."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from imbgan_core.cache import content_hash
from imbgan_core.config import ConfigError, DatasetConfig, GroupsConfig, ImbalanceConfig, RunConfig
from imbgan_core.data import describe, load_dataset
from imbgan_core.data.__main__ import main as cli_main
from imbgan_core.data.longtail import class_counts, class_groups, default_boundaries
from imbgan_core.data.sources import resize_images


def dataset_cfg(**overrides) -> DatasetConfig:
    """A validated DatasetConfig from nested overrides (the same path users take)."""
    return RunConfig.from_dict({"dataset": overrides}).dataset


# ---------------------------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, total", [(100, 12406), (10, 20431), (50, 13996), (1, 50000)])
def test_exponential_cifar10_totals(ratio, total):
    """docs/reference.md#lt-exponential: CIFAR-10-LT with n_max 5000 has 12,406 (rho 100) and 20,431 (rho 10) images."""
    counts = class_counts(ImbalanceConfig(ratio=ratio), 10, 5000)
    assert sum(counts) == total
    assert counts[0] == 5000 and counts[-1] == int(5000 / ratio)
    assert counts == sorted(counts, reverse=True)


def test_exponential_cifar10_rho100_counts():
    assert class_counts(ImbalanceConfig(ratio=100), 10, 5000) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("ratio, total", [(100, 10847), (50, 12608), (10, 19573)])
def test_exponential_cifar100_totals(ratio, total):
    """CIFAR-100-LT sizes of the LDAM / CBGAN construction (n_max 500)."""
    counts = class_counts(ImbalanceConfig(ratio=ratio), 100, 500)
    assert sum(counts) == total and counts[0] == 500 and counts[-1] == int(500 / ratio)


def test_step_profile():
    counts = class_counts(ImbalanceConfig(profile="step", ratio=10, minority_fraction=0.3), 10, 5000)
    assert counts == [5000] * 7 + [500] * 3


def test_none_profile_is_balanced():
    assert class_counts(ImbalanceConfig(profile="none", ratio=100), 10, 77) == [77] * 10


def test_softlabel_lognormal_matches_paper():
    """Softlabel-GAN Sec. 5.1: imbalanced CIFAR-10 has 3208 images with 65-1720 per class."""
    counts = class_counts(ImbalanceConfig(profile="lognormal", total=3208), 10, 5000)
    assert sum(counts) == 3208
    assert 60 <= min(counts) <= 70 and 1700 <= max(counts) <= 1725


def test_softlabel_chi2_matches_paper():
    """Imbalanced CIFAR-100: 2993 images with 6-36 per class."""
    counts = class_counts(ImbalanceConfig(profile="chi2", total=2993), 100, 500)
    assert sum(counts) == 2993 and 5 <= min(counts) <= 8 and 34 <= max(counts) <= 37


def test_softlabel_shuffle_is_seeded_and_pareto_capped():
    cfg = ImbalanceConfig(profile="lognormal", total=3208, seed=0)
    first, again = class_counts(cfg, 10, 5000), class_counts(cfg, 10, 5000)
    other = class_counts(dataclasses.replace(cfg, seed=1), 10, 5000)
    assert first == again and first != other and sorted(first) == sorted(other)
    pareto = class_counts(ImbalanceConfig(profile="pareto", total=47602), 200, 500)
    assert max(pareto) == 500 and min(pareto) > 0


def test_zero_count_class_is_an_error_naming_the_class():
    with pytest.raises(ValueError, match=r"class 9 \('truck'\)"):
        class_counts(ImbalanceConfig(ratio=100), 10, 90, class_names=[*"abcdefghi", "truck"])


def test_ratio_below_one_is_rejected():
    with pytest.raises(ValueError, match="ratio"):
        class_counts(ImbalanceConfig(ratio=0.5), 10, 100)
    with pytest.raises(ConfigError, match="dataset.imbalance.ratio"):
        dataset_cfg(imbalance={"ratio": 0.5})


# ---------------------------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------------------------
def test_groups_by_index_reference_boundaries():
    counts = class_counts(ImbalanceConfig(ratio=100), 10, 5000)
    assert class_groups(counts, GroupsConfig()) == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8, 9]}
    assert default_boundaries(100) == [35, 70] and default_boundaries(102) == [20, 50]
    assert default_boundaries(50) == [15, 30]


def test_groups_rank_by_count_for_shuffled_profiles():
    counts = [5, 50, 20, 1, 40]
    groups = class_groups(counts, GroupsConfig(boundaries=[2, 4]))
    assert groups == {"many": [1, 4], "medium": [0, 2], "few": [3]}


def test_groups_by_count_thresholds():
    counts = [500, 101, 100, 41, 40, 3]
    groups = class_groups(counts, GroupsConfig(by="count", thresholds=[100, 40]))
    assert groups == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}


# ---------------------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------------------
def test_digits_splits(digits_data, digits_cfg):
    data = digits_data
    assert data.eval.counts() == [digits_cfg.dataset.eval_per_class] * 10  # balanced held-out split
    pool_sizes = [n + m for n, m in zip(data.train.counts(), data.pool.counts(), strict=True)]
    assert data.train.counts() == class_counts(digits_cfg.dataset.imbalance, 10, min(pool_sizes))
    assert len(data.train) + len(data.pool) + len(data.eval) == 1797  # every digit used exactly once
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 16, 16)
    assert data.groups == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8, 9]}


def test_digits_deterministic_and_seeded(digits_data, digits_cfg):
    again = load_dataset(digits_cfg.dataset)
    assert torch.equal(again.train.images, digits_data.train.images) and again.spec == digits_data.spec
    reseeded = load_dataset(dataclasses.replace(
        digits_cfg.dataset, imbalance=dataclasses.replace(digits_cfg.dataset.imbalance, seed=1)))
    assert torch.equal(reseeded.eval.images, digits_data.eval.images)  # eval split independent of the seed
    assert reseeded.train.counts() == digits_data.train.counts()
    assert not torch.equal(reseeded.train.images, digits_data.train.images)
    assert content_hash(reseeded.spec) != content_hash(digits_data.spec)


@pytest.mark.parametrize("overrides", [{}, {"eval_per_class": 90}, {"imbalance": {"profile": "step", "ratio": 10}},
                                       {"imbalance": {"profile": "lognormal"}}])
def test_no_evaluation_image_is_seen_by_g_or_the_annotator(overrides):
    """The real reference set is the eval split only: none of its images (compared by pixels) is in G's training
    split or in the annotator's training set (train + pool), whatever the profile or split size
    (docs/metrics.md#the-real-reference-set)."""
    from imbgan_core.classifier import pixel_keys, training_set

    data = load_dataset(dataset_cfg(**overrides))
    reference = set(pixel_keys(data.eval.images).tolist())
    assert len(reference) == len(data.eval)
    assert not reference & set(pixel_keys(data.train.images).tolist())
    assert not reference & set(pixel_keys(training_set(data, "annotator").images).tolist())
    assert len(training_set(data, "annotator")) + len(data.eval) == 1797  # the annotator sees every other image


def test_digits_resolution_and_channels():
    small = load_dataset(dataset_cfg(resolution=8, channels=1, imbalance={"profile": "none"}))
    big = load_dataset(dataset_cfg(resolution=32, channels=3, imbalance={"profile": "none"}))
    assert small.train.images.shape[1:] == (1, 8, 8) and big.train.images.shape[1:] == (3, 32, 32)
    assert torch.equal(big.train.images[:, 0], big.train.images[:, 2])  # grey repeated
    assert small.train.counts() == [small.train.counts()[0]] * 10
    # the 32 px images are the 8 px originals through the one fixed filter
    assert torch.equal(resize_images(small.eval.images, 32), big.eval.images[:, :1])
    assert small.train.images.max() == 255
    assert content_hash(small.spec) != content_hash(big.spec)


def test_digits_bad_inputs():
    with pytest.raises(ValueError, match=r"classes 7 \('7'\), 8 \('8'\), 9 \('9'\) with zero"):
        load_dataset(dataset_cfg(imbalance={"ratio": 1000}))
    with pytest.raises(ValueError, match="eval_per_class"):
        load_dataset(dataset_cfg(eval_per_class=175))
    with pytest.raises(ConfigError, match="dataset.source"):
        dataset_cfg(source="mnist")
    with pytest.raises(ValueError, match="dataset.source"):
        load_dataset(dataclasses.replace(DatasetConfig(), source="mnist"))


# ---------------------------------------------------------------------------------------------------------------
# CIFAR from a real torchvision-format folder written here
# ---------------------------------------------------------------------------------------------------------------
def cifar_image(label: int, serial: int) -> np.ndarray:
    """A recognisable 3x32x32 image: channel 0 = label * 20, channel 1 = serial mod 256, channel 2 = a gradient."""
    img = np.zeros((3, 32, 32), dtype=np.uint8)
    img[0], img[1], img[2] = label * 20, serial % 256, np.arange(32, dtype=np.uint8)[None, :] * 8
    return img


def write_cifar10(root, per_class_per_batch=4, test_per_class=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    serial = 0

    def batch(per_class):
        nonlocal serial
        data, labels = [], []
        for k in range(10):
            for _ in range(per_class):
                data.append(cifar_image(k, serial).reshape(-1))
                labels.append(k)
                serial += 1
        return {b"data": np.stack(data), b"labels": labels, b"batch_label": b"test"}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class_per_batch), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test_per_class), protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return folder


def test_cifar10_folder_through_real_loader(tmp_path):
    write_cifar10(tmp_path)
    cfg = dataset_cfg(source="cifar10", root=str(tmp_path), resolution=32, channels=3, imbalance={"ratio": 4})
    data = load_dataset(cfg)
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    assert data.train.counts() == class_counts(cfg.imbalance, 10, 20)  # 5 batches x 4 images per class
    assert data.eval.counts() == [3] * 10
    assert len(data.pool) == 200 - len(data.train)
    # pixels and labels come through unchanged: channel 0 encodes the label
    assert torch.equal(data.train.images[:, 0, 0, 0].long(), data.train.labels * 20)
    assert torch.equal(data.eval.images[:, 2, 5], torch.arange(32, dtype=torch.uint8).repeat(30, 1) * 8)
    assert data.spec["root"] == str((tmp_path / "cifar-10-batches-py").resolve())
    grey16 = load_dataset(dataclasses.replace(cfg, resolution=16, channels=1))
    assert grey16.train.images.shape[1:] == (1, 16, 16)


def test_cifar100_folder_through_real_loader(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    labels = [k for k in range(100) for _ in range(3)]
    data = np.stack([cifar_image(k % 12, i).reshape(-1) for i, k in enumerate(labels)])
    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": labels, b"coarse_labels": labels}))
    names = [f"class{k}".encode() for k in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    loaded = load_dataset(dataset_cfg(source="cifar100", root=str(tmp_path), resolution=32, channels=3,
                                      imbalance={"profile": "none"}))
    assert loaded.num_classes == 100 and loaded.class_names[42] == "class42"
    assert loaded.train.counts() == [3] * 100 and loaded.groups["many"] == list(range(35))


def test_cifar_missing_files_names_folder_and_download(tmp_path):
    cfg = dataset_cfg(source="cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*download: true"):
        load_dataset(cfg)


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path)

    class Evil:  # os.system, not print: once Ray is imported in this process, builtins.print is Ray's safe_print
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}))
    with pytest.raises(ValueError, match=r"refusing to load (posix|nt)\.system"):
        load_dataset(dataset_cfg(source="cifar10", root=str(tmp_path), resolution=32))


# ---------------------------------------------------------------------------------------------------------------
# imagefolder from real PNG files written here
# ---------------------------------------------------------------------------------------------------------------
def write_png_folder(root, counts=(9, 7, 5), size=(12, 12)):
    from PIL import Image

    for k, n in enumerate(counts):
        class_dir = root / f"class_{chr(ord('a') + k)}"
        class_dir.mkdir(parents=True)
        for i in range(n):
            pixels = np.full((*size, 3), (k * 100, i * 10, 50), dtype=np.uint8)
            Image.fromarray(pixels).save(class_dir / f"img_{i:02d}.png")
    return root


def test_imagefolder_through_real_loader(tmp_path):
    root = write_png_folder(tmp_path / "faces")
    cfg = dataset_cfg(source="imagefolder", root=str(root), resolution=8, channels=3, eval_per_class=2,
                      imbalance={"profile": "none"})
    data = load_dataset(cfg)
    assert data.class_names == ["class_a", "class_b", "class_c"]
    assert data.train.counts() == [7, 5, 3] and data.eval.counts() == [2, 2, 2]  # folder's own distribution
    assert data.train.images.shape[1:] == (3, 8, 8)
    assert torch.equal(data.train.images[:, 0, 0, 0].long(), data.train.labels * 100)  # constant images stay exact
    info = describe(cfg)
    assert info["train_counts"] == [7, 5, 3] and info["eval_counts"] == [2, 2, 2]
    exp = load_dataset(dataclasses.replace(cfg, imbalance=ImbalanceConfig(ratio=3)))
    assert exp.train.counts() == class_counts(ImbalanceConfig(ratio=3), 3, 3)


def test_imagefolder_decodes_once_per_resolution(tmp_path, cache_dir):
    root = write_png_folder(tmp_path / "cached", counts=(3, 3))
    cfg = dataset_cfg(source="imagefolder", root=str(root), resolution=8, channels=3, eval_per_class=1,
                      imbalance={"profile": "none"})

    def artifacts():
        return sorted((cache_dir / "imagefolder").glob("*/key.json"))

    before = artifacts()
    colour = load_dataset(cfg)
    grey = load_dataset(dataclasses.replace(cfg, channels=1))  # same decoded images, other channels: a hit
    assert len(artifacts()) == len(before) + 1
    assert grey.train.images.shape[1] == 1 and colour.train.images.shape[1] == 3
    load_dataset(dataclasses.replace(cfg, resolution=16))
    assert len(artifacts()) == len(before) + 2
    load_dataset(cfg, cache_dir=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere" / "imagefolder").glob("*/images.pt"))) == 1


def test_imagefolder_mixed_sizes_warn_once_and_resize(tmp_path):
    from PIL import Image

    root = write_png_folder(tmp_path / "mixed", counts=(4, 4))
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(root / "class_a" / "wide.png")
    Image.fromarray(np.zeros((7, 7, 3), dtype=np.uint8)).save(root / "class_b" / "small.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(dataset_cfg(source="imagefolder", root=str(root), resolution=16, channels=1,
                                        eval_per_class=1, imbalance={"profile": "none"}))
    size_warnings = [w for w in caught if "different sizes" in str(w.message)]
    assert len(size_warnings) == 1
    assert data.train.images.shape[1:] == (1, 16, 16) and len(data.train) + len(data.eval) == 10


def test_imagefolder_spec_changes_with_the_files(tmp_path):
    root = write_png_folder(tmp_path / "f", counts=(4, 4))
    cfg = dataset_cfg(source="imagefolder", root=str(root), resolution=8, eval_per_class=1,
                      imbalance={"profile": "none"})
    before = content_hash(load_dataset(cfg).spec)
    write_png_folder(tmp_path / "extra", counts=(1,))
    (tmp_path / "extra" / "class_a" / "img_00.png").rename(root / "class_a" / "img_99.png")
    assert content_hash(load_dataset(cfg).spec) != before


def test_imagefolder_bad_inputs(tmp_path):
    root = write_png_folder(tmp_path / "bad", counts=(4, 4))
    cfg = dataset_cfg(source="imagefolder", root=str(root), resolution=8, eval_per_class=1,
                      imbalance={"profile": "none"})
    (root / "class_c").mkdir()
    with pytest.raises(ValueError, match="class_c has no images"):
        load_dataset(cfg)
    (root / "class_c").rmdir()
    broken = root / "class_b" / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_dataset(cfg)
    broken.unlink()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(dataclasses.replace(cfg, root=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="eval_per_class"):
        load_dataset(dataclasses.replace(cfg, eval_per_class=4))
    with pytest.raises(ConfigError, match="dataset.root: required"):
        dataset_cfg(source="imagefolder")


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def test_cli_json_parses_without_cifar_files(capsys):
    assert cli_main(["--source", "cifar10", "--profile", "exponential", "--ratio", "100", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_counts"] == class_counts(ImbalanceConfig(ratio=100), 10, 5000)
    assert info["train_total"] == 12406 and info["eval_counts"] == [1000] * 10
    assert info["class_names"][3] == "cat" and info["groups"]["few"] == [6, 7, 8, 9]


def test_cli_table_is_readable(capsys):
    assert cli_main(["--source", "digits", "--ratio", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "585 training images" in out[0] and "300 evaluation images" in out[0]
    assert out[1].split() == ["#", "class", "train", "eval", "group"]
    assert out[3].split() == ["0", "0", "144", "30", "many"] and out[-1].split()[-1] == "few"
    assert len(out) == 3 + 10


def test_cli_errors_exit_2(capsys):
    assert cli_main(["--ratio", "0.5"]) == 2
    assert "dataset.imbalance.ratio" in capsys.readouterr().err
    assert cli_main(["--source", "nope"]) == 2
    assert "dataset.source" in capsys.readouterr().err
    assert cli_main(["--source", "imagefolder", "--root", "/no/such/folder"]) == 2
    assert "/no/such/folder" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "imbgan_core.data", "--source", "cifar100", "--ratio", "100",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["train_total"] == 10847
