"""The LM preference lab (`psipo experiment lm`): the paper's claims on a language model whose
responses can be enumerated, so that KL, total preference, the ΨPO objective and the distance
to the closed-form optimum are computed exactly.

* :mod:`.config` — :class:`LabConfig` (one dataclass per concern), the ``--quick`` and ``--full`` presets;
* :mod:`.world` — prompts, responses V^L, Markov chains, hidden reward, the oracle p*;
* :mod:`.reference` — π_ref by a short supervised phase;
* :mod:`.data` — preference datasets (y, y' ~ π_ref, labels ~ p*);
* :mod:`.enumeration` — exact π(·|x) over V^L;
* :mod:`.evaluate` — exact metrics through :mod:`psipo.tabular` (optimum of Eq. 9, empirical optima);
* :mod:`.sweep` — consistency in N: the exact minimiser of IPO's empirical loss for N up to 2.6·10^5;
* :mod:`.population` — the LM trained on the exact population losses (no data) against their targets;
* :mod:`.lm_sweep` — consistency in N of the trained LMs (C19, C20; ``--full``);
* :mod:`.winner` — C6 on D1: an action that beats all others, and the mass DPO and IPO put on it;
* :mod:`.montecarlo` — estimates with CIs for the non-enumerable configuration;
* :mod:`.online_vs_offline` — online IPO and IPO-MD (the exact oracle as judge) against offline IPO
  at equal oracle queries, each against its exact target;
* :mod:`.training_runs` — preference runs with :func:`psipo.lm.train`;
* :mod:`.experiment` — the grid and the worker processes;
* :mod:`.outputs` — the output folder from the results, also from a stored run (``--report-from``);
* :mod:`.summaries` — numbers read off the results (intervals over seeds, KL slopes, late growth);
* :mod:`.claims` — the claims table and its verdict rules; :mod:`.report` — REPORT.md;
  :mod:`.plots` — figures.
"""

from psipo.experiments.lm_lab.config import FULL, QUICK, LabConfig, validate

__all__ = ["FULL", "QUICK", "LabConfig", "read_stored_run", "rerender", "run_experiment", "validate"]


def run_experiment(config: LabConfig, out_dir, **kwargs):
    """Run the lab into ``out_dir`` (see :func:`psipo.experiments.lm_lab.experiment.run_experiment`)."""
    from psipo.experiments.lm_lab.experiment import run_experiment as run

    return run(config, out_dir, **kwargs)


def read_stored_run(source):
    """The results of a stored run (see :func:`psipo.experiments.lm_lab.outputs.read_stored_run`)."""
    from psipo.experiments.lm_lab.outputs import read_stored_run as read

    return read(source)


def rerender(results, out_dir, **kwargs):
    """The output folder of a stored run, without training (see :func:`psipo.experiments.lm_lab.outputs.rerender`)."""
    from psipo.experiments.lm_lab.outputs import rerender as render

    return render(results, out_dir, **kwargs)
