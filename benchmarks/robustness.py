"""Speed of medaudit's corruptions against imagecorruptions, and of the robustness sweep.

    python benchmarks/robustness.py            # both parts
    python benchmarks/robustness.py --part corruptions
    python benchmarks/robustness.py --part sweep --corruptions core

1. Throughput on 256 grayscale 64 x 64 images (synthetic hospitals) per corruption that
   ``imagecorruptions`` (the ImageNet-C reference package) also has, at severity 3: the
   peer corrupts one image at a time (uint8 in, (H, W, 3) uint8 out, seeded with
   ``np.random.seed`` before each call, first channel kept); medaudit corrupts the batch
   as one (256, 1, 64, 64) float tensor. Both on one thread (torch and OpenCV), best of
   three. Goal: median ratio >= 10x.
2. The full sweep (every corruption grayscale images take, x 5 severities, scored with
   CIs, figures included) on demo-size data (the demo's audited cohort: test split plus
   the held-out site of 4 x 260 patients, 64 x 64, small_cnn), divided by the time of
   one clean inference pass and by the number of cells. Goal: <= 1.3 (a cell costs
   little more than the forward pass it needs).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from medaudit.data import generate_hospitals
from medaudit.robustness import corrupt

# medaudit name -> imagecorruptions name
SHARED = {
    "gaussian_noise": "gaussian_noise",
    "shot_noise": "shot_noise",
    "impulse_noise": "impulse_noise",
    "defocus_blur": "defocus_blur",
    "motion_blur": "motion_blur",
    "zoom_blur": "zoom_blur",
    "contrast_down": "contrast",
    "brightness_up": "brightness",
    "pixelate": "pixelate",
    "jpeg_compression": "jpeg_compression",
}


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_corruptions(severity: int = 3, n: int = 256) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peer's pkg_resources / scipy deprecations
        import cv2
        import imagecorruptions
    cv2.setNumThreads(1)
    images = generate_hospitals(n_sites=4, patients_per_site=40, image_size=64, seed=0).images
    gray = images[:n, 0]
    x = torch.from_numpy(gray.astype(np.float32) / 255.0)[:, None]

    def peer(name: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, im in enumerate(gray):
                np.random.seed(k)
                imagecorruptions.corrupt(im, severity=severity, corruption_name=name)[..., 0]

    print(f"{n} grayscale 64x64 images, severity {severity}, one thread, best of 3")
    print(f"{'corruption':18s} {'imagecorruptions':>16s} {'medaudit':>10s} {'ratio':>8s}")
    ratios = []
    for ours, theirs in SHARED.items():
        corrupt(x[:8], ours, severity)  # warm-up (kernel caches, lazy imports)
        t_peer = _best(lambda theirs=theirs: peer(theirs), repeats=1 if ours == "zoom_blur" else 3)
        t_ours = _best(lambda ours=ours: corrupt(x, ours, severity, seed=0))
        ratios.append(t_peer / t_ours)
        print(f"{ours:18s} {t_peer * 1e3:13.1f} ms {t_ours * 1e3:7.1f} ms {ratios[-1]:7.1f}x")
    median = statistics.median(ratios)
    print(f"median throughput ratio vs imagecorruptions: {median:.1f}x (goal >= 10x)")
    return median


def bench_sweep(corruptions: list[str], n_boot: int) -> float:
    """Sweep time over the clean pass's, per cell.

    The clean pass is timed after every fifth cell, between cells, and its median is
    used: on a shared machine the load drifts during a long sweep, and a clean pass timed
    once before it would not see the same machine. Those interleaved passes are
    subtracted from the sweep's time.
    """
    import medaudit.registry as registry
    from medaudit.inference import predict
    from medaudit.models import build_model
    from medaudit.pipeline import run_audits
    from medaudit.report import Policy

    cohort = generate_hospitals(
        n_sites=4, patients_per_site=260, image_size=64, shortcut_strength=0.5, seed=0
    )
    audited = cohort.subset(cohort.meta["split"].isin(["test", "external"]).to_numpy())
    model = build_model("small_cnn", in_channels=1, num_classes=2, random_state=0)
    predict(model, audited.subset(np.arange(64)))  # warm-up
    preds = predict(model, audited)
    clean_times: list[float] = []
    cells_done = [0]
    original = registry.AuditContext.predict_transformed

    def cell_then_clean(self, transform, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, transform, **kwargs)
        cells_done[0] += 1
        if cells_done[0] % 5 == 0:
            t0 = time.perf_counter()
            predict(model, audited)  # the pipeline's clean pass (with features)
            clean_times.append(time.perf_counter() - t0)
        return out

    policy = Policy.from_mapping(
        {"settings": {"n_bootstrap": n_boot, "robustness": {"corruptions": corruptions}}}
    )
    registry.AuditContext.predict_transformed = cell_then_clean  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        report = run_audits(
            preds,
            audited,
            audits=["robustness"],
            sensitive=["sex", "age_group"],
            policy=policy,
            model=model,
            model_info={"arch": "small_cnn", "image_size": 64, "in_channels": 1},
        )
        t_sweep = time.perf_counter() - t0 - sum(clean_times)
    finally:
        registry.AuditContext.predict_transformed = original  # type: ignore[method-assign]
    t_clean = statistics.median(clean_times)
    cells = len(report.section("robustness").tables["sweep"])
    ratio = t_sweep / t_clean / cells
    print(
        f"{len(audited)} images, {cells} cells ({', '.join(corruptions)}), "
        f"{n_boot} bootstrap resamples"
    )
    print(
        f"  clean inference pass:    {t_clean:8.2f} s (median of {len(clean_times)}, "
        f"range {min(clean_times):.2f}-{max(clean_times):.2f}, timed between cells)"
    )
    print(f"  robustness audit:        {t_sweep:8.2f} s (sweep, scoring, figures)")
    print(f"sweep / clean pass / cells: {ratio:.2f} (goal <= 1.3)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "corruptions", "sweep"), default="all")
    ap.add_argument("--corruptions", default="all", help="sweep: presets/names, comma-separated")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.part in ("all", "corruptions"):
        bench_corruptions()
    if args.part in ("all", "sweep"):
        bench_sweep(args.corruptions.split(","), args.n_boot)


if __name__ == "__main__":
    main()
