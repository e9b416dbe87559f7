"""The README is a front page: its setup commands, its generated table, its links and its quickstart."""

import os
import re
import subprocess
import sys

from keras_lightnets.catalog import models_table
from tests.helpers import REPO

README = os.path.join(REPO, "README.md")


def readme():
    with open(README, encoding="utf8") as f:
        return f.read()


def test_front_page_size_and_setup_commands():
    text = readme()
    assert len(text.encode()) <= 12 * 1024
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert first_block[0] == "pip install -e . && python demo.py examples/coffee.jpg"
    assert first_block[1].startswith('pip install -e ".[test]"') and first_block[1].endswith("python -m pytest -n 2")
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf8") as f:
        assert first_block[1] in f.read()  # CI runs the README's test command


def test_models_table_is_generated_from_the_registry():
    text = readme()
    start = text.index("<!-- models-table")
    table = text[text.index("\n", start) + 1:text.index("<!-- end models-table -->")]
    assert table == models_table(), "regenerate the README's table with keras_lightnets.catalog.models_table()"


def test_every_local_link_exists():
    for page in [README, *(os.path.join(REPO, "docs", name) for name in os.listdir(os.path.join(REPO, "docs")))]:
        with open(page, encoding="utf8") as f:
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", f.read()):
                assert os.path.exists(os.path.join(os.path.dirname(page), target)), (page, target)


def test_classify_quickstart_runs():
    """The first Python block, as a user pastes it (offline: the line that fetches Keras' file is left out)."""
    block = re.search(r"## Quickstart: classify a photo\n\n```python\n(.*?)```", readme(), re.S).group(1)
    code = "\n".join(line for line in block.splitlines() if "keras_model" not in line)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tabby" in result.stdout or "Egyptian_cat" in result.stdout or "tiger_cat" in result.stdout, result.stdout
