"""The documentation cannot rot: README.md and docs/*.md are checked against the repository.

- every relative link (and image) resolves to a file, and a ``#anchor`` to a heading of that file;
- every ``python main_croc.py ...`` and ``python -m eval.<module> ...`` (or ``models.<module>``) command shown
  (in a code block or an inline code span, also through ``torchrun`` / ``torch.distributed.launch`` / ``srun``)
  parses with the current parser: flag names, choices and types. Nothing is run; main_croc.py's commands also go
  through ``validate_args`` (value ranges, crop sizes).
"""

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
COMMAND = re.compile(r"(?:python -m ((?:eval|models)\.\w+)|\b(?:python|torchrun)\b[^`\n]*?\b(main_croc\.py))(?=\s|$)")


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path: Path) -> list[str]:
    """One line per relative link of ``path`` whose file or anchor does not exist."""
    problems = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{page_id(path)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page_id(path)}: link to {target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def shown_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(program, argv) of every main_croc.py / eval command shown on the page, in code blocks and inline code."""
    text = path.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    lines += re.findall(r"`([^`\n]*python[^`\n]*)`", FENCE.sub("", text).replace("\n", " "))
    commands = []
    for line in lines:
        line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        for match in COMMAND.finditer(line):
            program = match.group(1) or match.group(2)
            rest = line[match.end():]
            rest = re.split(r"\s(?:&&|\|\||;|\|)\s", rest)[0]
            argv = [tok for tok in shlex.split(rest) if tok != "..."]
            commands.append((program, argv))
    return commands


def parse_error(program: str, argv: list[str]) -> str | None:
    """None when ``argv`` parses with the current parser of ``program``, else argparse's message."""
    if program == "main_croc.py":
        from croc_utils.parser import parse_args

        parse = parse_args
    else:
        module = importlib.import_module(program)
        if not hasattr(module, "get_args_parser"):
            return f"{program} has no get_args_parser() to check the command against"
        parse = module.get_args_parser().parse_args
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(argv)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
    return None


def command_problems(path: Path) -> list[str]:
    problems = []
    for program, argv in shown_commands(path):
        if "--help" in argv or "-h" in argv:
            continue
        error = parse_error(program, argv)
        if error:
            problems.append(f"{page_id(path)}: `{program} {' '.join(argv)}`: {error}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_command_shown_parses_with_the_current_parser(page):
    problems = command_problems(page)
    assert not problems, "\n".join(problems)


def test_the_readme_shows_commands_of_both_kinds_and_the_ci_command():
    """Guards the checks above against finding nothing (a changed regular expression would pass silently)."""
    programs = {program for program, _ in shown_commands(ROOT / "README.md")}
    assert "main_croc.py" in programs and {"eval.linear_segmentation", "eval.video_segmentation"} <= programs
    assert "python -m pytest tests -q" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("python -m pytest tests -q")


def test_the_checks_catch_a_broken_link_a_missing_anchor_and_a_renamed_flag(tmp_path):
    """The failure mode of each check, on a scratch page next to the real docs."""
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A title, with `code`\n\n## Same\n\n## Same\n", encoding="utf-8")
    page.write_text(
        "[ok](other.md#a-title-with-code) [ok](other.md#same-1) [bad](missing.md) [bad](other.md#nowhere)\n\n"
        "```bash\npython main_croc.py --arch vit_tiny \\\n    --no_such_flag 3\n"
        "python -m eval.linear_segmentation --dataset not_a_dataset\n```\n", encoding="utf-8")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        links, commands = link_problems(page), command_problems(page)
    finally:
        ROOT = saved
    assert len(links) == 2 and "missing.md: no such file" in links[0] and "no heading #nowhere" in links[1], links
    assert len(commands) == 2, commands
    assert "--no_such_flag" in commands[0] and "not_a_dataset" in commands[1], commands


def test_the_method_figure_script_draws(tmp_path):
    """figures/draw_method.py, whose picture heads the README, still runs against the current code."""
    import runpy
    import sys

    out = tmp_path / "method.png"
    argv, sys.argv = sys.argv, ["draw_method.py", "--out", str(out)]
    try:
        runpy.run_path(str(ROOT / "figures" / "draw_method.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert out.stat().st_size > 10_000
