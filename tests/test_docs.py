"""Docs that cannot drift (issue 41): the benchmark scripts the docs send people to start and
answer --help, and every path and section the docs name exists."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys

import pytest

from helpers import ROOT

BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_script_starts_and_answers_help(script, monkeypatch, capsys):
    """An import that moved (bench_gpu.py's compose_job) fails here, not on a user's GPU."""
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.sh")), ids=str)
def test_every_benchmark_shell_script_parses(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PATH = re.compile(
    r"(?<![\w/.<])((?:docs|benchmarks|configs|notebooks|scripts|tests|src)/[\w./-]*\w)"
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_the_docs_name_exists(doc):
    missing = []
    for name in set(PATH.findall(doc.read_text(encoding="utf-8"))):
        if "<" in name or "*" in name or ".work" in name or "my_rec" in name:
            continue  # a placeholder, a benchmark's output, the how-to's example model
        if not (ROOT / name).exists() and not (ROOT / "src" / "lightrec" / name).exists():
            missing.append(name)
    assert not missing, f"{doc.name} names files that do not exist: {sorted(missing)}"


# ------------------------------------------------ one source per number (docs/results/)

NUMBERS = ROOT / "docs" / "results" / "numbers.csv"
FIGURE = re.compile(r"\b0\.\d{4}\b")


def _numbers() -> list[dict[str, str]]:
    import csv

    with NUMBERS.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _sections(path) -> dict[str, str]:
    """A markdown file's text under each heading (its title without the #s)."""
    out: dict[str, str] = {}
    title, fenced = "", False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            title = line.lstrip("#").strip()
            out[title] = ""
        else:
            out[title] = out.get(title, "") + line + "\n"
    return out


def test_every_number_of_the_results_file_is_in_the_section_it_cites():
    docs = ROOT / "docs"
    pages = {str(p.relative_to(docs)): _sections(p) for p in docs.rglob("*.md")}
    for row in _numbers():
        page, _, section = row["source"].partition(", ")
        title = section.strip('"')
        text = next((v for k, v in pages[page].items() if k.startswith(title)), None)
        assert text is not None, f"{row['name']}: no section {section} in {page}"
        assert row["value"] in text, f"{row['name']} {row['value']} is not in {section}"


def _prose(path) -> list[str]:
    """The paragraphs and table lines of a page, code blocks and `code` left out."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    # a code span is its text, unless it quotes a figure (an example of printed output)
    text = re.sub(r"`([^`]*)`", lambda m: "" if FIGURE.search(m.group(1)) else m.group(1), text)
    pieces = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and all(line.startswith("|") for line in lines):
            pieces += lines
        else:
            pieces.append(block)
    return pieces


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))],
    ids=lambda p: p.name,
)
def test_every_figure_of_the_readme_and_the_guides_is_the_results_files(page):
    """Issue 41: a Recall figure the front pages quote is a row of docs/results/numbers.csv,
    named where it is quoted (its config or recipe on the same table line or paragraph)."""
    rows = _numbers()
    wrong = []
    for piece in _prose(page):
        low = " ".join(piece.split()).lower()
        for value in FIGURE.findall(piece):
            names = [r["name"] for r in rows if r["value"] == value]
            named = any(any(n.strip().lower() in low for n in name.split(";")) for name in names)
            if not named:
                wrong.append(f"{value} ({' '.join(piece.split())[:80]})")
    assert not wrong, f"{page.name} quotes figures numbers.csv does not hold: {wrong}"


# ------------------------------------------------ the commands the front pages show

COMMAND = re.compile(r"^(?:\./run\.sh|\./run_best\.sh|python -m lightrec|lightrec)\b(.*)$")


def _commands(page) -> list[str]:
    """The lightrec command lines of a page's ```bash blocks (continuations joined,
    comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            for part in re.split(r"&&|;", line.split("#", 1)[0]):
                part = re.sub(r"<[^>]*>", "placeholder", part.strip())  # <folder>, <date>
                part = re.sub(r"^/usr/bin/time( -v)? ", "", part)
                if COMMAND.match(part) or part.startswith(PROTOCOL):
                    out.append(part)
    return out


FRONT = [
    ROOT / "README.md",
    ROOT / "docs" / "RESULTS.md",
    ROOT / "docs" / "BENCHMARKS.md",
    *sorted((ROOT / "docs" / "guides").glob("*.md")),
]
PROTOCOL = "python benchmarks/eval_protocol.py"


@pytest.mark.parametrize("page", FRONT, ids=lambda p: p.name)
def test_every_command_the_front_pages_show_parses_and_composes(page):
    """Issue 41: each lightrec command of the README and the guides names a mode that
    exists; a config mode's command parses with the CLI's own parser and every job it
    expands to composes against the shipped configs and passes their checks; `best`'s plan
    is checked as `best` checks it. Nothing runs."""
    import shlex

    from lightrec import cli, jobs
    from lightrec.combine import best
    from lightrec.config.check import check_config

    for line in _commands(page):
        if line.startswith(PROTOCOL):  # the runs' overrides, after --, compose with a recipe
            _, _, after = line.partition(" -- ")
            overrides = shlex.split(after)
            check_config(jobs.compose_job("ease", overrides))
            best.check_plan(jobs.compose_job("pop", overrides).best)
            continue
        if any(p in line for p in ("MODE", "CONFIG", "[", "...")):
            continue  # a usage line, not a command
        argv = shlex.split(COMMAND.match(line).group(1))
        if line.startswith("./run_best.sh"):
            argv = ["best", *argv]
        if not argv or argv[0].startswith("-"):
            continue  # --help
        mode = argv[0]
        assert mode in cli.CONFIG_MODES or mode in cli.TOOL_MODES, f"{page.name}: {line}"
        if mode == "best":
            best.check_plan(jobs.compose_job("pop", argv[1:]).best)
        elif mode in cli.STAGES:
            cmd = jobs.parse(argv, None)
            for overrides in jobs.jobs(cmd):
                check_config(jobs.compose_job(cmd.config, overrides))


CITED = re.compile(r"(README|docs/[\w/]+\.md)(?:,|:)? \"([^\"]+)\"")


def test_every_section_the_docs_and_configs_cite_exists():
    """Issue 41: a citation of a section (`docs/RESULTS.md, "Hidden last item"`, `README,
    "Search"`) names a heading of that page (a heading begins with it)."""
    sources = [
        *DOCS,
        *sorted((ROOT / "src" / "lightrec" / "configs").rglob("*.yaml")),
        ROOT / "pyproject.toml",
    ]
    headings = {}
    for page in DOCS:
        key = "README" if page.name == "README.md" else str(page.relative_to(ROOT))
        headings[key] = [t for t in _sections(page) if t]
    missing = []
    for source in sources:
        raw = source.read_text(encoding="utf-8")
        raw = re.sub(r"\n\s*#", "\n", raw)  # a YAML comment carried over lines is one text
        text = " ".join(raw.split())
        for doc, section in CITED.findall(text):
            titles = headings.get(doc.removesuffix(".md") if doc == "README.md" else doc)
            if titles is not None and not any(t.startswith(section) for t in titles):
                missing.append(f'{source.name}: {doc} "{section}"')
    assert not missing, missing


TIMING = re.compile(r"about \d+ minutes|\d+ min \d+ s|[\d,.]+(?:-[\d,.]+)? requests/s")


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))],
    ids=lambda p: p.name,
)
def test_every_time_and_speed_the_front_pages_quote_is_the_benchmarks_page(page):
    """Issue 41 (points 4 and 5): a recipe's minutes or a server's requests/s quoted on a
    front page is one the reference page docs/BENCHMARKS.md states (a guide once said
    "about 23 minutes" where the page said 13 min 48 s, and 90 requests/s where it said
    723-909)."""
    reference = " ".join((ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8").split())
    quoted = TIMING.findall(" ".join(page.read_text(encoding="utf-8").split()))
    stale = [q for q in quoted if q.removeprefix("about ") not in reference]
    assert not stale, f"{page.name} quotes times docs/BENCHMARKS.md does not state: {stale}"
