"""The architecture figure (thesis figure 6.1) shows the model it is drawn from."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from ambcore.config import get_config  # noqa: E402
from ambcore.models import build_model  # noqa: E402
from ambcore.models.diagram import _shown_layers, amb_figure  # noqa: E402


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_shown_layers_elide_the_middle_of_deep_plms():
    assert _shown_layers(2) == [1, 2] and _shown_layers(3) == [1, 2, 3]
    assert _shown_layers(12) == [1, 2, 12]


def test_figure_follows_the_configuration():
    full = amb_figure(build_model(get_config("smoke"), 35, 74))
    texts = _texts(full)
    layers = [t for t in texts if t.startswith("BERT layer")]
    assert len(layers) == 2  # the smoke preset's PLM has two layers
    assert any(t.startswith("adapter ") and "→" in t for t in texts)
    assert any("visual seq\n(Lv, 35)" == t for t in texts)
    assert any(t.startswith("fusion 2: f_{l-1} + FFN([W[CLS] ; av ; f_{l-1}])") for t in texts)
    text_only = amb_figure(build_model(get_config("smoke", variant="text-only"), 35, 74))
    texts = _texts(text_only)
    assert any(t.startswith("text-only: no visual/acoustic") for t in texts)
    assert not any(t.startswith("visual encoder") for t in texts)
    tuned = amb_figure(build_model(get_config("smoke", text_adaptation="finetune"), 35, 74))
    assert not any(t.startswith("adapter ") and "→" in t for t in _texts(tuned))
    assert "text_adaptation=finetune" in tuned.axes[0].get_title()
    plt.close("all")
