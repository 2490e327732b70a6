"""The privacy engine, pure: no I/O, no clock, no event loop; randomness only from ``noise``.

- ``noise.py``: exact discrete Gaussian / Laplace samplers (Canonne-Kamath-Steinke 2020) fed by
  OS randomness; pmf, variance and quantiles for intervals.
- ``mechanisms.py``: calibration, the noise draw, intervals -- the only caller of ``noise``.
- ``counters.py``: square-root and dyadic-tree continual counters (matrix mechanism) with exact
  sensitivity over alternating flip patterns.
- ``flippancy.py``: the bounded-flippancy reduction (Jain et al. 2023): who is counted, who is
  frozen, what each day adds to the counter.
- ``accounting.py``: tight composition of charges with dp-accounting's privacy-loss
  distributions; calibration of sigma.
"""
