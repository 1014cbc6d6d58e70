"""The probe's report: the probe score by block depth, the advice, and its verification.

Example:
    >>> html = render_html(probe("product_defects", quick=True))  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from tfx_transfer.reporting import render


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _curve_figure(record: dict):
    plt = render.pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 3.6))
    curve = record["curve"]
    x = np.arange(len(curve))
    values = [np.nan if row["value"] is None else row["value"] for row in curve]
    axis.plot(x, values, "o-", label=f"linear probe ({record['metric']}, validation)")
    low = [np.nan if row["low"] is None else row["low"] for row in curve]
    high = [np.nan if row["high"] is None else row["high"] for row in curve]
    axis.fill_between(x, low, high, alpha=0.2, label="95% bootstrap interval")
    peak = [row["block"] for row in curve].index(record["advice"]["peak_block"])
    axis.axvline(peak, color="grey", linestyle="--", linewidth=0.8, label="advised: train the blocks right of this")
    axis.set_xticks(x, [row["block"] for row in curve], rotation=60, fontsize=7)
    axis.set_ylabel(record["metric"])
    axis.set_title(f"{record['backbone']}: probe score by block depth")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _tables(record: dict):
    curve = [[row["block"], row["channels"], _number(row["value"]),
              "n/a" if row["low"] is None else f"[{row['low']:.3f}, {row['high']:.3f}]"] for row in record["curve"]]
    header = ["block", "channels", f"{record['metric']} (validation)", "95% interval"]
    verification = None
    if record.get("verification"):
        verification = (["unfrozen blocks", "advised", "validation", "test [95% interval]"],
                        [[r["label"], "yes" if r["advised"] else "", _number(r["validation"]),
                          f"{_number(r['test']['value'])} [{_number(r['test']['low'])}, {_number(r['test']['high'])}]"]
                         for r in record["verification"]["results"]])
    return (header, curve), verification


def render_markdown(record: dict) -> str:
    (header, rows), verification = _tables(record)
    lines = [f"# Probe: {record['recipe']} ({record['backbone']})", "", f"**Advice.** {render.markdown_text(record['advice']['text'])}",
             "", f"Linear probes on {record['data']['n_train']} training images, scored on {record['data']['n_val']} "
             "validation images.", "", render.markdown_table(header, rows), ""]
    if verification:
        lines += ["## Verification: fine-tuned at three depths", "", render.markdown_text(record["verification"]["text"]), "",
                  render.markdown_table(*verification), ""]
    return "\n".join(lines)


def render_html(record: dict) -> str:
    (header, rows), verification = _tables(record)
    sections = [("", f'<div class="verdict"><strong>Advice.</strong> {render.html.escape(record["advice"]["text"])}</div>'),
                ("Probe score by block", render.html_image(render.figure_to_data_uri(_curve_figure(record)), "probe curve")
                 + render.html_table(header, rows, 1))]
    if verification:
        sections.append(("Verification: fine-tuned at three depths", render.paragraph(record["verification"]["text"])
                         + render.html_table(*verification, 1)))
    return render.html_page(f"Probe: {record['recipe']} ({record['backbone']})", sections,
                            f"Linear probes on {record['data']['n_train']} training images, scored on validation.")
