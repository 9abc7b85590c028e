"""Near-duplicate queries: a handcrafted set, the shingles, and the disk-backed building blocks."""

import json

import numpy as np
import pyarrow.parquet as pq

from ptr_pipeline.queries import QueryPoolSettings, build_query_pool
from ptr_pipeline.queries.decontaminate import normalise
from ptr_pipeline.queries.neardup import KeyPartitions, UnionFind, numbers, shingles

STORY = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle, and "
    "describe how the discovery changes the way he thinks about the people who live on the "
    "mainland across the bay."
)
ESSAY = (
    "Compare the economic policies of the early Roman Republic with those of the late Roman "
    "Empire, focusing on taxation, coinage, land ownership and the treatment of conquered "
    "provinces, in a structured essay."
)
FARM = (
    "A farmer has 12 cows and buys 7 more at the market on Monday. Each cow gives 9 liters of "
    "milk a day, and the farmer sells the milk for 2 dollars a liter. How much money does the "
    "farmer make from the milk in one week?"
)
PHOTO = (  # Chinese punctuation (U+FF0C fullwidth comma), as written
    "请用三段话向十岁的孩子解释光合作用的过程\uff0c说明植物如何利用阳光、水和二氧化碳制造养分\uff0c"
    "并讲讲它为什么对地球上的动物和人类都非常重要。"
)

# (query, the query it should be clustered with, or None to stay apart). In order of the file.
HANDCRAFTED = [
    (STORY, None),
    ("What is 12+7?", None),
    (STORY.replace("he thinks", "he feels"), STORY),  # one word changed mid-sentence
    ("What is 12-7?", None),  # one sign changed: another problem
    (ESSAY, None),
    ("Explain sleep to a ten-year-old in three short paragraphs.", None),
    (FARM, None),
    (FARM.replace("make", "earn"), FARM),  # reworded, same numbers
    (FARM.replace("buys 7", "buys 8"), None),  # one number changed: another problem
    ("Explain volcanoes to a ten-year-old in three short paragraphs.", None),  # a template
    ("Please w" + STORY[1:-1] + "!", STORY),  # a polite prefix, other punctuation
    (ESSAY[:-1] + " with headings.", ESSAY),  # a few words appended
    ("Summarize the causes of the French Revolution.", None),
    ("Summarize the consequences of the French Revolution.", None),
    (PHOTO, None),
    (PHOTO.replace("非常重要", "十分重要"), PHOTO),  # Chinese: character 5-grams
    ("请用三段话向十岁的孩子解释火山喷发的原因和它对周围居民生活的影响。", None),
    ("WHAT is  12+7?", "What is 12+7?"),  # an exact duplicate once normalised
]


def jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(normalise(a))), set(shingles(normalise(b)))
    return len(sa & sb) / len(sa | sb)


def test_handcrafted_near_duplicates_cluster_and_different_queries_stay_apart(tmp_path):
    """At the default threshold 0.8: rewordings of long instructions (Jaccard 0.85-0.92) are one
    cluster; a changed number or sign, a template filled with another topic (0.71) and short
    queries differing in one word (0.33) stay apart. What the set shows, measured."""
    texts = [t for t, _ in HANDCRAFTED]
    similar = {t: other for t, other in HANDCRAFTED if other is not None}
    # The set's own similarities, so the claims above are checked, not assumed.
    assert 0.84 < jaccard(STORY, texts[2]) < 0.85
    assert 0.92 < jaccard(STORY, texts[10]) < 0.93
    assert 0.88 < jaccard(FARM, texts[7]) < 0.89
    assert 0.88 < jaccard(FARM, texts[8]) < 0.89  # as similar as the rewording, yet 8 != 7
    assert 0.89 < jaccard(ESSAY, texts[11]) < 0.9
    assert 0.85 < jaccard(PHOTO, texts[15]) < 0.86
    assert 0.71 < jaccard(texts[5], texts[9]) < 0.72
    assert jaccard("What is 12+7?", "What is 12-7?") < 0.15
    assert numbers(normalise(texts[8])) != numbers(normalise(FARM))
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"query": t}, ensure_ascii=False) + "\n" for t in texts))

    result = build_query_pool(
        QueryPoolSettings(source=str(source), min_chars=5), tmp_path / "pool.parquet"
    )
    kept = pq.read_table(result.path).column("query").to_pylist()
    assert kept == [t for t in texts if t not in similar]
    assert result.dropped == {"duplicate": 1, "near_duplicate": 5}
    clusters = result.clusters
    assert clusters["clusters"] == 5 and clusters["rows_in_clusters"] == 11
    largest = clusters["largest"][0]
    assert largest["size"] == 3 and largest["kept"]["query"].startswith("Write a short story")
    assert [m["match"] for m in largest["members"]] == ["near", "near"]
    assert largest["members"][1]["query"].startswith("Please write a short story")
    exact = next(c for c in clusters["largest"] if c["kept"]["query"] == "What is 12+7?")
    assert exact["members"] == [
        {"query_id": exact["members"][0]["query_id"], "query": "WHAT is  12+7?", "match": "exact"}
    ]

    # Near-dup off: only the exact duplicate goes. At 0.9 only the closest pair (0.92) is one;
    # at 0.7 the template pair joins too.
    off = build_query_pool(
        QueryPoolSettings(source=str(source), min_chars=5, near_dup=False), tmp_path / "off.pq"
    )
    assert off.dropped == {"duplicate": 1} and off.rows == len(texts) - 1
    strict = build_query_pool(
        QueryPoolSettings(source=str(source), min_chars=5, near_dup_threshold=0.9),
        tmp_path / "strict.parquet",
    )
    assert strict.dropped == {"duplicate": 1, "near_duplicate": 1}
    loose = build_query_pool(
        QueryPoolSettings(source=str(source), min_chars=5, near_dup_threshold=0.7),
        tmp_path / "loose.parquet",
    )
    joined = set(texts) - set(pq.read_table(loose.path).column("query").to_pylist())
    assert joined == set(similar) | {texts[9]}  # 0.7 also joins the template (0.71)


def test_shingles_numbers_and_scripts():
    assert shingles(normalise("What is 12+7?")) == [b"what is 12", b"is 12 +", b"12 + 7", b"+ 7 ?"]
    assert shingles("hi there") == [b"hi there"]  # shorter than a shingle: the whole text
    # Signs count beside a number only: the hyphens of "ten-year-old" are not arithmetic.
    assert numbers(normalise("x >= 3, 4 - 1 = 3 in a ten-year-old way")) == ">= 3 4 - 1 = 3"
    assert numbers("what is 12+7?") == numbers("what is 12 + 7 ?") != numbers("what is 12-7?")
    assert numbers("no numbers here") == ""
    cjk = ["光合作用很", "合作用很重", "作用很重要"]  # no spaces between words: characters
    assert shingles("光合作用很重要") == [g.encode() for g in cjk]
    assert shingles("use print() 打印") == [b"use print ()", b"print () \xe6\x89\x93\xe5\x8d\xb0"]


def test_union_find_matches_a_plain_reference():
    rng = np.random.default_rng(0)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    union = UnionFind(n)
    for start in range(0, len(a), 100):  # in several calls, as the pool does per partition
        union.union(a[start : start + 100], b[start : start + 100])
    parent = list(range(n))  # the textbook version

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)
    roots = np.concatenate([r for _, r in union.roots(chunk=300)])
    assert roots.tolist() == [find(x) for x in range(n)]  # and each root is its cluster's min
    assert union.parent.dtype == np.int32


def test_key_partitions_group_equal_keys_to_their_first_row(tmp_path):
    parts = KeyPartitions(tmp_path / "keys", parts=4)
    keys = np.array([5, 2**63 + 1, 5, 7, 2**63 + 1, 5], dtype=np.uint64)
    parts.add(keys[:3], np.arange(3))
    parts.add(keys[3:], np.arange(3, 6))
    pairs = sorted(
        (r, f)
        for rows, firsts in parts.groups()
        for r, f in zip(rows.tolist(), firsts.tolist(), strict=True)
    )
    assert pairs == [(2, 0), (4, 1), (5, 0)]
    assert list((tmp_path / "keys").iterdir()) == []  # each file removed once read
