"""A PNG contact sheet of one phantom study with its truth outlined (for looking, not testing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phantom.case import PhantomStudy

_COLOURS = {("femoral_head", "L"): "deepskyblue", ("femoral_head", "R"): "lime"}


def write_preview(study: PhantomStudy, path: Path, n_slices: int = 6) -> Path:
    """Write ``n_slices`` coronal slices through the femoral heads, truth outlined.

    Heads are outlined blue (left) and green (right), necrotic lesions red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = [s.mask for s in study.segments if s.kind == "femoral_head"]
    extent = np.nonzero(np.any(np.logical_or.reduce(heads), axis=(1, 2)))[0]
    picks = np.unique(np.linspace(extent.min(), extent.max(), n_slices).round().astype(int))
    g = study.geometry
    vmax = float(np.percentile(study.stored, 99.5))
    cols = min(3, len(picks))
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5 * cols, 5 * rows * g.rows / g.columns), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), picks, strict=False):
        ax.imshow(study.stored[k], cmap="gray", vmin=0, vmax=vmax)
        for seg in study.segments:
            if seg.mask[k].any():
                colour = _COLOURS.get((seg.kind, seg.side), "red")
                ax.contour(seg.mask[k], levels=[0.5], colors=colour, linewidths=0.7)
        ax.set_title(f"slice {k + 1}/{g.n_slices}", fontsize=9)
    hips = ", ".join(
        f"{h.side}: {'ONFH ' + h.stage + ' ' + h.lesion_size_class if h.label else 'healthy'}"
        for h in study.hips
    )
    fig.suptitle(
        f"{study.patient.patient_id}  {study.scanner.series_description}  ({hips})", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


__all__ = ["write_preview"]
