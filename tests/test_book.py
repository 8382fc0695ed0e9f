"""The book: its configuration, its table of contents, the main job, and the built HTML.

The smoke book (papermill on every chapter that exists, preset ``smoke``) is built once per
session with warnings as errors into a temporary copy of ``book/``; the HTML is copied to
``test-artifacts/book/html`` and a headless Chromium opens every page (screenshots in
``test-artifacts/book/screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ambcore import get_config
from ambcore.book import (
    CHAPTERS,
    PLACEHOLDER_MARK,
    BookError,
    notebooks_agree,
    run_book,
    select_chapters,
)
from ambcore.errors import AmbError

pytestmark = pytest.mark.costly(170)  # about 170 s: started early (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
ARTIFACTS = ROOT / "test-artifacts" / "book"

# Chapters whose notebooks are still being written: until a chapter's notebook exists, the book
# shows a placeholder page for it. Remove a chapter from this set when its notebook lands; from
# then on a missing notebook (or a page that did not come from it) fails the build test.
PENDING_CHAPTERS: set[str] = set()
# Pages that still print a results file's full path (a temporary folder in the smoke book);
# remove a page from this set once it names files relative to the results folder.
PATHS_PENDING: set[str] = set()
# Pages whose tables are still wider than their column at 1300 px (one column per value and
# long provenance text per row); remove a page from this set once its tables fit.
OVERFLOW_PENDING: set[str] = set()


# ---- configuration and table of contents ----------------------------------------------------


def test_book_config_is_the_top_level_file(tmp_path):
    link = BOOK / "_config.yml"
    assert link.is_symlink() and link.resolve() == (ROOT / "_config.yml").resolve()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert {"dollarmath", "colon_fence"} <= set(config["parse"]["myst_enable_extensions"])
    assert config["sphinx"]["config"]["numfig"] is True
    # The command as written reads it: jupyter-book's resolved Sphinx configuration (written as
    # conf.py by `jupyter-book config sphinx`, here in a copy of the book) carries our settings.
    shutil.copy2(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(
        BOOK, tmp_path / "book", symlinks=True, ignore=shutil.ignore_patterns("_build", "executed")
    )
    exe = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(exe), "config", "sphinx", str(tmp_path / "book")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    conf_py = (tmp_path / "book" / "conf.py").read_text()
    assert config["title"] in conf_py
    assert "references.bib" in conf_py and "nb_render_markdown_format = 'myst'" in conf_py


def _toc_files() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [ch["file"] for part in toc["parts"] for ch in part["chapters"]]


def test_toc_lists_exactly_the_chapters_in_order():
    files = _toc_files()
    notebook_pages = [f.split("/", 1)[1] for f in files if f.startswith("executed/")]
    assert notebook_pages == [c.name for c in CHAPTERS]
    for f in files:
        if not f.startswith("executed/"):
            assert (BOOK / f"{f}.md").exists(), f"toc entry {f} has no book/{f}.md"


def test_bibliography_has_every_cited_key():
    bib = (BOOK / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    required = {
        "devlin2019bert",
        "houlsby2019adapters",
        "pfeiffer2021adapterfusion",
        "chlapanis2022amb",
        "hazarika2020misa",
        "rahman2020magbert",
        "tsai2019mult",
        "zadeh2018mosei",
        "hazarika2022robustness",
    }
    assert required <= keys
    sources = [*BOOK.glob("*.md"), *(ROOT / "notebooks").glob("*.py")]
    cited = set()
    for path in sources:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited - keys == set(), f"cited but not in references.bib: {cited - keys}"


# ---- notebooks: jupytext pairs ---------------------------------------------------------------


def test_jupytext_pairs_notebooks_py_and_ipynb():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    path = find_jupytext_configuration_file(str(ROOT / "notebooks"))
    assert path and Path(path).resolve() == (ROOT / "notebooks" / "jupytext.toml").resolve()
    # only the chapters' sources are paired: the executed copies and the rest of the tree are not
    for folder in (ROOT / "book", ROOT, ROOT / "tests"):
        assert find_jupytext_configuration_file(str(folder)) is None, folder
    config = load_jupytext_configuration_file(path)
    # what jupyter (with jupytext's contents manager) pairs a notebooks/*.py with
    formats = config.default_formats(str(ROOT / "notebooks" / "01_data.py"))
    assert set(formats.split(",")) == {"ipynb", "py:percent"}


NOTEBOOK_SOURCES = sorted((ROOT / "notebooks").glob("*.py"))


@pytest.mark.parametrize("py", NOTEBOOK_SOURCES, ids=[p.stem for p in NOTEBOOK_SOURCES])
def test_notebook_pair_in_sync(py):
    import nbformat

    nb = py.with_suffix(".ipynb")
    assert nb.exists(), f"{nb.name} missing: run `jupytext --set-kernel python3 --to ipynb {py}`"
    assert notebooks_agree(py, nb), f"{py.name} and {nb.name} differ: run `jupytext --sync {py}`"
    notebook = nbformat.read(nb, as_version=4)
    # papermill needs the kernel (the README's `papermill notebooks/NN.ipynb out.ipynb -p ...`)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{nb.name} has no python3 kernelspec: run `jupytext --set-kernel python3 {nb}`"
    )
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), (
        f"{nb.name}: the first code cell must be tagged 'parameters' (papermill)"
    )
    assert re.search(r"^preset\s*=", code[0].source, re.M), f"{nb.name}: no `preset` parameter"


def test_every_ipynb_has_its_py():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert nb.with_suffix(".py").exists(), f"{nb.name} has no jupytext .py source"


# ---- chapters ----------------------------------------------------------------------------------


def test_select_chapters():
    assert [c.name for c in select_chapters("3,01")] == ["01_data", "03_train"]
    assert [c.name for c in select_chapters(None)] == [c.name for c in CHAPTERS]
    with pytest.raises(BookError, match="unknown chapter '9'"):
        select_chapters("9")


# ---- the main job on made-up notebooks --------------------------------------------------------


def _write_notebook(folder: Path, name: str, body: str) -> None:
    import jupytext

    text = '# %% tags=["parameters"]\npreset = "embedded"\ndata = ""\nplm = ""\nseed = 0\n\n' + body
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    (folder / f"{name}.py").write_text(text)
    jupytext.write(nb, folder / f"{name}.ipynb")


def test_missing_chapters_get_placeholders_and_are_recorded(tmp_path):
    out = tmp_path / "executed"
    result = run_book(
        "smoke", notebooks_dir=tmp_path / "notebooks", out_dir=out, build=False, log=lambda _: None
    )
    assert result.missing == [c.name for c in CHAPTERS] and result.executed == []
    for chapter in CHAPTERS:
        assert PLACEHOLDER_MARK in (out / f"{chapter.name}.md").read_text()
    timings = json.loads((out / "timings.json").read_text())
    assert {v["status"] for v in timings["chapters"].values()} == {"missing"}
    assert timings["book"]["preset"] == "smoke"


def test_a_corrupt_timings_record_stops_the_job_naming_it(tmp_path):
    out = tmp_path / "executed"
    out.mkdir()
    (out / "timings.json").write_text('{"chapters": {"01_data": ')  # an earlier build, cut short
    with pytest.raises(AmbError, match=f"{out / 'timings.json'}: not valid JSON"):
        run_book("smoke", notebooks_dir=tmp_path, out_dir=out, build=False, log=lambda _: None)


def test_failing_chapter_names_notebook_and_cell_and_keeps_it(tmp_path):
    notebooks, out = tmp_path / "notebooks", tmp_path / "executed"
    notebooks.mkdir()
    _write_notebook(
        notebooks,
        "01_data",
        "# %%\nimport os\nprint('env:', os.environ['AMB_PRESET'], os.environ['MPLBACKEND'])\n\n"
        "# %%\nprint(preset)\n1 / 0\n",
    )
    backend_before = os.environ.get("MPLBACKEND")
    with pytest.raises(BookError) as info:
        run_book(
            "smoke",
            notebooks_dir=notebooks,
            out_dir=out,
            build=False,
            chapters="01",
            log=lambda _: None,
        )
    message = str(info.value)
    assert "notebooks/01_data.py" in message
    assert "cell 3" in message and "ZeroDivisionError" in message  # cell 1 is papermill's
    kept = out / "01_data.failed.ipynb"
    assert kept.exists() and str(kept) in message
    # executed up to the failing cell, with our parameters and environment (figures inline)
    assert "env: smoke module://matplotlib_inline.backend_inline" in kept.read_text()
    assert os.environ.get("MPLBACKEND") == backend_before  # the caller's environment restored
    assert not (out / "01_data.ipynb").exists()
    timings = json.loads((out / "timings.json").read_text())
    assert timings["chapters"]["01_data"]["status"] == "failed"


def test_chapters_not_selected_keep_their_last_copy(tmp_path):
    notebooks, out = tmp_path / "notebooks", tmp_path / "executed"
    notebooks.mkdir()
    _write_notebook(notebooks, "01_data", "# %%\nprint('one', preset)\n")
    _write_notebook(notebooks, "02_model", "# %%\nprint('two', preset)\n")
    quiet = dict(notebooks_dir=notebooks, out_dir=out, build=False, log=lambda _: None)
    first = run_book("smoke", chapters="01", **quiet)
    assert first.executed == ["01_data"]
    assert PLACEHOLDER_MARK in (out / "02_model.md").read_text()  # never executed: placeholder
    second = run_book("embedded", chapters="02", **quiet)
    assert second.executed == ["02_model"] and not (out / "02_model.md").exists()
    timings = json.loads((out / "timings.json").read_text())["chapters"]
    assert timings["01_data"]["earlier_build"] and timings["01_data"]["preset"] == "smoke"
    assert timings["02_model"]["status"] == "ok" and timings["02_model"]["cpu_seconds"] > 0
    assert "one smoke" in (out / "01_data.ipynb").read_text()  # the earlier copy, untouched
    assert "two embedded" in (out / "02_model.ipynb").read_text()
    # papermill's parameter cells stay in the executed notebook, hidden from the book's page
    import nbformat

    tags = [c.metadata.get("tags", []) for c in nbformat.read(out / "02_model.ipynb", 4).cells]
    assert ["parameters", "remove-cell"] in tags and ["injected-parameters", "remove-cell"] in tags


def test_tuning_step_keeps_a_matching_record_and_tunes_otherwise(tmp_path, monkeypatch):
    """Before chapters that train: a record matching the spec is used as it is; a missing one
    (or --retune) runs `python -m ambcore tune SPEC --record RESULTS/tuning_<preset>.json`."""
    from ambcore import book, tune

    commands = []
    monkeypatch.setattr(book.subprocess, "run", lambda cmd, check: commands.append(cmd))
    said = []
    for preset, retune, chapters in (
        ("smoke", False, "03"),
        ("smoke", True, "04"),
        ("smoke", False, "01,02"),
        ("paper", False, "03"),
    ):
        options = book._book_options(
            preset,
            None,
            None,
            None,
            False,
            False,
            False,
            tmp_path / "results",
            None,
            tmp_path / "out",
            None,
        )
        job = book._start_job(
            options, get_config("smoke"), book.select_chapters(chapters), lambda _: None
        )
        said.append(book.tuning_step(job, retune))
    assert tune.current_record("smoke") is not None  # the committed record
    assert said[0].startswith("tuning: tuning_smoke.json matches tune_smoke.yaml")
    assert said[1] == "tuning: tuning_smoke.json written; its chosen values are used"
    assert said[2] == "tuning: no selected chapter trains"
    assert said[3].startswith("tuning: no spec for the paper preset")
    (command,) = commands
    assert str(tune.spec_for_preset("smoke")) in command
    assert command[1:4] == ["-m", "ambcore", "tune"] and command[-1] == "--retune"
    assert command[-3:-1] == [
        "--record",
        str((tmp_path / "results").resolve() / "tuning_smoke.json"),
    ]


def test_cli_error_for_paper_preset_without_data(monkeypatch, capsys):
    from ambcore.cli import main

    monkeypatch.delenv("AMB_DATA", raising=False)
    assert main(["book", "--preset", "paper", "--no-build"]) == 1
    assert "needs a dataset file" in capsys.readouterr().err


def test_out_outside_the_book_needs_no_build(tmp_path):
    with pytest.raises(BookError, match="--no-build"):
        run_book("smoke", out_dir=tmp_path, build=True, log=lambda _: None)


# ---- the smoke book, built with warnings as errors ---------------------------------------------


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """Build the smoke book in a copy of book/; return (html dir, seconds, log)."""
    work = tmp_path_factory.mktemp("smoke-book")
    shutil.copy2(ROOT / "_config.yml", work / "_config.yml")
    shutil.copytree(
        BOOK, work / "book", symlinks=True, ignore=shutil.ignore_patterns("_build", "executed")
    )
    # Results files go to a folder of the test (the benchmark records are copied for the
    # Status page), so that the smoke book never overwrites the project's results/.
    (work / "results").mkdir()
    for bench in (ROOT / "results").glob("*.json"):
        shutil.copy2(bench, work / "results" / bench.name)
    env = dict(
        os.environ,
        AMB_RUNS=str(work / "runs"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("AMB_DATA", None)
    env.pop("AMB_PLM", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambcore",
            "book",
            "--preset",
            "smoke",
            "-W",
            "--no-sync",
            "--book-dir",
            str(work / "book"),
            "--results-dir",
            str(work / "results"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "build.log").write_text(log)
    assert proc.returncode == 0, f"smoke book failed to build:\n{log[-6000:]}"
    html = work / "book" / "_build" / "html"
    shutil.rmtree(ARTIFACTS / "html", ignore_errors=True)
    shutil.copytree(html, ARTIFACTS / "html")
    print(f"smoke book built in {seconds:.1f} s")
    return html, seconds, log


def _pages(html: Path) -> dict[str, Path]:
    """Every page of the book: the root (index.html redirects to it) and each toc entry."""
    assert "url=intro.html" in (html / "index.html").read_text(), "index.html must open intro"
    pages = {"intro": html / "intro.html"}
    for f in _toc_files():
        pages[f] = html / f"{f}.html"
    return pages


def test_smoke_book_has_a_page_for_every_chapter(smoke_book):
    html, _, log = smoke_book
    notebooks = ROOT / "notebooks"
    for name, page in _pages(html).items():
        assert page.exists(), f"toc entry {name} produced no page"
        if not name.startswith("executed/"):
            continue
        chapter = name.split("/", 1)[1]
        text = page.read_text()
        if (notebooks / f"{chapter}.py").exists():
            assert PLACEHOLDER_MARK not in text, (
                f"{chapter}: the notebook exists but did not render"
            )
            assert "amb-banner" in text, f"{chapter}: no data/PLM banner (ambcore.pages.banner)"
        else:
            assert chapter in PENDING_CHAPTERS, (
                f"chapter {chapter} is missing: notebooks/{chapter}.py"
            )
            assert PLACEHOLDER_MARK in text
    assert re.search(r"06_results: done in [\d.]+ s", log)


def _local_targets(page: Path, html: str, attribute: str, tag: str) -> list[tuple[str, Path]]:
    targets = []
    for match in re.finditer(rf"<{tag}\b[^>]*\b{attribute}=\"([^\"]+)\"", html):
        url = match.group(1)
        if re.match(r"^(https?:|mailto:|data:|#|javascript:)", url):
            continue
        path = url.split("#", 1)[0].split("?", 1)[0]
        if path:
            targets.append((url, (page.parent / path).resolve()))
    return targets


def _link_problems(html: Path) -> list[str]:
    """Local links that lead nowhere and images that are absent or empty, page by page."""
    problems = []
    for page in html.rglob("*.html"):
        if "_static" in page.parts:
            continue
        text = page.read_text()
        for url, target in _local_targets(page, text, "href", "a"):
            if not target.exists():
                problems.append(f"{page.relative_to(html)}: broken link {url}")
        for url, target in _local_targets(page, text, "src", "img"):
            if not target.exists() or target.stat().st_size == 0:
                problems.append(f"{page.relative_to(html)}: missing figure {url}")
    return problems


def test_link_checker_finds_broken_links_and_missing_figures(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"")
    (tmp_path / "ok.html").write_text("")
    (tmp_path / "page.html").write_text(
        '<a href="ok.html#x">ok</a><a href="gone.html">x</a><a href="https://example.org">e</a>'
        '<img src="fig.png"><img src="absent.png">'
    )
    assert sorted(_link_problems(tmp_path)) == [
        "page.html: broken link gone.html",
        "page.html: missing figure absent.png",
        "page.html: missing figure fig.png",
    ]


def test_smoke_book_has_no_broken_links_or_missing_figures(smoke_book):
    html, _, _ = smoke_book
    problems = _link_problems(html)
    assert not problems, "\n".join(problems)


def test_smoke_book_loads_no_script_from_the_network(smoke_book):
    """Offline readers see the same book: MathJax and every other script come from _static."""
    html, _, _ = smoke_book
    remote = []
    for page in html.rglob("*.html"):
        if "_static" in page.parts:
            continue
        for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', page.read_text()):
            if re.match(r"(https?:)?//", src):
                remote.append(f"{page.relative_to(html)}: {src}")
    assert not remote, "\n".join(remote)
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_smoke_book_hides_parameter_cells_and_temporary_paths(smoke_book):
    """Readers see neither papermill's parameter cells nor a path of the machine that built the
    book (the smoke book is built under a temporary folder)."""
    html, _, _ = smoke_book
    work = html.parents[2]  # <tmp>/smoke-book*/book/_build/html
    problems = []
    for page in sorted(html.rglob("*.html")):
        if "_static" in page.parts:
            continue
        text = page.read_text()
        for tag in ("tag_parameters", "tag_injected-parameters"):
            if tag in text:
                problems.append(f"{page.relative_to(html)}: shows a cell tagged {tag[4:]}")
        if (str(work) in text or str(work.resolve()) in text) and (
            page.relative_to(html).as_posix() not in PATHS_PENDING
        ):
            problems.append(f"{page.relative_to(html)}: shows the temporary path {work}")
    assert not problems, "\n".join(problems)


def test_smoke_book_status_page_records_the_build(smoke_book):
    html, _, _ = smoke_book
    text = re.sub(r"<[^>]+>", " ", (html / "executed" / "08_status.html").read_text())
    text = re.sub(r"\s+", " ", text)
    assert "smoke" in text and "SYNTHETIC" in text and "tiny randomly initialised BERT" in text
    assert "jupyter-book" in text and "papermill" in text and "torch" in text
    assert re.search(r"git revision [0-9a-f]{40}", text)
    # wall time and the kernel's CPU time
    assert re.search(r"06_results Results ok \d+\.\d \d+\.\d", text), "no times for 06_results"


# ---- a real browser ----------------------------------------------------------------------------

# Injected into a copy of each page: after the load event, records every image (loaded and
# non-empty?) and every table of the page's content (rows, rendered size) into the DOM, which
# Chromium's --dump-dom then prints.
CHECK_SCRIPT = """<script>
function ambBrowserCheck() {
  var main = document.querySelector("main") || document.body;
  var images = Array.from(main.querySelectorAll("img")).map(function (i) {
    return {src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth};
  });
  var tables = Array.from(main.querySelectorAll("table")).map(function (t) {
    var box = t.getBoundingClientRect();
    var box_of = t.parentElement;  // the table's container: wider content means it overflows
    return {rows: t.rows.length, cells: t.querySelectorAll("td").length,
            height: box.height, width: box.width,
            overflow: box_of.scrollWidth - box_of.clientWidth,
            caption: (t.caption ? t.caption.textContent : "").slice(0, 60)};
  });
  var math = Array.from(main.querySelectorAll(".math")).map(function (m) {
    return {typeset: m.querySelector("mjx-container") !== null,
            text: m.textContent.slice(0, 60)};
  });
  var out = document.createElement("pre");
  out.id = "amb-browser-check";
  out.textContent = JSON.stringify({title: document.title, images: images, tables: tables,
                                    math: math, mathjax: typeof window.MathJax});
  document.body.appendChild(out);
}
window.addEventListener("load", function () {
  // MathJax typesets after the load event; record the page once it has finished.
  var mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(ambBrowserCheck, ambBrowserCheck);
  } else {
    ambBrowserCheck();
  }
});
</script>"""


def _chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium():
    exe = _chromium_executable()
    if exe is None:
        reason = "Chromium is not installed (bash scripts/install_chromium.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser test")
        pytest.skip(reason)
    return exe


def _open_in_chromium(exe: str, page: Path, screenshot: Path, profile: Path) -> dict:
    probe = page.with_name(f"_browser_check_{page.name}")
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>", 1))
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--virtual-time-budget=8000",
        "--window-size=1300,2000",
        f"--screenshot={screenshot}",
        "--dump-dom",
        probe.as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="amb-browser-check"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert match, (
        f"{page.name}: Chromium returned no check result (exit {proc.returncode}):\n"
        + (proc.stderr[-2000:])
    )
    import html as html_lib

    return json.loads(html_lib.unescape(match.group(1)))


def test_browser_opens_every_page_images_load_tables_render(smoke_book, chromium, tmp_path):
    html, _, _ = smoke_book
    shots = ARTIFACTS / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    problems, n_images, n_tables, n_math = [], 0, 0, 0
    for name, page in _pages(html).items():
        shot = shots / (name.replace("/", "__") + ".png")
        result = _open_in_chromium(chromium, page, shot, tmp_path / "profile")
        if not shot.exists() or shot.stat().st_size < 1000:
            problems.append(f"{name}: no screenshot")
        if "Adapted Multimodal BERT" not in result["title"]:
            problems.append(f"{name}: unexpected title {result['title']!r}")
        for image in result["images"]:
            n_images += 1
            if not (image["complete"] and image["width"] > 0):
                problems.append(f"{name}: image {image['src']} did not load")
        for i, table in enumerate(result["tables"]):
            n_tables += 1
            if (
                table["rows"] < 2
                or table["cells"] == 0
                or table["height"] <= 0
                or table["width"] <= 0
            ):
                problems.append(f"{name}: table {i} did not render ({table})")
            if table["overflow"] > 1 and name not in OVERFLOW_PENDING:  # fits at 1300 px
                problems.append(
                    f"{name}: table {i} {table['caption']!r} is {table['overflow']} px "
                    "wider than its column"
                )
        for formula in result["math"]:  # MathJax is served by the book itself (no CDN)
            n_math += 1
            if not formula["typeset"]:
                problems.append(
                    f"{name}: formula {formula['text']!r} was not typeset "
                    f"(MathJax: {result['mathjax']})"
                )
    assert not problems, "\n".join(problems)
    # the Results page shows the thesis' tables; the Status page its tables and a figure
    assert n_tables >= 5 and n_images >= 1, (n_tables, n_images)
    # the Model chapter's fusion equations
    assert n_math >= 1, "no formula found on any page"
