# %% [markdown]
# # Status of this build
#
# What produced this copy of the book: the machine and its device, the package versions, the
# code revision, the preset, the dataset and the language model, and the wall time of every
# chapter as the main job (`python -m ambcore book`) measured it. Benchmark files under
# `results/` are listed at the end.

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")
data = ""
plm = ""
seed = 0
timings_path = ""  # the main job's timings JSON; empty: book/executed/timings.json
results_dir = ""  # where benchmark files are; empty: the project's results/ folder

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore.pages import banner, config_from_parameters, missing_note, numbered_table
from ambcore.status import (benchmark_tables, build_provenance_table, device_label, environment_report,
                            load_timings, revision_label, timings_table)

cfg = config_from_parameters(preset, data, plm)
display(banner(cfg))

# %% [markdown]
# ## Code, machine and device
#
# Built from git revision {glue:text}`git_revision` on {glue:text}`device`.

# %% tags=["hide-input"]
env = environment_report()
glue("git_revision", revision_label(env), display=False)
glue("device", device_label(env), display=False)
numbered_table(build_provenance_table(env, cfg), "What produced this build", name="tbl-status-machine")

# %% [markdown]
# ### Calibration probe
#
# Machines of one kind differ 2-3x in speed, so every time this book reports comes with the
# machine that measured it: its CPU, its cores and a calibration probe, the single-thread
# fp32 matrix-multiply rate in GFLOP/s per CPU-second (`ambcore.runs.matmul_probe`, about two
# seconds), recorded in every run folder's `env.json` and every benchmark record. A time
# measured on a machine with probe *p* compares to this one's after scaling by *p* / this
# probe. This machine measured {glue:text}`probe_gflops` GFLOP/s.

# %% tags=["hide-input"]
from ambcore.bench import machine_frame
from ambcore.runs import machine_block

block = machine_block()
glue("probe_gflops", f"{block['probe']['gflops']:.1f}", display=False)
numbered_table(machine_frame(block), "This machine and its calibration probe", name="tbl-status-probe")

# %% tags=["hide-input"]
versions = pd.DataFrame(sorted(env["versions"].items()), columns=["package", "version"])
numbered_table(versions, "Package versions", name="tbl-status-versions")

# %% [markdown]
# ## Wall time per chapter
#
# Measured by the main job around each chapter's papermill execution (kernel start included);
# the CPU time is the kernel's own (user + system), which depends less than the wall time on
# whatever else the machine was running.
# Chapters executed so far in this build took {glue:text}`total_minutes` minutes in total.
# Missing chapters: {glue:text}`missing_chapters`.

# %% tags=["hide-input"]
timings = load_timings(timings_path or None)
chapters = timings_table(timings)
done = chapters.loc[chapters["status"].isin(["ok", "failed"]), "wall time (s)"].dropna()
glue("total_minutes", f"{done.sum() / 60:.1f}", display=False)
missing = chapters.loc[chapters["status"] == "missing", "chapter"].tolist()
glue("missing_chapters", ", ".join(missing) if missing else "none", display=False)
if timings is None:
    display(missing_note(
        "the main job's timings",
        "This notebook ran on its own; `python -m ambcore book` writes book/executed/timings.json.",
    ))
numbered_table(chapters, "Status and wall time of each chapter", name="tbl-status-chapters", digits=1)

# %% tags=["hide-input"]
import matplotlib.pyplot as plt

timed = chapters.dropna(subset=["wall time (s)"])
fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(chapters) + 1.0))
ax.barh(chapters["chapter"], chapters["wall time (s)"].fillna(0.0), color="tab:blue")
ax.invert_yaxis()
ax.set_xlabel("wall time (s)")
ax.set_title(f"preset {cfg.preset}: {len(timed)} of {len(chapters)} chapters timed")
fig.tight_layout()
glue("fig_wall_time", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_wall_time
# :name: fig-status-wall-time
#
# Wall time of each chapter executed by the main job (seconds, kernel start included).
# ```

# %% [markdown]
# ## Benchmarks
#
# Benchmark records under `results/` (`python -m ambcore bench --json`, the SDK alignment
# benchmark); each names its device and command, and the newer ones the machine's probe and
# where a training run's CPU-seconds go, phase by phase (`ambcore.bench.phases`).

# %% tags=["hide-input"]
from ambcore.bench import record_machines, record_phases

display(numbered_table(record_machines(results_dir or None), "Machines of the benchmark records"))
for name, phases in record_phases(results_dir or None):
    display(numbered_table(phases, f"CPU seconds by phase, {name}", digits=2))

# %% tags=["hide-input"]
benches = benchmark_tables(results_dir or None)
if not benches:
    display(missing_note("benchmark files", "No results/bench*.json or results/*_bench*.json yet."))
for record in benches:
    for frame, caption in record.tables():
        display(numbered_table(frame, caption))
