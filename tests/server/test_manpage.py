"""simdr-server(1): the man page the build configures renders without
warnings, carries the project version, and names every option that
`simdr-server --help` lists (so a new option cannot go undocumented)."""
import os
import re
import shutil
import subprocess

import pytest

from serverutil import SERVER_BIN

PAGE = os.environ.get("SIMDR_SERVER_MAN", "")


def help_options():
    out = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True, check=True).stdout
    opts = sorted(set(re.findall(r"--[a-z][a-z-]+", out)))
    assert len(opts) >= 15, out
    return opts


def page_text():
    with open(PAGE) as f:
        return f.read()


def test_page_names_every_option_of_help():
    text = page_text()
    missing = [o for o in help_options() if o.replace("-", "\\-") not in text]
    assert not missing, "options of --help missing from the man page: %s" % missing


def test_page_carries_the_program_version():
    version = subprocess.run([SERVER_BIN, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    th = [l for l in page_text().splitlines() if l.startswith(".TH ")]
    assert th == ['.TH SIMDR\\-SERVER 1 "" "simdr %s" "User Commands"' % version]


def test_page_has_the_sections_a_server_page_needs():
    sections = re.findall(r"^\.SH (\S+)", page_text(), re.M)
    for s in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES", "SECURITY",
              "EXAMPLES"]:
        assert s in sections


def test_page_renders_without_warnings():
    if not shutil.which("groff") and not shutil.which("man"):
        pytest.fail("neither groff nor man is installed (groff-base, man-db)")
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-ww", "-z", PAGE], capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    if shutil.which("man"):
        env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
        r = subprocess.run(["man", "--warnings", "-l", PAGE], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "--requirepass-file" in r.stdout.replace("\u2010", "-")


def test_help_is_printed_as_written():
    # --help is printed with fputs, not printf: a "%%" written for printf
    # came out doubled ("P%% of it is garbage").
    out = subprocess.run([SERVER_BIN, "--help"], capture_output=True, text=True, check=True).stdout
    assert "%%" not in out
    assert "when P% of it is garbage" in out
