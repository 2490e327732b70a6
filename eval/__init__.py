"""Evaluation of the DAU/MAU release engine (README "Evaluation").

Modules:
* ``randomness``  -- seeded ``RandomSource`` for the exact samplers, and seed resolution.
* ``simulate``    -- synthetic streams (realistic churn, adversarial) and their exact truth.
* ``releases``    -- what the service would publish for a stream: independent releases and
                     continual-counter runs through the service's own pure code paths.
* ``experiments`` -- experiments (a)-(f), each returning plain data.
* ``plots``       -- PNG figures (matplotlib, Agg backend).
* ``report``      -- ``summary.md`` tables.
* ``run``         -- ``python -m eval.run [--quick] [--seed N] [--experiment-id ID] [--data-dir DIR]``.

Unlike the service, evaluation seeds its own generator (the service never does: README "Privacy statement"), so every number
here is reproducible from ``DEFAULT_SEED`` (or ``--seed``). The stdlib ``random`` module is
imported in ``eval/`` only, never in ``actors/``, ``gateway/`` or ``journal/``.
"""
