"""The data review's report: likely label errors as thumbnails, per-class counts, near-duplicates, outliers.

Example:
    >>> html = render_html(review("product_defects"))  # doctest: +SKIP
"""

from __future__ import annotations

from tfx_transfer.reporting import render

#: Thumbnails shown per section (the tables and review.csv list more).
THUMBNAILS = 48


def _gallery(items: list[tuple[str, str]]) -> str:
    """`(path, caption)` items as a gallery of thumbnails (files that are gone are left out)."""
    figures = []
    for path, caption in items[:THUMBNAILS]:
        uri = render.thumbnail_uri(path)
        if uri is not None:
            figures.append(f"<figure>{render.html_image(uri, caption)}<figcaption>{render.html.escape(caption)}"
                           "</figcaption></figure>")
    if not figures:
        return render.paragraph("Nothing to show (or the image files are not available).", "note")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _tables(record: dict):
    per_class = (["class", "images", "suspected label errors", "share", "suggested from other classes"],
                 [[row["class"], row["images"], row["suspected"], f"{row['suspected'] / max(row['images'], 1):.1%}",
                   row["suggested_from_other_classes"]] for row in record["per_class"]])
    issues = (["rank", "path", "given", "suggested", "label quality", "split"],
              [[rank + 1, row["path"], row["given_label"], row["suggested_label"], f"{row['label_quality']:.3f}",
                row["split"]] for rank, row in enumerate(record["label_issues"])])
    duplicates = (["first", "second", "labels", "distance"],
                  [[row["first"], row["second"], f"{row['first_label']} / {row['second_label']}"
                    + ("" if row["first_label"] == row["second_label"] else " (labels disagree)"),
                    f"{row['distance']:.4f}"] for row in record["near_duplicates"]])
    outliers = (["path", "given", "outlier score"],
                [[row["path"], row["given_label"], f"{row['outlier_score']:.3f}"] for row in record["outliers"]])
    return per_class, issues, duplicates, outliers


_METHOD = ("Every training and validation image was scored by a model that never saw it (k-fold cross-fitting; "
           "groups kept in one fold), and cleanlab's confident learning flagged the images whose given label that "
           "model finds unlikely for their class. Label quality is the held-out probability of the given label. "
           "Near-duplicates are pairs whose backbone features are far closer than images are to their nearest "
           "neighbour; outliers are far from the rest of the data (cleanlab's out-of-distribution score). A flag is "
           "a reason to look, not a verdict: accept or edit the suggestions in review.csv, then run with "
           "--relabel review.csv.")


def render_markdown(record: dict) -> str:
    per_class, issues, duplicates, outliers = _tables(record)
    lines = [f"# Data review: {record['recipe']}", "", f"**{render.markdown_text(record['summary'])}**", "",
             render.markdown_text(_METHOD), "", "## Suspected label errors by class", "", render.markdown_table(*per_class),
             "", f"## Likely label errors (the {len(issues[1])} most likely)", "", render.markdown_table(*issues), ""]
    if duplicates[1]:
        lines += ["## Near-duplicates", "", render.markdown_table(*duplicates), ""]
    if outliers[1]:
        lines += ["## Outliers", "", render.markdown_table(*outliers), ""]
    return "\n".join(lines)


def render_html(record: dict) -> str:
    per_class, issues, duplicates, outliers = _tables(record)
    gallery = [(row["path"], f"#{rank + 1}: given {row['given_label']}, suggested {row['suggested_label']} "
                f"(quality {row['label_quality']:.2f})") for rank, row in enumerate(record["label_issues"])]
    sections = [("", f'<div class="verdict">{render.html.escape(record["summary"])}</div>' + render.paragraph(_METHOD, "note")),
                ("Suspected label errors by class", render.html_table(*per_class, 1)),
                ("Likely label errors, most likely first", _gallery(gallery) + render.html_table(*issues, 4))]
    if duplicates[1]:
        pairs = [(path, f"pair {k + 1}: {label}") for k, row in enumerate(record["near_duplicates"][:THUMBNAILS // 2])
                 for path, label in ((row["first"], row["first_label"]), (row["second"], row["second_label"]))]
        sections.append(("Near-duplicates", _gallery(pairs) + render.html_table(*duplicates, 3)))
    if outliers[1]:
        sections.append(("Outliers", _gallery([(row["path"], f"{row['given_label']} (score {row['outlier_score']:.2f})")
                                               for row in record["outliers"]]) + render.html_table(*outliers, 2)))
    return render.html_page(f"Data review: {record['recipe']}", sections,
                            f"{record['counts']['images']} images, {record['method']}, {record['folds']} folds.")
