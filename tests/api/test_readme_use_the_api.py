"""README's "Use the API" examples run as written against a live server."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.apikeys.fixtures import (  # noqa: F401
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

README = Path(__file__).resolve().parents[2] / "README.md"
DEV_SERVER = "http://127.0.0.1:8000"


def _section_blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text.split("## Use the API", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _run(source: str, namespace: dict):
    """Execute ``source``; return the value of its last expression."""
    tree = ast.parse(source)
    last = tree.body[-1]
    # The last statement of a block is the call whose answer the reader sees
    # (inside a ``with`` block for the local client).
    holder = last.body if isinstance(last, ast.With) else tree.body
    expression = holder.pop()
    assert isinstance(expression, ast.Expr), source
    holder.append(
        ast.Assign(
            targets=[ast.Name("answer", ast.Store())],
            value=expression.value,
            lineno=0,
        )
    )
    exec(compile(ast.fix_missing_locations(tree), "README.md", "exec"), namespace)
    return namespace["answer"]


@pytest.mark.slow
def test_readme_use_the_api__python_examples__answer_like_the_api(
    live_server, catalog, server_key, client
):
    # Given: the answer of the native API for the README's flag and merchant
    from openfeature import api

    expected = client.post(
        "/api/v1/evaluate",
        data=json.dumps(
            {"context": {"merchant": "m-1001"}, "flags": ["sequential_workflow"]}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {server_key}",
    ).json()["flags"][0]["value"]
    blocks = _section_blocks("python")
    assert len(blocks) == 2
    try:
        # When: each example, pointed at the live server
        answers = [
            _run(
                block.replace(DEV_SERVER, live_server.url),
                {"KEY": server_key},
            )
            for block in blocks
        ]
    finally:
        api.clear_providers()
    # Then
    assert answers == [expected, expected]


def test_readme_use_the_api__shell_examples__documented_commands_and_routes():
    # Given
    shell = "\n".join(_section_blocks("sh"))
    # Then: the key commands, and curl at the evaluation routes
    assert "apikey create --env production" in shell
    assert "apikey create --scope management --user admin" in shell
    assert f"{DEV_SERVER}/api/v1/evaluate" in shell
    assert f"{DEV_SERVER}/ofrep/v1/evaluate/flags/sequential_workflow" in shell
