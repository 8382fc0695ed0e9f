"""Architecture figure of AMB (thesis figure 6.1), drawn from a built model's sizes.

``amb_figure(model)`` draws boxes and arrows with matplotlib: the text path (tokenizer, PLM
layers with their adapters) on the left, the layer-wise fusion chain in the middle, the
visual and acoustic encoders on the right, and the predictor on top. Widths and depths are
read from the model, so the figure always shows the configuration that is being run.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["amb_figure"]

_COLOURS = {
    "frozen": "#d9d9d9",
    "trainable": "#9ecae1",
    "adapter": "#fdae6b",
    "fusion": "#a1d99b",
    "input": "#ffffff",
    "head": "#bcbddc",
}


def _box(ax, x, y, w, h, text, kind, fontsize=8, dashed=False):
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.08",
        facecolor=_COLOURS[kind],
        edgecolor="black",
        linewidth=0.8,
        linestyle="--" if dashed else "-",
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, colour="black", style="-|>", rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=8,
            color=colour,
            linewidth=0.8,
            connectionstyle=f"arc3,rad={rad}",
        )
    )


def amb_figure(model, title: str | None = None):
    """The AMB architecture of ``model`` (an ``ambcore.models.amb.AMB``) as a matplotlib Figure."""
    cfg = model.cfg
    n_layers = model.plm.config.num_hidden_layers
    fig, ax = plt.subplots(figsize=(9, 7.5))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10.4)
    ax.axis("off")
    _draw_inputs(ax, model)
    text_top, fusion_top = _draw_layers(ax, model)
    _draw_predictor(ax, text_top, fusion_top)
    _draw_legend(ax)
    connect = (
        "chained (residual)" if cfg.fusion_connect == "chain" else "independent (mean over layers)"
    )
    beyond = ", ".join(
        f"{key}={getattr(cfg, key)}"
        for key, thesis in (("fusion_module", "ffn"), ("fusion_feedback", "none"))
        if getattr(cfg, key) != thesis
    )  # the designs beyond the thesis (ambcore.models.fusion), named when chosen
    ax.set_title(
        title
        or f"AMB: {cfg.plm} ({n_layers} layers), fusion {connect}, "
        f"text_adaptation={cfg.text_adaptation}, variant={cfg.variant}"
        + (f"\n{beyond}" if beyond else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _shown_layers(n_layers: int) -> list[int]:
    """The PLM layers drawn: all of up to three, else 1, 2 and the last (with ⋮ between)."""
    return [1, 2, n_layers] if n_layers > 3 else list(range(1, n_layers + 1))


def _draw_inputs(ax, model) -> None:
    """Bottom row: the text and its tokenizer; the visual and acoustic encoders and the AV token
    (or a dashed note for a text-only model)."""
    cfg = model.cfg
    _box(ax, 2.0, 0.4, 2.2, 0.5, "text sequence", "input")
    _box(ax, 2.0, 1.2, 2.2, 0.5, "BERT tokenizer\n[CLS] tokens [SEP]", "frozen")
    _arrow(ax, (2.0, 0.65), (2.0, 0.95))
    if not model.use_av:
        _box(
            ax,
            8.05,
            1.6,
            2.8,
            0.8,
            "text-only: no visual/acoustic\nencoders, no AV token",
            "input",
            dashed=True,
        )
        return
    _box(ax, 7.2, 0.4, 1.5, 0.5, f"visual seq\n(Lv, {model.visual_dim})", "input")
    _box(ax, 8.9, 0.4, 1.5, 0.5, f"acoustic seq\n(La, {model.acoustic_dim})", "input")
    enc = f"{cfg.encoder_layers}-layer {cfg.encoder_heads}-head\ntransformer, [CLS]\nwidth {cfg.encoder_dim}"
    _box(ax, 7.2, 1.6, 1.5, 1.0, "visual encoder\n" + enc, "trainable", fontsize=6.5)
    _box(ax, 8.9, 1.6, 1.5, 1.0, "acoustic encoder\n" + enc, "trainable", fontsize=6.5)
    _arrow(ax, (7.2, 0.65), (7.2, 1.1))
    _arrow(ax, (8.9, 0.65), (8.9, 1.1))
    _box(ax, 8.05, 2.75, 2.6, 0.5, f"AV token [v ; a]  ({2 * cfg.encoder_dim})", "trainable")
    _arrow(ax, (7.2, 2.1), (7.6, 2.5))
    _arrow(ax, (8.9, 2.1), (8.5, 2.5))


def _draw_layers(ax, model) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """The PLM layers (with their adapters) on the left and a fusion layer beside each; returns
    where the last text layer and the last fusion layer end (the predictor's inputs)."""
    shown = _shown_layers(model.plm.config.num_hidden_layers)
    y0, step = 2.3, 1.75 if len(shown) == 3 else 5.2 / max(len(shown), 1)
    prev_text_top, prev_fusion = (2.0, 1.45), None
    for row, layer in enumerate(shown):
        y = y0 + row * step + 0.4
        top = _draw_text_layer(ax, model, layer, y)
        if row > 0 and shown[row] - shown[row - 1] > 1:
            ax.text(2.0, y - 0.55, "⋮", ha="center", va="center", fontsize=14)
            ax.text(5.0, y - 0.55, "⋮", ha="center", va="center", fontsize=14)
        else:
            _arrow(ax, prev_text_top, (2.0, y - 0.28))
        prev_text_top = (2.0, top)
        prev_fusion = _draw_fusion_layer(ax, model, layer, top - 0.2, row > 0, prev_fusion)
    return prev_text_top, prev_fusion


def _draw_text_layer(ax, model, layer: int, y: float) -> float:
    """PLM layer ``layer`` (and its adapter) centred at height ``y``; returns its top."""
    cfg, hidden = model.cfg, model.plm.config.hidden_size
    label = "frozen" if cfg.text_adaptation != "finetune" else "fine-tuned"
    _box(
        ax,
        2.0,
        y,
        2.4,
        0.55,
        f"BERT layer {layer} ({label})\nwidth {hidden}",
        "frozen" if cfg.text_adaptation != "finetune" else "trainable",
        fontsize=7.5,
    )
    if cfg.text_adaptation != "adapters":
        return y + 0.28
    _box(
        ax,
        2.0,
        y + 0.6,
        2.4,
        0.4,
        f"adapter {hidden}→{cfg.adapter_dim}→{hidden}",
        "adapter",
        fontsize=7,
    )
    return y + 0.8


def _draw_fusion_layer(
    ax, model, layer: int, fy: float, after_first: bool, prev_fusion: tuple[float, float] | None
) -> tuple[float, float]:
    """Fusion layer ``layer`` at height ``fy`` with its inputs ([CLS], AV token, the previous
    fusion output when chained); returns its top."""
    cfg, hidden = model.cfg, model.plm.config.hidden_size
    chain = cfg.fusion_connect == "chain"
    av_in = " ; av" if model.use_av else ""
    if cfg.fusion_module == "cross_attention":
        av_in = " ; attn(AV seq)"
    residual = chain and after_first
    prev_in = " ; f_{l-1}" if residual else ""
    _box(
        ax,
        5.0,
        fy,
        2.7,
        0.6,
        f"fusion {layer}: {'f_{l-1} + ' if residual else ''}FFN([W[CLS]{av_in}{prev_in}])\n"
        f"{'W (shared)' if cfg.cls_projection == 'shared' else 'W_l'}: "
        f"{hidden}→{cfg.fusion_proj_dim}, FFN hidden {cfg.fusion_hidden}",
        "fusion",
        fontsize=6.5,
    )
    _arrow(ax, (3.2, fy), (3.65, fy), colour="#31a354")
    if model.use_av:
        _arrow(ax, (8.05, 3.0), (6.35, fy), colour="#3182bd", rad=0.1)
    if chain and prev_fusion is not None:
        _arrow(ax, prev_fusion, (5.0, fy - 0.3), colour="#31a354")
    return (5.0, fy + 0.3)


def _draw_predictor(ax, text_top, fusion_top) -> None:
    _box(
        ax, 3.5, 9.5, 3.2, 0.55, "predictor: Linear([f_L ; [CLS]_L]) → score", "head", fontsize=7.5
    )
    _arrow(ax, text_top, (2.6, 9.22))
    _arrow(ax, fusion_top, (4.4, 9.22), colour="#31a354")
    _box(ax, 7.5, 9.5, 1.6, 0.5, "sentiment\n[-3, 3], L1 loss", "input", fontsize=7)
    _arrow(ax, (5.1, 9.5), (6.7, 9.5))


def _draw_legend(ax) -> None:
    legend = [
        ("frozen", "frozen PLM"),
        ("adapter", "adapter (trainable)"),
        ("trainable", "trainable"),
        ("fusion", "fusion (trainable)"),
    ]
    for i, (kind, text) in enumerate(legend):
        _box(ax, 7.3 + (i % 2) * 1.6, 7.6 - (i // 2) * 0.45, 1.5, 0.35, text, kind, fontsize=6.5)
