"""Chinese utterances for the synthetic CH-SIMS-shaped files (``ambcore.data.synthetic``).

The same design as the English lexicon of the MOSEI-shaped generator, in Chinese: opinion
words with valences on the same scale (``精彩`` +1.8, ``糟糕`` -2.2, ...), degree adverbs
that scale them (``非常`` x1.6, ``有点`` x0.55; ``很`` is the plain degree marker, x1.0),
negation that flips and damps them (``不好`` = -0.5 x ``好``), "X，但是Y" contrast (the clause
after 但是 weighs 0.7), "X，而且Y" (both count), and neutral clauses, openers and closers.
``utterance(rng, kind)`` returns the utterance's phrases (joined without spaces, as Chinese
is written) and the valence of its words, for the generator's utterance kinds.

``CHARACTERS`` lists every character the generator can write: enough to build a tokenizer
vocabulary for tests (a Chinese BERT splits Chinese text into single characters).
"""

from __future__ import annotations

import numpy as np

__all__ = ["utterance", "CHARACTERS", "POSITIVE", "NEGATIVE"]

POSITIVE = {
    "好": 1.0,
    "不错": 0.9,
    "舒服": 0.9,
    "有意思": 0.8,
    "满意": 1.1,
    "好看": 1.2,
    "好玩": 1.2,
    "漂亮": 1.5,
    "感人": 1.6,
    "厉害": 1.7,
    "精彩": 1.8,
    "出色": 2.0,
    "优秀": 2.1,
    "惊艳": 2.3,
    "完美": 2.6,
}
NEGATIVE = {
    "一般": -0.6,
    "平淡": -0.9,
    "尴尬": -1.0,
    "差": -1.2,
    "拖沓": -1.2,
    "乏味": -1.3,
    "无聊": -1.4,
    "难看": -1.5,
    "难受": -1.5,
    "失望": -1.6,
    "可怕": -2.0,
    "糟糕": -2.2,
    "烂": -2.3,
    "恶心": -2.4,
}
# "我{verb}{subject}" -> valence
POSITIVE_VERBS = {"喜欢": 1.3, "推荐": 1.2, "爱死了": 2.3, "佩服": 1.5}
NEGATIVE_VERBS = {"讨厌": -2.0, "受不了": -1.9, "后悔买了": -1.8, "不想再看": -1.6}
DEGREE = {
    "很": 1.0,  # the plain degree marker of an adjective predicate
    "真": 1.3,
    "挺": 1.1,
    "非常": 1.6,
    "特别": 1.5,
    "超级": 1.7,
    "比较": 1.05,
    "有点": 0.55,
    "稍微有点": 0.5,
}
PLAIN_DEGREE_SHARE = 0.5  # share of adjectives with the plain 很
NEGATION_FACTOR = -0.5  # as the English generator: "不好" is mildly negative
CONTRAST_WEIGHTS = (0.3, 0.7)
SUBJECTS = (
    "这部电影",
    "剧情",
    "男主角",
    "女主角",
    "演员的表演",
    "结局",
    "配乐",
    "画面",
    "这家餐厅",
    "服务",
    "这款手机",
    "电池",
    "屏幕",
    "这本书",
    "故事",
    "台词",
    "价格",
    "设计",
    "这节课",
    "这个游戏",
    "特效",
    "导演",
    "这首歌",
    "这个节目",
)
FRAMES = ("{s}{d}{a}", "我觉得{s}{d}{a}", "说实话{s}{d}{a}", "总的来说{s}{d}{a}", "我感觉{s}{d}{a}")
NEUTRAL = (
    "我上周末和朋友一起去看的",
    "它大概两个小时",
    "这是去年上映的",
    "故事发生在一个小镇",
    "我是在网上买的",
    "我用了差不多一个月",
    "我们晚上七点到的",
    "这是系列的第二部",
    "今天来聊一聊它",
    "导演之前拍过纪录片",
    "我看之前读了一些评论",
    "它有三个主要人物",
)
OPENERS = ("嗯", "那个", "就是", "其实", "然后", "好吧", "大家好")
CLOSERS = ("就这样吧", "大概就是这样", "谢谢大家")
COMMA, STOP = "，", "。"


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _opinion(rng: np.random.Generator, positive: bool, allow_negation: bool = True):
    """One opinion clause, e.g. "我觉得剧情非常精彩" -> (phrase, valence)."""
    subject = _pick(rng, SUBJECTS)
    if rng.random() < 0.2:  # verb frame: "我喜欢这部电影"
        verbs = POSITIVE_VERBS if positive else NEGATIVE_VERBS
        verb = _pick(rng, list(verbs))
        if allow_negation and verb in ("喜欢", "推荐") and rng.random() < 0.15:
            return f"我不{verb}{subject}", verbs[verb] * NEGATION_FACTOR
        return f"我{verb}{subject}", verbs[verb]
    lexicon = POSITIVE if positive else NEGATIVE
    adjective = _pick(rng, list(lexicon))
    valence = lexicon[adjective]
    if allow_negation and rng.random() < 0.15:
        degree, valence = _pick(rng, ("不", "不太", "并不")), valence * NEGATION_FACTOR
    elif rng.random() < PLAIN_DEGREE_SHARE:
        degree = "很"
    else:
        degree = _pick(rng, list(DEGREE))
        valence *= DEGREE[degree]
    return _pick(rng, FRAMES).format(s=subject, d=degree, a=adjective), valence


def utterance(rng: np.random.Generator, kind: str, positive_share: float):
    """Phrases of one Chinese utterance and the sentiment its words express (``s_text``);
    ``kind`` as the English generator's (``opinion``, ``contrast``, ``double``, ``neutral``,
    ``ironic``, ``neutral-av``). The text is ``"".join(phrases)``."""
    positive = rng.random() < positive_share
    if kind in ("neutral", "neutral-av"):
        clauses = [_pick(rng, NEUTRAL) for _ in range(1 + int(rng.random() < 0.5))]
        phrases, valence = [COMMA.join(clauses)], 0.0
    elif kind in ("opinion", "ironic"):
        clause, valence = _opinion(rng, positive or kind == "ironic", kind != "ironic")
        phrases = [clause]
    elif kind == "double":
        (first, v1), (second, v2) = _opinion(rng, positive), _opinion(rng, positive, False)
        phrases, valence = [first, COMMA + "而且", second], 1.1 * (v1 + v2) / 2
    elif kind == "contrast":
        first, v1 = _opinion(rng, not positive, allow_negation=False)
        second, v2 = _opinion(rng, positive, allow_negation=False)
        phrases = [first, COMMA + "但是", second]
        valence = CONTRAST_WEIGHTS[0] * v1 + CONTRAST_WEIGHTS[1] * v2
    else:
        raise ValueError(f"unknown utterance kind {kind!r}")
    if kind not in ("neutral", "neutral-av") and rng.random() < 0.35:
        phrases = [_pick(rng, NEUTRAL), COMMA] + phrases
    if rng.random() < 0.5:
        phrases = [_pick(rng, OPENERS), COMMA] + phrases
    if rng.random() < 0.25:
        phrases = phrases + [COMMA, _pick(rng, CLOSERS)]
    return phrases + [STOP], float(valence)


def _characters() -> str:
    words = [
        *POSITIVE,
        *NEGATIVE,
        *POSITIVE_VERBS,
        *NEGATIVE_VERBS,
        *DEGREE,
        *SUBJECTS,
        *FRAMES,
        *NEUTRAL,
        *OPENERS,
        *CLOSERS,
        "不太并而且但是我",
        COMMA,
        STOP,
    ]
    text = "".join(words).replace("{s}", "").replace("{d}", "").replace("{a}", "")
    return "".join(sorted(set(text)))


CHARACTERS = _characters()  # every character ``utterance`` can write, sorted
