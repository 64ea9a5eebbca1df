"""Pretrain a TERA model on one language of a corpus: resumable, logged, on GPU when present.

The training utterances' log-mel frames are computed and normalised (per-channel mean and
std of the training frames) once, in memory. Each step draws ``batch_size`` of them (with
replacement) from a NumPy generator seeded by ``seed``, crops each to at most
``crop_frames`` frames at a random offset (with ``crop_frames`` at most the shortest
utterance the batch has no padding and runs without an attention mask), alters the crops
together (:func:`speechlens.tera.alteration.alter_batch`) and minimises the L1 distance
between the model's reconstruction and the clean frames over the altered positions
(padding excluded). AdamW, linear warm-up over ``warmup_steps`` then linear decay to 0,
gradient norm clipped to ``clip_norm``.

Every ``eval_every`` steps (and at the end) the held-out speakers' utterances, altered
once with a fixed generator (``seed + 1``) so that every evaluation sees the same
alterations, give the held-out L1 loss and the loss of predicting the per-channel training
mean on the same positions (``heldout_mean_loss``: the reference the loss must fall below).

Resuming. Every ``checkpoint_every`` steps the whole state (weights, optimiser, schedule,
both random generators, the log) is saved atomically to ``state_dir/state.pt``. A run
finding a state saved with the same settings, data and code continues from it; with the
same seed and threads the final weights equal those of an uninterrupted run (CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from speechlens import __version__
from speechlens.atomic import atomic_path, save_figure
from speechlens.schema import defaults as schema_defaults
from speechlens.tera import model as tera_model
from speechlens.tera.alteration import Alteration, alter, alter_batch
from speechlens.tera.data import Split, load_split

log = logging.getLogger(__name__)

STATE_NAME = "state.pt"
LOG_COLUMNS = [
    "step",
    "lr",
    "train_loss",
    "heldout_loss",
    "heldout_mean_loss",
    "seconds",
    "cpu_seconds",
]


_DEFAULTS = schema_defaults("training")  # the one home of the defaults: the config schema


@dataclass
class TrainSettings:
    """Training hyper-parameters: the workflow's ``training`` section, whose schema holds the
    defaults (read here, not repeated).

    ``model`` holds :class:`~speechlens.tera.model.TeraConfig` fields (architecture);
    ``alteration`` the nested alteration settings (:class:`~speechlens.tera.alteration.Alteration`).
    """

    steps: int = _DEFAULTS["steps"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    warmup_steps: int = _DEFAULTS["warmup_steps"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    clip_norm: float = _DEFAULTS["clip_norm"]
    crop_frames: int = _DEFAULTS["crop_frames"]
    heldout_speakers: int = _DEFAULTS["heldout_speakers"]
    eval_every: int = _DEFAULTS["eval_every"]
    checkpoint_every: int = _DEFAULTS["checkpoint_every"]
    seed: int = _DEFAULTS["seed"]
    device: str = _DEFAULTS["device"]
    model: dict = field(default_factory=dict)
    alteration: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, spec: dict) -> TrainSettings:
        """Settings from a config mapping; unknown keys raise naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(spec) - names
        if unknown:
            raise ValueError(f"training: unknown keys {sorted(unknown)}")
        return cls(**{k: v for k, v in spec.items() if k in names})


def _schedule(settings: TrainSettings) -> Callable[[int], float]:
    warm, total = max(settings.warmup_steps, 1), max(settings.steps, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(total - warm, 1))

    return factor


def make_batch(
    utterances: list[np.ndarray],
    alteration: Alteration,
    rng: np.random.Generator,
    *,
    crop_frames: int | None = None,
) -> dict[str, torch.Tensor]:
    """Altered inputs, clean targets and loss masks ``(batch, frame, n_mels)`` and the
    attention mask ``(batch, frame)`` of normalised utterances.

    An utterance longer than ``crop_frames`` is cropped to ``crop_frames`` frames at a
    random offset; the batch is as long as its longest (cropped) utterance and shorter ones
    are zero-padded (attention mask 0, never in the loss). Utterances of the batch's length
    (all of them when ``crop_frames`` is at most the shortest utterance) are altered
    together by :func:`~speechlens.tera.alteration.alter_batch`, shorter ones one by one.
    """
    crops = []
    for x in utterances:
        if crop_frames and len(x) > crop_frames:
            start = int(rng.integers(0, len(x) - crop_frames + 1))
            x = x[start : start + crop_frames]
        crops.append(np.asarray(x, np.float32))
    lengths = np.array([len(x) for x in crops])
    longest = int(lengths.max())
    target = np.zeros((len(crops), longest, crops[0].shape[1]), np.float32)
    for i, x in enumerate(crops):
        target[i, : len(x)] = x
    inputs = target.copy()
    mask = np.zeros(target.shape, bool)
    full = np.flatnonzero(lengths == longest)
    inputs[full], mask[full], _ = alter_batch(target[full], alteration, rng)
    for i in np.flatnonzero(lengths < longest):
        n = lengths[i]
        inputs[i, :n], mask[i, :n], _ = alter(crops[i], alteration, rng)
    valid = (np.arange(longest)[None] < lengths[:, None]).astype(np.int64)
    return {
        "inputs": torch.from_numpy(inputs),
        "target": torch.from_numpy(target),
        "loss_mask": torch.from_numpy(mask),
        "attention_mask": torch.from_numpy(valid),
    }


def _forward(model, batch: dict) -> torch.Tensor:
    """The model's reconstruction of ``batch``; no attention mask when nothing is padded
    (lets PyTorch use its fused attention kernels)."""
    valid = batch["attention_mask"]
    return model(batch["inputs"], None if bool(valid.all()) else valid)


def l1_on_mask(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` over the positions where ``mask`` is true."""
    mask = mask.to(pred.dtype)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def heldout_losses(model, batches: list[dict], device: torch.device) -> tuple[float, float]:
    """(model L1, mean-predictor L1) over the altered positions of the held-out batches
    (NaN without held-out data)."""
    model.eval()
    total, baseline, count = 0.0, 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            b = _to(batch, device)
            pred = _forward(model, b)
            mask = b["loss_mask"].to(pred.dtype)
            total += float(((pred - b["target"]).abs() * mask).sum())
            baseline += float((b["target"].abs() * mask).sum())  # the mean is 0 once normalised
            count += float(mask.sum())
    model.train()
    if count == 0:  # no held-out speakers
        return float("nan"), float("nan")
    return total / count, baseline / count


def _state_key(settings: TrainSettings, split: Split, language: str) -> dict:
    """What a saved state must match to be resumed."""
    return {
        "settings": dataclasses.asdict(settings),
        "language": language,
        "train_frames": [len(x) for x in split.train],
        "heldout_frames": [len(x) for x in split.heldout],
        "speechlens_version": __version__,
    }


def train(
    utterances_tsv: str | Path,
    language: str,
    out_dir: str | Path,
    settings: TrainSettings | dict,
    *,
    state_dir: str | Path,
    threads: int = 1,
    on_step: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Train a TERA model on ``language``'s utterances and write the model folder.

    ``out_dir`` receives ``config.json`` + ``model.safetensors`` (loadable by the ``tera``
    adapter; the config records the training provenance), ``training_log.tsv``
    (:data:`LOG_COLUMNS`; losses are L1 in normalised log-mel units) and
    ``loss_curve.png``, atomically. ``state_dir`` holds the resumable state. ``on_step``
    is called after every step with the step number (a hook for progress or tests).
    Returns the training log.
    """
    if isinstance(settings, dict):
        settings = TrainSettings.from_dict(settings)
    alteration = Alteration.from_dict(settings.alteration)
    from speechlens.models.hf import resolve_device

    device = resolve_device(settings.device)
    if device.type == "cpu":
        torch.set_num_threads(int(threads))
    split = load_split(utterances_tsv, language, heldout_speakers=settings.heldout_speakers)
    mean, std = split.stats()
    config = tera_model.TeraConfig(**settings.model, mean=mean.tolist(), std=std.tolist())
    train_set = [((x - mean) / std).astype(np.float32) for x in split.train]
    held_set = [((x - mean) / std).astype(np.float32) for x in split.heldout]
    held_rng = np.random.default_rng([settings.seed, 1])
    held_batches = [
        make_batch(held_set[i : i + settings.batch_size], alteration, held_rng)
        for i in range(0, len(held_set), settings.batch_size)
    ]
    log.info(
        "language %s: %d training utterances (%d frames, speakers %s), %d held out (%s); %s",
        language,
        len(train_set),
        sum(map(len, train_set)),
        ", ".join(split.train_speakers),
        len(held_set),
        ", ".join(split.heldout_speakers),
        device,
    )

    torch.manual_seed(settings.seed)
    model = tera_model.TeraModel(config).to(device)
    model.train()
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(settings))
    rng = np.random.default_rng([settings.seed, 0])
    rows: list[dict] = []
    step = 0
    key = _state_key(settings, split, language)
    state_path = Path(state_dir) / STATE_NAME
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["key"] == key:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"])
            rows, step = state["log"], state["step"]
            log.info("resumed from %s at step %d", state_path, step)
        else:
            log.warning("ignoring %s: saved with other settings or data", state_path)

    def save_state() -> None:
        state = {
            "key": key,
            "step": step,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "log": rows,
        }
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)

    t0, c0 = time.perf_counter(), time.process_time()
    spent = (rows[-1]["seconds"], rows[-1]["cpu_seconds"]) if rows else (0.0, 0.0)
    recent: list[float] = []
    if step == 0:
        rows.append(_row(0, 0.0, float("nan"), *heldout_losses(model, held_batches, device), spent))
    while step < settings.steps:
        picks = rng.integers(0, len(train_set), size=settings.batch_size)
        batch = _to(
            make_batch(
                [train_set[i] for i in picks], alteration, rng, crop_frames=settings.crop_frames
            ),
            device,
        )
        pred = _forward(model, batch)
        loss = l1_on_mask(pred, batch["target"], batch["loss_mask"])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimiser.step()
        scheduler.step()
        step += 1
        recent.append(float(loss.detach()))
        if step % settings.eval_every == 0 or step == settings.steps:
            held, held_mean = heldout_losses(model, held_batches, device)
            elapsed = (
                spent[0] + time.perf_counter() - t0,
                spent[1] + time.process_time() - c0,
            )
            rows.append(
                _row(
                    step,
                    scheduler.get_last_lr()[0],
                    float(np.mean(recent)),
                    held,
                    held_mean,
                    elapsed,
                )
            )
            recent = []
            log.info(
                "step %d: train L1 %.4f, held-out L1 %.4f (mean predictor %.4f)",
                step,
                rows[-1]["train_loss"],
                held,
                held_mean,
            )
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            save_state()
        if on_step is not None:
            on_step(step)

    table = pd.DataFrame(rows, columns=LOG_COLUMNS)
    provenance = {
        "training": {
            "language": language,
            "corpus": str(utterances_tsv),
            "settings": dataclasses.asdict(settings),
            "alteration": dataclasses.asdict(alteration),
            "train_speakers": split.train_speakers,
            "heldout_speakers": split.heldout_speakers,
            "train_utterances": len(train_set),
            "train_frames": int(sum(map(len, train_set))),
            "final_heldout_loss": float(table["heldout_loss"].iloc[-1]),
            "final_heldout_mean_loss": float(table["heldout_mean_loss"].iloc[-1]),
            "device": str(device),
            "threads": threads,
            "speechlens_version": __version__,
            "torch_version": torch.__version__,
        }
    }
    model.to("cpu")
    with atomic_path(out_dir, is_dir=True) as tmp:
        tera_model.save(model, tmp, extra=provenance)
        table.to_csv(tmp / "training_log.tsv", sep="\t", index=False, float_format="%.6g")
        from speechlens.plotting.training import plot_training_curve

        save_figure(plot_training_curve(table), tmp / "loss_curve.png")
    state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return table


def _row(step, lr, train_loss, held, held_mean, elapsed) -> dict:
    return {
        "step": step,
        "lr": lr,
        "train_loss": train_loss,
        "heldout_loss": held,
        "heldout_mean_loss": held_mean,
        "seconds": round(elapsed[0], 3),
        "cpu_seconds": round(elapsed[1], 3),
    }
