"""Train (or load from the cache) the VGG16 teacher on the train split minus the validation pool.

Checkpointed every epoch, so an interrupted training resumes where it stopped. The test set is
evaluated once, at the end, for the report.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import data as D
from .cache import Entry
from .device import autocast, pick_device
from .evaluate import predict, report
from .models import BlockVGG, VGGSpec, load_state, teacher_spec
from .profiles import get_profile
from .training import generator, progress, seed_everything, sgd_with_cosine


def teacher_config(dataset: str, profile, seed: int = 0) -> dict:
    profile = get_profile(profile)
    dataset = D.check_dataset(dataset)
    spec = teacher_spec(D.NUM_CLASSES[dataset], profile.width, profile.batch_norm)
    return {"dataset": dataset, "spec": spec, "schedule": profile.teacher_for(dataset),
            "val_per_class": profile.val_per_class[dataset], "seed": seed}


def spec_from_config(cfg: dict) -> VGGSpec:
    """The teacher's VGGSpec from its config (as built, or as read back from JSON)."""
    if isinstance(cfg["spec"], VGGSpec):
        return cfg["spec"]
    s = dict(cfg["spec"])
    return VGGSpec(tuple(s["widths"]), s["hidden"], s["num_classes"], s["batch_norm"], tuple(s["depths"]))


def get_teacher(dataset: str, profile="cpu", *, seed: int = 0, data_root=None, output_root=None, device=None):
    """Return (teacher in eval mode, its metrics), training it first if the cache does not hold it."""
    device = pick_device(device)
    cfg = teacher_config(dataset, profile, seed)
    entry = Entry(output_root, "teacher", cfg)
    seed_everything(seed)  # the initial weights are part of the experiment
    model = BlockVGG(spec_from_config(entry.config)).to(device)
    if not entry.done:
        _train(model, entry, get_profile(profile), data_root, device)
    load_state(model, entry.load_tensors("model.pt", device), f"teacher checkpoint {entry.path('model.pt')}")
    model.eval().requires_grad_(False)
    return model, entry.metrics()


def teacher_test_predictions(dataset: str, profile="cpu", *, seed: int = 0, output_root=None) -> torch.Tensor:
    """The teacher's predicted class for every test image (saved with it), for agreement scores."""
    entry = Entry(output_root, "teacher", teacher_config(dataset, profile, seed))
    return entry.load_tensors("test_pred.pt")


def _train(model: BlockVGG, entry: Entry, profile, data_root, device: torch.device) -> None:
    cfg = entry.config
    sched = profile.teacher_for(cfg["dataset"])
    data = D.load_dataset(cfg["dataset"], data_root)
    split = D.make_split(data, cfg["val_per_class"])
    idx = split.teacher_train if sched.train_limit is None else split.teacher_train[: sched.train_limit]
    x = D.to_tensor(data.x_train[idx], data.name, device)
    y = torch.from_numpy(data.y_train[idx]).to(device)
    x_val = D.to_tensor(data.x_train[split.val], data.name, device)
    y_val = torch.from_numpy(data.y_train[split.val]).to(device)
    steps_per_epoch = -(-len(x) // sched.batch_size)
    opt, lr_sched = sgd_with_cosine(model, sched.lr, sched.momentum, sched.weight_decay,
                                    sched.epochs * steps_per_epoch, int(sched.warmup_epochs * steps_per_epoch))
    state = {"epoch": 0, "history": [], "wall_s": 0.0}
    if entry.path("resume.pt").is_file():
        saved = entry.load_tensors("resume.pt", device)
        load_state(model, saved["model"], f"resume checkpoint {entry.path('resume.pt')}")
        opt.load_state_dict(saved["opt"])
        lr_sched.load_state_dict(saved["lr_sched"])
        state = saved["state"]
        print(f"resuming teacher {entry.key} at epoch {state['epoch']}/{sched.epochs}")
    print(f"training teacher {entry.key} on {len(x)} images from {data.source} ({device})")
    entry.start()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    bar = progress(range(state["epoch"], sched.epochs), desc="teacher", initial=state["epoch"], total=sched.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        gen = generator(cfg["seed"] * 100003 + epoch, device)
        model.train()
        loss_sum, correct = 0.0, 0
        for b in D.batches(len(x), sched.batch_size, gen):
            b = b.to(device)
            xb = D.augment(x[b], gen)
            with autocast(device):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), y[b], label_smoothing=sched.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_sched.step()
            loss_sum += loss.item() * len(b)
            correct += (logits.argmax(1) == y[b]).sum().item()
        val = report(model, x_val, y_val)["accuracy"]
        state["wall_s"] += time.perf_counter() - t0
        state["epoch"] = epoch + 1
        state["history"].append({"epoch": epoch + 1, "train_loss": loss_sum / len(x),
                                 "train_accuracy": 100 * correct / len(x), "val_accuracy": val,
                                 "wall_s": state["wall_s"]})
        bar.set_postfix(loss=f"{loss_sum / len(x):.3f}", val=f"{val:.1f}")
        entry.save_tensors("resume.pt", {"model": model.state_dict(), "opt": opt.state_dict(),
                                         "lr_sched": lr_sched.state_dict(), "state": state})
    model.eval()
    x_test, y_test = D.test_arrays(data, profile.test_limit)
    test_pred = predict(model, D.to_tensor(x_test, data.name, device)).argmax(1).cpu()
    test_acc = (test_pred == torch.from_numpy(y_test)).float().mean().item() * 100
    entry.save_tensors("model.pt", model.to(memory_format=torch.contiguous_format).state_dict())
    entry.save_tensors("test_pred.pt", test_pred)
    entry.finish({"test_accuracy": test_acc, "val_accuracy": state["history"][-1]["val_accuracy"],
                  "history": state["history"], "wall_s": state["wall_s"], "device": str(device),
                  "torch_threads": torch.get_num_threads(), "data_source": data.source,
                  "train_images": len(x)})
