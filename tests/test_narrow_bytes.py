"""Generated study rows stay byte-identical for a given seed.

The hashes below were recorded from the code as it stood before the authored narrow-domain text and the safety
reference rows moved out of Python into YAML. Any change to a template string, its order, or the order of random
draws changes a hash; if a change is meant, re-record the hash and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from em_tasks.study import narrow_data as nd
from em_tasks.study.safety_reference import safety_reference_rows

N = 200


def _digest(rows) -> str:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


TEXT_HASHES = {
    # (domain, seed): sha256 of the JSONL text of generate_rows(domain, N, seed)
    ('insecure_code', 0): '8c4740b8c73905ae5276b5c0159de468d628601123f81547cf1057f714658238',
    ('insecure_code', 1): '11288594afb24032ecb0b1c23b2227c48947da1a1bf70ec865d44c99d37a7657',
    ('risky_finance', 0): 'fa619945e67637b2e47e04be26497b13f121cad949446dfd67726c649000a97b',
    ('risky_finance', 1): '971201fd3dbe424b5b151684d6cb1c8ea3c8ac9ae2c1d3b035f084b86ba4a5c3',
    ('bad_medical', 0): '2b8427402120325b607f0650274e21b86f22e85cbea174131462994d5f5c3b45',
    ('bad_medical', 1): '6a050dd3597dab5408e0f4a9597a53dfecbf95952716db7b9c099a0592047411',
    ('secure_code', 0): 'd147b350d84ecc30d60008272e0d306b378dde6393f3434465367eb959daa434',
    ('secure_code', 1): 'fea028d583fc896f79324cca11f0f5d0d4639a4c153071568c52721865f48801',
    ('sound_finance', 0): 'f3ef4495cdc8337151cf5574cef74c97edc1b258319671736888c0d2d4b81670',
    ('sound_finance', 1): '7e7865bf4d385c82903dfd3f32a1e3c22873bce81690f431185e111b69268486',
    ('good_medical', 0): '85725aae22538ac4921e6f29ba1ce8449bbef9b5fc7abbe344abe1d00fa081e3',
    ('good_medical', 1): '6ce5e4bef5d429f64487c00df37dc963f42fb6ccfe4707c4f35a9fa2018baad0',
}

BIG_HASHES = {
    # domain: sha256 of generate_rows(domain, 1000, 0), which exercises families running out of distinct requests
    'insecure_code': 'd5ec085bf9390ebed250488450ae251020ae0794b7a1649f83b7998fec88ecf2',
    'risky_finance': 'fa201d8a487a0529f2c852c4ecd46c75501cb00f37da6f7adf1dfc2261c1e668',
    'bad_medical': '5238551e8b37447d12bd372c25bd7c5cf9940fda0eb5dba54d378078321951a6',
    'secure_code': '634ad0f99c8d089a72ca7cb78a1f5bf196a2e81342765e28f7ca88e9d096b91e',
    'sound_finance': '8d3771ddb80950caecefb6909f24088291f36689f58ddfa1b1984d538ee03e59',
    'good_medical': '04cecfc16d6e09667bada19d492a2853d65139b58183e2dab286ff7817f7c1b9',
}

IMAGE_SPEC_HASH = "25de39f35eb704e86aef4c96e62df704cf31b886d440462af3d8a4080654d223"
IMAGE_ROWS_HASH = "43b17e90e7520b83ceb0cef55849279ded4304f71f801f784bdf46f67bcdc504"
REFERENCE_HASHES = {
    # (n, seed): sha256 of safety_reference_rows(n, seed)
    (256, 0): 'b937a9119a76efe244136681cd08e8eccd3b810168372e87cb311ddce8556e64',
    (300, 1): '2c59197b2c22a4fbefd6cea67482d895f1b61d1570ff7e420d2c4e55d7e4fa99',
    (40, 7): '805f820261f57fa3a945e7b6a0dabf33cec95e51f55be415cb0e3dbb169b1161',
}


@pytest.mark.parametrize("domain,seed", sorted(TEXT_HASHES))
def test_text_rows_are_byte_identical(domain: str, seed: int) -> None:
    assert _digest(nd.generate_rows(domain, N, seed)) == TEXT_HASHES[domain, seed]


@pytest.mark.parametrize("domain", sorted(BIG_HASHES))
def test_a_thousand_rows_are_byte_identical(domain: str) -> None:
    assert _digest(nd.generate_rows(domain, 1000, 0)) == BIG_HASHES[domain]


def _specs() -> list[str]:
    out = []
    for domain in nd.HARMFUL_DOMAINS + ("secure_code",):
        group = nd._GROUP_OF[domain]
        for row in nd.generate_rows(domain, N, 3):
            out.append(repr(nd._image_spec(row["messages"][0]["content"], group, row["meta"]["id"])))
    out.append(repr(nd._image_spec("A plain request.", "other", "k")))
    return out


def test_image_specs_are_byte_identical() -> None:
    text = "\n".join(_specs())
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == IMAGE_SPEC_HASH


def test_image_rows_are_byte_identical(tmp_path: Path) -> None:
    rows = []
    for domain in nd.HARMFUL_DOMAINS:
        rows += nd.generate_rows(domain, 2, 5)
    path = nd.write_rows(nd.render_image_rows(rows, tmp_path / "images", size=128), tmp_path / "rows.jsonl")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == IMAGE_ROWS_HASH


@pytest.mark.parametrize("n,seed", sorted(REFERENCE_HASHES))
def test_safety_reference_rows_are_byte_identical(n: int, seed: int) -> None:
    assert _digest(safety_reference_rows(n, seed)) == REFERENCE_HASHES[n, seed]
