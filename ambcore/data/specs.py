"""The three datasets of MMSA's files: CMU-MOSEI (thesis 6.3.1), CMU-MOSI and CH-SIMS.

MMSA (github.com/thuiar/MMSA) distributes all three as the same pickle layout (``{"train" |
"valid" | "test": {"raw_text", "id", "text", "text_bert", "audio", "vision",
"regression_labels", ...}}``, ``ambcore.data.loaders``), with each dataset's own feature
sizes. What each ``DatasetSpec`` holds, and where it was checked:

- **Feature sizes and steps** from MMSA's ``src/MMSA/config/config_regression.json``
  (``datasetCommonParams``; its ``feature_dims`` and ``seq_lens`` are in the order text,
  audio, vision): CMU-MOSI aligned ``seq_lens [50, 50, 50]``, unaligned ``[50, 500, 375]``,
  ``feature_dims [768, 5, 20]`` (visual 20, Facet; acoustic 5, a COVAREP subset);
  CMU-MOSEI ``[768, 74, 35]`` with the same steps; CH-SIMS only ``unaligned_39.pkl``,
  ``seq_lens [39, 400, 55]``, ``feature_dims [768, 33, 709]`` (visual 709, OpenFace;
  acoustic 33, LibROSA), ``language "cn"``.
- **Splits**: the same config's ``train_samples`` (1,284 MOSI, 16,326 MOSEI, 1,368 SIMS); the
  whole splits are the standard folds, 1,284 / 229 / 686 (2,199 MOSI clips), 16,326 / 1,871 /
  4,659 (MOSEI, ``notebooks/01_data.py``), 1,368 / 456 / 457 (the 2,281 clips of the CH-SIMS
  paper, Yu et al. 2020).
- **Labels**: sentiment in [-3, 3] for MOSI and MOSEI, in [-1, 1] for SIMS (MMSA's
  ``metricsTop.__eval_sims_regression`` clips to [-1, 1]); SIMS files also carry one label per
  modality, ``regression_labels_T`` / ``_A`` / ``_V`` (MMSA's feature extraction writes them
  beside ``regression_labels``). ambcore trains on ``regression_labels`` only.
- **Text**: MMSA tokenises MOSI and MOSEI with bert-base-uncased, SIMS with bert-base-chinese
  (the config's ``pretrained``) into ``text_bert`` (N, 3, text steps). ambcore never reads
  ``text_bert`` or ``text``: it tokenises ``raw_text`` with the tokenizer of the PLM it trains
  (``--plm``, any local Hugging Face folder), so a SIMS file runs with any Chinese PLM folder.
- **Ids**: ``<video>$_$<clip>``; SIMS names them ``video_0001$_$0001``.

``Config.dataset`` chooses how a loaded file is checked: ``auto`` (the default) names the
dataset from the feature sizes (``detect``) and accepts any sizes, as before; ``mosei``,
``mosi`` or ``sims`` declares it, and a file whose sizes or labels do not fit is refused
(``check``) in one line naming the file, the key and the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ambcore.errors import DataError

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "DATASET_CHOICES",
    "AUTO",
    "LABEL_TOLERANCE",
    "spec",
    "detect",
    "check",
]

AUTO = "auto"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset as MMSA's files hold it."""

    key: str  # the Config.dataset value: "mosei" | "mosi" | "sims"
    name: str  # "CMU-MOSEI"
    language: str  # "en" | "zh"
    visual_dim: int
    acoustic_dim: int
    visual_features: str  # the extractor, for messages
    acoustic_features: str
    splits: tuple[int, int, int]  # the whole dataset's train / valid / test utterances
    text_steps: int  # text_bert's and text's steps (word pieces incl. [CLS]/[SEP])
    # layout -> file name in MMSA's download; "aligned" only where MMSA ships it
    files: tuple[tuple[str, str], ...]
    unaligned_steps: tuple[int, int]  # (vision, audio) steps of the unaligned file
    label_range: tuple[float, float]
    per_modality_labels: bool  # regression_labels_T / _A / _V beside regression_labels
    mmsa_plm: str  # the PLM MMSA's config names for this dataset's text

    @property
    def aligned_steps(self) -> int | None:
        """Steps of the aligned file (one per word), None where MMSA ships none."""
        return self.text_steps if dict(self.files).get("aligned") else None

    def describe(self) -> str:
        """``CMU-MOSI (visual 20, Facet; acoustic 5, COVAREP subset)``."""
        return (
            f"{self.name} (visual {self.visual_dim}, {self.visual_features}; "
            f"acoustic {self.acoustic_dim}, {self.acoustic_features})"
        )


DATASETS: dict[str, DatasetSpec] = {
    "mosei": DatasetSpec(
        key="mosei",
        name="CMU-MOSEI",
        language="en",
        visual_dim=35,
        acoustic_dim=74,
        visual_features="Facet",
        acoustic_features="COVAREP",
        splits=(16326, 1871, 4659),
        text_steps=50,
        files=(("aligned", "aligned_50.pkl"), ("unaligned", "unaligned_50.pkl")),
        unaligned_steps=(500, 500),  # the synthetic MOSEI-format files' padding (config: 375/500)
        label_range=(-3.0, 3.0),
        per_modality_labels=False,
        mmsa_plm="bert-base-uncased",
    ),
    "mosi": DatasetSpec(
        key="mosi",
        name="CMU-MOSI",
        language="en",
        visual_dim=20,
        acoustic_dim=5,
        visual_features="Facet",
        acoustic_features="COVAREP subset",
        splits=(1284, 229, 686),
        text_steps=50,
        files=(("aligned", "aligned_50.pkl"), ("unaligned", "unaligned_50.pkl")),
        unaligned_steps=(375, 500),
        label_range=(-3.0, 3.0),
        per_modality_labels=False,
        mmsa_plm="bert-base-uncased",
    ),
    "sims": DatasetSpec(
        key="sims",
        name="CH-SIMS",
        language="zh",
        visual_dim=709,
        acoustic_dim=33,
        visual_features="OpenFace",
        acoustic_features="LibROSA",
        splits=(1368, 456, 457),
        text_steps=39,
        files=(("unaligned", "unaligned_39.pkl"),),
        unaligned_steps=(55, 400),
        label_range=(-1.0, 1.0),
        per_modality_labels=True,
        mmsa_plm="bert-base-chinese",
    ),
}
DATASET_CHOICES = (AUTO, *DATASETS)  # Config.dataset's values (ambcore.config._CHOICES)
LABEL_TOLERANCE = 1e-4  # float32 rounding of labels stored as e.g. 3.0000002


def spec(key: str) -> DatasetSpec:
    """The spec of ``key`` ("mosei", "mosi", "sims"); a ``DataError`` naming the choices else."""
    if key not in DATASETS:
        raise DataError(f"dataset {key!r}: unknown; expected one of {', '.join(DATASETS)}")
    return DATASETS[key]


def detect(visual_dim: int, acoustic_dim: int) -> str:
    """The dataset whose MMSA features have these sizes, or "" when none has."""
    for key, s in DATASETS.items():
        if (s.visual_dim, s.acoustic_dim) == (int(visual_dim), int(acoustic_dim)):
            return key
    return ""


def _keys(fmt: str) -> tuple[str, str, str]:
    """The file's names for the visual, acoustic and label fields (by layout)."""
    if fmt.startswith("mmsa"):
        return "vision", "audio", "regression_labels"
    return "visual", "acoustic", "label"


def check(dataset, declared: str) -> None:
    """Refuse a loaded ``MultimodalDataset`` that does not fit the ``declared`` dataset: its
    feature sizes, then its labels' range. One line naming the file, the key and the value."""
    if declared == AUTO:
        return
    s = spec(declared)
    visual_key, acoustic_key, label_key = _keys(dataset.format)
    hint = "; set dataset=auto to accept any feature sizes"
    for key, found, wanted in (
        (visual_key, dataset.visual_dim, s.visual_dim),
        (acoustic_key, dataset.acoustic_dim, s.acoustic_dim),
    ):
        if found != wanted:
            raise DataError(
                f"{dataset.source}: key {key!r} has feature size {found}; expected {wanted} "
                f"for dataset={declared}, {s.describe()}{hint}"
            )
    low, high = s.label_range
    for name, split in dataset.splits.items():
        labels = np.asarray(split.labels, dtype=np.float64)
        bad = (labels < low - LABEL_TOLERANCE) | (labels > high + LABEL_TOLERANCE)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{dataset.source}: split {name!r}, key {label_key!r}: label "
                f"{labels[row]:g} at row {row}; expected labels in [{low:g}, {high:g}] for "
                f"dataset={declared} ({s.name})"
            )
