# %% [markdown]
# # A GPU lab from a notebook
#
# Each `# %%` block is a cell (VS Code, Jupytext and PyCharm run them as such). It drives a lab on an
# existing cluster, given by the kubeconfig in `GPULAB_KUBECONFIG` (and `GPULAB_CONTEXT`, optional):
# plan → up → exec → down. Without them, set `context=` to one of your own kubeconfig contexts, or drop
# both to create the cluster on AWS.
#
# In Jupyter, `up()` shows its progress in the cell, updated in place: each step ticked with its time, a
# bar with bytes, rate and ETA for copies; the stop button interrupts it cleanly.

# %%
import os
import sys

import gpulab

kubeconfig = os.environ.get("GPULAB_KUBECONFIG")
context = os.environ.get("GPULAB_CONTEXT")
if not kubeconfig and not context:
    sys.exit("set GPULAB_KUBECONFIG (and optionally GPULAB_CONTEXT) to a cluster's kubeconfig")
lab = gpulab.Lab(name=os.environ.get("GPULAB_LAB", "notebook-demo"), kubeconfig=kubeconfig, context=context)

# %% What will be created, and what it costs (no API calls).
plan = lab.plan()
print(f"{plan['instance']['name']}: ${plan['cost']['per_hour']:.2f}/hour")

# %% Bring it up. progress=True: the display in Jupyter, a line per finished step elsewhere.
report = lab.up(progress=True)
print(f"workspace {report['workspace']['namespace']}/{report['workspace']['pod']} ready")

# %% Run commands in the workspace.
result = lab.exec("echo hello from the workspace; uname -s")
print(result.stdout, end="")
assert result.exit_code == 0, result.stderr

# %% What it costs so far.
cost = lab.cost()
print(f"${cost['per_hour']:.2f}/hour, ${cost['spent']:.4f} so far")

# %% Remove everything.
down = lab.down(progress=True)
print(f"down: {len(down['leftovers'])} leftovers")
