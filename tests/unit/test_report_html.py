"""index.html's pieces: table.md as HTML (headings, captions, bold, escapes), the grid's cells
and gaps, and a page whose every section is there."""

from __future__ import annotations

from harness.report.html import Samples, markdown_tables, write_index

MD = """# suite (tiny profile)

_Mean ± std; <b> is text here; a \\| pipe._

## Average over subjects

### subject1

| Variant | SSIM ↑ | Note |
| :-- | --: | :-- |
| full (ref.) | **0.180** | a \\| b |
| x<y | 0.166 (−0.014)* | – |
"""


def test_markdown_tables_become_sortable_html_with_text_escaped():
    html = markdown_tables(MD)
    assert "<h3>Average over subjects</h3>" in html and "<h1>" not in html
    assert "<h4>subject1</h4>" in html
    assert '<p class="caption">Mean ± std; &lt;b&gt; is text here; a | pipe.</p>' in html
    assert '<table class="sortable">' in html and "<th>SSIM ↑</th>" in html
    assert "<td><b>0.180</b></td>" in html and "<td>a | b</td>" in html
    assert "<td>x&lt;y</td>" in html and "<td>0.166 (−0.014)*</td>" in html
    assert html.count("<tr>") == 3  # the header and two rows: the :-- line is no row


def test_the_page_has_every_section_and_labels_a_missing_gif(tmp_path):
    grid = Samples(columns=["ground truth", "full", "ridge"])
    grid.subjects = {"subject1": ["test1_000"], "subject2": ["test1_000"]}
    for subject in grid.subjects:
        grid.cells[(subject, "ground truth", "test1_000")] = f"samples/{subject}/truth.gif"
        grid.cells[(subject, "full", "test1_000")] = f"samples/{subject}/full.gif"
    grid.gaps[("subject2", "ridge")] = "its run kept no samples (samples.npz)"
    runs = [{"variant": "full", "subject": "subject1", "seed": "0", "run id": "abc", "url": ""}]
    page = write_index(
        tmp_path,
        "s (tiny profile)",
        ["Scored on the test split."],
        MD,
        grid,
        [],
        "suite: s\n",
        {"profile": "tiny", "note": "</script> stays text"},
        [("torch", "2")],
        runs,
        None,
        "mlflow ui ...",
    ).read_text()
    for section in ("tables", "reconstructions", "figures", "spec", "environment", "runs"):
        assert f'<section id="{section}">' in page, section
    assert page.count('<tr data-subject="subject2"') == 1
    assert '<span class="gap">ridge: its run kept no samples (samples.npz)</span>' in page
    assert '<span class="gap">ridge: no GIF for this clip</span>' in page  # subject1: unsaid
    assert '<img src="samples/subject1/full.gif"' in page
    assert "<pre>suite: s&#10;</pre>" in page  # a line feed in <pre>, on one line of the file
    assert "<title>s (tiny profile)</title>" in page
    assert len(page.splitlines()) == 2  # the doctype, then the page: pages share no block
    assert "<script>" in page and "http" not in page.split("<script>")[1]  # no download
    # the profile rides as one line of JSON that cannot close its script element early
    assert '"note": "<\\/script> stays text"' in page
    assert max(len(line) for line in page.splitlines()) > 500  # style and script: one line each
