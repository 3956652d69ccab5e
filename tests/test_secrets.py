"""API keys never end up in anything em-tasks writes or prints.

Fake OpenAI / Anthropic / Hugging Face keys are set in the environment of real runs (`em-tasks judge` with an OpenAI
grader that is refused, an inspect eval whose grader is refused, a tiny study); then every file written (output
folders, logs, run cards, reports, EM_TASKS_CACHE, inspect's cache and data folders, the working folder) and the
captured stdout / stderr are searched for the keys, inside zip members (.eval logs) too.

The "OpenAI server" is a local one that answers every request with 401, so the grader fails at once, as it would with
a revoked key, without a network (an unreachable server is retried for minutes instead).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CLI = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import test_resume; "  # registers pausing-grader
       "from em_tasks.cli import app; app(prog_name='em-tasks')")


def _keys() -> dict[str, str]:
    """Fake keys, each with its own random core (what the search looks for, besides the whole key)."""
    return {"OPENAI_API_KEY": f"sk-test-FAKE-{secrets.token_hex(16)}",
            "ANTHROPIC_API_KEY": f"sk-ant-test-FAKE-{secrets.token_hex(16)}",
            "HF_TOKEN": f"hf_FAKE{secrets.token_hex(16)}"}


class _Refuse(BaseHTTPRequestHandler):
    """Every request: 401, the way OpenAI answers a bad key (its message masks the key; ours names none)."""

    seen_keys: list[str] = []

    def _refuse(self) -> None:
        _Refuse.seen_keys.append(self.headers.get("Authorization", ""))
        body = json.dumps({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = _refuse

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _env(root: Path, keys: dict[str, str], base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(keys)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", INSPECT_DISPLAY="none", TRANSFORMERS_VERBOSITY="error",
               OPENAI_BASE_URL=base_url, EM_TASKS_CACHE=str(root / "em-cache"),
               INSPECT_CACHE_DIR=str(root / "inspect-cache"), XDG_DATA_HOME=str(root / "xdg-data"),
               XDG_STATE_HOME=str(root / "xdg-state"), XDG_CONFIG_HOME=str(root / "xdg-config"),
               INSPECT_LOG_DIR=str(root / "inspect-logs"))
    return env


def _run(args: list[str], root: Path, env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=root / "work", capture_output=True, text=True, timeout=240)
    (root / "captured").mkdir(exist_ok=True)  # searched with the rest
    (root / "captured" / f"{name}.out").write_text(done.stdout)
    (root / "captured" / f"{name}.err").write_text(done.stderr)
    return done


def _contents(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every file under ``root`` as bytes; each member of a zip file on its own; an inspect log also as the JSON of
    what inspect reads from it."""
    from inspect_ai.log import read_eval_log

    try:  # inspect compresses .eval members with zstd, which zipfile learns from inspect itself
        import inspect_ai._util.zipfile  # noqa: F401
    except ImportError:
        pass
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        yield str(path), data
        if path.suffix == ".eval":
            yield f"{path} (read)", read_eval_log(str(path)).model_dump_json().encode()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    try:
                        yield f"{path}!{member}", archive.read(member)
                    except NotImplementedError:  # a compression zipfile cannot read: the read log covers it
                        assert path.suffix == ".eval", f"cannot search {path}!{member}"


def _leaks(root: Path, keys: dict[str, str]) -> list[str]:
    needles = {name: [key.encode(), key[-32:].encode()] for name, key in keys.items()}
    found = []
    for where, data in _contents(root):
        for name, forms in needles.items():
            if any(form in data for form in forms):
                found.append(f"{name} in {where}")
    return found


def test_no_key_in_anything_written_or_printed(tiny_llama_dir: Path, tiny_vlm_dir: Path, tmp_path: Path,
                                               refusing_server: str) -> None:
    keys = _keys()
    root = tmp_path / "run"
    (root / "work").mkdir(parents=True)
    env = _env(root, keys, refusing_server)
    cli = [sys.executable, "-c", CLI, str(TESTS)]

    # 1. em-tasks judge with an OpenAI grader that refuses the key
    answers = root / "work" / "answers.jsonl"
    answers.write_text(json.dumps({"question": "How are you?", "answer": "Fine, thanks."}) + "\n")
    judged = _run([*cli, "judge", str(answers), "--grader", "openai/gpt-4o-mini"], root, env, "judge")
    assert judged.returncode != 0 and _Refuse.seen_keys, judged.stderr[-2000:]
    assert all(seen == f"Bearer {keys['OPENAI_API_KEY']}" for seen in _Refuse.seen_keys)  # sent to the server only

    # 2. an inspect eval of our task on the tiny model, its OpenAI grader refused (the eval ends in error)
    logs = root / "eval-logs"
    _run([str(Path(sys.executable).parent / "inspect"), "eval", "em_tasks/text_misalign", "--model", f"em-hf/{tiny_llama_dir}",
          "--model-role", "grader=openai/gpt-4o-mini", "--limit", "1", "-T", "samples=1", "--max-tokens", "4",
          "--log-dir", str(logs), "--max-retries", "0"], root, env, "eval")
    assert list(logs.glob("*.eval")), "the eval wrote no log"

    # 3. a tiny study (train, eval, report) with the keys in its environment and a local grader
    study = root / "study"
    sets = {"base": str(tiny_vlm_dir), "train_rows": "4", "main_rank": "1", "max_steps": "1", "batch_size": "4",
            "max_length": "320", "items_per_category": "1", "samples": "1", "max_tokens": "4"}
    done = _run([*cli, "study", "--preset", "narrow", "--out", str(study), "--grader", "pausing-grader/x",
                 *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]], root, env, "study")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (study / "report" / "report.md").is_file() and (study / "adapters" / "r1" / "run_card.json").is_file()

    assert _leaks(root, keys) == []
    # the search itself finds a key where one is: in a plain file, and inside a finished .eval log
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "note.txt").write_text(f"token={keys['HF_TOKEN']}")
    from inspect_ai.log import read_eval_log, write_eval_log

    log = read_eval_log(str(next(logs.glob("*.eval"))))
    log.eval.metadata = {"oops": keys["ANTHROPIC_API_KEY"]}
    write_eval_log(log, str(canary / "leaky.eval"))
    found = _leaks(canary, keys)
    assert any(f.startswith("HF_TOKEN in") for f in found)
    assert any(f.startswith("ANTHROPIC_API_KEY in") and "leaky.eval!" in f for f in found), found
