"""The README's Python section as a new user meets it: every ```python example runs verbatim,
on its own, in a fresh interpreter and an empty directory, and ends without an error."""
import os
import re
import subprocess
import sys

import pytest

import simdr

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def python_section_examples():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"<!-- section:python -->(.*?)<!-- /section:python -->", text, re.S)
    assert section, "README.md has no Python section"
    return re.findall(r"```python\n(.*?)```", section.group(1), re.S)


def test_the_python_section_has_examples():
    assert len(python_section_examples()) >= 2


@pytest.mark.parametrize("index", range(len(python_section_examples())))
def test_readme_example_runs_verbatim(tmp_path, index):
    example = python_section_examples()[index]
    # the simdr under test, wherever the empty directory is
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(simdr.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"example {index}:\n{example}\n{done.stderr}"
