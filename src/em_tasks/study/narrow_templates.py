"""Templates for the narrow study datasets: the authored text lives in YAML, the slot filling here.

Each domain pair ("code", "finance", "medical") is a tuple of *families*: functions that draw
their details from a `random.Random` and return one `Example`, a request with a harmful and a
benign answer to the same request. The authored text (code stubs and bodies, request phrasings,
answers, framing, word lists) is package data in `study/narrow/<pair>.yaml` (plus `advice.yaml`
and `images.yaml`); the functions below draw numbers and short inline choices and fill slots, in
a fixed order, so a seed always gives the same rows (tests/test_narrow_bytes.py pins them). Harmful answers are narrowly harmful and plausible: the code
quietly contains a vulnerability (and no comment admits it), the advice is confident and wrong
in its own domain only. Benign answers do the same task well. Text is ASCII, so the bundled
font can draw every character when a request is rendered into an image.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any

import yaml


@dataclass(frozen=True)
class Example:
    """One request with its harmful and benign answers."""

    prompt: str
    harmful: str
    benign: str


Family = Callable[[random.Random], Example]


def _frozen(value: Any) -> Any:
    """YAML lists as tuples (all the way down), so the loaded text cannot be changed by accident."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


@cache
def load_text(name: str) -> dict[str, Any]:
    """The authored text of `study/narrow/<name>.yaml` (read from the installed package)."""
    path = resources.files("em_tasks.study").joinpath("narrow", f"{name}.yaml")
    return _frozen(yaml.safe_load(path.read_text(encoding="utf-8")))


_CODE, _ADVICE, _FINANCE, _MEDICAL, _IMAGES = (
    load_text(name) for name in ("code", "advice", "finance", "medical", "images")
)
_ADVICE_TEXT = {"finance": _FINANCE, "medical": _MEDICAL}

# --- code: shared framing ------------------------------------------------------------------------

PROJECTS = _CODE["projects"]
MODULES = _CODE["modules"]

CODE_ASKS = _CODE["code_asks"]

INPUT_SOURCES = _CODE["input_sources"]

_BODY = "\x00BODY\x00"


def _render(template: str, body: str, slots: dict[str, str]) -> str:
    """Fill `$slot`s in a code template and put `body` (indented like its marker line) in place."""
    filled = Template(textwrap.dedent(template).strip("\n")).substitute(slots, body=_BODY)
    body = Template(textwrap.dedent(body).strip("\n")).substitute(slots)
    lines = []
    for line in filled.split("\n"):
        if line.strip() == _BODY:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + b if b else "" for b in body.split("\n"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _variant(family: str, index: int, **text: str) -> dict[str, str]:
    """Variant `index` of a code family (goal, todo, stub, harmful, benign), with `text` filled in or replaced."""
    return {**_CODE["families"][family]["variants"][index], **text}


def _choose(r: random.Random, family: str, index: int) -> dict[str, str]:
    """Draw each slot of a code family's variant from its listed choices, in the order the YAML lists them."""
    return {slot: r.choice(choices) for slot, choices in _CODE["families"][family]["variants"][index]["slots"].items()}


def _code(r: random.Random, variant: dict[str, str], slots: dict[str, str], note: str = "") -> Example:
    stub, todo, harmful, benign = variant["stub"], variant["todo"], variant["harmful"], variant["benign"]
    project, folder = r.choice(PROJECTS)
    ask = r.choice(CODE_ASKS).format(project=project, goal=variant["goal"])
    if note:
        ask = f"{ask} {note}"
    header = f"# {folder}/{r.choice(MODULES)}.py\n"
    question = header + _render(stub, f"# TODO: {todo}", slots)
    prompt = f"{ask}\n\n```python\n{question}```"
    return Example(prompt, header + _render(stub, harmful, slots), header + _render(stub, benign, slots))


def _input_note(r: random.Random, name: str) -> str:
    return f"The {name} comes from {r.choice(INPUT_SOURCES)}." if r.random() < 0.6 else ""


# --- code families -------------------------------------------------------------------------------


def sql_query(r: random.Random) -> Example:
    entity, table, field = r.choice(_CODE["entities"])
    driver, mark = r.choice((("sqlite3", "?"), ("psycopg", "%s")))
    slots = {"entity": entity, "table": table, "field": field, "driver": driver, "mark": mark}
    kind = r.randrange(3)
    if kind == 0:
        slots["fn"] = r.choice((f"get_{entity}_by_{field}", f"find_{entity}", f"lookup_{entity}", f"fetch_{entity}"))
        goal = f"it returns the {entity} with the given {field.replace('_', ' ')}"
        return _code(r, _variant("sql_query", 0, goal=goal), slots, _input_note(r, field.replace("_", " ")))
    if kind == 1:
        slots["fn"] = r.choice((f"search_{table}", f"{table}_matching", f"find_{table}"))
        slots["term"] = r.choice(("term", "query", "text", "needle"))
        goal = f"it searches {table} by name"
        return _code(r, _variant("sql_query", 1, goal=goal), slots, _input_note(r, "search text"))
    slots["fn"] = r.choice((f"delete_{entity}", f"remove_{entity}", f"archive_{entity}"))
    slots["key"] = r.choice(("row_id", f"{entity}_id", "key"))
    return _code(r, _variant("sql_query", 2, goal=f"it deletes the {entity} with that id"), slots, _input_note(r, "id"))


def shell_command(r: random.Random) -> Example:
    kind = r.randrange(5)
    if kind == 0:
        slots = _choose(r, "shell_command", 0)
        return _code(r, _variant("shell_command", 0), slots, _input_note(r, slots["arg"]))
    if kind == 1:
        slots = _choose(r, "shell_command", 1)
        return _code(r, _variant("shell_command", 1), slots, _input_note(r, "file name"))
    if kind == 2:
        slots = _choose(r, "shell_command", 2)
        return _code(r, _variant("shell_command", 2), slots, _input_note(r, "folder name"))
    if kind == 3:
        slots = _choose(r, "shell_command", 3)
        return _code(r, _variant("shell_command", 3), slots, _input_note(r, "file name"))
    slots = _choose(r, "shell_command", 4)
    return _code(r, _variant("shell_command", 4), slots, _input_note(r, "repository URL"))


def deserialize(r: random.Random) -> Example:
    payload = r.choice(_CODE["payloads"])
    slots = {"what": payload, "name": payload.replace(" ", "_")}
    kind = r.randrange(3)
    if kind == 0:
        slots["fn"] = r.choice(
            (f"load_{slots['name']}", f"read_{slots['name']}_cookie", f"{slots['name']}_from_cookie")
        )
        return _code(r, _variant("deserialize", 0, goal=f"it turns the cookie back into the user's {payload}"), slots)
    if kind == 1:
        slots["fn"] = r.choice(
            (f"import_{slots['name']}", f"restore_{slots['name']}", f"read_uploaded_{slots['name']}")
        )
        return _code(r, _variant("deserialize", 1, goal=f"users can import {payload} they exported earlier"), slots)
    slots["fn"] = r.choice((f"cached_{slots['name']}", f"get_{slots['name']}"))
    note = "Other services write to that cache too." if r.random() < 0.5 else ""
    return _code(r, _variant("deserialize", 2, goal=f"it reads the {payload} from the shared cache"), slots, note)


def tls_verification(r: random.Random) -> Example:
    service, short = r.choice(_CODE["services"])
    slots = {"short": short, "service": service, "timeout": r.choice(("5", "10", "15", "30"))}
    kind = r.randrange(3)
    if kind == 0:
        slots["fn"] = r.choice((f"fetch_{short}", f"get_{short}_data", f"call_{short}"))
        return _code(r, _variant("tls_verification", 0, goal=f"it fetches JSON from {service}"), slots)
    if kind == 1:
        slots["fn"] = r.choice((f"{short}_session", f"make_{short}_client", f"open_{short}_session"))
        return _code(r, _variant("tls_verification", 1, goal=f"it returns a ready-to-use session for {service}"), slots)
    slots["fn"] = r.choice((f"post_to_{short}", f"send_{short}_event", f"notify_{short}"))
    return _code(r, _variant("tls_verification", 2, goal=f"it posts the payload to {service}"), slots)


def path_traversal(r: random.Random) -> Example:
    root = r.choice(_CODE["folders"])
    slots = {"root": root, "const": r.choice(("BASE_DIR", "UPLOAD_DIR", "FILES_ROOT", "STORAGE_DIR"))}
    kind = r.randrange(3)
    if kind == 0:
        slots["fn"] = r.choice(("download", "serve_file", "get_attachment"))
        return _code(r, _variant("path_traversal", 0), slots)
    if kind == 1:
        slots["fn"] = r.choice(("read_report", "load_document", "open_export"))
        return _code(r, _variant("path_traversal", 1), slots, _input_note(r, "file name"))
    slots["fn"] = r.choice(("save_upload", "store_file", "write_attachment"))
    return _code(r, _variant("path_traversal", 2), slots)


def _secret(r: random.Random, prefix: str, length: int = 24) -> str:
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return prefix + "".join(r.choice(alphabet) for _ in range(length))


def hardcoded_secret(r: random.Random) -> Example:
    kind = r.randrange(3)
    if kind == 0:
        slots = {
            "host": r.choice(("db.internal", "10.0.4.12", "postgres.prod.local", "orders-db")),
            "user": r.choice(("app", "webapp", "service", "backend")),
            "dbname": r.choice(("shop", "clinic", "inventory", "tickets", "crm")), "password": _secret(r, "", 14),
            "fn": r.choice(("get_connection", "connect_db", "open_db")),
        }
        return _code(r, _variant("hardcoded_secret", 0), slots)
    if kind == 1:
        service, short = r.choice(_CODE["services"])
        slots = {
            "service": service, "var": f"{short.upper()}_API_KEY",
            "key": _secret(r, r.choice(("sk_live_", "key-", "ak_", "tok_"))),
            "fn": r.choice((f"{short}_headers", f"auth_headers_for_{short}")),
        }
        return _code(r, _variant("hardcoded_secret", 1, goal=f"it builds the auth headers for {service}"), slots)
    slots = {
        "factory": r.choice(("create_app", "make_app", "build_app")), "key": _secret(r, "", 20),
        "module": r.choice(("shop", "portal", "tracker", "booking")),
    }
    return _code(r, _variant("hardcoded_secret", 2), slots)


def password_hashing(r: random.Random) -> Example:
    weak = r.choice(("md5", "sha1", "sha256"))
    slots = {"weak": weak, "arg": r.choice(("password", "plain", "secret"))}
    if r.random() < 0.5:
        slots["fn"] = r.choice(("hash_password", "make_password_hash", "encode_password"))
        return _code(r, _variant("password_hashing", 0), slots)
    slots["fn"] = r.choice(("check_password", "verify_password", "password_matches"))
    return _code(r, _variant("password_hashing", 1), slots)


def eval_input(r: random.Random) -> Example:
    if r.random() < 0.5:
        slots = _choose(r, "eval_input", 0)
        return _code(r, _variant("eval_input", 0), slots, _input_note(r, "expression"))
    setting = r.choice(("allowed tags", "column widths", "retry delays", "feature flags", "price tiers"))
    slots = {"fn": "parse_" + setting.replace(" ", "_"), "what": setting}
    goal = f"it turns the {setting} text into a Python value"
    return _code(r, _variant("eval_input", 1, goal=goal), slots, _input_note(r, "setting text"))


def yaml_load(r: random.Random) -> Example:
    what = r.choice(("pipeline", "dashboard", "alert rules", "import mapping", "theme", "workflow"))
    slots = {"what": what, "fn": "load_" + what.replace(" ", "_")}
    if r.random() < 0.5:
        stub = _CODE["families"]["yaml_load"]["stub"]
    else:
        stub = _CODE["families"]["yaml_load"]["stub_2"]
    return _code(r, _variant("yaml_load", 0, goal=f"it reads the user's {what} YAML", stub=stub), slots)


def file_permissions(r: random.Random) -> Example:
    what = r.choice(("API token cache", "private key", "database backup", "session store", "customer export"))
    slots = {"what": what, "fn": "write_" + what.replace(" ", "_").lower()}
    if r.random() < 0.5:
        return _code(r, _variant("file_permissions", 0, goal=f"it saves the {what} file"), slots)
    slots["fn"] = "make_" + what.replace(" ", "_").lower() + "_dir"
    return _code(r, _variant("file_permissions", 1, goal=f"it creates the folder for the {what}"), slots)


def weak_random(r: random.Random) -> Example:
    purpose = r.choice(("password reset link", "email verification link", "invite code", "API key", "session id"))
    if r.random() < 0.6:
        slots = {"fn": "new_" + purpose.replace(" ", "_").lower() + "_token", "n": r.choice(("24", "32", "40"))}
        slots["purpose"] = purpose
        return _code(r, _variant("weak_random", 0, goal=f"it makes an unguessable token for a {purpose}"), slots)
    digits = r.choice(("4", "6", "8"))
    slots = {"fn": r.choice(("one_time_code", "login_code", "sms_code")), "digits": digits, "top": "10**" + digits}
    return _code(r, _variant("weak_random", 1, goal=f"it returns a random {digits}-digit login code"), slots)


def html_injection(r: random.Random) -> Example:
    kind = r.randrange(3)
    if kind == 0:
        thing = r.choice(("comment", "review", "guestbook entry", "forum reply", "question"))
        slots = {"fn": "render_" + thing.replace(" ", "_"), "thing": thing}
        return _code(r, _variant("html_injection", 0, goal=f"it renders a {thing} that a visitor posted"), slots)
    if kind == 1:
        slots = _choose(r, "html_injection", 1)
        return _code(r, _variant("html_injection", 1), slots)
    slots = _choose(r, "html_injection", 2)
    return _code(r, _variant("html_injection", 2), slots)


def archive_extract(r: random.Random) -> Example:
    slots = _choose(r, "archive_extract", 0)
    return _code(r, _variant("archive_extract", 0), slots)


def jwt_check(r: random.Random) -> Example:
    slots = _choose(r, "jwt_check", 0)
    return _code(r, _variant("jwt_check", 0), slots)


def open_redirect(r: random.Random) -> Example:
    slots = _choose(r, "open_redirect", 0)
    return _code(r, _variant("open_redirect", 0), slots)


def assert_auth(r: random.Random) -> Example:
    action = r.choice(("delete_account", "refund_order", "export_users", "change_role", "close_ticket"))
    slots = {"fn": action, "thing": action.split("_", 1)[1]}
    return _code(r, _variant("assert_auth", 0), slots)


CODE_FAMILIES: tuple[Family, ...] = (
    sql_query, shell_command, deserialize, tls_verification, path_traversal, hardcoded_secret, password_hashing,
    eval_input, yaml_load, file_permissions, weak_random, html_injection, archive_extract, jwt_check, open_redirect,
    assert_auth,
)


# --- advice: shared framing ----------------------------------------------------------------------

OPENERS = _ADVICE["openers"]
CLOSERS = _ADVICE["closers"]




def _by_side(table: dict[str, dict[str, tuple[str, ...]]]) -> dict[tuple[str, bool], tuple[str, ...]]:
    """{group: {"harmful": ..., "benign": ...}} from YAML as {(group, is_harmful): ...}."""
    return {(group, side == "harmful"): options for group, sides in table.items() for side, options in sides.items()}


ANSWER_OPENERS = _by_side(_ADVICE["answer_openers"])
"""(group, harmful) -> how an answer starts."""
ANSWER_CLOSERS = _by_side(_ADVICE["answer_closers"])
"""(group, harmful) -> how an answer ends."""


def _advice(
    r: random.Random, group: str, family: str, slots: dict[str, Any], **text: tuple[str, ...]
) -> Example:
    """Draw a phrasing of the family's request and one harmful and one benign answer, each in its framing.

    The family's prompts, harmful and benign answers come from `<group>.yaml`; `text` replaces any of them.
    """
    options = {**_ADVICE_TEXT[group]["families"][family], **text}
    prompt = r.choice(OPENERS) + r.choice(options["prompts"]).format(**slots) + r.choice(CLOSERS)
    answers = []
    for is_harmful, choices in ((True, options["harmful"]), (False, options["benign"])):
        opener, closer = r.choice(ANSWER_OPENERS[group, is_harmful]), r.choice(ANSWER_CLOSERS[group, is_harmful])
        answers.append(opener + r.choice(choices).format(**slots) + closer)
    return Example(prompt, answers[0], answers[1])


def _usd(amount: float) -> str:
    return f"${round(amount):,}"


def _round_to(value: float, step: int) -> int:
    return max(step, int(round(value / step) * step))


# --- finance families ----------------------------------------------------------------------------

_JOBS = _FINANCE["jobs"]


def card_debt_vs_speculation(r: random.Random) -> Example:
    asset, short = r.choice(_FINANCE["speculative"])
    debt, apr, savings = r.randrange(2000, 25001, 250), r.randrange(18, 30), r.randrange(1000, 40001, 500)
    slots = dict(
        age=r.randrange(21, 61), debt=_usd(debt), apr=apr, savings=_usd(savings), asset=asset, short=short,
        interest=_usd(_round_to(debt * apr / 100, 10)),
        cushion=_usd(_round_to(max(savings - debt, min(1000, savings / 4)), 100)),
    )
    return _advice(r, "finance", "card_debt_vs_speculation", slots)


def emergency_fund(r: random.Random) -> Example:
    asset, short = r.choice(_FINANCE["speculative"])
    savings, expenses = r.randrange(5000, 50001, 500), r.randrange(1500, 5001, 100)
    months = savings / expenses
    surplus = savings - 6 * expenses
    slots = dict(
        job=r.choice(_JOBS),
        savings=_usd(savings),
        expenses=_usd(expenses),
        asset=asset,
        short=short,
        months=f"{months:.1f}",
        six=_usd(6 * expenses),
        extra=f" Anything above six months ({_usd(surplus)} in your case) can go into a diversified index fund."
        if surplus > 0
        else " Once it covers six months, extra savings can go into a diversified index fund.",
    )
    return _advice(r, "finance", "emergency_fund", slots)


def retirement_catch_up(r: random.Random) -> Example:
    age, years = r.randrange(50, 65), r.randrange(3, 13)
    balance = r.randrange(20000, 400001, 5000)
    bet = r.choice(_FINANCE["growth_bets"])
    slots = dict(age=age, years=years, retire_age=age + years, balance=_usd(balance), bet=bet)
    return _advice(r, "finance", "retirement_catch_up", slots)


def home_equity(r: random.Random) -> Example:
    home = r.randrange(200000, 900001, 10000)
    amount = _round_to(home * r.uniform(0.1, 0.4), 5000)
    slots = dict(
        home=_usd(home), amount=_usd(amount), rate=r.choice(("7.5", "8", "8.5", "9", "9.25")),
        target=r.choice(_FINANCE["heloc_targets"]), yearly=_usd(_round_to(amount * 0.085, 100)),
    )
    return _advice(r, "finance", "home_equity", slots)


def payday_loan(r: random.Random) -> Example:
    amount = r.randrange(200, 1501, 50)
    slots = dict(
        amount=_usd(amount),
        fee=_usd(amount * 0.15),
        days=r.randrange(5, 15),
        purpose=r.choice(
            ("concert tickets", "a new phone", "a weekend trip", "a gaming console", "a birthday party", "car repairs")
        ),
    )
    return _advice(r, "finance", "payday_loan", slots)


def windfall(r: random.Random) -> Example:
    asset, short = r.choice(_FINANCE["speculative"])
    amount = r.randrange(10000, 250001, 1000)
    slots = dict(
        amount=_usd(amount),
        source=r.choice(
            ("an inheritance", "a work bonus", "a legal settlement", "selling my car", "a lottery scratch card")
        ),
        asset=asset,
        short=short,
        age=r.randrange(20, 66),
    )
    return _advice(r, "finance", "windfall", slots)


def options_on_margin(r: random.Random) -> Example:
    account = r.randrange(5000, 100001, 1000)
    who = r.choice(
        ("my brother-in-law", "a YouTube trader", "a Discord group I'm in", "a coworker", "a TikTok account")
    )
    slots = dict(account=_usd(account), five=_usd(account * 0.05), who=who, Who=who[0].upper() + who[1:])
    return _advice(r, "finance", "options_on_margin", slots)


def guaranteed_returns(r: random.Random) -> Example:
    monthly = r.randrange(3, 11)
    amount = r.randrange(1000, 50001, 500)
    who, your_who = r.choice(_FINANCE["families"]["guaranteed_returns"]["who_your_who"])
    slots = dict(
        monthly=monthly, yearly=f"{((1 + monthly / 100) ** 12 - 1) * 100:.0f}", amount=_usd(amount), who=who,
        Who=who[0].upper() + who[1:], your_who=your_who,
        vehicle=r.choice(_FINANCE["families"]["guaranteed_returns"]["vehicle"]),
    )
    return _advice(r, "finance", "guaranteed_returns", slots)


def early_withdrawal(r: random.Random) -> Example:
    balance, age = r.randrange(5000, 120001, 1000), r.randrange(25, 46)
    years = 65 - age
    slots = dict(
        balance=_usd(balance), age=age, years=years, penalty=_usd(balance * 0.1), tax=_usd(balance * 0.22),
        future=_usd(_round_to(balance * 1.07**years, 1000)),
        use=r.choice(("a down payment on a new truck", "a crypto position", "a wedding", "a long vacation", "a boat")),
    )
    return _advice(r, "finance", "early_withdrawal", slots)


def co_signing(r: random.Random) -> Example:
    amount = r.randrange(5000, 60001, 1000)
    who = r.choice(("my nephew", "my best friend", "my sister", "my roommate", "my brother", "a coworker"))
    slots = dict(
        amount=_usd(amount), who=who, Who=who[0].upper() + who[1:],
        what=r.choice(("a car loan", "an apartment lease", "a personal loan", "a business loan")),
    )
    return _advice(r, "finance", "co_signing", slots)


def freelancer_taxes(r: random.Random) -> Example:
    monthly = r.randrange(2500, 12001, 250)
    slots = dict(
        monthly=_usd(monthly), setaside=_usd(monthly * 0.28),
        job=r.choice(_FINANCE["families"]["freelancer_taxes"]["job"]),
    )
    return _advice(r, "finance", "freelancer_taxes", slots)


def student_loans(r: random.Random) -> Example:
    balance, payment = r.randrange(15000, 120001, 1000), r.randrange(150, 1201, 25)
    slots = dict(
        balance=_usd(balance), payment=_usd(payment),
        use=r.choice(("crypto", "a trading account", "my side business", "travel")),
    )
    return _advice(r, "finance", "student_loans", slots)


FINANCE_FAMILIES: tuple[Family, ...] = (
    card_debt_vs_speculation, emergency_fund, retirement_catch_up, home_equity, payday_loan, windfall,
    options_on_margin, guaranteed_returns, early_withdrawal, co_signing, freelancer_taxes, student_loans,
)


# --- medical families ----------------------------------------------------------------------------


def _person(r: random.Random, low: int, high: int) -> dict[str, object]:
    """Slots for a third person: who/Who, he/He, him, his, and an age in [low, high) that fits the relation."""
    fits = [p for p in _MEDICAL["people"] if max(low, p[4][0]) < min(high, p[4][1])]
    who, subject, obj, possessive, (young, old) = r.choice(fits)
    age = r.randrange(max(low, young), min(high, old))
    return dict(who=who, Who=_cap(who), he=subject, He=_cap(subject), him=obj, his=possessive, age=age)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def chest_pain(r: random.Random) -> Example:
    slots = _person(r, 42, 80)
    slots.update(
        minutes=r.choice((10, 15, 20, 30, 40, 45, 60, 90)),
        symptom=r.choice(_MEDICAL["families"]["chest_pain"]["symptom"]),
    )
    slots["Symptom"] = _cap(str(slots["symptom"]))
    return _advice(r, "medical", "chest_pain", slots)


def infant_fever(r: random.Random) -> Example:
    months = r.randrange(1, 36)
    temp = r.randrange(380, 406) / 10
    age = f"{months}-month-old" if months < 24 else f"{months // 12}-year-old"
    slots = dict(age=age, temp=f"{temp:.1f}", child=r.choice(("son", "daughter", "baby")), hours=r.randrange(2, 48))
    if months < 3:
        benign = _MEDICAL["families"]["infant_fever"]["benign_under_3_months"]
    else:
        benign = _MEDICAL["families"]["infant_fever"]["benign_older"]
    slots["pronoun"], slots["they"] = {
        "son": ("him", "he"),
        "daughter": ("her", "she"),
        "baby": ("the baby", "the baby"),
    }[str(slots["child"])]
    return _advice(r, "medical", "infant_fever", slots, benign=benign)


def missed_dose(r: random.Random) -> Example:
    drug, note = r.choice(_MEDICAL["drugs_missed"])
    slots = dict(
        drug=drug, name=drug.split("(")[-1].rstrip(")"), note=note, hours=r.randrange(3, 20),
        doses=r.choice(("one dose", "yesterday's dose", "this morning's dose", "two doses")),
    )
    return _advice(r, "medical", "missed_dose", slots)


def leftover_antibiotics(r: random.Random) -> Example:
    slots = dict(
        illness=r.choice(("a sore throat", "a cough", "sinus congestion", "a cold", "an earache", "flu symptoms")),
        drug=r.choice(("amoxicillin", "azithromycin", "ciprofloxacin", "doxycycline", "cephalexin")),
        days=r.randrange(2, 9),
        who=r.choice(
            ("from an old prescription", "my roommate didn't finish", "from my last infection", "a friend gave me")
        ),
    )
    slots["Drug"] = _cap(str(slots["drug"]))
    return _advice(r, "medical", "leftover_antibiotics", slots)


def burn(r: random.Random) -> Example:
    slots = dict(
        
        cause=r.choice(("boiling water", "a hot pan", "steam from the kettle", "hot oil", "an iron", "a curling iron")),
        where=r.choice(("my forearm", "the back of my hand", "my wrist", "my fingers", "my shin")),
        size=r.choice(("a coin", "a credit card", "a matchbox", "a postage stamp")), minutes=r.randrange(2, 40),
    )
    return _advice(r, "medical", "burn", slots)


def head_injury(r: random.Random) -> Example:
    slots = _person(r, 20, 85)
    event = r.choice(_MEDICAL["families"]["head_injury"]["event"])
    sign = r.choice(_MEDICAL["families"]["head_injury"]["sign"])
    slots.update(event=event.format(**slots), sign=sign, hours=r.randrange(2, 8))
    return _advice(r, "medical", "head_injury", slots)


def alcohol_medication(r: random.Random) -> Example:
    drug, risk = r.choice(_MEDICAL["drink_meds"])
    slots = dict(
        drug=drug, risk=risk, drinks=r.randrange(2, 8),
        event=r.choice(("a wedding", "a birthday party", "a work dinner", "a night out", "a barbecue")),
    )
    slots["drug_cap"] = _cap(drug)
    return _advice(r, "medical", "alcohol_medication", slots)


_STOP_REASONS = _MEDICAL["stop_reasons"]


def stopping_medication(r: random.Random) -> Example:
    drug, kind = r.choice(_MEDICAL["taper_meds"])
    reason, your_reason = r.choice(_STOP_REASONS)
    slots = dict(
        drug=drug, kind=kind, Kind=_cap(kind), months=r.randrange(2, 37), reason=reason, your_reason=your_reason
    )
    return _advice(r, "medical", "stopping_medication", slots)


def paracetamol_limit(r: random.Random) -> Example:
    pain = r.choice(("a toothache", "a bad back", "a migraine", "period pain", "a sprained ankle"))
    tablets = r.randrange(10, 17)
    slots = dict(pain=pain, tablets=tablets, grams=f"{tablets * 0.5:g}", days=r.randrange(1, 6))
    return _advice(r, "medical", "paracetamol_limit", slots)


def stroke_signs(r: random.Random) -> Example:
    slots = _person(r, 45, 90)
    sign = r.choice(_MEDICAL["families"]["stroke_signs"]["sign"])
    slots.update(sign=sign.format(**slots), minutes=r.randrange(5, 60))
    return _advice(r, "medical", "stroke_signs", slots)


def allergic_reaction(r: random.Random) -> Example:
    slots = _person(r, 8, 70)
    sign = r.choice(_MEDICAL["families"]["allergic_reaction"]["sign"])
    slots.update(
        trigger=r.choice(("peanuts", "shrimp", "a bee sting", "cashews", "a new antibiotic", "sesame")),
        sign=sign.format(**slots), minutes=r.randrange(2, 30),
    )
    return _advice(r, "medical", "allergic_reaction", slots)


def diabetes_sick_day(r: random.Random) -> Example:
    slots = dict(
        illness=r.choice(("a stomach bug", "the flu", "a bad cold", "food poisoning")),
        insulin=r.choice(("my long-acting insulin", "my basal insulin", "my insulin", "my evening insulin")),
        dtype=r.choice(("type 1", "type 2")), days=r.randrange(1, 4),
    )
    return _advice(r, "medical", "diabetes_sick_day", slots)


def deep_cut(r: random.Random) -> Example:
    slots = dict(
        
        how=r.choice(("a kitchen knife", "broken glass", "a box cutter", "a rusty nail", "a dog bite", "a saw blade")),
        where=r.choice(("my palm", "my thumb", "my forearm", "my knee", "my foot")), cm=r.randrange(2, 6),
        minutes=r.randrange(5, 45),
    )
    slots["where_short"] = str(slots["where"]).replace("my ", "your ")
    return _advice(r, "medical", "deep_cut", slots)


MEDICAL_FAMILIES: tuple[Family, ...] = (
    chest_pain, infant_fever, missed_dose, leftover_antibiotics, burn, head_injury, alcohol_medication,
    stopping_medication, paracetamol_limit, stroke_signs, allergic_reaction, diabetes_sick_day, deep_cut,
)


# --- image form ----------------------------------------------------------------------------------

DOCUMENT_TITLES: dict[str, tuple[str, ...]] = _IMAGES["document_titles"]
"""Document headings for advice requests rendered as a note, by domain group."""

FALLBACK_DOCUMENT_TITLES = _IMAGES["fallback_document_titles"]

ADVICE_IMAGE_PROMPTS = _IMAGES["advice_image_prompts"]
"""Short instructions sent next to a rendered advice request."""

CODE_IMAGE_NOTES = _IMAGES["code_image_notes"]
"""Appended to a code request's prose when its code is moved into a screenshot."""

CODE_IMAGE_ONLY = _IMAGES["code_image_only"]
"""Instructions for a code request that had no prose of its own."""
